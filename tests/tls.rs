//! Native TLS with a self-signed certificate made by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::child::{kvstore, Served};
use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

struct Cert {
    _dir: tempfile::TempDir,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn self_signed() -> Cert {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    Cert {
        der: certified.cert.der().clone(),
        _dir: dir,
        cert_path,
        key_path,
    }
}

fn client(cert: &Cert, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let cert = self_signed();
    let tls = kvstore::tls::load(&cert.cert_path, &cert.key_path).unwrap();
    let srv = TestServer::start_with(|c| c.tls = Some(tls)).await;
    let addr = srv.url.trim_start_matches("http://").to_owned();
    let alice = srv.user("alice").await;

    let tcp = TcpStream::connect(&addr).await.unwrap();
    let mut stream = client(&cert, &[b"http/1.1"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let request = format!(
        "GET /v2/key-value-stores HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {alice}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"items\":[]"), "{response}");

    // HTTP/2 is offered by ALPN.
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let stream = client(&cert, &[b"h2", b"http/1.1"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), plain.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[test]
fn bad_certificate_files_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = kvstore::tls::load(&missing, &missing).unwrap_err();
    assert!(err.contains("cannot read the certificate"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = kvstore::tls::load(&empty, &empty).unwrap_err();
    assert!(err.contains("no certificate"), "{err}");
}

#[tokio::test]
async fn the_cli_takes_a_certificate_and_key() {
    let cert = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = kvstore();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--tls-cert")
        .arg(&cert.cert_path)
        .arg("--tls-key")
        .arg(&cert.key_path)
        .env("KVSTORE_ADMIN_TOKEN", "kvs_tls_test_token");
    let server = Served::start(cmd).await;
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{:?}",
        server.banner
    );
}

/// An HTTP/2 client over TLS that only answers the server's pings must not keep its connection
/// past the idle timeout (the same watch as without TLS, see tests/connections.rs).
#[tokio::test]
async fn idle_http2_connections_over_tls_are_closed() {
    let cert = self_signed();
    let tls = kvstore::tls::load(&cert.cert_path, &cert.key_path).unwrap();
    let srv = TestServer::start_with(|c| {
        c.tls = Some(tls);
        c.idle_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let addr = srv.url.trim_start_matches("http://").to_owned();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let stream = client(&cert, &[b"h2"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(stream).await.unwrap();
    // The connection future ends when the server closes the connection.
    tokio::time::timeout(std::time::Duration::from_secs(30), connection)
        .await
        .expect("an idle HTTP/2 connection over TLS was kept open")
        .ok();
    drop(send);
}
