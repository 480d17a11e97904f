//! The real `kvstore` binary as a child process: user administration, first start, the admin
//! token, the data-directory lock, persistence across a graceful restart, `--help` and
//! `--public-url`.

// Test code: a failed unwrap is a failed test. (`allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers of an integration test crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::child::{kvstore, stderr_of, stdout_of, token_printed_last, Served};
use serde_json::Value;

const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a short command (not `serve`) to the end.
fn run(args: &[&str]) -> Output {
    kvstore().args(args).stdin(Stdio::null()).output().unwrap()
}

/// Runs a short command with extra environment variables.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = kvstore();
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn users_create(dir: &Path, name: &str) -> Output {
    run(&["users", "create", name, "--data-dir", dir.to_str().unwrap()])
}

/// `kvstore serve` on 127.0.0.1:0 over `dir`, with `extra` arguments and `env` variables; the
/// test fails if it does not listen.
async fn serve(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Served {
    let mut cmd = kvstore();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Served::start(cmd).await
}

/// SIGTERM, then the exit status (the test fails if it does not exit in time).
fn terminate(server: &mut Served, limit: Duration) -> ExitStatus {
    server.terminate_within(limit).unwrap()
}

/// The admin token printed on first start (the test fails if there is none).
fn printed_admin_token(server: &Served) -> String {
    server
        .printed_admin_token()
        .unwrap_or_else(|| panic!("no admin token printed: {:?}", server.banner))
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::new();
    let rb = client.get(url);
    let rb = match token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    };
    rb.send().await.unwrap()
}

async fn error_type(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"]["type"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn users_create_prints_the_token_last_and_refuses_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let token = token_printed_last(&users_create(&data, "alice"));
    assert!(token.starts_with("kvs_"), "{token}");

    let again = users_create(&data, "alice");
    assert!(!again.status.success(), "a second alice was created");
    let err = stderr_of(&again);
    assert!(
        err.contains("alice") && err.contains("already exists"),
        "unclear message: {err}"
    );
    assert!(
        !stdout_of(&again).contains("kvs_"),
        "a refused create printed a token: {}",
        stdout_of(&again)
    );

    let bob = token_printed_last(&users_create(&data, "bob"));
    assert_ne!(bob, token);

    let bad = users_create(&data, "no~tilde");
    assert!(!bad.status.success(), "a user named no~tilde was created");
    assert!(!stderr_of(&bad).trim().is_empty());

    let list = run(&["users", "list", "--data-dir", data.to_str().unwrap()]);
    assert!(list.status.success(), "users list: {}", stderr_of(&list));
    let listed = stdout_of(&list);
    let names: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(names, ["alice", "bob"], "users list printed: {listed}");
    assert!(!listed.contains(&token), "users list shows a token");

    // KVSTORE_DATA_DIR does what --data-dir does.
    let list = run_env(
        &["users", "list"],
        &[("KVSTORE_DATA_DIR", data.to_str().unwrap())],
    );
    assert!(list.status.success(), "users list: {}", stderr_of(&list));
    assert_eq!(stdout_of(&list), listed);
}

#[test]
fn users_list_is_an_aligned_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    token_printed_last(&users_create(&data, "al"));
    token_printed_last(&users_create(&data, "a-much-longer-name"));
    let list = run(&["users", "list", "--data-dir", data.to_str().unwrap()]);
    assert!(list.status.success(), "users list: {}", stderr_of(&list));
    let listed = stdout_of(&list);
    assert_eq!(
        listed.lines().count(),
        3,
        "a header and two users:\n{listed}"
    );
    let mut lines = listed.lines();
    let header = lines.next().unwrap();
    let admin_col = header.find("ADMIN").unwrap();
    let created_col = header.find("CREATED").unwrap();
    for line in lines {
        // A column starts where its header starts, after a space.
        let starts = |col: usize, what: &[&str]| {
            line.get(col - 1..col) == Some(" ")
                && what
                    .iter()
                    .any(|w| line.get(col..).is_some_and(|r| r.starts_with(w)))
        };
        assert!(
            starts(admin_col, &["true", "false"]),
            "the ADMIN column is not under its header:\n{listed}"
        );
        assert!(
            starts(created_col, &["20"]),
            "the CREATED column is not under its header:\n{listed}"
        );
    }
}

#[tokio::test]
async fn tokens_of_users_created_offline_work_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let alice = token_printed_last(&users_create(&data, "alice"));

    let server = serve(&data, &[], &[]).await;
    // A user exists, so no admin is created and no token printed.
    assert_eq!(server.banner.len(), 1, "stdout: {:?}", server.banner);

    let resp = get(&format!("{}/v2/key-value-stores", server.url), Some(&alice)).await;
    assert_eq!(resp.status(), 200);
    let resp = get(
        &format!("{}/v2/key-value-stores", server.url),
        Some("kvs_not-a-token"),
    )
    .await;
    assert_eq!(error_type(resp).await, (401, "invalid-token".to_owned()));
}

#[tokio::test]
async fn first_start_prints_an_admin_token_that_works() {
    let dir = tempfile::tempdir().unwrap();
    // An existing, empty directory.
    let server = serve(dir.path(), &[], &[]).await;
    let token = printed_admin_token(&server);
    let stores = format!("{}/v2/key-value-stores", server.url);

    let resp = get(&stores, Some(&token)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"]["total"], 0);
    let resp = get(&format!("{stores}?token={token}"), None).await;
    assert_eq!(resp.status(), 200);

    let resp = get(&stores, None).await;
    assert_eq!(
        error_type(resp).await,
        (401, "token-not-provided".to_owned())
    );
    let resp = get(&stores, Some("kvs_not-the-admin-token")).await;
    assert_eq!(error_type(resp).await, (401, "invalid-token".to_owned()));

    // Public URLs use the bound address, never the request's Host header.
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{stores}?name=hosted"))
        .bearer_auth(&token)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let store: Value = resp.json().await.unwrap();
    let id = store["data"]["id"].as_str().unwrap();
    assert_eq!(location, format!("{stores}/{id}"));
    assert!(store["data"]["keysPublicUrl"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{stores}/{id}/keys")));

    // The token is never written to the logs, not even when it came in `?token=`.
    assert!(
        !server.stderr().contains(&token),
        "the admin token is in the logs"
    );
}

#[tokio::test]
async fn first_start_takes_the_admin_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let chosen = "my-own-admin-token-0123456789abcdef";
    let server = serve(&data, &[], &[("KVSTORE_ADMIN_TOKEN", chosen)]).await;
    assert!(
        server.banner.iter().any(|l| l.contains("admin")),
        "first start does not mention the admin user: {:?}",
        server.banner
    );
    let stores = format!("{}/v2/key-value-stores", server.url);
    let resp = get(&stores, Some(chosen)).await;
    assert_eq!(resp.status(), 200, "the chosen admin token does not work");
    let resp = get(&stores, Some("my-own-admin-token-0123456789abcdeX")).await;
    assert_eq!(error_type(resp).await, (401, "invalid-token".to_owned()));
    assert!(
        !server.stderr().contains(chosen),
        "the token is in the logs"
    );
}

#[tokio::test]
async fn users_commands_refuse_a_data_directory_a_server_is_using() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data, &[], &[]).await;
    let token = printed_admin_token(&server);

    let out = users_create(&data, "carol");
    assert!(
        !out.status.success(),
        "users create succeeded on a live dir"
    );
    let err = stderr_of(&out);
    assert!(err.contains("in use"), "message does not say in use: {err}");
    let out = run(&["users", "list", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success(), "users list succeeded on a live dir");
    assert!(stderr_of(&out).contains("in use"), "{}", stderr_of(&out));

    // A second server on the same directory refuses to start, saying why.
    let mut second = kvstore()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STOP_TIMEOUT;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second server started on a directory in use");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "second server: {status}");
    assert!(err.contains("in use"), "second server's message: {err}");

    // The server is unharmed.
    let resp = get(&format!("{}/v2/key-value-stores", server.url), Some(&token)).await;
    assert_eq!(resp.status(), 200);
    drop(server);

    // After it stopped, the same command works.
    let carol = token_printed_last(&users_create(&data, "carol"));
    assert!(!carol.is_empty());
}

#[tokio::test]
async fn data_persists_across_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = serve(&data, &[], &[]).await;
    let token = printed_admin_token(&server);
    let client = reqwest::Client::new();

    let resp = client
        .post(format!("{}/v2/key-value-stores?name=keep", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let resp = client
        .put(format!(
            "{}/v2/key-value-stores/{id}/records/STATE",
            server.url
        ))
        .bearer_auth(&token)
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"n":42}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // The client keeps its idle connection open while the server stops.
    let status = terminate(&mut server, STOP_TIMEOUT);
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
    drop(server);

    let server = serve(&data, &[], &[]).await;
    assert!(
        !server.banner.iter().any(|l| l.contains("admin")),
        "a second admin was created on restart: {:?}",
        server.banner
    );
    let resp = get(
        &format!("{}/v2/key-value-stores/~keep/records/STATE", server.url),
        Some(&token),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(resp.text().await.unwrap(), r#"{"n":42}"#);
    let resp = get(
        &format!("{}/v2/key-value-stores/{id}", server.url),
        Some(&token),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let store: Value = resp.json().await.unwrap();
    assert_eq!(store["data"]["name"], "keep");
    assert_eq!(store["data"]["stats"]["writeCount"], 1);
}

/// HTTP clients open spare connections they may never use (hyper's pool races a new connection
/// against a returning idle one). Shutdown must not wait the idle timeout (60 s) or the grace
/// period (30 s) for such a connection that has not sent a byte.
#[tokio::test]
async fn shutdown_does_not_wait_for_connections_that_never_spoke() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(&dir.path().join("data"), &[], &[]).await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A keep-alive connection that served a request and now sits idle, for good measure.
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let status = terminate(&mut server, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
    assert!(
        !server.stderr().contains("stopping anyway"),
        "shutdown waited out its grace period: {}",
        server.stderr()
    );
    drop(silent);
}

#[test]
fn serve_help_mentions_every_environment_variable() {
    let out = run(&["serve", "--help"]);
    assert!(out.status.success(), "serve --help: {}", stderr_of(&out));
    let help = stdout_of(&out);
    for var in [
        "KVSTORE_LISTEN",
        "KVSTORE_DATA_DIR",
        "KVSTORE_PUBLIC_URL",
        "KVSTORE_MAX_RECORD_BYTES",
    ] {
        assert!(
            help.contains(var),
            "serve --help does not mention {var}:\n{help}"
        );
    }
}

/// Starts a server whose public URL is `http://example.test:9` (given by `extra` or `env`), and checks every
/// URL the API hands out.
async fn check_public_url(extra: &[&str], env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), extra, env).await;
    let token = printed_admin_token(&server);
    let base = "http://example.test:9/v2/key-value-stores";
    let client = reqwest::Client::new();

    let resp = client
        .post(format!("{}/v2/key-value-stores?name=pub", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let store: Value = resp.json().await.unwrap();
    let id = store["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("{base}/{id}"));
    let keys_url = store["data"]["keysPublicUrl"].as_str().unwrap();
    assert!(
        keys_url.starts_with(&format!("{base}/{id}/keys?signature=")),
        "{keys_url}"
    );
    let records_url = store["data"]["recordsPublicUrl"].as_str().unwrap();
    assert!(
        records_url.starts_with(&format!("{base}/{id}/records?signature=")),
        "{records_url}"
    );

    let resp = client
        .put(format!("{}/v2/key-value-stores/{id}/records/K", server.url))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("{base}/{id}/records/K")
    );

    let resp = get(
        &format!("{}/v2/key-value-stores/{id}/keys", server.url),
        Some(&token),
    )
    .await;
    let keys: Value = resp.json().await.unwrap();
    let url = keys["data"]["items"][0]["recordPublicUrl"]
        .as_str()
        .unwrap();
    assert!(
        url.starts_with(&format!("{base}/{id}/records/K?signature=")),
        "{url}"
    );
}

#[tokio::test]
async fn public_url_is_the_base_of_location_and_public_urls() {
    check_public_url(&["--public-url", "http://example.test:9"], &[]).await;
    // The same through the environment, with a trailing slash.
    check_public_url(&[], &[("KVSTORE_PUBLIC_URL", "http://example.test:9/")]).await;
}

#[tokio::test]
async fn backup_of_a_running_server_restores_into_a_new_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = "backup-admin-token-0123456789abcdef";
    let server = serve(&data, &[], &[("KVSTORE_ADMIN_TOKEN", admin)]).await;
    let client = reqwest::Client::new();
    let big = vec![7u8; 300 * 1024];
    let created = client
        .post(format!("{}/v2/key-value-stores?name=kept", server.url))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    for (key, body) in [("small", b"hello".to_vec()), ("big", big.clone())] {
        let resp = client
            .put(format!(
                "{}/v2/key-value-stores/~kept/records/{key}",
                server.url
            ))
            .bearer_auth(admin)
            .header("content-type", "application/x-test")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }

    let file = dir.path().join("all.backup");
    let file_arg = file.to_str().unwrap();
    // A wrong token gets the server's answer, and no file.
    let out = run(&[
        "backup",
        "--to",
        file_arg,
        "--server",
        &server.url,
        "--token",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("401"), "{}", stderr_of(&out));
    assert!(!file.exists());
    let out = run(&[
        "backup",
        "--to",
        file_arg,
        "--server",
        &server.url,
        "--token",
        admin,
    ]);
    assert!(out.status.success(), "backup: {}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("Backed up 1 users, 1 stores, 2 records"),
        "{}",
        stdout_of(&out)
    );
    drop(server);

    let restored = dir.path().join("restored");
    let out = run(&[
        "restore",
        "--from",
        file_arg,
        "--quiet",
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "restore: {}", stderr_of(&out));
    // Restoring twice into the same place is refused.
    let again = run(&[
        "restore",
        "--from",
        file_arg,
        "--quiet",
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        stderr_of(&again).contains("already has users"),
        "{}",
        stderr_of(&again)
    );

    let server = serve(&restored, &[], &[]).await;
    assert!(
        !server.banner.iter().any(|l| l.contains("admin")),
        "the restored directory already has its admin: {:?}",
        server.banner
    );
    let resp = get(
        &format!("{}/v2/key-value-stores/~kept/records/big", server.url),
        Some(admin),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-test");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), big.as_slice());
    let resp = get(
        &format!("{}/v2/key-value-stores/~kept", server.url),
        Some(admin),
    )
    .await;
    let store: Value = resp.json().await.unwrap();
    assert_eq!(store["data"]["stats"]["recordCount"], 2);
}

#[tokio::test]
async fn users_are_administered_offline_and_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();

    // Offline, on the data directory.
    let alice = token_printed_last(&run(&["users", "create", "alice", "--data-dir", d]));
    let out = run(&["users", "disable", "alice", "--data-dir", d]);
    assert!(stdout_of(&out).contains("disabled"), "{}", stdout_of(&out));
    let list = stdout_of(&run(&["users", "list", "--data-dir", d]));
    let row = list.lines().find(|l| l.contains("alice")).unwrap();
    assert!(row.contains("true"), "alice is not shown disabled: {list}");
    assert!(run(&["users", "enable", "alice", "--data-dir", d])
        .status
        .success());
    let rotated = token_printed_last(&run(&["users", "rotate-token", "alice", "--data-dir", d]));
    let read_only = token_printed_last(&run(&[
        "users",
        "add-token",
        "alice",
        "--read-only",
        "--data-dir",
        d,
    ]));
    let out = run(&["users", "disable", "nobody", "--data-dir", d]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("no user named \"nobody\""),
        "{}",
        stderr_of(&out)
    );

    // Through a running server, with an administrator's token (the directory has users, so no
    // `admin` is made at start: make one offline).
    let admin = token_printed_last(&run(&[
        "users",
        "create",
        "root",
        "--admin",
        "--data-dir",
        d,
    ]));
    let admin = admin.as_str();
    let server = serve(&data, &[], &[]).await;
    let url = server.url.clone();
    let me = format!("{url}/v2/users/me");
    assert_eq!(get(&me, Some(&alice)).await.status(), 401, "rotated away");
    assert_eq!(get(&me, Some(&rotated)).await.status(), 200);
    let remote = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", url.as_str(), "--token", admin]);
        run(&all)
    };
    let bob = token_printed_last(&remote(&["users", "create", "bob"]));
    assert_eq!(get(&me, Some(&bob)).await.status(), 200);

    // Sharing: alice's store with bob, for reading.
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{url}/v2/key-value-stores?name=notes"))
        .bearer_auth(&rotated)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let notes = format!("{url}/v2/key-value-stores/alice~notes");
    assert_eq!(get(&notes, Some(&bob)).await.status(), 404);
    let out = remote(&["share", "alice~notes", "--with", "bob", "--access", "read"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(get(&notes, Some(&bob)).await.status(), 200);
    // The read-only token reads alice's store but may not write to it.
    assert_eq!(get(&notes, Some(&read_only)).await.status(), 200);
    let resp = client
        .put(format!("{notes}/records/k"))
        .bearer_auth(&read_only)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Rotation through the server stops the old token at once; deletion removes the user.
    let bob2 = token_printed_last(&remote(&["users", "rotate-token", "bob"]));
    assert_eq!(get(&me, Some(&bob)).await.status(), 401);
    assert_eq!(get(&me, Some(&bob2)).await.status(), 200);
    assert!(remote(&["users", "delete", "bob"]).status.success());
    assert_eq!(get(&me, Some(&bob2)).await.status(), 401);

    // A token that is not an administrator's is refused with the server's answer.
    let out = run(&["users", "list", "--server", &url, "--token", &rotated]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("403"), "{}", stderr_of(&out));
    // And offline commands on a running server's data directory are refused.
    let out = run(&["users", "list", "--data-dir", d]);
    assert!(!out.status.success());
}
