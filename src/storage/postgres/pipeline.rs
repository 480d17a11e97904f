//! The warm GET's one statement ([`RECORD_READ_CACHED`]) and the key listings' ([`Listing`]) over
//! a few tokio-postgres connections that many requests share, their statements pipelined.
//!
//! Why (bench/RESULTS.md, 2026-12-06 "PostgreSQL GET: pipelined"): with one connection per request
//! in flight, each statement is one `send` of its own, and on loopback the sender pays the
//! receiver's side too — waking the database backend was a fifth of the node's CPU per GET, on
//! the core the database needs. tokio-postgres writes every statement queued on a connection in
//! one `send`, so a batch of GETs costs one wake-up of one backend. A listing's 1000 rows are
//! decoded here by position as they arrive, without sqlx's per-row stream machinery (a quarter
//! of the node's CPU per listing; bench/RESULTS.md, 2026-12-06 05:04).
//!
//! A batch needs more than a shared connection: a request that queues a statement wakes the
//! connection's task, and tokio runs a task just woken before the rest of the ready ones, so the
//! statement went out in a `send` of its own before the next request had queued its own (0.86
//! `send`s per GET, bench/RESULTS.md 2026-12-06 "PostgreSQL GET: reads batched"). So the warm GETs
//! hand their reads to a task per connection ([`batch_reads`]) that waits for the end of the
//! scheduler's turn before it queues them: one wake-up of the connection's task, one `send`.
//!
//! Reads only: a pipelined write would wait for the commits queued before it on its connection
//! (each its own WAL flush), so writes keep a connection each (the statement pool, [`super::pool`]).
//! The connections are taken from the statement pool's share of `--db-max-connections`; each is
//! opened on first use, and replaced after it fails for its own sake or a statement on it
//! outlives `--db-timeout` (a silent database must not keep a dead connection in use).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::errors::pg_err;
use super::rows::corrupt;
use super::sql::{Listing, RECORD_READ_CACHED};
use crate::model::{RecordKey, StoreId};
use crate::storage::{Result, StorageError};

/// The `application_name` of these connections, to tell them apart in `pg_stat_activity`.
pub(super) const APPLICATION_NAME: &str = "kvstore-reads";

/// A statement that takes this long is logged (a warning), like sqlx's default threshold.
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// A [`RECORD_READ_CACHED`] row: the access generation, and the record if there is one.
pub(super) struct CachedRead {
    pub generation: i64,
    pub record: Option<RecordRow>,
}

/// A record's columns as [`RECORD_READ_CACHED`] gives them.
pub(super) struct RecordRow {
    pub content_type: String,
    pub size: i64,
    /// The inline body (none when chunked or in the object store).
    pub body: Option<Bytes>,
    pub blob_id: Option<i64>,
    pub version: i64,
    pub object: Option<String>,
}

struct Conn {
    client: Arc<Client>,
    /// The statements of [`Listing::ALL`], in its order.
    listings: Vec<Statement>,
    /// To the connection's [`batch_reads`], which ends when the connection is dropped. Unbounded:
    /// each job is a request waiting for its answer, and the server bounds those.
    reads: mpsc::UnboundedSender<ReadJob>,
}

/// A warm GET's [`RECORD_READ_CACHED`], for [`batch_reads`].
struct ReadJob {
    store: String,
    key: String,
    reply: oneshot::Sender<std::result::Result<Option<Row>, tokio_postgres::Error>>,
}

/// Runs the reads handed to one connection, those queued in one turn of the scheduler sent
/// together, until the [`Conn`] goes. Then any read still in flight is dropped: each request
/// waiting for one holds the `Conn`, so none is left to answer.
async fn batch_reads(
    client: Arc<Client>,
    read: Statement,
    mut jobs: mpsc::UnboundedReceiver<ReadJob>,
) {
    let run = |job: ReadJob| {
        let (client, read) = (&client, &read);
        async move {
            let row = client.query_opt(read, &[&job.store, &job.key]).await;
            // The request may have given up waiting (its deadline): nothing to tell then.
            let _ = job.reply.send(row);
        }
    };
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            job = jobs.recv() => {
                let Some(job) = job else { break };
                // Until the other requests ready now have queued theirs (yield_now wakes this
                // task after the scheduler's turn): then all go out in one write.
                tokio::task::yield_now().await;
                in_flight.push(run(job));
                while let Ok(job) = jobs.try_recv() {
                    in_flight.push(run(job));
                }
            }
        }
    }
}

#[derive(Default)]
struct Slot {
    conn: Mutex<Option<Arc<Conn>>>,
    /// Held while opening the slot's connection, so that one opens at a time.
    opening: tokio::sync::Mutex<()>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Conn>> {
        let conn = self.conn.lock().ok()?;
        conn.as_ref().filter(|c| !c.client.is_closed()).cloned()
    }

    /// Forgets `conn` (if still the slot's), which closes it once its statements in flight end.
    fn discard(&self, conn: &Arc<Conn>) {
        if let Ok(mut current) = self.conn.lock() {
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *current = None;
            }
        }
    }
}

pub(super) struct Pipeline {
    config: tokio_postgres::Config,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

impl Pipeline {
    /// `connections` connections to the database of `url`, the first opened now (within
    /// `limit`); `None` when there are none, or when tokio-postgres cannot read the URL or open
    /// that connection — it reads no `PGPASSWORD`, `PGUSER` or `.pgpass`, which sqlx, which has
    /// just connected, does — and the statement pool then reads every record, as before.
    pub async fn open(url: &str, connections: usize, limit: Duration) -> Option<Self> {
        if connections == 0 {
            return None;
        }
        let mut config = match url.parse::<tokio_postgres::Config>() {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(error = %e, "record reads will not be pipelined: the database URL");
                return None;
            }
        };
        config.application_name(APPLICATION_NAME);
        let pipeline = Self {
            config,
            slots: (0..connections).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        };
        let first = timeout_at(Instant::now() + limit, pipeline.connect(&pipeline.slots[0])).await;
        if let Err(e) = first.unwrap_or_else(|_| Err(StorageError::Unavailable("timed out".into())))
        {
            tracing::warn!(error = %e, "record reads will not be pipelined: no connection");
            return None;
        }
        Some(pipeline)
    }

    /// [`RECORD_READ_CACHED`] for `key` of `store`, within `limit` (connecting included).
    pub async fn read_cached(
        &self,
        limit: Duration,
        store: &StoreId,
        key: &RecordKey,
    ) -> Result<CachedRead> {
        let row = self
            .on_connection(limit, RECORD_READ_CACHED, |conn| async move {
                let gone = || StorageError::Unavailable("the pipelined connection closed".into());
                let (reply, answer) = oneshot::channel();
                let job = ReadJob {
                    store: store.as_str().to_owned(),
                    key: key.as_str().to_owned(),
                    reply,
                };
                conn.reads.send(job).map_err(|_| gone())?;
                answer.await.map_err(|_| gone())?.map_err(|e| pg_err(&e))
            })
            .await?;
        let row = row.ok_or_else(|| corrupt("no access generation"))?;
        decode(&row)
    }

    /// The rows of `listing` given `params`, each handed to `each` as it arrives, within `limit`
    /// (connecting included). After `each` fails the rest is left to the connection, which reads
    /// and drops it, and its error is returned.
    pub async fn each_row(
        &self,
        limit: Duration,
        listing: Listing,
        params: &[&(dyn ToSql + Sync)],
        mut each: impl FnMut(&Row) -> Result<()> + Send,
    ) -> Result<()> {
        self.on_connection(limit, listing.sql(), |conn| async move {
            let statement = conn
                .listings
                .get(listing as usize)
                .ok_or_else(|| corrupt("a listing statement not prepared"))?;
            let rows = conn
                .client
                .query_raw(statement, params.iter().copied())
                .await
                .map_err(|e| pg_err(&e))?;
            let mut rows = std::pin::pin!(rows);
            while let Some(row) = rows.try_next().await.map_err(|e| pg_err(&e))? {
                each(&row)?;
            }
            Ok(())
        })
        .await
    }

    /// `op` (which runs `sql`) on the next connection in turn (opened if need be), all within
    /// `limit`. The connection is replaced when `op` finds it unusable
    /// ([`StorageError::Unavailable`]) or does not finish in time. A statement slower than
    /// [`SLOW_STATEMENT`] is logged, as sqlx logs those on the statement pool.
    async fn on_connection<T, F>(
        &self,
        limit: Duration,
        sql: &str,
        op: impl FnOnce(Arc<Conn>) -> F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + limit;
        let late =
            || StorageError::Unavailable(format!("the database did not answer within {limit:?}"));
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let conn = match slot.current() {
            Some(conn) => conn,
            None => timeout_at(deadline, self.connect(slot))
                .await
                .unwrap_or_else(|_| Err(late()))?,
        };
        let started = Instant::now();
        let outcome = timeout_at(deadline, op(conn.clone())).await;
        let elapsed = started.elapsed();
        if elapsed >= SLOW_STATEMENT {
            tracing::warn!(
                ?elapsed,
                statement = sql.split_whitespace().collect::<Vec<_>>().join(" "),
                "slow statement: execution time exceeded alert threshold"
            );
        }
        match outcome {
            Ok(Err(e @ StorageError::Unavailable(_))) => {
                slot.discard(&conn);
                Err(e)
            }
            Ok(result) => result,
            Err(_) => {
                slot.discard(&conn);
                Err(late())
            }
        }
    }

    /// The slot's connection, opened if it has none (or a closed one), its statements prepared.
    async fn connect(&self, slot: &Slot) -> Result<Arc<Conn>> {
        let _opening = slot.opening.lock().await;
        if let Some(conn) = slot.current() {
            return Ok(conn);
        }
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| pg_err(&e))?;
        // The connection's I/O runs as a task of its own; it ends when the client goes.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a pipelined database connection ended");
            }
        });
        // Prepared together: their Parse messages go out in one batch.
        let (read, listings) = tokio::try_join!(
            client.prepare(RECORD_READ_CACHED),
            futures_util::future::try_join_all(
                Listing::ALL
                    .iter()
                    .map(|listing| client.prepare(listing.sql()))
            ),
        )
        .map_err(|e| pg_err(&e))?;
        let client = Arc::new(client);
        let (reads, jobs) = mpsc::unbounded_channel();
        tokio::spawn(batch_reads(client.clone(), read, jobs));
        let conn = Arc::new(Conn {
            client,
            listings,
            reads,
        });
        if let Ok(mut current) = slot.conn.lock() {
            *current = Some(conn.clone());
        }
        Ok(conn)
    }
}

fn decode(row: &tokio_postgres::Row) -> Result<CachedRead> {
    let generation: i64 = row.try_get(0).map_err(corrupt)?;
    let Some(size) = row.try_get::<_, Option<i64>>(2).map_err(corrupt)? else {
        return Ok(CachedRead {
            generation,
            record: None,
        });
    };
    let record = RecordRow {
        content_type: row.try_get(1).map_err(corrupt)?,
        size,
        body: row
            .try_get::<_, Option<&[u8]>>(3)
            .map_err(corrupt)?
            .map(Bytes::copy_from_slice),
        blob_id: row.try_get(4).map_err(corrupt)?,
        version: row.try_get(5).map_err(corrupt)?,
        object: row.try_get(6).map_err(corrupt)?,
    };
    Ok(CachedRead {
        generation,
        record: Some(record),
    })
}
