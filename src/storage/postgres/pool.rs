//! The PostgreSQL backend's pool for single statements run outside any transaction: the hot path
//! (record reads and writes, token and store lookups).
//!
//! sqlx's own pool sends a Sync and waits for the answer on every connection given back
//! (`return_to_pool` in sqlx-core 0.8, not configurable), to flush what a dropped transaction
//! left behind: as many messages to the database as the statement itself. A connection that only
//! ever runs single statements has nothing like that to flush. A statement cut short (its future
//! dropped, say by a timeout) either left bytes unsent — the connection is then discarded, so that
//! a write its caller gave up on is never sent later — or left an answer unread, which sqlx reads
//! and drops before the connection's next statement. A statement that failed for the connection's
//! sake (I/O, protocol, the server ending the session) closes the connection instead of giving it
//! back (see [`super`]). Transactions keep using sqlx's pool.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

use super::errors::settle;
use crate::storage::{Result, StorageError};

pub type StatementPool = managed::Pool<Manager>;
pub type PooledConnection = managed::Object<Manager>;

pub struct Manager {
    options: PgConnectOptions,
    /// A connection idle longer than this is pinged before use: the database may have dropped it.
    ping_if_idle_for: Duration,
}

impl managed::Manager for Manager {
    type Type = PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> std::result::Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(&self.options).await
    }

    async fn recycle(
        &self,
        conn: &mut PgConnection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if conn.should_flush() || conn.is_in_transaction() {
            return Err(RecycleError::message("its last statement was cut short"));
        }
        if metrics.last_used() > self.ping_if_idle_for {
            conn.ping().await?;
        }
        Ok(())
    }
}

/// A pool of at most `max_size` connections; a request waits at most `wait` for one.
pub fn build(
    options: PgConnectOptions,
    max_size: usize,
    wait: Duration,
    ping_if_idle_for: Duration,
) -> Result<StatementPool> {
    let manager = Manager {
        options,
        ping_if_idle_for,
    };
    managed::Pool::builder(manager)
        .max_size(max_size.max(1))
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StorageError::Engine(format!("connection pool: {e}")))
}

/// What a failure to get a connection means for the request: the database cannot be reached
/// (connecting or pinging failed) or is too busy; retryable either way.
pub fn pool_err(e: managed::PoolError<sqlx::Error>) -> StorageError {
    match e {
        managed::PoolError::Closed => StorageError::Closed,
        managed::PoolError::Timeout(_) => {
            StorageError::Unavailable("no database connection became free in time".into())
        }
        other => StorageError::Unavailable(format!("no database connection: {other}")),
    }
}

/// Runs `query`, which returns one row, on a connection of `statements`; the connection goes back
/// (or is closed, see [`settle`]) as soon as the row is read.
pub(super) async fn one_row(
    statements: &StatementPool,
    query: super::PgQuery<'_>,
) -> Result<sqlx::postgres::PgRow> {
    let mut conn = statements.get().await.map_err(pool_err)?;
    let result = query.fetch_one(&mut *conn).await;
    settle(conn, result)
}
