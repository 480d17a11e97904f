//! The command line's arguments: one clap tree; every flag also reads a `KVSTORE_*` environment
//! variable. Environment variables are read here and nowhere else.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::GeneralAccess;
use crate::storage::objects::ObjectStoreOptions;
use crate::storage::postgres::PgOptions;
use crate::storage::Backend;

#[derive(Debug, Parser)]
#[command(
    name = "kvstore",
    version,
    about = "A self-hosted key-value store server speaking the Apify API v2"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Manage users and their tokens: on a running server with --server, or directly on a data
    /// directory no server is using, or on PostgreSQL.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Share a store with another user for reading or writing (or stop: --access none).
    Share(ShareArgs),
    /// Copy everything (users, tokens, stores, records) from one backend to another, e.g. from a
    /// data directory to PostgreSQL. Run it again to finish an interrupted copy.
    Copy(CopyArgs),
    /// Load a Crawlee / Apify CLI storage folder (its key_value_stores/) into stores of one user.
    /// Stores keep their names (the default store becomes "default"); records keep keys and
    /// content types. Keys kvstore does not allow are listed and counted, not imported.
    Import(ImportArgs),
    /// Write a consistent backup of everything (users with token hashes, stores, records) to a
    /// file: from a running server with --server and an admin token, or directly from a data
    /// directory (no server running on it) or a PostgreSQL database (at any time).
    Backup(BackupArgs),
    /// Restore a backup file into a new data directory or an empty PostgreSQL database.
    Restore(RestoreArgs),
    /// Find stored bodies that no record points at (left by a crash between storing a body and
    /// committing its record) and remove them; --dry-run only reports. On a data directory no
    /// server may be running; on PostgreSQL it runs beside the servers.
    Fsck(FsckArgs),
    /// Write a user's stores as a Crawlee storage folder (DIR/key_value_stores/<store>/) that
    /// Crawlee and the Apify CLI read.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write (replaced only once the backup is complete and verified).
    #[arg(long)]
    pub to: PathBuf,
    /// Take the backup from this running server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "KVSTORE_SERVER")]
    pub server: Option<String>,
    /// An administrator's token, for --server.
    #[arg(
        long,
        env = "KVSTORE_TOKEN",
        hide_env_values = true,
        requires = "server"
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The storage folder (the one holding key_value_stores/, usually ./storage).
    pub dir: PathBuf,
    /// The user who will own the stores.
    #[arg(long)]
    pub user: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The storage folder to write (key_value_stores/ is created in it).
    pub dir: PathBuf,
    /// Whose stores to export.
    #[arg(long)]
    pub user: String,
    /// Export only this store (repeat for several); default: all the user's stores, unnamed ones
    /// in folders named by their ids.
    #[arg(long = "store", value_name = "NAME")]
    pub stores: Vec<String>,
    /// Which Crawlee writes the folder: crawlee-python 1.x, or crawlee JS / the Apify CLI.
    #[arg(long, value_enum, default_value_t = crate::ops::crawlee::Layout::Python)]
    pub layout: crate::ops::crawlee::Layout,
    #[command(flatten)]
    pub data: DataArgs,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source: a data directory, or a postgres:// URL.
    #[arg(long)]
    pub from: String,
    /// Target: a data directory, or a postgres:// URL.
    #[arg(long)]
    pub to: String,
    /// The source database keeps bodies in this S3-compatible bucket (s3://BUCKET[/PREFIX]), as
    /// its servers' --object-store. Credentials and region come from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_REGION, for both sides.
    #[arg(long, value_name = "S3_URL")]
    pub from_object_store: Option<String>,
    /// The S3 endpoint of --from-object-store; without it, AWS S3.
    #[arg(long, value_name = "URL", requires = "from_object_store")]
    pub from_object_store_endpoint: Option<String>,
    /// Put the target database's bodies of --to-object-store-min-bytes or more into this
    /// S3-compatible bucket (s3://BUCKET[/PREFIX]), as its servers' --object-store.
    #[arg(long, value_name = "S3_URL")]
    pub to_object_store: Option<String>,
    /// The S3 endpoint of --to-object-store; without it, AWS S3.
    #[arg(long, value_name = "URL", requires = "to_object_store")]
    pub to_object_store_endpoint: Option<String>,
    /// Bodies of this many bytes or more go to --to-object-store; smaller ones stay in the
    /// database.
    #[arg(long, value_name = "BYTES", requires = "to_object_store",
        default_value_t = crate::storage::objects::DEFAULT_MIN_BYTES)]
    pub to_object_store_min_bytes: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl CopyArgs {
    /// The source backend.
    pub fn source(&self) -> Result<Backend, String> {
        let objects = self
            .from_object_store
            .as_ref()
            .map(|url| ObjectStoreOptions {
                url: url.clone(),
                endpoint: self.from_object_store_endpoint.clone(),
                min_bytes: crate::storage::objects::DEFAULT_MIN_BYTES,
                gc_grace: COPY_GC_GRACE,
                op_timeout: COPY_OP_TIMEOUT,
            });
        backend_of(&self.from, objects)
    }

    /// The target backend.
    pub fn target(&self) -> Result<Backend, String> {
        let objects = self.to_object_store.as_ref().map(|url| ObjectStoreOptions {
            url: url.clone(),
            endpoint: self.to_object_store_endpoint.clone(),
            min_bytes: self.to_object_store_min_bytes,
            gc_grace: COPY_GC_GRACE,
            op_timeout: COPY_OP_TIMEOUT,
        });
        backend_of(&self.to, objects)
    }
}

/// The grace period of the objects a copy replaces in its target (a repeated copy of a changed
/// record), as `serve --object-store-gc-grace`'s default: servers may be reading them.
const COPY_GC_GRACE: std::time::Duration = std::time::Duration::from_secs(600);
/// How long one object-store request (or one part of a body) of a copy may take.
const COPY_OP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A data directory, or a `postgres://` / `postgresql://` URL, with bodies of the database in
/// `objects` if given (an error for a data directory, which keeps its bodies itself).
pub fn backend_of(location: &str, objects: Option<ObjectStoreOptions>) -> Result<Backend, String> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        Ok(Backend::Postgres {
            url: location.to_owned(),
            options: PgOptions {
                objects,
                ..PgOptions::default()
            },
        })
    } else if objects.is_some() {
        Err(format!(
            "{location} is a data directory, which keeps its bodies itself: an object store goes \
             with a postgres:// URL"
        ))
    } else {
        Ok(Backend::embedded(PathBuf::from(location)))
    }
}

#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Directory of the embedded engine; created if missing. Ignored with --database-url.
    #[arg(long, env = "KVSTORE_DATA_DIR", default_value = "./kvstore-data")]
    pub data_dir: PathBuf,

    /// Free space (bytes) the embedded engine keeps on the data directory's filesystem: below it,
    /// writes that add data fail with 507 while reads and deletes go on. 0: no reserve.
    #[arg(long, env = "KVSTORE_MIN_FREE_DISK", default_value_t = 64 * 1024 * 1024)]
    pub min_free_disk: u64,

    /// Memory (bytes) the embedded engine uses to cache its blocks; the rest of its files is read
    /// through the OS page cache. Bounds the server's memory whatever the number of keys.
    #[arg(long, env = "KVSTORE_CACHE_SIZE", default_value_t = 64 * 1024 * 1024)]
    pub cache_size: u64,

    /// How many key and store listings (and other reads of many blocks) the embedded engine runs
    /// at once, each on a thread of its own; more wait their turn. Default: twice the cores, 4 to
    /// 32.
    #[arg(long, env = "KVSTORE_READ_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub read_threads: Option<u16>,

    /// Use this PostgreSQL database (postgres://user@host:port/db) instead of the embedded engine;
    /// any number of nodes may share it.
    #[arg(long, env = "KVSTORE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Most connections to PostgreSQL this node opens, at least 3 (a quarter of them, at least 2,
    /// for transactions; the rest for single statements).
    #[arg(long, env = "KVSTORE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Seconds a request waits for a PostgreSQL connection before it fails with 503.
    #[arg(long, env = "KVSTORE_DB_ACQUIRE_TIMEOUT", default_value_t = 5)]
    pub db_acquire_timeout: u64,

    /// Seconds one PostgreSQL operation (or one 1 MiB chunk of a body) may take before the request
    /// fails with 503, so that a database that stops answering does not hang requests.
    #[arg(long, env = "KVSTORE_DB_TIMEOUT", default_value_t = 10)]
    pub db_timeout: u64,

    /// Bytes of large (chunked) bodies this node keeps in temporary files for clients still
    /// reading them, so that clients that stop reading cannot fill the disk; past it, such reads
    /// wait up to --db-timeout for room, then answer 503.
    #[arg(long, env = "KVSTORE_DB_MAX_READ_SPOOL", default_value_t = 1024 * 1024 * 1024)]
    pub db_max_read_spool: u64,

    /// With --database-url: keep record bodies of --object-store-min-bytes or more in this
    /// S3-compatible bucket (s3://BUCKET[/PREFIX]) instead of the database. Credentials and
    /// region come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION; without a key,
    /// requests are anonymous.
    #[arg(long, env = "KVSTORE_OBJECT_STORE", requires = "database_url")]
    pub object_store: Option<String>,

    /// The S3 endpoint of --object-store (e.g. http://127.0.0.1:8333 for SeaweedFS, Garage, MinIO
    /// or Ceph); without it, AWS S3.
    #[arg(long, env = "KVSTORE_OBJECT_STORE_ENDPOINT", requires = "object_store")]
    pub object_store_endpoint: Option<String>,

    /// Bodies of this many bytes or more go to --object-store; smaller ones stay in the database.
    #[arg(long, env = "KVSTORE_OBJECT_STORE_MIN_BYTES",
        default_value_t = crate::storage::objects::DEFAULT_MIN_BYTES)]
    pub object_store_min_bytes: u64,

    /// How long an object no record points at any more (overwritten, deleted, or an upload whose
    /// record never committed) is kept before it is removed: reads in flight and uploads still
    /// running must finish within it (e.g. `10m`, `90s`).
    #[arg(long, env = "KVSTORE_OBJECT_STORE_GC_GRACE", value_parser = humantime::parse_duration,
        default_value = "10m")]
    pub object_store_gc_grace: std::time::Duration,
}

impl DataArgs {
    pub fn backend(&self) -> Backend {
        match &self.database_url {
            Some(url) => Backend::Postgres {
                url: url.clone(),
                options: PgOptions {
                    max_connections: self.db_max_connections,
                    acquire_timeout: std::time::Duration::from_secs(self.db_acquire_timeout),
                    op_timeout: std::time::Duration::from_secs(self.db_timeout.max(1)),
                    max_read_spool_bytes: self.db_max_read_spool,
                    objects: self.object_store.as_ref().map(|url| ObjectStoreOptions {
                        url: url.clone(),
                        endpoint: self.object_store_endpoint.clone(),
                        min_bytes: self.object_store_min_bytes,
                        gc_grace: self.object_store_gc_grace,
                        op_timeout: std::time::Duration::from_secs(self.db_timeout.max(1)),
                    }),
                    ..PgOptions::default()
                },
            },
            None => Backend::Embedded {
                dir: self.data_dir.clone(),
                options: crate::storage::embedded::EmbeddedOptions {
                    min_free_bytes: self.min_free_disk,
                    cache_bytes: usize::try_from(self.cache_size).unwrap_or(usize::MAX),
                    // `serve` turns it on (src/cli/serve.rs).
                    collect_orphans_at_open: false,
                    read_threads: self.read_threads.map(usize::from),
                },
            },
        }
    }

    /// Where the data lives, for messages.
    pub fn describe(&self) -> String {
        match &self.database_url {
            Some(_) => match &self.object_store {
                Some(url) => format!("the PostgreSQL database with bodies in {url}"),
                None => "the PostgreSQL database".to_owned(),
            },
            None => format!("the data directory {}", self.data_dir.display()),
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the real one is printed).
    #[arg(long, env = "KVSTORE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub data: DataArgs,

    /// Base URL clients reach this server at, used in public URLs (`keysPublicUrl`,
    /// `recordPublicUrl`, `Location`). Default: http://<the bound listen address>.
    #[arg(long, env = "KVSTORE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Largest record body accepted, in bytes, measured after decompression.
    #[arg(long, env = "KVSTORE_MAX_RECORD_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_record_bytes: u64,

    /// What `generalAccess: FOLLOW_USER_SETTING` means on this server.
    #[arg(long, env = "KVSTORE_DEFAULT_GENERAL_ACCESS", value_enum, default_value_t = AccessSetting::Restricted)]
    pub default_general_access: AccessSetting,

    /// Honour `?method=PUT` (etc.) on GET requests, as Apify does. Off by default: with `?token=`
    /// a clicked link could then change data.
    #[arg(long, env = "KVSTORE_ALLOW_METHOD_OVERRIDE")]
    pub allow_method_override: bool,

    /// Token for the `admin` user created on first start (default: a random one, printed once).
    #[arg(long, env = "KVSTORE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Origins browsers may call the API from (CORS), comma-separated; `*` for any, empty for none.
    #[arg(
        long,
        env = "KVSTORE_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_origins: Vec<String>,

    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "KVSTORE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "KVSTORE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Seconds a connection may sit idle (or take to send request headers) before it is closed.
    #[arg(long, env = "KVSTORE_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,

    /// Seconds a response may make no progress (a client that stopped reading) before its
    /// connection is closed.
    #[arg(long, env = "KVSTORE_SEND_TIMEOUT", default_value_t = 60)]
    pub send_timeout: u64,

    /// Most simultaneous client connections; more wait until one closes.
    #[arg(long, env = "KVSTORE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Requests per second each token may make (bursts of as many); requests without a token count
    /// per client IP address. Over it: 429 `rate-limit-exceeded`. Off by default.
    #[arg(long, env = "KVSTORE_RATE_LIMIT")]
    pub rate_limit: Option<std::num::NonZeroU32>,

    /// Delete unnamed stores nobody has read or written for this long (e.g. `7d`, `36h`, `90m`), as
    /// Apify expires unnamed storages. Off by default: stores are kept until deleted.
    #[arg(long, env = "KVSTORE_UNNAMED_RETENTION", value_parser = humantime::parse_duration)]
    pub unnamed_retention: Option<std::time::Duration>,

    /// How often the server looks for stored bodies no record points at and removes them (e.g.
    /// `6h`; `0` turns the check off); the first check comes one interval after the start. Each
    /// check reads every record once. Bodies younger than an hour are left alone, as a write may
    /// not have committed its record yet. On a data directory the blob files the last process
    /// left with no record (a crash) are also removed once, in the background right after the
    /// start, whatever their age.
    #[arg(long, env = "KVSTORE_ORPHAN_CHECK_INTERVAL", value_parser = humantime::parse_duration,
        default_value = "24h")]
    pub orphan_check_interval: std::time::Duration,

    /// Log format.
    #[arg(long, env = "KVSTORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessSetting {
    Restricted,
    AnyoneWithIdCanRead,
    AnyoneWithNameCanRead,
}

impl From<AccessSetting> for GeneralAccess {
    fn from(a: AccessSetting) -> Self {
        match a {
            AccessSetting::Restricted => GeneralAccess::Restricted,
            AccessSetting::AnyoneWithIdCanRead => GeneralAccess::AnyoneWithIdCanRead,
            AccessSetting::AnyoneWithNameCanRead => GeneralAccess::AnyoneWithNameCanRead,
        }
    }
}

/// Where an administrative command acts: a running server (through its admin API), or a data
/// directory or database directly.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// Act on this running server (e.g. http://127.0.0.1:8080) through its admin API, with an
    /// administrator's token, instead of on a data directory or database directly.
    #[arg(long, env = "KVSTORE_SERVER")]
    pub server: Option<String>,
    /// An administrator's token, for --server.
    #[arg(long, env = "KVSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user and print its new token as the last line of standard output.
    Create {
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Give the user a read-only token (it can read its stores but change nothing).
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List users.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Disable a user: its tokens stop working at once; its stores stay.
    Disable {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Enable a disabled user again.
    Enable {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a user with its tokens and all its stores and records.
    Delete {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Give a user a new token and revoke all its others at once; prints the token last.
    RotateToken {
        name: String,
        /// Make the new token read-only.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Give a user one more token (e.g. a read-only one for a dashboard); prints the token last.
    AddToken {
        name: String,
        /// Make the token read-only.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// What `kvstore share` gives.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShareSetting {
    Read,
    Write,
    /// Stop sharing.
    None,
}

#[derive(Debug, Args)]
pub struct ShareArgs {
    /// The store: its id, or `owner~name`.
    pub store: String,
    /// The user to share it with.
    #[arg(long)]
    pub with: String,
    #[arg(long, value_enum, default_value_t = ShareSetting::Read)]
    pub access: ShareSetting,
    #[command(flatten)]
    pub target: Target,
}
