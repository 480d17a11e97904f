//! The real `kvstore` binary as a child process, for the tests that run it: a command that sees
//! none of the test environment's `KVSTORE_*` variables, and a running `kvstore serve` whose
//! output is drained as it comes (a full pipe would stall it) until it says where it listens.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_kvstore");
/// How long a server may take to say that it listens (a PostgreSQL node migrates first).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `kvstore` without the `KVSTORE_*` variables of the environment running the tests, so that they
/// cannot change what a test sees; a test sets the ones it means.
pub fn kvstore() -> Command {
    let mut cmd = Command::new(BIN);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("KVSTORE_") {
            cmd.env_remove(var);
        }
    }
    cmd
}

/// Runs a short command (not `serve`) to the end, off the async runtime.
pub async fn output(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The token a successful `users create` (or `rotate-token`, `add-token`) printed: the last line
/// of its standard output.
pub fn token_printed_last(out: &Output) -> String {
    let stdout = stdout_of(out);
    assert!(
        out.status.success(),
        "the command failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        stderr_of(out)
    );
    let last = stdout.lines().last().unwrap_or_default().trim().to_owned();
    assert!(
        last.len() >= 20 && !last.contains(char::is_whitespace),
        "the last line is not a token: {stdout:?}"
    );
    last
}

/// A running `kvstore serve`; killed when dropped.
pub struct Served {
    pub child: Child,
    /// e.g. `http://127.0.0.1:41234`; empty until [`Served::wait_listening`] has seen it.
    pub url: String,
    /// What it printed on standard output before it was listening, the listening line included.
    pub banner: Vec<String>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Starts `cmd` (a `kvstore serve …` on `127.0.0.1:0`) with its output drained by two threads;
    /// [`Served::wait_listening`] then waits until it serves.
    pub fn spawn(mut cmd: Command) -> Served {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Served {
            child,
            url: String::new(),
            banner: Vec::new(),
            lines,
            stderr,
        }
    }

    /// Starts `cmd` and waits until it serves; the test fails if it does not.
    pub async fn start(cmd: Command) -> Served {
        let mut served = Served::spawn(cmd);
        if let Err(e) = served.wait_listening().await {
            panic!("{e}");
        }
        served
    }

    /// Reads standard output until the `listening on http(s)://127.0.0.1:PORT` line; sets `url`.
    /// An error says why it never came (the process exited, or took too long).
    pub async fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.banner.push(line.clone());
                    if let Some(at) = line.find("listening on ") {
                        let url = line[at + "listening on ".len()..].trim().to_owned();
                        let port: u16 = url
                            .strip_prefix("http://127.0.0.1:")
                            .or_else(|| url.strip_prefix("https://127.0.0.1:"))
                            .ok_or_else(|| format!("not a 127.0.0.1 URL: {line}"))?
                            .parse()
                            .map_err(|_| format!("no port in {line}"))?;
                        if port == 0 {
                            return Err(format!("port 0 in {line}"));
                        }
                        self.url = url;
                        return Ok(());
                    }
                }
                Ok(None) => {
                    let status = self.child.wait().unwrap();
                    return Err(format!(
                        "the server exited ({status}) before listening; stdout: {:?}; stderr:\n{}",
                        self.banner,
                        self.stderr_tail()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                    "no `listening on` line within {START_TIMEOUT:?}; stdout: {:?}; stderr:\n{}",
                    self.banner,
                    self.stderr_tail()
                ))
                }
            }
        }
    }

    /// Everything it has written to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The last lines of its log, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let all = self.stderr();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(300)..].join("\n")
    }

    /// The `admin` token it printed on its first start, if it printed one.
    pub fn printed_admin_token(&self) -> Option<String> {
        let at = self
            .banner
            .iter()
            .position(|l| l.contains("Created the user \"admin\""))?;
        let token = self.banner.get(at + 1)?.trim().to_owned();
        assert!(
            token.len() >= 20 && !token.contains(char::is_whitespace),
            "no token after the admin line: {:?}",
            self.banner
        );
        Some(token)
    }

    /// SIGTERM (a graceful stop), then the exit status; an error if it does not exit within
    /// `limit`.
    pub fn terminate_within(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        if !sent.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no exit within {limit:?} of SIGTERM; stderr:\n{}",
                    self.stderr_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}
