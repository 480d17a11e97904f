//! How sqlx errors become storage errors: retryable (503) or not, and when a pooled connection
//! is closed rather than given back.

use super::pool::PooledConnection;
use crate::storage::{Result, StorageError};

/// Passes a statement's result on. A connection that failed for its own sake (I/O, protocol, the
/// server ending the session) is closed rather than given back, where it would fail again.
pub(super) fn settle<T>(conn: PooledConnection, result: sqlx::Result<T>) -> Result<T> {
    result.map_err(|e| {
        let e = db_err(e);
        if matches!(e, StorageError::Unavailable(_)) {
            drop(deadpool::managed::Object::take(conn));
        }
        e
    })
}

pub(super) fn db_err(e: sqlx::Error) -> StorageError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StorageError::Unavailable(e.to_string())
        }
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
            StorageError::Unavailable(e.to_string())
        }
        // SQLSTATE 53100 is disk_full: the same clear 507 as on the embedded engine.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("53100") => StorageError::Full,
        // The database is going away or cannot take us now (a connection it terminated, a
        // shutdown, a restart, too many connections): retryable, so 503 rather than 500.
        sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_unavailable_state) => {
            StorageError::Unavailable(db.to_string())
        }
        other => StorageError::Engine(other.to_string()),
    }
}

/// [`db_err`] for tokio-postgres (the pipelined reads, [`super::pipeline`]): an error the database
/// sent is mapped by its SQLSTATE as there; any other (connecting, I/O, the connection closed) means
/// the database cannot be reached now.
pub(super) fn pg_err(e: &tokio_postgres::Error) -> StorageError {
    match e.as_db_error().map(|db| db.code().code()) {
        Some("53100") => StorageError::Full,
        Some(code) if !is_unavailable_state(code) => StorageError::Engine(e.to_string()),
        _ => StorageError::Unavailable(e.to_string()),
    }
}

/// SQLSTATEs that mean "not now" rather than "wrong": connection exceptions (class 08),
/// too_many_connections, admin/crash shutdown and cannot_connect_now.
fn is_unavailable_state(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03")
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Runs `op`, failing with [`StorageError::Unavailable`] when it takes longer than `limit`. A
/// timed-out transaction is dropped, which rolls it back (or the connection is discarded).
pub(super) async fn within<T>(
    limit: std::time::Duration,
    op: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
        Err(StorageError::Unavailable(format!(
            "the database did not answer within {limit:?}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::is_unavailable_state;

    #[test]
    fn a_database_going_away_is_unavailable_not_an_engine_error() {
        // pg_terminate_backend, shutdown, crash, starting up, connection failure, too many clients.
        for code in ["57P01", "57P02", "57P03", "08006", "08003", "53300"] {
            assert!(is_unavailable_state(code), "{code}");
        }
        // Errors in the request or the data stay what they are.
        for code in ["23505", "42P01", "53100", "22001", "40001"] {
            assert!(!is_unavailable_state(code), "{code}");
        }
    }
}
