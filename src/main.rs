//! The `kvstore` binary: parse the command line, set up logging, and dispatch to the command's
//! module in [`kvstore::cli`].

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::EnvFilter;

use kvstore::cli::args::{Cli, Command, LogFormat};
use kvstore::cli::{backup, copy, crawlee, fsck, serve, users};

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
    // Only the server logs; the other commands speak through their output lines.
    if let Command::Serve(args) = &cli.command {
        init_tracing(args.log_format);
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::serve(args).await,
            Command::Users(cmd) => users::users(cmd).await,
            Command::Share(args) => users::share(args).await,
            Command::Copy(args) => copy::copy(args).await,
            Command::Backup(args) => backup::backup(args).await,
            Command::Restore(args) => backup::restore(args).await,
            Command::Import(args) => crawlee::import(args).await,
            Command::Export(args) => crawlee::export(args).await,
            Command::Fsck(args) => fsck::fsck(args).await,
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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files and journals (and formatting
        // them costs every request span).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let filter = log_filter(std::env::var("KVSTORE_LOG").ok().as_deref());
    match (format, filter) {
        (LogFormat::Text, LogFilter::Targets(f)) => builder.finish().with(f).init(),
        (LogFormat::Text, LogFilter::Env(f)) => builder.with_env_filter(f).init(),
        (LogFormat::Json, LogFilter::Targets(f)) => builder.json().finish().with(f).init(),
        (LogFormat::Json, LogFilter::Env(f)) => builder.json().with_env_filter(f).init(),
    }
}

/// What decides which lines are logged: `KVSTORE_LOG`'s directives, or the default's. Made once
/// at startup and moved into the subscriber, so the variants' sizes do not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum LogFilter {
    /// Directives of targets and levels alone. A `Targets` filter does nothing when a span is
    /// entered or left, where `EnvFilter` takes a lock and a hash lookup each time: sqlx enters
    /// the request span again for every row it reads (twice), 2000 times in a listing of 1000
    /// keys.
    Targets(Targets),
    /// Directives naming spans or fields (`target[span{field=value}]=level`), or spelled in any
    /// way `Targets` might read differently (spaces, say): `EnvFilter`, as before.
    Env(EnvFilter),
}

fn log_filter(directives: Option<&str>) -> LogFilter {
    // The engine (fjall, lsm-tree) logs its routine flushes and rotations at info: warnings and
    // errors only.
    const DEFAULT: &str = "info,tower_http=warn,fjall=warn,lsm_tree=warn";
    let directives = directives
        .filter(|d| EnvFilter::builder().parse(d).is_ok())
        .unwrap_or(DEFAULT);
    let plain = |d: &str| {
        !d.is_empty()
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'='))
    };
    if directives.split(',').all(plain) {
        if let Ok(targets) = directives.parse() {
            return LogFilter::Targets(targets);
        }
    }
    // Parsed above, or the default.
    LogFilter::Env(EnvFilter::new(directives))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_directives_become_a_targets_filter_and_the_rest_an_env_filter() {
        for plain in [
            None,
            Some("debug"),
            Some("info,sqlx=warn"),
            Some("kvstore::api=trace"),
        ] {
            assert!(
                matches!(log_filter(plain), LogFilter::Targets(_)),
                "{plain:?}"
            );
        }
        // Not EnvFilter's syntax (which has no spaces either): the default, as before.
        for invalid in ["info=warn=x", "info, sqlx=warn"] {
            assert!(
                matches!(log_filter(Some(invalid)), LogFilter::Targets(_)),
                "{invalid:?}"
            );
        }
        for other in ["[request]=debug", "info,[request{request_id}]=trace", ""] {
            assert!(
                matches!(log_filter(Some(other)), LogFilter::Env(_)),
                "{other:?}"
            );
        }
    }

    #[test]
    fn a_targets_filter_applies_the_most_specific_target_directive() {
        let d = "info,sqlx=warn,kvstore::api=debug";
        let LogFilter::Targets(targets) = log_filter(Some(d)) else {
            panic!("{d}");
        };
        let levels = [
            tracing::Level::TRACE,
            tracing::Level::DEBUG,
            tracing::Level::INFO,
            tracing::Level::WARN,
        ];
        for (target, lowest) in [
            ("kvstore", tracing::Level::INFO),
            ("sqlx::query", tracing::Level::WARN),
            ("kvstore::api::observe", tracing::Level::DEBUG),
            ("hyper", tracing::Level::INFO),
        ] {
            for level in levels {
                assert_eq!(
                    targets.would_enable(target, &level),
                    level <= lowest,
                    "{target} {level}"
                );
            }
        }
    }
}
