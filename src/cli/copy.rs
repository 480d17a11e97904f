//! `kvstore copy`: everything from one backend to another, through [`crate::ops::copy`].

use super::args::CopyArgs;
use super::Outcome;
use crate::storage;

pub async fn copy(args: CopyArgs) -> Outcome {
    let (source, target) = (args.source()?, args.target()?);
    let from = storage::open(&source).await?;
    let to = storage::open(&target).await?;
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
