//! ETag / If-None-Match and Range requests on records (resumable downloads of large records).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, TestServer};
use reqwest::Method;

async fn setup() -> (TestServer, String, String) {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let store = srv.create_store(&alice, Some("c")).await;
    let id = store["id"].as_str().unwrap().to_owned();
    (srv, alice, id)
}

#[tokio::test]
async fn etags_change_with_every_write_and_answer_if_none_match() {
    let (srv, alice, id) = setup().await;
    let path = format!("/v2/key-value-stores/{id}/records/doc");
    srv.put_record(&alice, &id, "doc", "text/plain", "one")
        .await;
    let resp = srv.get(&path, &alice).send().await.unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() == 18,
        "{etag}"
    );
    assert_eq!(resp.headers()["accept-ranges"], "bytes");

    for method in [Method::GET, Method::HEAD] {
        let resp = srv
            .req(method.clone(), &path, Some(&alice))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 304, "{method}");
        assert_eq!(resp.headers()["etag"], etag.as_str());
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let resp = srv
        .get(&path, &alice)
        .header("if-none-match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    let resp = srv
        .get(&path, &alice)
        .header("if-none-match", "\"0000000000000000\", W/\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A new write, even of the same bytes, is a new version.
    srv.put_record(&alice, &id, "doc", "text/plain", "one")
        .await;
    let resp = srv
        .get(&path, &alice)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_ne!(resp.headers()["etag"], etag.as_str());
    assert_eq!(resp.text().await.unwrap(), "one");
}

#[tokio::test]
async fn ranges_of_small_and_large_records() {
    let (srv, alice, id) = setup().await;
    let small: Vec<u8> = (0..100u8).collect();
    let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    srv.put_record(
        &alice,
        &id,
        "small",
        "application/octet-stream",
        small.clone(),
    )
    .await;
    srv.put_record(
        &alice,
        &id,
        "large",
        "application/octet-stream",
        large.clone(),
    )
    .await;
    for (key, body) in [("small", &small), ("large", &large)] {
        let path = format!("/v2/key-value-stores/{id}/records/{key}");
        let size = body.len();
        let cases = [
            ("bytes=0-9".to_owned(), 0, 9),
            (format!("bytes={}-", size - 7), size - 7, size - 1),
            ("bytes=-5".to_owned(), size - 5, size - 1),
            (format!("bytes=10-{}", size * 2), 10, size - 1),
        ];
        for (range, first, last) in cases {
            let resp = srv
                .get(&path, &alice)
                .header("range", &range)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 206, "{key} {range}");
            assert_eq!(
                resp.headers()["content-range"],
                format!("bytes {first}-{last}/{size}").as_str()
            );
            assert_eq!(
                resp.headers()["content-length"],
                (last - first + 1).to_string().as_str()
            );
            assert_eq!(
                resp.bytes().await.unwrap().as_ref(),
                &body[first..=last],
                "{key} {range}"
            );
        }
        let resp = srv
            .get(&path, &alice)
            .header("range", format!("bytes={size}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes */{size}").as_str()
        );
        assert_error(resp, 416, "range-not-satisfiable").await;
        // Several ranges: the whole body (allowed by RFC 9110).
        let resp = srv
            .get(&path, &alice)
            .header("range", "bytes=0-1,4-5")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap().len(), size);
    }
}

#[tokio::test]
async fn if_range_resumes_only_the_same_version() {
    let (srv, alice, id) = setup().await;
    let path = format!("/v2/key-value-stores/{id}/records/r");
    srv.put_record(&alice, &id, "r", "text/plain", "0123456789")
        .await;
    let etag = srv.get(&path, &alice).send().await.unwrap().headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let resp = srv
        .get(&path, &alice)
        .header("range", "bytes=5-")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.text().await.unwrap(), "56789");
    srv.put_record(&alice, &id, "r", "text/plain", "abcdefghij")
        .await;
    let resp = srv
        .get(&path, &alice)
        .header("range", "bytes=5-")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the record changed: the whole new body");
    assert_eq!(resp.text().await.unwrap(), "abcdefghij");
}
