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
