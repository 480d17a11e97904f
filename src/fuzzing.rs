//! Entry points for fuzzing the parsers that take raw client input: storage and record
//! signatures, query parameters and store references. Each one takes arbitrary bytes, must never
//! panic, and checks properties of what it parses. `fuzz/` runs them under libFuzzer
//! (`cargo fuzz`, see docs/reliability.md); `tests/fuzz_smoke.rs` runs them on random and mutated
//! inputs in every `cargo test`.

use axum::http::StatusCode;

use crate::api::params::{Params, MAX_LIMIT};
use crate::auth::{
    record_signature, storage_signature, verify_record_signature, verify_storage_signature,
    SignatureError,
};
use crate::error::ApiError;
use crate::model::{RecordKey, StoreName, StoreRef};

/// Splits fuzz input into `n` strings at `0xff` bytes (never valid UTF-8, so a natural separator).
fn fields(data: &[u8], n: usize) -> Vec<String> {
    let mut out: Vec<String> = data
        .splitn(n, |b| *b == 0xff)
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    out.resize(n, String::new());
    out
}

/// `signature` of a storage or record URL: malformed input is refused, never accepted; a
/// signature made with the secret verifies, and one made for another store or key does not.
pub fn signatures(data: &[u8]) {
    let f = fields(data, 4);
    let (secret, resource, signature) = (&f[0], &f[1], &f[2]);
    let now = f[3].bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    // Arbitrary signatures: any verdict, but no panic; a record signature is accepted only if it
    // is exactly the one the secret makes.
    let _ = verify_storage_signature(secret, resource, signature, now);
    let record = verify_record_signature(secret, resource, signature);
    if record.is_ok() {
        assert_eq!(*signature, record_signature(secret, resource));
    }
    // Round trips.
    let expires = now / 2;
    let made = storage_signature(secret, resource, expires);
    let verdict = verify_storage_signature(secret, resource, &made, now);
    if expires == 0 || expires >= now {
        assert_eq!(verdict, Ok(()));
    } else {
        assert_eq!(verdict, Err(SignatureError::Expired));
    }
    let other = format!("{resource}x");
    assert!(verify_storage_signature(secret, &other, &made, 0).is_err());
    let made = record_signature(secret, resource);
    assert_eq!(verify_record_signature(secret, resource, &made), Ok(()));
    assert!(verify_record_signature(secret, &other, &made).is_err());
}

/// Asserts that a refusal is 400 `invalid-parameter` with a message (docs/api.md: every bad
/// parameter gets that envelope), not another error.
fn assert_invalid_parameter(e: &ApiError, what: &str, query: &str) {
    assert!(
        matches!(e, ApiError::InvalidParameter(_)),
        "{what} of {query:?}: {e:?} is not invalid-parameter"
    );
    assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{what} of {query:?}");
    assert_eq!(e.error_type(), "invalid-parameter", "{what} of {query:?}");
    assert!(!e.to_string().is_empty(), "{what} of {query:?}: no message");
}

/// A query string: every getter answers a value or an `invalid-parameter` error; a parameter
/// that is absent reads as absent (false, no number); a parameter that cannot be read (given
/// twice) makes every getter refuse it; a limit is always within `1..=MAX_LIMIT`, the maximum
/// when none is given.
pub fn query_params(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    let params = Params::from_query(Some(&query));
    for name in [
        "limit",
        "offset",
        "desc",
        "unnamed",
        "exclusiveStartKey",
        "prefix",
        "token",
    ] {
        let raw = params.get(name);
        let flag = params.bool(name);
        let number = params.u64(name);
        match &raw {
            Ok(Some(v)) => assert!(!v.is_empty(), "get({name}) of {query:?}: an empty value"),
            Ok(None) => {
                assert!(
                    matches!(flag, Ok(false)),
                    "bool({name}) of {query:?} without it: {flag:?}"
                );
                assert!(
                    matches!(number, Ok(None)),
                    "u64({name}) of {query:?} without it: {number:?}"
                );
            }
            Err(e) => {
                assert_invalid_parameter(e, &format!("get({name})"), &query);
                assert!(flag.is_err() && number.is_err(), "{name} of {query:?}");
            }
        }
        if let Err(e) = &flag {
            assert_invalid_parameter(e, &format!("bool({name})"), &query);
        }
        if let Err(e) = &number {
            assert_invalid_parameter(e, &format!("u64({name})"), &query);
        }
    }
    match params.limit() {
        Ok(limit) => {
            assert!(
                (1..=MAX_LIMIT).contains(&limit),
                "limit {limit} of {query:?}"
            );
            if matches!(params.get("limit"), Ok(None)) {
                assert_eq!(limit, MAX_LIMIT, "no limit given in {query:?}");
            }
        }
        Err(e) => assert_invalid_parameter(&e, "limit()", &query),
    }
}

/// A `{storeId}` path segment: an id, `~name` or `username~name`; what parses re-parses to the
/// same, and record keys and store names obey their rules.
pub fn store_refs(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    match StoreRef::parse(&raw) {
        StoreRef::Id(id) => assert_eq!(id.as_str(), raw),
        StoreRef::OwnName(name) => assert_eq!(format!("~{name}"), raw),
        StoreRef::UserName(user, name) => assert_eq!(format!("{user}~{name}"), raw),
        StoreRef::Invalid => {}
    }
    if let Ok(key) = RecordKey::parse(&raw) {
        assert!(!key.as_str().is_empty() && key.as_str().len() <= 256);
        assert!(!key.as_str().contains('/'));
    }
    if let Ok(name) = StoreName::parse(&raw) {
        assert!(!name.as_str().contains('~'));
    }
}
