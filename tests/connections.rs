//! The connection layer: idle keep-alive connections are closed, and the connection limit holds
//! new connections back until one closes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(srv: &TestServer) -> String {
    srv.url.trim_start_matches("http://").to_owned()
}

/// Sends one request on `conn` and returns the status line.
async fn status_line(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let srv = TestServer::start_with(|c| c.idle_timeout = Duration::from_secs(1)).await;
    let mut conn = TcpStream::connect(addr(&srv)).await.unwrap();
    assert_eq!(status_line(&mut conn).await, "HTTP/1.1 404 Not Found");
    // Now idle: the server closes it after about a second.
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("the idle connection was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "EOF expected");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn the_connection_limit_holds_new_connections_back() {
    let srv = TestServer::start_with(|c| c.max_connections = 2).await;
    let mut first = TcpStream::connect(addr(&srv)).await.unwrap();
    let mut second = TcpStream::connect(addr(&srv)).await.unwrap();
    assert!(status_line(&mut first).await.contains("404"));
    assert!(status_line(&mut second).await.contains("404"));
    // The third connection is accepted by the kernel but not served while two are open.
    let mut third = TcpStream::connect(addr(&srv)).await.unwrap();
    third
        .write_all(b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the limit");
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("not served after a connection closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
}

/// Opens an HTTP/2 connection (h2c, prior knowledge) that sends its preface and SETTINGS and then
/// nothing but the answers to the server's PINGs; resolves when the server has closed it.
async fn silent_h2_connection(addr: &str) -> tokio::task::JoinHandle<()> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (_send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        // Drives the connection: PINGs are answered, SETTINGS acknowledged, nothing requested.
        let _ = connection.await;
        drop(_send);
    })
}

/// `GET /healthz` on a new connection, within `within`; `None` if not answered by then.
async fn healthz_within(addr: &str, within: Duration) -> Option<String> {
    tokio::time::timeout(within, async {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let _ = conn.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    })
    .await
    .ok()
}

/// Whether `n` connections opened together all get an answer to `GET /healthz` within
/// `within` (under the server's idle timeout): then none waited for a slot that another of them
/// freed by idling out, and `n` slots were free at once. They are closed before it returns.
async fn served_at_once(addr: &str, n: usize, within: Duration) -> bool {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        conns.push(conn);
    }
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 256];
    for conn in &mut conns {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(read)) if buf[..read].starts_with(b"HTTP/1.1 200") => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn idle_http2_connections_are_closed_although_they_answer_pings() {
    let srv = TestServer::start_with(|c| {
        c.idle_timeout = Duration::from_secs(2);
        c.max_connections = 8;
    })
    .await;
    let addr = addr(&srv);
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(silent_h2_connection(&addr).await);
    }
    // Every slot is taken; once the idle timeout has passed, the server closes them all (the
    // pings it sends every idle timeout are answered, so the transport never looks idle).
    for connection in silent {
        tokio::time::timeout(Duration::from_secs(30), connection)
            .await
            .expect("an idle HTTP/2 connection was kept open")
            .unwrap();
    }
    assert_eq!(
        healthz_within(&addr, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("HTTP/1.1 200 OK")
    );
}

#[tokio::test]
async fn an_http2_connection_with_a_request_in_flight_is_not_idle() {
    let srv = TestServer::start_with(|c| c.idle_timeout = Duration::from_secs(1)).await;
    let alice = srv.user("alice").await;
    let store = srv.create_store(&alice, None).await;
    let id = store["id"].as_str().unwrap();
    let tcp = TcpStream::connect(addr(&srv)).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    // An upload that takes three idle timeouts, sent slowly but steadily.
    let request = http::Request::put(format!("{}/v2/key-value-stores/{id}/records/slow", srv.url))
        .header("authorization", format!("Bearer {alice}"))
        .header("content-type", "text/plain")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        body.send_data(bytes::Bytes::from_static(b"chunk "), false)
            .unwrap();
    }
    body.send_data(bytes::Bytes::new(), true).unwrap();
    let response = response
        .await
        .expect("the connection was closed mid-request");
    assert_eq!(response.status(), 201);
    drop(send);
    driver.abort();
}

#[tokio::test]
async fn readers_that_stop_reading_are_disconnected_after_the_send_timeout() {
    let srv = TestServer::start_with(|c| {
        c.idle_timeout = Duration::from_secs(2);
        c.send_timeout = Duration::from_secs(2);
        c.max_connections = 8;
    })
    .await;
    // Set up through the storage API, so that no client connection of the test takes a slot.
    let alice = srv.user("alice").await;
    let owner = srv
        .store
        .user_by_token(&kvstore::model::Token::from_secret(alice.clone()).hash())
        .await
        .unwrap()
        .unwrap()
        .user;
    let (store, _) = srv
        .store
        .store_get_or_create(kvstore::model::StoreInfo::new(owner.id, None, None))
        .await
        .unwrap();
    let id = store.id.to_string();
    srv.store
        .record_put(
            &store.id,
            &kvstore::model::RecordKey::parse("big").unwrap(),
            "application/octet-stream",
            kvstore::storage::BodyInput::Bytes(vec![7u8; 16 << 20].into()),
        )
        .await
        .unwrap();
    let addr = addr(&srv);
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut conn = socket.connect(addr.parse().unwrap()).await.unwrap();
        conn.write_all(
            format!(
                "GET /v2/key-value-stores/{id}/records/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(conn);
    }
    // Reading nothing, the eight hold every slot until the send timeout frees them.
    assert_eq!(
        healthz_within(&addr, Duration::from_secs(30))
            .await
            .as_deref(),
        Some("HTTP/1.1 200 OK"),
        "stalled readers kept every connection slot"
    );
    // That freed one slot; reading a connection still open below would let it send everything.
    // So first all eight slots must be free at once (on a loaded machine the timeouts may
    // fire far apart).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served_at_once(&addr, 8, Duration::from_secs(1)).await {
        assert!(
            Instant::now() < deadline,
            "stalled readers still held a slot after 30 s"
        );
    }
    // Each stalled connection was cut short: what it can still read ends well before 16 MiB.
    for mut conn in stalled {
        let mut received = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => received += n,
                Err(_) => panic!("a stalled connection is still open"),
            }
        }
        assert!(
            received < 16 << 20,
            "the whole body was sent ({received} bytes)"
        );
    }
}

#[tokio::test]
async fn request_headers_over_64_kib_are_refused_with_431() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let send = |padding: usize| {
        srv.get("/v2/key-value-stores", &alice)
            .header("x-padding", "p".repeat(padding))
            .send()
    };
    assert_eq!(send(60 * 1024).await.unwrap().status(), 200);
    // Over the bound: 431 in Apify's envelope.
    common::assert_error(
        send(70 * 1024).await.unwrap(),
        431,
        "request-header-fields-too-large",
    )
    .await;
    // Far over it: the HTTP layer refuses before buffering it all (no envelope), on HTTP/1...
    let mut conn = TcpStream::connect(addr(&srv)).await.unwrap();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(200 * 1024)
    );
    let _ = conn.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 431"),
        "a 200 KB header: {response}"
    );
    // ...and on HTTP/2.
    let tcp = TcpStream::connect(addr(&srv)).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get(format!("{}/healthz", srv.url))
        .header("x-padding", "p".repeat(200 * 1024))
        .body(())
        .unwrap();
    let answer = match h2.send_request(request, true) {
        Ok((response, _)) => response.await.map(|r| r.status().as_u16()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(answer, Ok(431)) || answer.is_err(),
        "a 200 KB header over HTTP/2: {answer:?}"
    );
    driver.abort();
}
