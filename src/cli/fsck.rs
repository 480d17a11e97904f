//! `kvstore fsck`: finds (and removes) stored bodies no record points at.

use super::args::FsckArgs;
use super::{open_offline, Outcome};
use crate::storage;

pub async fn fsck(args: FsckArgs) -> Outcome {
    let store = open_offline(&args.data).await?;
    // No write can be in flight: a data directory is locked against servers, and on PostgreSQL
    // the bodies of writes in flight are not committed (so not seen).
    let check = storage::OrphanCheck {
        remove: !args.dry_run,
        min_age: std::time::Duration::ZERO,
    };
    let report = store.orphans(check).await;
    store.close().await?;
    let report = report?;
    println!(
        "Found {} orphan bodies ({} bytes) in {}; removed {}.",
        report.bodies,
        report.bytes,
        args.data.describe(),
        report.removed
    );
    Ok(())
}
