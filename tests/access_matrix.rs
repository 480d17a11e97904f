//! Every store endpoint × every kind of caller × every `generalAccess`, with the owner enabled and
//! disabled, against one model of `shared/DECISIONS.md` ("Access and errors"): the exact status
//! and error type of each answer. Callers: the owner (full and read-only token), an administrator
//! (full and read-only token), another user, users the store is shared with for reading and for
//! writing, a disabled user, no token, a bad token, and no token with a valid, a wrong, an expired
//! or a look-alike signature. Runs on the backend of `KVSTORE_TEST_BACKEND` (all three in
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
    OwnerReadOnly,
    Admin,
    AdminReadOnly,
    OtherUser,
    ReadShare,
    WriteShare,
    DisabledUser,
    NoToken,
    BadToken,
    ValidSignature,
    WrongSignature,
    ExpiredSignature,
    /// A signature for a key or store id that differs from the real one only in letter case.
    LookAlikeSignature,
}

const CALLERS: &[Caller] = &[
    Caller::OtherUser,
    Caller::ReadShare,
    Caller::DisabledUser,
    Caller::NoToken,
    Caller::BadToken,
    Caller::ValidSignature,
    Caller::WrongSignature,
    Caller::ExpiredSignature,
    Caller::LookAlikeSignature,
    Caller::OwnerReadOnly,
    Caller::AdminReadOnly,
    // Last: their writes succeed.
    Caller::WriteShare,
    Caller::Admin,
    Caller::Owner,
];

/// What a caller may do with the store, as DECISIONS.md grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    None,
    Read,
    /// Records: put, delete.
    Write,
    /// The store itself: update, delete, share.
    Manage,
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
    need: Access,
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
        need: Access::Read,
        signs: Signs::Nothing,
        ok: 200,
    },
    Endpoint {
        name: "get store by name",
        method: "GET",
        path: "{store}",
        by_name: true,
        need: Access::Read,
        signs: Signs::Nothing,
        ok: 200,
    },
    Endpoint {
        name: "list keys",
        method: "GET",
        path: "{store}/keys",
        by_name: false,
        need: Access::Read,
        signs: Signs::Storage,
        ok: 200,
    },
    Endpoint {
        name: "list keys by name",
        method: "GET",
        path: "{store}/keys",
        by_name: true,
        need: Access::Read,
        signs: Signs::Storage,
        ok: 200,
    },
    Endpoint {
        name: "records zip",
        method: "GET",
        path: "{store}/records",
        by_name: false,
        need: Access::Read,
        signs: Signs::Storage,
        ok: 200,
    },
    Endpoint {
        name: "get record",
        method: "GET",
        path: "{store}/records/k",
        by_name: false,
        need: Access::Read,
        signs: Signs::Record,
        ok: 200,
    },
    Endpoint {
        name: "get record by name",
        method: "GET",
        path: "{store}/records/k",
        by_name: true,
        need: Access::Read,
        signs: Signs::Record,
        ok: 200,
    },
    Endpoint {
        name: "head record",
        method: "HEAD",
        path: "{store}/records/k",
        by_name: false,
        need: Access::Read,
        signs: Signs::Record,
        ok: 200,
    },
    Endpoint {
        name: "put record",
        method: "PUT",
        path: "{store}/records/k",
        by_name: false,
        need: Access::Write,
        signs: Signs::Record,
        ok: 201,
    },
    Endpoint {
        name: "post record",
        method: "POST",
        path: "{store}/records/k",
        by_name: false,
        need: Access::Write,
        signs: Signs::Record,
        ok: 201,
    },
    Endpoint {
        name: "delete record",
        method: "DELETE",
        path: "{store}/records/gone",
        by_name: false,
        need: Access::Write,
        signs: Signs::Record,
        ok: 204,
    },
    Endpoint {
        name: "update store",
        method: "PUT",
        path: "{store}",
        by_name: false,
        need: Access::Manage,
        signs: Signs::Nothing,
        ok: 200,
    },
    Endpoint {
        name: "list shares",
        method: "GET",
        path: "{store}/shares",
        by_name: false,
        need: Access::Manage,
        signs: Signs::Nothing,
        ok: 200,
    },
    Endpoint {
        name: "put share",
        method: "PUT",
        path: "{store}/shares/erin",
        by_name: false,
        need: Access::Manage,
        signs: Signs::Nothing,
        ok: 200,
    },
    Endpoint {
        name: "delete share",
        method: "DELETE",
        path: "{store}/shares/erin",
        by_name: false,
        need: Access::Manage,
        signs: Signs::Nothing,
        ok: 204,
    },
    // Each caller deletes a store of its own, so that the others find theirs.
    Endpoint {
        name: "delete store",
        method: "DELETE",
        path: "{store}",
        by_name: false,
        need: Access::Manage,
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
fn expected(
    e: &Endpoint,
    caller: Caller,
    access: &str,
    owner_disabled: bool,
) -> (u16, Option<&'static str>) {
    const NOT_FOUND: (u16, Option<&str>) = (404, Some("record-or-token-not-found"));
    // FOLLOW_USER_SETTING follows the server default, RESTRICTED here.
    let general = match access {
        "ANYONE_WITH_NAME_CAN_READ" => Access::Read,
        "ANYONE_WITH_ID_CAN_READ" if !e.by_name => Access::Read,
        _ => Access::None,
    };
    let granted = match caller {
        // A disabled user's tokens authenticate nobody.
        Caller::BadToken | Caller::DisabledUser => return (401, Some("invalid-token")),
        Caller::Owner | Caller::OwnerReadOnly if owner_disabled => {
            return (401, Some("invalid-token"))
        }
        Caller::Admin => Access::Manage,
        // Anonymous: writes need a token whatever is signed.
        Caller::NoToken
        | Caller::ValidSignature
        | Caller::WrongSignature
        | Caller::ExpiredSignature
        | Caller::LookAlikeSignature
            if e.need > Access::Read =>
        {
            return (401, Some("token-not-provided"))
        }
        // The store of a disabled owner answers administrators only.
        _ if owner_disabled => Access::None,
        Caller::Owner => Access::Manage,
        Caller::OwnerReadOnly => Access::Read,
        Caller::WriteShare => Access::Write,
        Caller::ReadShare => Access::Read.max(general),
        Caller::AdminReadOnly | Caller::OtherUser => general.min(Access::Read),
        _ => general,
    };
    if granted >= e.need {
        return (e.ok, None);
    }
    if granted > Access::None {
        return (403, Some("insufficient-permissions"));
    }
    match caller {
        // A signature counts only where it can open something, never on a disabled owner's store.
        _ if e.signs == Signs::Nothing || owner_disabled => NOT_FOUND,
        Caller::ValidSignature => (e.ok, None),
        Caller::WrongSignature | Caller::ExpiredSignature | Caller::LookAlikeSignature => {
            (403, Some("invalid-signature"))
        }
        _ => NOT_FOUND,
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

/// `id` with the case of its first letter swapped: another store's id, one glance away.
fn look_alike(s: &str) -> String {
    let mut out = String::new();
    let mut swapped = false;
    for c in s.chars() {
        if !swapped && c.is_ascii_alphabetic() {
            swapped = true;
            out.push(if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            });
        } else {
            out.push(c);
        }
    }
    out
}

struct Tokens {
    owner: String,
    owner_read_only: String,
    admin: String,
    admin_read_only: String,
    other: String,
    read_share: String,
    write_share: String,
    disabled: String,
}

impl Tokens {
    fn of(&self, caller: Caller) -> Option<&str> {
        Some(match caller {
            Caller::Owner => &self.owner,
            Caller::OwnerReadOnly => &self.owner_read_only,
            Caller::Admin => &self.admin,
            Caller::AdminReadOnly => &self.admin_read_only,
            Caller::OtherUser => &self.other,
            Caller::ReadShare => &self.read_share,
            Caller::WriteShare => &self.write_share,
            Caller::DisabledUser => &self.disabled,
            Caller::BadToken => "not-a-valid-token",
            Caller::NoToken
            | Caller::ValidSignature
            | Caller::WrongSignature
            | Caller::ExpiredSignature
            | Caller::LookAlikeSignature => return None,
        })
    }
}

/// A store as the owner sets it up: `generalAccess`, two records, shared with carol for reading and
/// with dave for writing. Returns its id and signing secret.
async fn set_up_store(srv: &TestServer, owner: &str, name: &str, access: &str) -> (String, String) {
    let store = srv.create_store(owner, Some(name)).await;
    let id = store["id"].as_str().unwrap().to_owned();
    let resp = srv
        .req(
            Method::PUT,
            &format!("/v2/key-value-stores/{id}"),
            Some(owner),
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
        srv.put_record(owner, &id, key, "text/plain", b"v".to_vec())
            .await;
    }
    for (user, share) in [("carol", "READ"), ("dave", "WRITE")] {
        let resp = srv
            .req(
                Method::PUT,
                &format!("/v2/key-value-stores/{id}/shares/{user}"),
                Some(owner),
            )
            .json(&json!({ "access": share }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "sharing {name} with {user}");
    }
    (id, secret)
}

/// A new token of `user`, issued by the administrator `root`.
async fn token_of(srv: &TestServer, root: &str, user: &str, read_only: bool) -> String {
    let resp = srv
        .req(
            Method::POST,
            &format!("/v2/admin/users/{user}/tokens"),
            Some(root),
        )
        .json(&json!({ "readOnly": read_only }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    data(resp).await["token"].as_str().unwrap().to_owned()
}

async fn set_disabled(srv: &TestServer, root: &str, user: &str, disabled: bool) {
    let resp = srv
        .req(Method::PUT, &format!("/v2/admin/users/{user}"), Some(root))
        .json(&json!({ "disabled": disabled }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// One store a scenario runs against: the main one, or the one a caller deletes.
struct Target {
    id: String,
    name: String,
    secret: String,
}

#[tokio::test]
async fn every_endpoint_caller_and_general_access_answers_as_decided() {
    let srv = TestServer::start().await;
    let root = srv.admin("root").await;
    let alice = srv.user("alice").await;
    // gina owns the stores of the scenarios with a disabled owner.
    let gina = srv.user("gina").await;
    let frank = srv.user("frank").await;
    srv.user("erin").await;
    let shared = Tokens {
        owner: String::new(),
        owner_read_only: String::new(),
        admin: root.clone(),
        admin_read_only: token_of(&srv, &root, "root", true).await,
        other: srv.user("bob").await,
        read_share: srv.user("carol").await,
        write_share: srv.user("dave").await,
        disabled: frank,
    };
    set_disabled(&srv, &root, "frank", true).await;
    let alice_tokens = Tokens {
        owner: alice.clone(),
        owner_read_only: token_of(&srv, &root, "alice", true).await,
        ..shared
    };
    let gina_tokens = Tokens {
        owner: gina.clone(),
        owner_read_only: token_of(&srv, &root, "gina", true).await,
        admin: alice_tokens.admin.clone(),
        admin_read_only: alice_tokens.admin_read_only.clone(),
        other: alice_tokens.other.clone(),
        read_share: alice_tokens.read_share.clone(),
        write_share: alice_tokens.write_share.clone(),
        disabled: alice_tokens.disabled.clone(),
    };

    // Every store is set up while its owner is enabled; then gina is disabled.
    let mut scenarios = Vec::new();
    for owner_disabled in [false, true] {
        let (owner, owner_token) = if owner_disabled {
            ("gina", &gina)
        } else {
            ("alice", &alice)
        };
        for (n, access) in ACCESS.iter().enumerate() {
            let name = format!("matrix-{n}");
            let (id, secret) = set_up_store(&srv, owner_token, &name, access).await;
            let mut deleted = Vec::new();
            for c in 0..CALLERS.len() {
                let name = format!("matrix-{n}-delete-{c}");
                let (id, secret) = set_up_store(&srv, owner_token, &name, access).await;
                deleted.push(Target { id, name, secret });
            }
            scenarios.push((
                owner,
                *access,
                owner_disabled,
                Target { id, name, secret },
                deleted,
            ));
        }
    }
    set_disabled(&srv, &root, "gina", true).await;

    let mut checked = 0;
    let mut failures = Vec::new();
    for (owner, access, owner_disabled, main, deleted) in &scenarios {
        let tokens = if *owner_disabled {
            &gina_tokens
        } else {
            &alice_tokens
        };
        for e in ENDPOINTS {
            for (c, &caller) in CALLERS.iter().enumerate() {
                let target = if e.name == "delete store" {
                    &deleted[c]
                } else {
                    main
                };
                let (id, secret) = (&target.id, &target.secret);
                let store_ref = if e.by_name {
                    format!("{owner}~{}", target.name)
                } else {
                    id.clone()
                };
                let mut path = format!(
                    "/v2/key-value-stores/{}",
                    e.path.replace("{store}", &store_ref)
                );
                let signature = match (caller, e.signs) {
                    (Caller::ValidSignature, Signs::Record) => Some(record_signature(secret, "k")),
                    (Caller::ValidSignature, _) => {
                        Some(storage_signature(secret, id, now_ms() + 3_600_000))
                    }
                    (Caller::WrongSignature, Signs::Record) => {
                        Some(record_signature(secret, "other"))
                    }
                    (Caller::WrongSignature, _) => Some(storage_signature("not-the-secret", id, 0)),
                    // Record signatures never expire: an expired storage signature on a record
                    // is simply not its signature.
                    (Caller::ExpiredSignature, _) => {
                        Some(storage_signature(secret, id, now_ms() - 60_000))
                    }
                    (Caller::LookAlikeSignature, Signs::Record) => {
                        Some(record_signature(secret, "K"))
                    }
                    (Caller::LookAlikeSignature, _) => {
                        Some(storage_signature(secret, &look_alike(id), 0))
                    }
                    _ => None,
                };
                if let Some(sig) = &signature {
                    path.push_str(&format!("?signature={sig}"));
                }
                let method = Method::from_bytes(e.method.as_bytes()).unwrap();
                let mut request = srv.req(method.clone(), &path, tokens.of(caller));
                if e.name == "update store" {
                    request = request.json(&json!({ "generalAccess": access }));
                } else if e.name == "put share" {
                    request = request.json(&json!({ "access": "READ" }));
                } else if e.need == Access::Write && method != Method::DELETE {
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
                let (want_status, want_type) = expected(e, caller, access, *owner_disabled);
                let want_type = if method == Method::HEAD {
                    None
                } else {
                    want_type
                };
                if status != want_status || error_type.as_deref() != want_type {
                    failures.push(format!(
                        "{access}{} / {} / {caller:?}: got {status} {error_type:?}, want {want_status} {want_type:?}",
                        if *owner_disabled { " (owner disabled)" } else { "" },
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
    assert_eq!(checked, 2 * ACCESS.len() * ENDPOINTS.len() * CALLERS.len());

    // Enabled again, gina's stores answer as before.
    set_disabled(&srv, &root, "gina", false).await;
    let (_, _, _, main, _) = &scenarios[ACCESS.len() + 3];
    let resp = srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores/{}/records/k", main.id),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a public store of a re-enabled owner");
}
