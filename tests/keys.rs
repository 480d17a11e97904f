//! HTTP tests of `GET /v2/key-value-stores/{storeId}/keys`: pagination, byte order, `prefix`,
//! `exclusiveStartKey`, `limit`, `collection` and the item shape, against a real server.

// Test code: a failed unwrap is a failed test. (`allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers of an integration-test crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::Duration;

use common::{assert_error, data, TestServer};
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

const MISSING_STORE: &str = "AAAAAAAAAAAAAAAAA";
/// Every character a key may contain.
const ALPHABET: &[u8] = b"!'()-._0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// About 2,600 distinct keys where byte order matters: keys differing only in case, in digits
/// (`a10` < `a2`), and in each of `!'()-_.`, families sharing prefixes, random keys over the whole
/// alphabet, and a 256-character key.
fn many_keys() -> Vec<String> {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    let fixed = [
        "abc", "ABC", "Abc", "aBc", "abC", "a", "A", "b", "B", "z", "Z", "0", "9", "a1", "a2",
        "a9", "a10", "a11", "a100", "A1", "A10", "a!", "a'", "a(", "a)", "a-", "a.", "a_", "a!b",
        "a'b", "a(b)", "a-b", "a.b", "a_b", "!a", "'a'", "(a)", "-a", "_a", ".a", "..a", "a..",
        "...", "!", "'", "(", ")", "-", "_", "shot", "shot-", "shot-1", "shot-10", "shot-2",
        "shot-2a", "shot-2A", "shots", "shot.1", "shot_1", "Shot-1", "SHOT-1", "INPUT", "INPUT2",
        "OUTPUT",
    ];
    keys.extend(fixed.iter().map(|s| (*s).to_owned()));
    keys.insert("L".repeat(256));
    for i in 0..300 {
        keys.insert(format!("shot-{i}"));
        keys.insert(format!("item-{i:04}"));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    while keys.len() < 2600 {
        let len = rng.gen_range(1..=12);
        let key: String = (0..len)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        if key != "." && key != ".." {
            keys.insert(key);
        }
    }
    // `BTreeSet<String>` iterates in byte order; that order is what the server must use.
    keys.into_iter().collect()
}

/// The body stored under `key`: its length differs between keys, so `size` can be checked.
fn body_of(key: &str) -> Vec<u8> {
    let n = key.len() % 17 + key.bytes().map(usize::from).sum::<usize>() % 5;
    key.as_bytes().iter().cycle().take(n).copied().collect()
}

async fn setup() -> (TestServer, String, String) {
    let srv = TestServer::start().await;
    let token = srv.user("alice").await;
    let store = srv.create_store(&token, Some("keys")).await;
    (srv, token, store["id"].as_str().unwrap().to_owned())
}

/// Stores `keys` with many requests in flight at once.
async fn insert_all(srv: &TestServer, token: &str, store: &str, keys: &[String]) {
    for batch in keys.chunks(200) {
        futures_util::future::join_all(
            batch
                .iter()
                .map(|k| srv.put_record(token, store, k, "application/octet-stream", body_of(k))),
        )
        .await;
    }
}

/// One listing page; `query` is the raw query string (without `?`).
async fn page(srv: &TestServer, token: &str, store: &str, query: &str) -> Value {
    let path = if query.is_empty() {
        format!("/v2/key-value-stores/{store}/keys")
    } else {
        format!("/v2/key-value-stores/{store}/keys?{query}")
    };
    let resp = srv.get(&path, token).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    body["data"].clone()
}

fn item_keys(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["key"].as_str().expect("key").to_owned())
        .collect()
}

/// Checks the fields every page has, whatever its position.
fn check_page_shape(p: &Value, limit: u64, start: Option<&str>) {
    let obj = p.as_object().expect("page object");
    for field in [
        "items",
        "count",
        "limit",
        "exclusiveStartKey",
        "isTruncated",
        "nextExclusiveStartKey",
    ] {
        assert!(obj.contains_key(field), "missing {field} in {p}");
    }
    let items = p["items"].as_array().unwrap();
    assert_eq!(p["count"], items.len(), "count");
    assert_eq!(p["limit"], limit, "limit");
    assert!(items.len() as u64 <= limit);
    match start {
        Some(s) => assert_eq!(p["exclusiveStartKey"], s),
        None => assert!(
            p["exclusiveStartKey"].is_null(),
            "exclusiveStartKey: {}",
            p["exclusiveStartKey"]
        ),
    }
    if p["isTruncated"] == true {
        assert_eq!(items.len() as u64, limit, "a truncated page is full");
        assert_eq!(
            p["nextExclusiveStartKey"],
            items.last().unwrap()["key"],
            "nextExclusiveStartKey is the last key"
        );
    } else {
        assert_eq!(p["isTruncated"], false);
        assert!(
            p["nextExclusiveStartKey"].is_null(),
            "last page must end with null: {p}"
        );
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Walks all pages of a listing as the clients do and returns the keys in the order received.
/// `extra` is added to every request (e.g. `prefix=a`); `limit` `None` sends no `limit`.
async fn walk(
    srv: &TestServer,
    token: &str,
    store: &str,
    extra: &str,
    limit: Option<u64>,
) -> (Vec<String>, usize) {
    let mut keys = Vec::new();
    let mut start: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q: Vec<String> = Vec::new();
        if !extra.is_empty() {
            q.push(extra.to_owned());
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        if let Some(s) = &start {
            q.push(format!("exclusiveStartKey={}", encode(s)));
        }
        let p = page(srv, token, store, &q.join("&")).await;
        pages += 1;
        check_page_shape(&p, limit.unwrap_or(1000).min(1000), start.as_deref());
        keys.extend(item_keys(&p));
        if p["isTruncated"] == false {
            break;
        }
        start = Some(p["nextExclusiveStartKey"].as_str().unwrap().to_owned());
        assert!(pages < 10_000, "pagination does not end");
    }
    (keys, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_yields_every_key_once_in_byte_order() {
    let (srv, token, id) = setup().await;
    let keys = many_keys();
    assert!(keys.len() >= 2500);
    let n = keys.len();
    insert_all(&srv, &token, &id, &keys).await;
    assert_eq!(
        data(
            srv.get(&format!("/v2/key-value-stores/{id}"), &token)
                .send()
                .await
                .unwrap()
        )
        .await["stats"]["recordCount"],
        n
    );

    // limit 1000: three pages, the first with a null exclusiveStartKey.
    let first = page(&srv, &token, &id, "limit=1000").await;
    check_page_shape(&first, 1000, None);
    assert_eq!(first["count"], 1000);
    assert_eq!(first["isTruncated"], true);
    assert_eq!(first["nextExclusiveStartKey"], keys[999]);
    assert_eq!(item_keys(&first), keys[..1000].to_vec());
    let second = page(
        &srv,
        &token,
        &id,
        &format!("limit=1000&exclusiveStartKey={}", encode(&keys[999])),
    )
    .await;
    check_page_shape(&second, 1000, Some(&keys[999]));
    assert_eq!(item_keys(&second), keys[1000..2000].to_vec());
    assert_eq!(second["nextExclusiveStartKey"], keys[1999]);
    let third = page(
        &srv,
        &token,
        &id,
        &format!("limit=1000&exclusiveStartKey={}", encode(&keys[1999])),
    )
    .await;
    check_page_shape(&third, 1000, Some(&keys[1999]));
    assert_eq!(third["count"], n - 2000);
    assert_eq!(third["isTruncated"], false);
    assert!(third
        .as_object()
        .unwrap()
        .contains_key("nextExclusiveStartKey"));
    assert_eq!(third["nextExclusiveStartKey"], Value::Null);
    assert_eq!(item_keys(&third), keys[2000..].to_vec());

    // Whole walks with different page sizes, and with no limit at all.
    for limit in [
        Some(1000),
        None,
        Some(7),
        Some(333),
        Some(100),
        Some(2600),
        Some(1),
    ] {
        let (got, pages) = walk(&srv, &token, &id, "", limit).await;
        assert_eq!(got.len(), n, "limit {limit:?}: every key exactly once");
        assert!(
            got == keys,
            "limit {limit:?}: keys out of UTF-8 byte order or missing"
        );
        let per_page = limit.unwrap_or(1000).min(1000) as usize;
        assert_eq!(pages, n.div_ceil(per_page), "limit {limit:?}: pages");
    }
    // n is a multiple of 100: the last page is full and still ends the listing.
    assert_eq!(n % 100, 0);
    let last = page(
        &srv,
        &token,
        &id,
        &format!("limit=100&exclusiveStartKey={}", encode(&keys[n - 101])),
    )
    .await;
    assert_eq!(last["count"], 100);
    assert_eq!(last["isTruncated"], false);
    assert_eq!(last["nextExclusiveStartKey"], Value::Null);

    // Sizes are the exact stored byte sizes.
    let (mut start, mut seen) = (None::<String>, 0);
    loop {
        let q = match &start {
            Some(s) => format!("exclusiveStartKey={}", encode(s)),
            None => String::new(),
        };
        let p = page(&srv, &token, &id, &q).await;
        for item in p["items"].as_array().unwrap() {
            let key = item["key"].as_str().unwrap();
            assert_eq!(item["size"], body_of(key).len(), "size of {key}");
            seen += 1;
        }
        match p["nextExclusiveStartKey"].as_str() {
            Some(s) => start = Some(s.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_and_exclusive_start_key() {
    let (srv, token, id) = setup().await;
    let keys = many_keys();
    insert_all(&srv, &token, &id, &keys).await;

    for prefix in [
        "a", "A", "ab", "shot", "shot-", "shot-1", "shot-2", "item-0", "a(", "'", "!", "(", "-",
        "_", ".", "..", "L", "Shot", "z",
    ] {
        let want: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        assert!(!want.is_empty(), "{prefix}");
        for limit in [Some(1000), Some(3), Some(50), None] {
            let (got, _) = walk(
                &srv,
                &token,
                &id,
                &format!("prefix={}", encode(prefix)),
                limit,
            )
            .await;
            assert!(
                got == want,
                "prefix {prefix:?} limit {limit:?}: got {} keys, want {}",
                got.len(),
                want.len()
            );
        }
    }

    // A prefix that matches nothing: one empty, final page.
    for prefix in ["nothing-here", "shot-9999", "LLM"] {
        let p = page(&srv, &token, &id, &format!("prefix={}", encode(prefix))).await;
        check_page_shape(&p, 1000, None);
        assert_eq!(p["count"], 0, "{prefix}");
        assert_eq!(p["items"], json!([]));
        assert_eq!(p["isTruncated"], false);
        assert_eq!(p["nextExclusiveStartKey"], Value::Null);
    }

    // exclusiveStartKey without prefix: existing keys, keys between existing ones, before all and
    // after all.
    for start in [
        "!",
        "a",
        "a1",
        "a10",
        "shot-15",
        "shot-150x",
        "M",
        "zzzzzzzzzzzzzzzz",
        "(",
        "0",
    ] {
        let want: Vec<String> = keys
            .iter()
            .filter(|k| k.as_str() > start)
            .take(10)
            .cloned()
            .collect();
        let p = page(
            &srv,
            &token,
            &id,
            &format!("limit=10&exclusiveStartKey={}", encode(start)),
        )
        .await;
        check_page_shape(&p, 10, Some(start));
        assert_eq!(item_keys(&p), want, "after {start}");
        let rest = keys.iter().filter(|k| k.as_str() > start).count();
        assert_eq!(p["isTruncated"], rest > 10, "after {start}");
    }
    let last = keys.last().unwrap();
    let p = page(
        &srv,
        &token,
        &id,
        &format!("exclusiveStartKey={}", encode(last)),
    )
    .await;
    check_page_shape(&p, 1000, Some(last));
    assert_eq!(p["count"], 0);
    assert_eq!(p["isTruncated"], false);

    // exclusiveStartKey with a prefix: before, inside and after the prefix range.
    let shot: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("shot-"))
        .cloned()
        .collect();
    for (start, want) in [
        ("a", shot.clone()),
        ("shot", shot.clone()),
        (
            "shot-",
            shot.iter()
                .filter(|k| k.as_str() > "shot-")
                .cloned()
                .collect(),
        ),
        (
            "shot-1",
            shot.iter()
                .filter(|k| k.as_str() > "shot-1")
                .cloned()
                .collect(),
        ),
        (
            "shot-15",
            shot.iter()
                .filter(|k| k.as_str() > "shot-15")
                .cloned()
                .collect(),
        ),
        (
            "shot-2a",
            shot.iter()
                .filter(|k| k.as_str() > "shot-2a")
                .cloned()
                .collect(),
        ),
        ("shot-99", Vec::new()),
        ("shot.", Vec::new()),
        ("t", Vec::new()),
    ] {
        let p = page(
            &srv,
            &token,
            &id,
            &format!("prefix=shot-&exclusiveStartKey={}", encode(start)),
        )
        .await;
        check_page_shape(&p, 1000, Some(start));
        assert!(item_keys(&p) == want, "prefix shot- after {start}: {p}");
        assert_eq!(p["isTruncated"], false);
        // And paged in small steps from there.
        let (got, _) = walk_from(&srv, &token, &id, "prefix=shot-", start, 4).await;
        assert!(got == want, "prefix shot- after {start}, limit 4: {got:?}");
    }
}

/// Like [`walk`], but the first request already has `exclusiveStartKey`.
async fn walk_from(
    srv: &TestServer,
    token: &str,
    store: &str,
    extra: &str,
    start: &str,
    limit: u64,
) -> (Vec<String>, usize) {
    let mut keys = Vec::new();
    let mut start = start.to_owned();
    let mut pages = 0;
    loop {
        let q = format!("{extra}&limit={limit}&exclusiveStartKey={}", encode(&start));
        let p = page(srv, token, store, &q).await;
        pages += 1;
        check_page_shape(&p, limit, Some(&start));
        keys.extend(item_keys(&p));
        match p["nextExclusiveStartKey"].as_str() {
            Some(s) => start = s.to_owned(),
            None => break,
        }
    }
    (keys, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_defaults_clamping_and_bad_values() {
    let (srv, token, id) = setup().await;
    let keys: Vec<String> = (0..1100).map(|i| format!("k{i:04}")).collect();
    insert_all(&srv, &token, &id, &keys).await;

    for (query, limit, count) in [
        ("", 1000, 1000),
        ("limit=0", 1000, 1000),
        ("limit=1000", 1000, 1000),
        ("limit=1001", 1000, 1000),
        ("limit=5000", 1000, 1000),
        ("limit=99999999999999", 1000, 1000),
        ("limit=1", 1, 1),
        ("limit=999", 999, 999),
        // Apify types limit as a double: fractions are truncated, exponents allowed.
        ("limit=1.5", 1, 1),
        ("limit=10.0", 10, 10),
        ("limit=1e2", 100, 100),
        ("limit=1e3", 1000, 1000),
        ("limit=1e30", 1000, 1000),
        ("limit=0.5", 1000, 1000),
    ] {
        let p = page(&srv, &token, &id, query).await;
        check_page_shape(&p, limit, None);
        assert_eq!(p["count"], count, "{query}");
        assert_eq!(p["isTruncated"], true, "{query}");
        assert_eq!(item_keys(&p), keys[..count].to_vec(), "{query}");
    }
    let p = page(&srv, &token, &id, "limit=5000&exclusiveStartKey=k0999").await;
    check_page_shape(&p, 1000, Some("k0999"));
    assert_eq!(p["count"], 100);
    assert_eq!(p["isTruncated"], false);

    for query in [
        "limit=-1",
        "limit=abc",
        "limit=NaN",
        "limit=inf",
        "limit=-0.5",
        "limit=1e",
        "limit=1&limit=2",
        "limit=10&limit=10",
    ] {
        let resp = srv
            .get(&format!("/v2/key-value-stores/{id}/keys?{query}"), &token)
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid-parameter").await;
    }
}

#[tokio::test]
async fn items_have_key_size_and_signed_public_url() {
    let (srv, token, id) = setup().await;
    let entries = [
        ("INPUT", b"{\"a\":1}".to_vec()),
        ("a!-_.'()", b"special".to_vec()),
        ("empty", Vec::new()),
        ("bin", (0..=255u8).collect::<Vec<u8>>()),
    ];
    for (key, body) in &entries {
        srv.put_record(&token, &id, key, "application/octet-stream", body.clone())
            .await;
    }
    let store = data(
        srv.get(&format!("/v2/key-value-stores/{id}"), &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let secret = store["urlSigningSecretKey"]
        .as_str()
        .expect("the owner sees the secret");

    let p = page(&srv, &token, &id, "").await;
    check_page_shape(&p, 1000, None);
    let items = p["items"].as_array().unwrap();
    assert_eq!(items.len(), entries.len());
    let by_key: BTreeMap<&str, &Value> = items
        .iter()
        .map(|i| (i["key"].as_str().unwrap(), i))
        .collect();
    for (key, body) in &entries {
        let item = by_key[key];
        assert_eq!(item.as_object().unwrap().len(), 3, "{item}");
        assert_eq!(item["size"], body.len(), "{key}");
        let url = item["recordPublicUrl"].as_str().expect("recordPublicUrl");
        let expected = format!(
            "{}/v2/key-value-stores/{id}/records/{key}?signature={}",
            srv.url,
            kvstore::auth::record_signature(secret, key)
        );
        assert_eq!(url, expected);
        assert!(url.starts_with("http://"), "absolute URL: {url}");
        // The URL opens the record without a token.
        let resp = srv.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
    }

    // Someone with only the store's signed keys URL gets record URLs that open, too (docs/api.md:
    // the clients showed that plain URLs there are useless to the holder of a shared listing).
    let keys_url = store["keysPublicUrl"].as_str().expect("keysPublicUrl");
    assert!(keys_url.contains("?signature="), "{keys_url}");
    let resp = srv.http.get(keys_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let anon = data(resp).await;
    let anon_items = anon["items"].as_array().unwrap();
    let anon_keys: Vec<&str> = anon_items
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    let keys: Vec<&str> = by_key.keys().copied().collect();
    assert_eq!(anon_keys, keys, "the signed listing shows every key");
    for item in anon_items {
        let key = item["key"].as_str().unwrap();
        let url = item["recordPublicUrl"].as_str().unwrap();
        assert_eq!(
            url,
            format!(
                "{}/v2/key-value-stores/{id}/records/{key}?signature={}",
                srv.url,
                kvstore::auth::record_signature(secret, key)
            )
        );
        let resp = srv.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
    }
    // Without token or signature the listing is not found.
    let resp = srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores/{id}/keys"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-or-token-not-found").await;
}

const SCHEMA: &str = r#"{"schema":{"actorKeyValueStoreSchemaVersion":1,"collections":{"shots":{"keyPrefix":"shot-"},"input":{"key":"INPUT"}}}}"#;

#[tokio::test]
async fn collections_filter_by_key_prefix_and_exact_key() {
    let srv = TestServer::start().await;
    let token = srv.user("alice").await;
    let resp = srv
        .req(Method::POST, "/v2/key-value-stores?name=x", Some(&token))
        .header("content-type", "application/json")
        .body(SCHEMA)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let store = data(resp).await;
    let sent: Value = serde_json::from_str(SCHEMA).unwrap();
    assert_eq!(store["schema"], sent["schema"]);
    let id = store["id"].as_str().unwrap().to_owned();

    let keys = [
        "INPUT", "INPUT2", "INPU", "OUTPUT", "a", "shot", "shot-", "shot-1", "shot-10", "shot-2",
        "shots", "shot_1", "Shot-1",
    ];
    for k in keys {
        srv.put_record(&token, &id, k, "text/plain", k.as_bytes().to_vec())
            .await;
    }
    let list = |q: String| {
        let srv = &srv;
        let token = &token;
        let id = &id;
        async move {
            let p = page(srv, token, id, &q).await;
            assert_eq!(p["isTruncated"], false, "{q}");
            assert_eq!(p["nextExclusiveStartKey"], Value::Null, "{q}");
            item_keys(&p)
        }
    };
    assert_eq!(
        list("collection=shots".into()).await,
        ["shot-", "shot-1", "shot-10", "shot-2"]
    );
    assert_eq!(list("collection=input".into()).await, ["INPUT"]);
    assert_eq!(list("collection=input&prefix=IN".into()).await, ["INPUT"]);
    assert_eq!(
        list("collection=input&prefix=INPUT".into()).await,
        ["INPUT"]
    );
    assert!(list("collection=input&prefix=X".into()).await.is_empty());
    assert!(list("collection=input&prefix=INPUT2".into())
        .await
        .is_empty());
    assert!(list("collection=input&exclusiveStartKey=INPUT".into())
        .await
        .is_empty());
    assert_eq!(
        list("collection=input&exclusiveStartKey=A".into()).await,
        ["INPUT"]
    );
    assert_eq!(
        list("collection=shots&prefix=shot-1".into()).await,
        ["shot-1", "shot-10"]
    );
    assert_eq!(
        list("collection=shots&prefix=s".into()).await,
        ["shot-", "shot-1", "shot-10", "shot-2"]
    );
    assert!(list("collection=shots&prefix=t".into()).await.is_empty());
    assert!(list("collection=shots&prefix=shot_".into())
        .await
        .is_empty());
    assert_eq!(
        list("collection=shots&exclusiveStartKey=shot-1".into()).await,
        ["shot-10", "shot-2"]
    );

    // Paging inside a collection.
    let (got, pages) = walk(&srv, &token, &id, "collection=shots", Some(2)).await;
    assert_eq!(got, ["shot-", "shot-1", "shot-10", "shot-2"]);
    assert_eq!(pages, 2);

    // The ZIP download takes the collection too.
    let resp = srv
        .get(
            &format!("/v2/key-value-stores/{id}/records?collection=shots"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.as_ref())).unwrap();
    let mut names = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut content = String::new();
        f.read_to_string(&mut content).unwrap();
        assert_eq!(content, f.name());
        names.push(f.name().to_owned());
    }
    names.sort();
    assert_eq!(names, ["shot-", "shot-1", "shot-10", "shot-2"]);

    // Unknown collections, also on a store without a schema.
    let resp = srv
        .get(
            &format!("/v2/key-value-stores/{id}/keys?collection=nope"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid-collection").await;
    let plain = srv.create_store(&token, Some("plain")).await;
    let resp = srv
        .get(
            &format!(
                "/v2/key-value-stores/{}/keys?collection=shots",
                plain["id"].as_str().unwrap()
            ),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid-collection").await;
}

#[tokio::test]
async fn invalid_schema_is_400_store_schema_invalid() {
    let srv = TestServer::start().await;
    let token = srv.user("alice").await;
    for (i, body) in [
        json!({"schema": "x"}),
        json!({"schema": 5}),
        json!({"schema": []}),
        json!({"schema": {"actorKeyValueStoreSchemaVersion": 1, "collections": []}}),
        json!({"schema": {"actorKeyValueStoreSchemaVersion": 1, "collections": {"a": {}}}}),
        json!({"schema": {"actorKeyValueStoreSchemaVersion": 1, "collections": {"a": 1}}}),
        json!({"schema": {"actorKeyValueStoreSchemaVersion": 1, "collections": {"a": {"key": 1}}}}),
        json!({"schema": {"actorKeyValueStoreSchemaVersion": 1, "collections": {"a": {"key": "A", "keyPrefix": "a"}}}}),
        json!({"schema": {"actorKeyValueStoreSchemaVersion": 1, "collections": {"a": {"keyPrefix": "a", "contentTypes": "x"}}}}),
    ]
    .into_iter()
    .enumerate()
    {
        let resp = srv
            .req(Method::POST, &format!("/v2/key-value-stores?name=bad{i}"), Some(&token))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "store-schema-invalid").await;
        // Nothing was created.
        let resp = srv
            .get(&format!("/v2/key-value-stores/~bad{i}"), &token)
            .send()
            .await
            .unwrap();
        assert_error(resp, 404, "record-not-found").await;
    }
}

#[tokio::test]
async fn keys_of_a_missing_store_are_404() {
    let (srv, token, id) = setup().await;
    for store in [MISSING_STORE, "~no-such-store", "alice~no-such-store"] {
        let resp = srv
            .get(&format!("/v2/key-value-stores/{store}/keys"), &token)
            .send()
            .await
            .unwrap();
        assert_error(resp, 404, "record-not-found").await;
    }
    srv.put_record(&token, &id, "a", "text/plain", b"x".to_vec())
        .await;
    let resp = srv
        .req(
            Method::DELETE,
            &format!("/v2/key-value-stores/{id}"),
            Some(&token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = srv
        .get(&format!("/v2/key-value-stores/{id}/keys"), &token)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-not-found").await;
}

#[tokio::test]
async fn listings_are_counted_in_list_count() {
    // GET store adds the counts not yet written from memory, except while a write of them is under
    // way (then it may briefly show fewer): no periodic write during this test, so the count must
    // be exact at once (`apply_access` on each backend: tests/conformance.rs).
    let srv = TestServer::start_with(|c| c.access_flush_interval = Duration::from_secs(3600)).await;
    let token = srv.user("alice").await;
    let id = srv.create_store(&token, Some("keys")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let list_count = || async {
        let store = data(
            srv.get(&format!("/v2/key-value-stores/{id}"), &token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        store["stats"]["listCount"].as_u64().expect("listCount")
    };
    assert_eq!(list_count().await, 0);
    for _ in 0..3 {
        page(&srv, &token, &id, "").await;
    }
    page(&srv, &token, &id, "limit=1").await;
    // Also by name.
    let p = page(&srv, &token, "~keys", "prefix=x").await;
    assert_eq!(p["count"], 0);
    assert_eq!(list_count().await, 5);
    // GET store itself is not a listing.
    assert_eq!(list_count().await, 5);
}

#[tokio::test]
async fn listings_only_show_the_stores_own_keys() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let a = srv.create_store(&alice, Some("a")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = srv.create_store(&alice, Some("b")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = srv.create_store(&bob, Some("a")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut want_a, mut want_b, mut want_c) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..30 {
        let key = format!("k{i:02}");
        match i % 3 {
            0 => {
                srv.put_record(&alice, &a, &key, "text/plain", b"a".to_vec())
                    .await;
                want_a.push(key);
            }
            1 => {
                srv.put_record(&alice, &b, &key, "text/plain", b"b".to_vec())
                    .await;
                want_b.push(key);
            }
            _ => {
                srv.put_record(&bob, &c, &key, "text/plain", b"c".to_vec())
                    .await;
                want_c.push(key);
            }
        }
    }
    // The same key in every store.
    for (token, store, want) in [
        (&alice, &a, &mut want_a),
        (&alice, &b, &mut want_b),
        (&bob, &c, &mut want_c),
    ] {
        srv.put_record(token, store, "shared", "text/plain", b"s".to_vec())
            .await;
        want.push("shared".to_owned());
    }
    for (token, store, want) in [
        (&alice, &a, &want_a),
        (&alice, &b, &want_b),
        (&bob, &c, &want_c),
    ] {
        for limit in [Some(1000), Some(4)] {
            let (got, _) = walk(&srv, token, store, "", limit).await;
            assert_eq!(&got, want, "store {store} limit {limit:?}");
        }
        let (got, _) = walk(&srv, token, store, "prefix=k0", Some(2)).await;
        let want_k0: Vec<String> = want
            .iter()
            .filter(|k| k.starts_with("k0"))
            .cloned()
            .collect();
        assert_eq!(got, want_k0);
    }
    // Reached by name, the same listing.
    let (got, _) = walk(&srv, &bob, "~a", "", None).await;
    assert_eq!(got, want_c);
    let (got, _) = walk(&srv, &alice, "alice~a", "", None).await;
    assert_eq!(got, want_a);
}

#[tokio::test]
async fn pagination_survives_changes_between_pages() {
    let (srv, token, id) = setup().await;
    let keys: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
    insert_all(&srv, &token, &id, &keys).await;
    let first = page(&srv, &token, &id, "limit=10").await;
    assert_eq!(item_keys(&first), keys[..10].to_vec());
    let next = first["nextExclusiveStartKey"].as_str().unwrap().to_owned();
    assert_eq!(next, "k09");
    // The cursor key is deleted, a key is added before the cursor and one after it.
    let resp = srv
        .req(
            Method::DELETE,
            &format!("/v2/key-value-stores/{id}/records/{next}"),
            Some(&token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    srv.put_record(&token, &id, "k00a", "text/plain", b"x".to_vec())
        .await;
    srv.put_record(&token, &id, "k10a", "text/plain", b"x".to_vec())
        .await;
    let second = page(
        &srv,
        &token,
        &id,
        &format!("limit=10&exclusiveStartKey={next}"),
    )
    .await;
    check_page_shape(&second, 10, Some(&next));
    assert_eq!(
        item_keys(&second),
        ["k10", "k10a", "k11", "k12", "k13", "k14", "k15", "k16", "k17", "k18"]
    );
    assert_eq!(second["isTruncated"], true);
}
