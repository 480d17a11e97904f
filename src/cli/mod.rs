//! The command line: the clap tree ([`args`], the only reader of `KVSTORE_*` variables) and one
//! module per command or small group of commands, each turning parsed arguments into calls of the
//! services in [`crate::ops`], [`crate::storage`] and the server (`server.rs`), and their results
//! into the lines a person reads. `main.rs` parses, sets up logging and dispatches here.

pub mod args;
pub mod backup;
pub mod copy;
pub mod crawlee;
pub mod fsck;
pub mod serve;
pub mod users;

use std::sync::Arc;

use crate::model::{User, Username};
use crate::storage::{self, StorageError, Store};

use args::DataArgs;

/// How a command ends: `main` prints an error as `error: …` and exits with status 1.
pub type Outcome = Result<(), Box<dyn std::error::Error>>;

/// Opens a data directory or database for a command that must have it to itself (a data
/// directory is locked by a running server), saying so when a server holds it.
async fn open_offline(data: &DataArgs) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    storage::open(&data.backend()).await.map_err(|e| match e {
        StorageError::Locked => format!(
            "{} is in use by a running server; stop it first",
            data.describe()
        )
        .into(),
        other => other.into(),
    })
}

/// Runs `work` on the data directory or database of `data`, opened for this command alone, and
/// closes it whatever `work` returned: a data directory stays locked until it is closed.
async fn offline<T, E>(
    data: &DataArgs,
    work: impl AsyncFnOnce(&Arc<dyn Store>) -> Result<T, E>,
) -> Result<T, Box<dyn std::error::Error>>
where
    E: Into<Box<dyn std::error::Error>>,
{
    let store = open_offline(data).await?;
    let result = work(&store).await;
    store.close().await?;
    result.map_err(Into::into)
}

/// The user named on the command line, on an open backend.
async fn named_user(store: &dyn Store, name: &str) -> Result<User, Box<dyn std::error::Error>> {
    let username = Username::parse(name)?;
    store.user_by_name(&username).await?.ok_or_else(|| {
        format!("there is no user named \"{name}\" (create it with `kvstore users create`)").into()
    })
}
