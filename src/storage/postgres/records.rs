//! Records and keys: listings, reads (inline bodies in one statement, chunked ones from a
//! snapshot of their own), writes, imports and deletes.

use bytes::Bytes;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::access_cache::{count, Outcome};
use super::chunks::{body_budget, free_replaced, missed_chunks, write_chunks, INLINE_MAX};
use super::errors::db_err;
use super::group_commit::{put_records, InlineRecord};
use super::objects::object_of;
use super::pipeline::RecordRow;
use super::rows::{
    corrupt, etag_seed, meta_of, record_row, store_from_row, stored_body, to_i64, to_u64, Columns,
    StoredBody,
};
use super::spool::chunks_to_file;
use super::sql::{
    put_record, record_query, Listing, Outside, DELETE_RECORD, GENERATION, RECORD_READ,
    RECORD_READ_CACHED,
};
use super::PgStore;
use crate::model::{
    now_millis, Authenticated, RecordKey, RecordMeta, ShareAccess, StoreId, TokenHash, User,
    UserId, Username,
};
use crate::storage::{
    AccessStamp, BodyInput, BodyOutput, IfCurrent, KeyListQuery, KeyPage, Record, RecordRead,
    RecordStore, RecordWrite, Result, WriteOutcome,
};

impl PgStore {
    /// The record a [`RECORD_READ`] or [`RECORD_READ_CACHED`] row found, if any; a chunked body
    /// is read from its own snapshot.
    async fn record_of_row(
        &self,
        store: &StoreId,
        key: &RecordKey,
        row: &PgRow,
    ) -> Result<Option<Record>> {
        match record_row(row)? {
            Some(row) => self.record_of(store, key, row).await,
            None => Ok(None),
        }
    }

    /// The record of a record row (decoded from the statement pool's row, or by the pipelined
    /// reads, [`super::pipeline`]): its body inline, in the object store, or in chunks read from a
    /// snapshot of their own.
    async fn record_of(
        &self,
        store: &StoreId,
        key: &RecordKey,
        row: RecordRow,
    ) -> Result<Option<Record>> {
        let meta = RecordMeta {
            key: key.clone(),
            size: to_u64(row.size),
            content_type: row.content_type,
            version: etag_seed(row.version),
        };
        if let Some(name) = row.object {
            return self.object_record(meta, &name).map(Some);
        }
        if row.blob_id.is_some() {
            return self.record_get(store, key).await;
        }
        Ok(Some(Record {
            meta,
            body: BodyOutput::Bytes(row.body.unwrap_or_default()),
        }))
    }

    pub(super) async fn keys_list_impl(
        &self,
        store: &StoreId,
        query: &KeyListQuery,
    ) -> Result<Option<KeyPage>> {
        // Each statement within `--db-timeout` (a pipelined one bounds its own, so that a
        // connection it outlives is replaced).
        if self.store_get(store).await?.is_none() {
            return Ok(None);
        }
        let Some(range) = KeyRange::of(store, query) else {
            return Ok(Some(KeyPage::default()));
        };
        let mut page = PageRows::new(query.limit, true);
        self.page_rows(range.listing(false), Some(&range), &mut page)
            .await?;
        Ok(Some(page.page))
    }

    /// The rows of `listing` over `range` (none for [`Listing::NoneCached`]) into `page`: on a
    /// pipelined connection when there are some ([`super::pipeline`]), else on the statement
    /// pool; within `--db-timeout` either way.
    async fn page_rows(
        &self,
        listing: Listing,
        range: Option<&KeyRange<'_>>,
        page: &mut PageRows,
    ) -> Result<()> {
        if let Some(pipeline) = &self.pipeline {
            let params = range.map(KeyRange::params).unwrap_or_default();
            return pipeline
                .each_row(self.op_timeout, listing, &params, |row| page.push(row))
                .await;
        }
        self.bounded(self.op_timeout, async {
            let statement = sqlx::query(listing.sql());
            let statement = match range {
                Some(range) => range.bind(statement),
                None => statement,
            };
            self.each_row(statement, |row| page.push(row)).await
        })
        .await
    }

    /// [`RecordStore::keys_read`]: from the caches and one statement ([`KEYS_AFTER_CACHED`])
    /// when they hold the caller, the store and the share and the generation has not moved since;
    /// otherwise the full path, [`Self::record_read_uncached`] then [`Self::keys_list_impl`].
    ///
    /// [`RecordStore::keys_read`]: crate::storage::RecordStore::keys_read
    /// [`KEYS_AFTER_CACHED`]: super::sql::KEYS_AFTER_CACHED
    pub(super) async fn keys_read_impl(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        query: &KeyListQuery,
    ) -> Result<(RecordRead, Option<KeyPage>)> {
        let Some(cached) = self.access.lookup(token, store) else {
            count(Outcome::Miss);
            return self.keys_read_uncached(token, store, query).await;
        };
        let range = KeyRange::of(store, query);
        // The key and size of each record: all a listing shows.
        let mut page = PageRows::new(query.limit, false);
        let listing = range
            .as_ref()
            .map_or(Listing::NoneCached, |range| range.listing(true));
        self.page_rows(listing, range.as_ref(), &mut page).await?;
        let Some(generation) = page.generation else {
            return Err(corrupt("no access generation"));
        };
        if generation != cached.generation {
            count(Outcome::Stale);
            return self.keys_read_uncached(token, store, query).await;
        }
        count(Outcome::Hit);
        let page = page.page;
        let read = cached.into_read(None);
        Ok((read, Some(page)))
    }

    async fn keys_read_uncached(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        query: &KeyListQuery,
    ) -> Result<(RecordRead, Option<KeyPage>)> {
        let read = self.record_read_uncached(token, store, None).await?;
        let keys = match read.store {
            Some(_) => self.keys_list_impl(store, query).await?,
            None => None,
        };
        Ok((read, keys))
    }

    pub(super) async fn record_read_impl(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        key: Option<&RecordKey>,
    ) -> Result<RecordRead> {
        let Some(cached) = self.access.lookup(token, store) else {
            count(Outcome::Miss);
            return self.record_read_uncached(token, store, key).await;
        };
        if let (Some(key), Some(pipeline)) = (key, &self.pipeline) {
            let read = pipeline.read_cached(self.op_timeout, store, key).await?;
            if read.generation != cached.generation {
                count(Outcome::Stale);
                return self.record_read_uncached(token, store, Some(key)).await;
            }
            count(Outcome::Hit);
            let record = match read.record {
                Some(row) => self.record_of(store, key, row).await?,
                None => None,
            };
            return Ok(cached.into_read(record));
        }
        let row = self
            .bounded(self.op_timeout, async {
                match key {
                    Some(key) => {
                        self.row(
                            sqlx::query(RECORD_READ_CACHED)
                                .bind(store.as_str())
                                .bind(key.as_str()),
                        )
                        .await
                    }
                    None => self.row(sqlx::query(GENERATION)).await,
                }
            })
            .await?;
        if row.try_get::<i64, _>("generation").map_err(db_err)? != cached.generation {
            // Something an access check reads changed since the entries were filled.
            count(Outcome::Stale);
            return self.record_read_uncached(token, store, key).await;
        }
        count(Outcome::Hit);
        let record = match key {
            Some(key) => self.record_of_row(store, key, &row).await?,
            None => None,
        };
        Ok(cached.into_read(record))
    }

    /// [`Self::record_read_impl`] without the caches, filling them.
    async fn record_read_uncached(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        key: Option<&RecordKey>,
    ) -> Result<RecordRead> {
        let row = self
            .bounded(self.op_timeout, async {
                self.row(
                    sqlx::query(RECORD_READ)
                        .bind(store.as_str())
                        .bind(key.map(RecordKey::as_str))
                        .bind(token.map(|t| t.0.to_vec())),
                )
                .await
            })
            .await?;
        let caller = match row.try_get::<Option<String>, _>("u_id").map_err(db_err)? {
            Some(id) => Some(Authenticated {
                user: User {
                    id: UserId::parse(&id).ok_or_else(|| corrupt("user id"))?,
                    username: Username::parse(
                        &row.try_get::<String, _>("u_username").map_err(db_err)?,
                    )
                    .map_err(corrupt)?,
                    created_at: to_u64(row.try_get("u_created_at").map_err(db_err)?),
                    is_admin: row.try_get("u_is_admin").map_err(db_err)?,
                    disabled: false,
                },
                read_only: row.try_get("t_read_only").map_err(db_err)?,
            }),
            None => None,
        };
        if row
            .try_get::<Option<String>, _>("id")
            .map_err(db_err)?
            .is_none()
        {
            return Ok(RecordRead {
                caller,
                ..RecordRead::default()
            });
        }
        let info = store_from_row(&row)?;
        let share = row
            .try_get::<Option<String>, _>("share_access")
            .map_err(db_err)?
            .map(|a| ShareAccess::parse(&a).map_err(corrupt))
            .transpose()?;
        let generation: i64 = row.try_get("generation").map_err(db_err)?;
        self.access
            .fill(generation, token, caller.as_ref(), &info, share);
        let record = if let Some(key) = key {
            self.record_of_row(store, key, &row).await?
        } else {
            None
        };
        Ok(RecordRead {
            caller,
            store: Some(info),
            share,
            record,
            // Summing the counter shards would cost every write's access check.
            counters_exact: false,
            unconfirmed: None,
        })
    }

    pub(super) async fn record_get_impl(
        &self,
        store: &StoreId,
        key: &RecordKey,
    ) -> Result<Option<Record>> {
        // One statement is its own snapshot: enough for a record kept inline, the common case.
        let row = self
            .bounded(self.op_timeout, async {
                self.maybe_row(record_query(store, key)).await
            })
            .await?;
        if let Some(row) = &row {
            // An object is immutable: the row names the version it read, whole.
            if let Some(name) = object_of(row)? {
                return self.record_of_object(key, row, &name).map(Some);
            }
        }
        let size = match &row {
            None => return Ok(None),
            Some(row)
                if row
                    .try_get::<Option<i64>, _>("blob_id")
                    .map_err(db_err)?
                    .is_none() =>
            {
                let body: Option<Vec<u8>> = row.try_get("body").map_err(db_err)?;
                return Ok(Some(Record {
                    meta: meta_of(key, row)?,
                    body: BodyOutput::Bytes(Bytes::from(body.unwrap_or_default())),
                }));
            }
            Some(row) => to_u64(row.try_get("size").map_err(db_err)?),
        };
        // Room for the copy first, so that no transaction stays open while waiting for it.
        let mut room = self.read_spools.reserve(size, self.op_timeout).await?;
        // A chunked body: the row and its chunks from one snapshot, so that a concurrent
        // overwrite is never mixed in.
        let (mut txn, row) = self
            .bounded(self.op_timeout, async {
                // The isolation level goes with BEGIN itself: a separate SET TRANSACTION failed
                // (500) on connections that a cancelled request had returned mid-transaction.
                let mut txn = self
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await
                    .map_err(db_err)?;
                let row = record_query(store, key)
                    .fetch_optional(&mut *txn)
                    .await
                    .map_err(db_err)?;
                Ok((txn, row))
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if let Some(name) = object_of(&row)? {
            // Overwritten in between by a body in the object store.
            drop((txn, room));
            return self.record_of_object(key, &row, &name).map(Some);
        }
        let meta = meta_of(key, &row)?;
        let body = match stored_body(&row)? {
            StoredBody::Inline(bytes) => BodyOutput::Bytes(bytes),
            StoredBody::Chunked(blob_id) => {
                if room.len != meta.size {
                    // Overwritten in between: account for the body actually read.
                    drop(room);
                    room = self.read_spools.reserve(meta.size, self.op_timeout).await?;
                }
                let budget = body_budget(self.op_timeout, meta.size);
                let file = self
                    .bounded(budget, async {
                        chunks_to_file(&mut txn, blob_id, self.spool.path(), Some(room)).await
                    })
                    .await?;
                BodyOutput::File(file)
            }
        };
        self.bounded(self.op_timeout, async {
            txn.commit().await.map_err(db_err)
        })
        .await?;
        Ok(Some(Record { meta, body }))
    }

    pub(super) async fn record_meta_impl(
        &self,
        store: &StoreId,
        key: &RecordKey,
    ) -> Result<Option<RecordMeta>> {
        self.bounded(self.op_timeout, async move {
            let row = self
                .maybe_row(
                    sqlx::query(
                        "SELECT r.content_type, r.size, r.version
                         FROM records r JOIN stores s ON s.id = r.store_id AND NOT s.deleted
                         WHERE r.store_id = $1 AND r.key = $2",
                    )
                    .bind(store.as_str())
                    .bind(key.as_str()),
                )
                .await?;
            row.map(|row| meta_of(key, &row)).transpose()
        })
        .await
    }

    /// One record of [`Self::records_write_impl`]: a body kept inline with the next group of PUTs
    /// ([`group_commit`]), a chunked one in a transaction with its chunks ([`PUT_RECORD`]), one
    /// for the object store uploaded first ([`Self::record_put_object`]). With `generation` (the
    /// access generation the caller's access was decided under; not for the object store),
    /// nothing is written when it moved: `None` comes back.
    ///
    /// [`group_commit`]: super::group_commit
    /// [`PUT_RECORD`]: super::sql::PUT_RECORD
    async fn write_one(
        &self,
        store: &StoreId,
        record: RecordWrite,
        generation: Option<i64>,
    ) -> Result<Option<WriteOutcome>> {
        let RecordWrite {
            key,
            content_type,
            body,
            version,
        } = record;
        let (key, content_type) = (&key, content_type.as_str());
        if let Some(bodies) = self
            .objects
            .as_ref()
            .filter(|_| self.goes_to_objects(body.len()))
        {
            return self
                .record_put_object(bodies, store, key, content_type, body, version)
                .await
                .map(Some);
        }
        if body.len() <= INLINE_MAX {
            let body = body.to_bytes().await?;
            let record = InlineRecord {
                key: key.clone(),
                content_type: content_type.to_owned(),
                body,
                version,
            };
            return self.puts.put(store, record, generation).await;
        }
        let budget = body_budget(self.op_timeout, body.len());
        self.bounded(budget, async move {
            let size = body.len();
            // Chunks first, in the same transaction; they vanish with it if it fails.
            let mut txn = self.begin().await?;
            let blob_id = write_chunks(&mut txn, body).await?;
            let body = Outside::Chunks(blob_id);
            let row = put_record(store, key, content_type, size, body, version, generation)
                .fetch_one(&mut *txn)
                .await
                .map_err(db_err)?;
            if row.try_get::<i64, _>("written").map_err(db_err)? == 0 {
                // The store is gone (deleted while the body was being written), or the
                // generation moved: the chunks go with the transaction rather than staying
                // behind with no record.
                txn.rollback().await.map_err(db_err)?;
            } else {
                let missed = missed_chunks(&row)?;
                if !missed.is_empty() {
                    free_replaced(&mut *txn, &missed).await.map_err(db_err)?;
                }
                txn.commit().await.map_err(db_err)?;
            }
            if !row.try_get::<bool, _>("current").map_err(db_err)? {
                return Ok(None);
            }
            Ok(Some(
                if row.try_get::<i64, _>("written").map_err(db_err)? == 1 {
                    WriteOutcome::Written
                } else {
                    WriteOutcome::StoreMissing
                },
            ))
        })
        .await
    }

    /// [`RecordStore::record_read_for_write`]: the caches' answer, if they have one, without a
    /// round trip; the write confirms it (see [`Self::record_put_if_current_impl`]).
    ///
    /// [`RecordStore::record_read_for_write`]: crate::storage::RecordStore::record_read_for_write
    pub(super) async fn record_read_for_write_impl(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
    ) -> Result<RecordRead> {
        let Some(cached) = self.access.lookup(token, store) else {
            count(Outcome::Miss);
            return self.record_read_uncached(token, store, None).await;
        };
        Ok(RecordRead {
            caller: cached.caller,
            store: Some(cached.store),
            share: cached.share,
            record: None,
            counters_exact: false,
            unconfirmed: Some(AccessStamp(cached.generation)),
        })
    }

    /// A PUT whose access was decided under `stamp`: with the body in memory, the check and the
    /// write in one statement (its group's [`PUT_RECORDS`], or a chunked body's [`PUT_RECORD`]); a
    /// body spooled to a file or bound for the object store (written in several steps) after a
    /// [`GENERATION`] check.
    ///
    /// [`PUT_RECORDS`]: super::sql::PUT_RECORDS
    /// [`PUT_RECORD`]: super::sql::PUT_RECORD
    pub(super) async fn record_put_if_current_impl(
        &self,
        stamp: Option<AccessStamp>,
        store: &StoreId,
        key: &RecordKey,
        content_type: &str,
        body: BodyInput,
    ) -> Result<IfCurrent<BodyInput>> {
        let record = |body| RecordWrite {
            key: key.clone(),
            content_type: content_type.to_owned(),
            body,
            version: rand::random(),
        };
        let Some(AccessStamp(generation)) = stamp else {
            let written = self.write_one(store, record(body), None).await?;
            return Ok(IfCurrent::Done(done(written)));
        };
        let kept = match &body {
            BodyInput::Bytes(bytes) if !self.goes_to_objects(body.len()) => Some(bytes.clone()),
            _ => None,
        };
        let Some(kept) = kept else {
            if !self.generation_is(generation).await? {
                return Ok(IfCurrent::Stale(body));
            }
            let written = self.write_one(store, record(body), None).await?;
            return Ok(IfCurrent::Done(done(written)));
        };
        match self
            .write_one(store, record(body), Some(generation))
            .await?
        {
            Some(written) => {
                count(Outcome::Hit);
                Ok(IfCurrent::Done(written))
            }
            None => {
                count(Outcome::Stale);
                Ok(IfCurrent::Stale(BodyInput::Bytes(kept)))
            }
        }
    }

    /// Whether the access generation is still `generation` (counted as a cache hit or stale).
    async fn generation_is(&self, generation: i64) -> Result<bool> {
        let row = self
            .bounded(self.op_timeout, async {
                self.row(sqlx::query(GENERATION)).await
            })
            .await?;
        let current = row.try_get::<i64, _>("generation").map_err(db_err)? == generation;
        count(if current {
            Outcome::Hit
        } else {
            Outcome::Stale
        });
        Ok(current)
    }

    /// The write path: a single record (a PUT) through [`Self::write_one`]; a batch's inline
    /// records in one statement ([`put_records`]), then its chunked ones one at a time.
    pub(super) async fn records_write_impl(
        &self,
        store: &StoreId,
        mut records: Vec<RecordWrite>,
    ) -> Result<WriteOutcome> {
        if records.len() == 1 {
            if let Some(record) = records.pop() {
                return self.write_one(store, record, None).await.map(done);
            }
        }
        // The last of several records with one key wins, as if they were written in turn (one
        // statement cannot upsert a row twice).
        let mut latest = std::collections::HashMap::with_capacity(records.len());
        for record in records {
            latest.insert(record.key.to_string(), record);
        }
        let (large, small): (Vec<_>, Vec<_>) = latest
            .into_values()
            .partition(|r| r.body.len() > INLINE_MAX || self.goes_to_objects(r.body.len()));
        let mut inline = Vec::with_capacity(small.len());
        for record in small {
            inline.push(InlineRecord {
                key: record.key,
                content_type: record.content_type,
                body: record.body.to_bytes().await?,
                version: record.version,
            });
        }
        // One statement even when every record is large: it says whether the store exists.
        let written = put_records(&self.statements, self.op_timeout, store, &inline, None).await?;
        if done(written) == WriteOutcome::StoreMissing {
            return Ok(WriteOutcome::StoreMissing);
        }
        for record in large {
            if done(self.write_one(store, record, None).await?) == WriteOutcome::StoreMissing {
                return Ok(WriteOutcome::StoreMissing);
            }
        }
        Ok(WriteOutcome::Written)
    }

    pub(super) async fn record_delete_impl(
        &self,
        store: &StoreId,
        key: &RecordKey,
        stamp: Option<AccessStamp>,
    ) -> Result<IfCurrent<()>> {
        let generation = stamp.map(|AccessStamp(g)| g);
        self.bounded(self.op_timeout, async move {
            let row = self
                .row(
                    sqlx::query(DELETE_RECORD)
                        .bind(store.as_str())
                        .bind(key.as_str())
                        .bind(to_i64(now_millis()))
                        .bind(generation),
                )
                .await?;
            self.free_missed(&row).await?;
            if !row.try_get::<bool, _>("current").map_err(db_err)? {
                count(Outcome::Stale);
                return Ok(IfCurrent::Stale(()));
            }
            if generation.is_some() {
                count(Outcome::Hit);
            }
            let exists: i64 = row.try_get("store_exists").map_err(db_err)?;
            Ok(IfCurrent::Done(if exists == 1 {
                WriteOutcome::Written
            } else {
                WriteOutcome::StoreMissing
            }))
        })
        .await
    }
}

/// The outcome of a write given no generation: always current, so always `Some`.
fn done(written: Option<WriteOutcome>) -> WriteOutcome {
    written.unwrap_or(WriteOutcome::StoreMissing)
}

/// The bounds of a key listing's range scan; `None` when no key can match.
struct KeyRange<'q> {
    store: &'q str,
    start: &'q str,
    /// The prefix and the bound every key with it sorts below.
    prefix: Option<(&'q str, String)>,
    limit: i64,
}

impl<'q> KeyRange<'q> {
    fn of(store: &'q StoreId, query: &'q KeyListQuery) -> Option<Self> {
        // Keys hold only [a-zA-Z0-9!\-_.'()], so a prefix with any other character matches
        // nothing, and every key starting with the prefix sorts below prefix || '~'.
        if !query.prefix.bytes().all(crate::model::is_key_byte) {
            return None;
        }
        // PostgreSQL text cannot hold NUL; a start key is compared up to it without changing the
        // result, since no key contains a byte below '!'.
        let start = query
            .exclusive_start_key
            .as_deref()
            .map(|s| s.split('\0').next().unwrap_or(""))
            .unwrap_or("");
        let prefix = (!query.prefix.is_empty())
            .then(|| (query.prefix.as_str(), format!("{}~", query.prefix)));
        // One more than the page, to know whether more follow.
        let limit = i64::try_from(query.limit)
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        Some(KeyRange {
            store: store.as_str(),
            start,
            prefix,
            limit,
        })
    }

    /// The statement of this range: the full path's, or (`cached`) the one that reads the
    /// access generation with the page.
    fn listing(&self, cached: bool) -> Listing {
        match (&self.prefix, cached) {
            (None, false) => Listing::After,
            (Some(_), false) => Listing::InPrefix,
            (None, true) => Listing::AfterCached,
            (Some(_), true) => Listing::InPrefixCached,
        }
    }

    /// The parameters of [`Self::listing`]'s statement: (store, start, limit) or, with a prefix,
    /// (store, start, prefix, bound, limit).
    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        match &self.prefix {
            None => vec![&self.store, &self.start, &self.limit],
            Some((prefix, bound)) => vec![&self.store, &self.start, prefix, bound, &self.limit],
        }
    }

    /// [`Self::params`] bound to `statement`, for the statement pool.
    fn bind(
        &'q self,
        statement: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let statement = statement.bind(self.store).bind(self.start);
        let statement = match &self.prefix {
            None => statement,
            Some((prefix, bound)) => statement.bind(*prefix).bind(bound.as_str()),
        };
        statement.bind(self.limit)
    }
}

/// A page of keys decoded row by row as the rows arrive ([`PgStore::page_rows`]) from the columns
/// `key, size` and, with `meta`, `content_type, version` (the full path's listing); a row without
/// a key is the cached listings' last, with the access generation in the third column
/// ([`KEYS_AFTER_CACHED`]), whose other rows leave the content type empty and the version 0. The
/// statements ask for one row more than `limit`: if it comes, the page is truncated.
///
/// [`KEYS_AFTER_CACHED`]: super::sql::KEYS_AFTER_CACHED
struct PageRows {
    meta: bool,
    limit: usize,
    generation: Option<i64>,
    page: KeyPage,
}

impl PageRows {
    fn new(limit: usize, meta: bool) -> Self {
        PageRows {
            meta,
            limit,
            generation: None,
            page: KeyPage {
                // The API asks for at most 1000 keys a page.
                items: Vec::with_capacity(limit.min(1000)),
                is_truncated: false,
            },
        }
    }

    /// One row, from the statement pool or a pipelined connection alike.
    fn push(&mut self, row: &impl Columns) -> Result<()> {
        let Some(key) = row.text(0)? else {
            self.generation = Some(row.int8(2)?);
            return Ok(());
        };
        let items = &mut self.page.items;
        if items.len() == self.limit {
            self.page.is_truncated = true;
            return Ok(());
        }
        let (content_type, version) = if self.meta {
            let content_type = row.text(2)?.ok_or_else(|| corrupt("no content type"))?;
            (content_type.to_owned(), etag_seed(row.int8(3)?))
        } else {
            (String::new(), 0)
        };
        items.push(RecordMeta {
            key: RecordKey::parse(key).map_err(corrupt)?,
            size: to_u64(row.int8(1)?),
            content_type,
            version,
        });
        Ok(())
    }
}
