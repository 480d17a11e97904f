//! `kvstore import` / `kvstore export`: a user's stores from and to Crawlee storage folders,
//! through [`crate::ops::crawlee`], on a data directory or database no server holds.

use super::args::{ExportArgs, ImportArgs};
use super::{named_user, offline, Outcome};
use crate::model::StoreName;

pub async fn import(args: ImportArgs) -> Outcome {
    let report = offline(&args.data, async |store| {
        let owner = named_user(&**store, &args.user).await?;
        Ok::<_, Box<dyn std::error::Error>>(
            crate::ops::crawlee::import(&**store, &args.dir, &owner, !args.quiet).await?,
        )
    })
    .await?;
    for r in &report.rejected {
        eprintln!("not imported: {}/{}: {}", r.store, r.item, r.reason);
    }
    println!(
        "Imported {} records ({} bytes) into {} stores of {}; {} not imported.",
        report.records,
        report.bytes,
        report.stores,
        args.user,
        report.rejected.len()
    );
    Ok(())
}

pub async fn export(args: ExportArgs) -> Outcome {
    let only = args
        .stores
        .iter()
        .map(|n| StoreName::parse(n))
        .collect::<Result<Vec<_>, _>>()?;
    let report = offline(&args.data, async |store| {
        let owner = named_user(&**store, &args.user).await?;
        Ok::<_, Box<dyn std::error::Error>>(
            crate::ops::crawlee::export(
                &**store,
                &args.dir,
                &owner,
                &only,
                args.layout,
                !args.quiet,
            )
            .await?,
        )
    })
    .await?;
    println!(
        "Exported {} records ({} bytes) from {} stores to {}.",
        report.records,
        report.bytes,
        report.stores,
        args.dir.join("key_value_stores").display()
    );
    Ok(())
}
