//! Every store endpoint × every kind of caller × every `generalAccess`, against one model of
//! `shared/DECISIONS.md` ("Access and errors"): the exact status and error type of each answer.
//! Callers: the owner, another user, no token, a bad token, and no token with a valid, a wrong or
//! an expired signature. Runs on the backend of `KVSTORE_TEST_BACKEND` (all three in
//! scripts/test.sh). tests/access.rs holds the finer cases (messages, URLs, listings).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{data, TestServer};
use kvstore::auth::{record_signature, storage_signature};
use reqwest::Method;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Owner,
    OtherUser,
    NoToken,
    BadToken,
    ValidSignature,
    WrongSignature,
    ExpiredSignature,
}

/// What a signature could open: nothing, one record, or the listing and ZIP.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Signs {
    Nothing,
    Record,
    Storage,
}

#[derive(Debug, Clone, Copy)]
struct Endpoint {
    name: &'static str,
    method: &'static str,
    /// The path after `/v2/key-value-stores/`, with `{store}` for the store reference.
    path: &'static str,
    by_name: bool,
    write: bool,
    signs: Signs,
    /// The owner's status.
    ok: u16,
}

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        name: "get store",
        method: "GET",
        path: "{store}",
        by_name: false,
        write: false,
        signs: Signs::Nothing,
        ok: 200,
    },
    Endpoint {
        name: "get store by name",
        method: "GET",
        path: "{store}",
        by_name: true,
        write: false,
        signs: Signs::Nothing,
        ok: 200,
    },
    Endpoint {
        name: "list keys",
        method: "GET",
        path: "{store}/keys",
        by_name: false,
        write: false,
        signs: Signs::Storage,
        ok: 200,
    },
    Endpoint {
        name: "list keys by name",
        method: "GET",
        path: "{store}/keys",
        by_name: true,
        write: false,
        signs: Signs::Storage,
        ok: 200,
    },
    Endpoint {
        name: "records zip",
        method: "GET",
        path: "{store}/records",
        by_name: false,
        write: false,
        signs: Signs::Storage,
        ok: 200,
    },
    Endpoint {
        name: "get record",
        method: "GET",
        path: "{store}/records/k",
        by_name: false,
        write: false,
        signs: Signs::Record,
        ok: 200,
    },
    Endpoint {
        name: "get record by name",
        method: "GET",
        path: "{store}/records/k",
        by_name: true,
        write: false,
        signs: Signs::Record,
        ok: 200,
    },
    Endpoint {
        name: "head record",
        method: "HEAD",
        path: "{store}/records/k",
        by_name: false,
        write: false,
        signs: Signs::Record,
        ok: 200,
    },
    Endpoint {
        name: "put record",
        method: "PUT",
        path: "{store}/records/k",
        by_name: false,
        write: true,
        signs: Signs::Record,
        ok: 201,
    },
    Endpoint {
        name: "post record",
        method: "POST",
        path: "{store}/records/k",
        by_name: false,
        write: true,
        signs: Signs::Record,
        ok: 201,
    },
    Endpoint {
        name: "delete record",
        method: "DELETE",
        path: "{store}/records/gone",
        by_name: false,
        write: true,
        signs: Signs::Record,
        ok: 204,
    },
    Endpoint {
        name: "update store",
        method: "PUT",
        path: "{store}",
        by_name: false,
        write: true,
        signs: Signs::Nothing,
        ok: 200,
    },
    Endpoint {
        name: "list shares",
        method: "GET",
        path: "{store}/shares",
        by_name: false,
        write: true,
        signs: Signs::Nothing,
        ok: 200,
    },
    // Last, so that the store is there for everything else.
    Endpoint {
        name: "delete store",
        method: "DELETE",
        path: "{store}",
        by_name: false,
        write: true,
        signs: Signs::Nothing,
        ok: 204,
    },
];

const ACCESS: &[&str] = &[
    "FOLLOW_USER_SETTING",
    "RESTRICTED",
    "ANYONE_WITH_ID_CAN_READ",
    "ANYONE_WITH_NAME_CAN_READ",
];

/// The model: the status and error type DECISIONS.md gives.
fn expected(e: &Endpoint, caller: Caller, access: &str) -> (u16, Option<&'static str>) {
    // FOLLOW_USER_SETTING follows the server default, RESTRICTED here.
    let readable = match access {
        "ANYONE_WITH_NAME_CAN_READ" => true,
        "ANYONE_WITH_ID_CAN_READ" => !e.by_name,
        _ => false,
    };
    match caller {
        Caller::Owner => (e.ok, None),
        Caller::BadToken => (401, Some("invalid-token")),
        Caller::OtherUser if e.write && readable => (403, Some("insufficient-permissions")),
        Caller::OtherUser if readable => (e.ok, None),
        Caller::OtherUser => (404, Some("record-or-token-not-found")),
        // Anonymous: writes need a token whatever is signed.
        _ if e.write => (401, Some("token-not-provided")),
        _ if readable => (e.ok, None),
        Caller::NoToken => (404, Some("record-or-token-not-found")),
        // A signature counts only where it can open something.
        _ if e.signs == Signs::Nothing => (404, Some("record-or-token-not-found")),
        Caller::ValidSignature => (e.ok, None),
        Caller::WrongSignature | Caller::ExpiredSignature => (403, Some("invalid-signature")),
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn every_endpoint_caller_and_general_access_answers_as_decided() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let callers = [
        Caller::OtherUser,
        Caller::NoToken,
        Caller::BadToken,
        Caller::ValidSignature,
        Caller::WrongSignature,
        Caller::ExpiredSignature,
        // Last: its writes succeed.
        Caller::Owner,
    ];
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, access) in ACCESS.iter().enumerate() {
        let name = format!("matrix-{n}");
        let store = srv.create_store(&alice, Some(&name)).await;
        let id = store["id"].as_str().unwrap().to_owned();
        let resp = srv
            .req(
                Method::PUT,
                &format!("/v2/key-value-stores/{id}"),
                Some(&alice),
            )
            .json(&json!({ "generalAccess": access }))
            .send()
            .await
            .unwrap();
        let secret = data(resp).await["urlSigningSecretKey"]
            .as_str()
            .unwrap()
            .to_owned();
        for key in ["k", "gone"] {
            srv.put_record(&alice, &id, key, "text/plain", b"v".to_vec())
                .await;
        }
        for e in ENDPOINTS {
            for caller in callers {
                let store_ref = if e.by_name {
                    format!("alice~{name}")
                } else {
                    id.clone()
                };
                let mut path = format!(
                    "/v2/key-value-stores/{}",
                    e.path.replace("{store}", &store_ref)
                );
                let signature = match (caller, e.signs) {
                    (Caller::ValidSignature, Signs::Record) => Some(record_signature(&secret, "k")),
                    (Caller::ValidSignature, _) => {
                        Some(storage_signature(&secret, &id, now_ms() + 3_600_000))
                    }
                    (Caller::WrongSignature, Signs::Record) => {
                        Some(record_signature(&secret, "other"))
                    }
                    (Caller::WrongSignature, _) => {
                        Some(storage_signature("not-the-secret", &id, 0))
                    }
                    // Record signatures never expire: an expired storage signature on a record
                    // is simply not its signature.
                    (Caller::ExpiredSignature, _) => {
                        Some(storage_signature(&secret, &id, now_ms() - 60_000))
                    }
                    _ => None,
                };
                if let Some(sig) = &signature {
                    path.push_str(&format!("?signature={sig}"));
                }
                let token = match caller {
                    Caller::Owner => Some(alice.as_str()),
                    Caller::OtherUser => Some(bob.as_str()),
                    Caller::BadToken => Some("not-a-valid-token"),
                    _ => None,
                };
                let method = Method::from_bytes(e.method.as_bytes()).unwrap();
                let mut request = srv.req(method.clone(), &path, token);
                if e.name == "update store" {
                    request = request.json(&json!({ "generalAccess": access }));
                } else if e.write {
                    request = request.header("content-type", "text/plain").body("v");
                }
                let resp = request.send().await.unwrap();
                let status = resp.status().as_u16();
                let error_type = if method == Method::HEAD || status < 400 {
                    None
                } else {
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    body["error"]["type"].as_str().map(str::to_owned)
                };
                let (want_status, want_type) = expected(e, caller, access);
                let want_type = if method == Method::HEAD {
                    None
                } else {
                    want_type
                };
                if status != want_status || error_type.as_deref() != want_type {
                    failures.push(format!(
                        "{access} / {} / {caller:?}: got {status} {error_type:?}, want {want_status} {want_type:?}",
                        e.name
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} answers differ from DECISIONS.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, ACCESS.len() * ENDPOINTS.len() * 7);
}
