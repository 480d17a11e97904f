//! The `kvstore` binary: parse the command line, set up logging, and dispatch to the command's
//! module in [`kvstore::cli`].

use std::process::ExitCode;

use clap::Parser;
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
