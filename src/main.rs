//! The `kvstore` binary: parse the command line, set up logging, and hand over to the library.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use kvstore::config::{
    backend_of, BackupArgs, Cli, Command, CopyArgs, DataArgs, ExportArgs, FsckArgs, ImportArgs,
    LogFormat, RestoreArgs, ServeArgs, ShareArgs, ShareSetting, Target, UsersCommand,
};
use kvstore::model::{ShareAccess, StoreName, Token, User, Username};
use kvstore::ops::admin::{self, Admin};
use kvstore::storage::{self, StorageError};
use kvstore::ServerConfig;

/// mimalloc: the request path allocates and frees many small objects, where glibc's malloc cost
/// a quarter of a GET's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Users(cmd) => users(cmd).await,
            Command::Share(args) => share(args).await,
            Command::Copy(args) => copy(args).await,
            Command::Backup(args) => backup(args).await,
            Command::Restore(args) => restore(args).await,
            Command::Import(args) => import(args).await,
            Command::Export(args) => export(args).await,
            Command::Fsck(args) => fsck(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KVSTORE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files and journals (and formatting
        // them costs every request span).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    init_tracing(args.log_format);
    let store = storage::open(&args.data.backend()).await?;
    let admin_token = args.admin_token.clone().map(Token::from_secret);
    let token_was_given = admin_token.is_some();
    if let Some(token) = storage::ensure_first_user(&*store, admin_token).await? {
        if token_was_given {
            println!("Created the user \"admin\" with the token from KVSTORE_ADMIN_TOKEN.");
        } else {
            println!("Created the user \"admin\". Its token (shown only this once):");
            println!("{}", token.expose());
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(kvstore::tls::load(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let config = ServerConfig {
        public_url: args
            .public_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("{scheme}://{addr}")),
        max_record_bytes: args.max_record_bytes,
        default_general_access: args.default_general_access.into(),
        allow_method_override: args.allow_method_override,
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout.max(1)),
        send_timeout: std::time::Duration::from_secs(args.send_timeout.max(1)),
        max_connections: args.max_connections.max(1),
        cors_origins: args
            .cors_origins
            .into_iter()
            .filter(|o| !o.trim().is_empty())
            .collect(),
        tls,
        unnamed_retention: args.unnamed_retention,
        rate_limit: args.rate_limit,
        access_flush_interval: std::time::Duration::from_secs(5),
        orphan_check_interval: Some(args.orphan_check_interval).filter(|i| !i.is_zero()),
    };
    println!(
        "kvstore {} listening on {scheme}://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    tracing::info!(%addr, storage = %args.data.describe(), "server started");
    kvstore::serve(listener, store, config, shutdown_signal()).await?;
    tracing::info!("server stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The admin operations on the command's target, and the backend to close afterwards.
async fn admin_of(
    target: &Target,
) -> Result<(Box<dyn Admin>, Option<Arc<dyn storage::Store>>), Box<dyn std::error::Error>> {
    match &target.server {
        Some(server) => {
            let token = target
                .token
                .as_deref()
                .ok_or("--server needs an administrator's token (--token or KVSTORE_TOKEN)")?;
            Ok((Box::new(admin::Remote::new(server, token)), None))
        }
        None => {
            let store = open_offline(&target.data).await?;
            Ok((Box::new(admin::Local(store.clone())), Some(store)))
        }
    }
}

async fn users(cmd: UsersCommand) -> Result<(), Box<dyn std::error::Error>> {
    let target = match &cmd {
        UsersCommand::Create { target, .. }
        | UsersCommand::List { target }
        | UsersCommand::Disable { target, .. }
        | UsersCommand::Enable { target, .. }
        | UsersCommand::Delete { target, .. }
        | UsersCommand::RotateToken { target, .. }
        | UsersCommand::AddToken { target, .. } => target.clone(),
    };
    let (admin, store) = admin_of(&target).await?;
    let result = run_users(cmd, &*admin).await;
    if let Some(store) = store {
        store.close().await?;
    }
    result
}

async fn run_users(cmd: UsersCommand, admin: &dyn Admin) -> Result<(), Box<dyn std::error::Error>> {
    let disable = matches!(cmd, UsersCommand::Disable { .. });
    let rotate = matches!(cmd, UsersCommand::RotateToken { .. });
    match cmd {
        UsersCommand::Create {
            name,
            admin: is_admin,
            read_only,
            ..
        } => {
            let issued = admin
                .create_user(&Username::parse(&name)?, is_admin, read_only)
                .await?;
            let kind = if read_only { " read-only" } else { "" };
            println!(
                "Created user \"{}\" (id {}).{kind} Token:",
                issued.user.username, issued.user.id
            );
            println!("{}", issued.token);
        }
        UsersCommand::List { .. } => {
            println!(
                "{:<17}  {:<24}  {:<5}  {:<8}  CREATED",
                "ID", "USERNAME", "ADMIN", "DISABLED"
            );
            for u in admin.users().await? {
                println!(
                    "{:<17}  {:<24}  {:<5}  {:<8}  {}",
                    u.id, u.username, u.is_admin, u.disabled, u.created_at
                );
            }
        }
        UsersCommand::Disable { name, .. } | UsersCommand::Enable { name, .. } => {
            let update = storage::UserUpdate {
                disabled: Some(disable),
                is_admin: None,
            };
            let user = admin.update_user(&Username::parse(&name)?, update).await?;
            let state = if user.disabled { "disabled" } else { "enabled" };
            println!("User \"{}\" is {state}.", user.username);
        }
        UsersCommand::Delete { name, .. } => {
            admin.delete_user(&Username::parse(&name)?).await?;
            println!("Deleted user \"{name}\" with its tokens and stores.");
        }
        UsersCommand::RotateToken {
            name, read_only, ..
        }
        | UsersCommand::AddToken {
            name, read_only, ..
        } => {
            let issued = admin
                .new_token(&Username::parse(&name)?, read_only, rotate)
                .await?;
            let kind = if read_only { "read-only" } else { "full" };
            if rotate {
                println!("Revoked every token of \"{name}\". New {kind} token:");
            } else {
                println!("New {kind} token for \"{name}\":");
            }
            println!("{}", issued.token);
        }
    }
    Ok(())
}

async fn share(args: ShareArgs) -> Result<(), Box<dyn std::error::Error>> {
    let with = Username::parse(&args.with)?;
    let access = match args.access {
        ShareSetting::Read => Some(ShareAccess::Read),
        ShareSetting::Write => Some(ShareAccess::Write),
        ShareSetting::None => None,
    };
    let (admin, store) = admin_of(&args.target).await?;
    let result = admin.share(&args.store, &with, access).await;
    if let Some(store) = store {
        store.close().await?;
    }
    result?;
    match access {
        Some(access) => println!(
            "Shared {} with \"{with}\" ({}).",
            args.store,
            access.as_str()
        ),
        None => println!("{} is no longer shared with \"{with}\".", args.store),
    }
    Ok(())
}

async fn open_offline(
    data: &DataArgs,
) -> Result<std::sync::Arc<dyn storage::Store>, Box<dyn std::error::Error>> {
    storage::open(&data.backend()).await.map_err(|e| match e {
        StorageError::Locked => format!(
            "{} is in use by a running server; stop it first",
            data.describe()
        )
        .into(),
        other => other.into(),
    })
}

async fn copy(args: CopyArgs) -> Result<(), Box<dyn std::error::Error>> {
    let from = storage::open(&backend_of(&args.from)).await?;
    let to = storage::open(&backend_of(&args.to)).await?;
    let report = kvstore::ops::copy::copy_all(&*from, &to, !args.quiet).await;
    from.close().await?;
    to.close().await?;
    let report = report?;
    println!(
        "Copied {} users, {} stores, {} records ({} already there).",
        report.users, report.stores, report.records_copied, report.records_skipped
    );
    Ok(())
}

/// The user named on the command line, on an open backend.
async fn named_user(
    store: &dyn storage::Store,
    name: &str,
) -> Result<User, Box<dyn std::error::Error>> {
    let username = Username::parse(name)?;
    store.user_by_name(&username).await?.ok_or_else(|| {
        format!("there is no user named \"{name}\" (create it with `kvstore users create`)").into()
    })
}

async fn import(args: ImportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let store = open_offline(&args.data).await?;
    let result = async {
        let owner = named_user(&*store, &args.user).await?;
        Ok::<_, Box<dyn std::error::Error>>(
            kvstore::ops::crawlee::import(&*store, &args.dir, &owner, !args.quiet).await?,
        )
    }
    .await;
    store.close().await?;
    let report = result?;
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

async fn export(args: ExportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let only = args
        .stores
        .iter()
        .map(|n| StoreName::parse(n))
        .collect::<Result<Vec<_>, _>>()?;
    let store = open_offline(&args.data).await?;
    let result = async {
        let owner = named_user(&*store, &args.user).await?;
        Ok::<_, Box<dyn std::error::Error>>(
            kvstore::ops::crawlee::export(
                &*store,
                &args.dir,
                &owner,
                &only,
                args.layout,
                !args.quiet,
            )
            .await?,
        )
    }
    .await;
    store.close().await?;
    let report = result?;
    println!(
        "Exported {} records ({} bytes) from {} stores to {}.",
        report.records,
        report.bytes,
        report.stores,
        args.dir.join("key_value_stores").display()
    );
    Ok(())
}

async fn backup(args: BackupArgs) -> Result<(), Box<dyn std::error::Error>> {
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
            let written = kvstore::ops::backup::to_file(&*store, &partial).await;
            store.close().await?;
            written.map(|_| ()).map_err(Into::into)
        }
    };
    let verified = match result {
        Ok(()) => kvstore::ops::backup::verify(&partial)
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
    kvstore::ops::backup::install(&partial, &args.to)?;
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

async fn fsck(args: FsckArgs) -> Result<(), Box<dyn std::error::Error>> {
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

async fn restore(args: RestoreArgs) -> Result<(), Box<dyn std::error::Error>> {
    let store = open_offline(&args.data).await?;
    let restored = kvstore::ops::backup::restore(&store, &args.from, !args.quiet).await;
    store.close().await?;
    let counts = restored?;
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
