//! `kvstore fsck`: finds (and removes) stored bodies no record points at.

use super::args::FsckArgs;
use super::{offline, Outcome};
use crate::storage;

pub async fn fsck(args: FsckArgs) -> Outcome {
    // No write can be in flight: a data directory is locked against servers, and on PostgreSQL
    // the bodies of writes in flight are not committed (so not seen).
    let check = storage::OrphanCheck {
        remove: !args.dry_run,
        min_age: std::time::Duration::ZERO,
    };
    let report = offline(&args.data, async |store| store.orphans(check).await).await?;
    println!(
        "Found {} orphan bodies ({} bytes) in {}; removed {}.",
        report.bodies,
        report.bytes,
        args.data.describe(),
        report.removed
    );
    Ok(())
}
