//! The storage browser's files over HTTP: `GET /` (the page, with its Content-Security-Policy) and
//! `GET /ui/{file}` (embedded assets with their content types and caching headers). What the page
//! does in a browser is tested end to end in headless Chromium by `scripts/ui-tests.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, TestServer};
use reqwest::header::{HeaderMap, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::Method;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The `?v=` of `/ui/app.js?v=…` in the page.
fn version_in(page: &str) -> String {
    let at = page.find("/ui/app.js?v=").expect("the page loads app.js") + "/ui/app.js?v=".len();
    page[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let srv = TestServer::start().await;
    // No token needed: the page asks for one.
    let resp = srv.req(Method::GET, "/", None).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    let csp = header(&headers, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "frame-src blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-"), "{csp}");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&headers, "x-frame-options"), "DENY");
    assert_eq!(header(&headers, "referrer-policy"), "no-referrer");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    let etag = header(&headers, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let page = resp.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert!(
        !page.contains("{{version}}"),
        "the bundle hash is filled in"
    );
    // No inline script: every script element loads a file of its own.
    for (at, _) in page.match_indices("<script") {
        let tag = &page[at..at + page[at..].find('>').unwrap()];
        assert!(tag.contains(" src=\"/ui/"), "inline script: {tag}");
    }
    // No inline event handlers (` onclick="…"`).
    for (at, _) in page.match_indices(" on") {
        let name: String = page[at + 1..]
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        assert!(
            !page[at + 1 + name.len()..].starts_with('='),
            "inline handler {name}"
        );
    }
    let version = version_in(&page);
    assert_eq!(version.len(), 20, "{version}");

    // Revalidation: 304 with the same ETag, no body.
    let resp = srv
        .req(Method::GET, "/", None)
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(header(resp.headers(), "etag"), etag);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = srv
        .req(Method::GET, "/", None)
        .header(IF_NONE_MATCH, "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let resp = srv.req(Method::HEAD, "/", None).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(resp.headers(), "content-type"),
        "text/html; charset=utf-8"
    );

    let resp = srv.req(Method::POST, "/", None).send().await.unwrap();
    assert_error(resp, 405, "method-not-allowed").await;
    srv.stop().await;
}

#[tokio::test]
async fn assets_are_served_with_their_content_types_and_caching_headers() {
    let srv = TestServer::start().await;
    let page = srv
        .req(Method::GET, "/", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let version = version_in(&page);
    // Everything the page links to is there, under the current hash.
    for linked in ["/ui/app.js", "/ui/app.css", "/ui/favicon.svg"] {
        assert!(
            page.contains(&format!("\"{linked}?v={version}\"")),
            "{linked} not linked with ?v={version}"
        );
    }

    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        // Asked for by the current hash: cached for a year.
        let resp = srv
            .req(Method::GET, &format!("/ui/{file}?v={version}"), None)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{file}");
        let headers = resp.headers().clone();
        assert_eq!(header(&headers, "content-type"), content_type, "{file}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(
            header(&headers, "cache-control"),
            "public, max-age=31536000, immutable",
            "{file}"
        );
        let etag = header(&headers, "etag").to_owned();
        let body = resp.bytes().await.unwrap();
        assert!(!body.is_empty(), "{file}");

        // Without the hash (a module import), or with an old one: revalidated every time.
        for query in ["", "?v=0123456789abcdef0123"] {
            let resp = srv
                .req(Method::GET, &format!("/ui/{file}{query}"), None)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(header(resp.headers(), "cache-control"), "no-cache");
            assert_eq!(header(resp.headers(), "etag"), etag, "same file, same ETag");
            assert_eq!(resp.bytes().await.unwrap(), body);
        }
        let resp = srv
            .req(Method::GET, &format!("/ui/{file}"), None)
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 304, "{file}");
        assert!(resp.headers().get(CONTENT_TYPE).is_none());
        assert!(resp.headers().get(CACHE_CONTROL).is_some());
        assert_eq!(header(resp.headers(), ETAG.as_str()), etag);
    }

    // The modules app.js imports are served too.
    let app = srv
        .req(Method::GET, "/ui/app.js", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let imports: Vec<&str> = app
        .match_indices(" from './")
        .map(|(at, m)| {
            let rest = &app[at + m.len()..];
            &rest[..rest.find('\'').unwrap()]
        })
        .collect();
    assert!(imports.contains(&"api.js"), "{imports:?}");
    for module in imports {
        let resp = srv
            .req(Method::GET, &format!("/ui/{module}"), None)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{module}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn unknown_assets_are_404_in_the_envelope() {
    let srv = TestServer::start().await;
    for path in [
        "/ui/nope.js",
        "/ui/index.html",
        "/ui/APP.JS",
        "/ui/app.js.map",
        "/ui/%2E%2E%2FCargo.toml",
        "/ui/..%2Fsrc%2Fapi%2Fui.rs",
        "/ui/app.js/more",
        "/ui/",
        "/ui",
        "/index.html",
    ] {
        let resp = srv.req(Method::GET, path, None).send().await.unwrap();
        assert_error(resp, 404, "page-not-found").await;
    }
    srv.stop().await;
}
