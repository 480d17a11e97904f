//! `kvstore copy`: everything from one backend to another, through [`crate::ops::copy`].

use super::args::{backend_of, CopyArgs};
use super::Outcome;
use crate::storage;

pub async fn copy(args: CopyArgs) -> Outcome {
    let from = storage::open(&backend_of(&args.from)).await?;
    let to = storage::open(&backend_of(&args.to)).await?;
    let report = crate::ops::copy::copy_all(&*from, &to, !args.quiet).await;
    from.close().await?;
    to.close().await?;
    let report = report?;
    println!(
        "Copied {} users, {} stores, {} records ({} already there).",
        report.users, report.stores, report.records_copied, report.records_skipped
    );
    Ok(())
}
