//! `kvstore backup` / `kvstore restore`: a backup file written from a data directory or database
//! ([`crate::ops::backup`]) or downloaded from a running server's `GET /v2/admin/backup`, verified
//! before it replaces anything; and restored into an empty backend.

use super::args::{BackupArgs, RestoreArgs};
use super::{offline, open_offline, Outcome};

pub async fn backup(args: BackupArgs) -> Outcome {
    // Written beside the target and renamed once verified: a failed backup never replaces a good one.
    let partial = {
        let mut name = args.to.clone().into_os_string();
        name.push(".partial");
        std::path::PathBuf::from(name)
    };
    let result = match &args.server {
        Some(server) => download_backup(server, args.token.as_deref(), &partial).await,
        None => {
            let store = open_offline(&args.data).await?;
            let written = crate::ops::backup::to_file(&*store, &partial).await;
            store.close().await?;
            written.map(|_| ()).map_err(Into::into)
        }
    };
    let verified = match result {
        Ok(()) => crate::ops::backup::verify(&partial)
            .await
            .map_err(Into::into),
        Err(e) => Err(e),
    };
    let counts = match verified {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    crate::ops::backup::install(&partial, &args.to)?;
    println!(
        "Backed up {} users, {} stores, {} records ({} bytes) to {}.",
        counts.users,
        counts.stores,
        counts.records,
        counts.bytes,
        args.to.display()
    );
    Ok(())
}

/// `backup --server`: streams a running server's backup into `to`. The admin commands talk to a
/// server through [`crate::ops::admin::Remote`]; a backup is a byte stream, not a JSON answer.
async fn download_backup(
    server: &str,
    token: Option<&str>,
    to: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use futures_util::TryStreamExt;
    use tokio::io::AsyncWriteExt;

    let token =
        token.ok_or("--server needs an administrator's token (--token or KVSTORE_TOKEN)")?;
    let url = format!("{}/v2/admin/backup", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("could not reach {url}: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        return Err(format!("{url} answered {status}: {message}").into());
    }
    let mut file = tokio::fs::File::create(to).await?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| format!("the backup stopped arriving: {e}"))?
    {
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> Outcome {
    let counts = offline(&args.data, async |store| {
        crate::ops::backup::restore(store, &args.from, !args.quiet).await
    })
    .await?;
    println!(
        "Restored {} users, {} stores, {} records ({} bytes) into {}.",
        counts.users,
        counts.stores,
        counts.records,
        counts.bytes,
        args.data.describe()
    );
    Ok(())
}
