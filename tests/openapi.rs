//! The OpenAPI document at `GET /v2/openapi.json`, checked against the real server: it is
//! OpenAPI 3.1, it documents every route of the router (read from `src/api/mod.rs`) and nothing
//! the router does not serve, and the responses of a scripted session (every operation, every
//! error type the server can be made to answer) match the document's statuses, media types,
//! headers and schemas.
//!
//! The JSON Schema check is a small validator written here for the keywords the document uses;
//! it refuses a schema with any other keyword, so the document cannot outgrow it unnoticed, and
//! `the_validator_rejects_what_the_document_forbids` shows that it fails when it should.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use common::TestServer;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- a JSON Schema validator for the subset the document uses -------------------------------

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "example",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
];
/// Keywords the validator checks.
const ASSERTIONS: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "format",
];

struct Validator<'d> {
    doc: &'d Value,
    /// Compiled `pattern`s.
    patterns: std::cell::RefCell<BTreeMap<String, regex::Regex>>,
}

impl<'d> Validator<'d> {
    fn new(doc: &'d Value) -> Self {
        Self {
            doc,
            patterns: Default::default(),
        }
    }

    /// A local reference (`#/components/…`).
    fn resolve(&self, reference: &str) -> &'d Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("not a local $ref: {reference}"));
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {reference} does not resolve"))
    }

    /// Every way `instance` breaks `schema`, as `path: what` lines.
    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, instance, "$", &mut errors);
        errors
    }

    fn is_valid(&self, schema: &Value, instance: &Value) -> bool {
        self.errors(schema, instance).is_empty()
    }

    fn check(&self, schema: &Value, instance: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return errors.push(format!("{at}: nothing is allowed here")),
            Value::Object(o) => o,
            other => panic!("not a schema: {other}"),
        };
        for key in schema.keys() {
            assert!(
                ANNOTATIONS.contains(&key.as_str()) || ASSERTIONS.contains(&key.as_str()),
                "the document uses the keyword {key:?}, which this validator does not check"
            );
        }
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            self.check(self.resolve(reference), instance, at, errors);
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                other => panic!("bad type {other}"),
            };
            if !types.iter().any(|t| has_type(instance, t)) {
                errors.push(format!("{at}: {instance} is not of type {types:?}"));
            }
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            if !values.contains(instance) {
                errors.push(format!("{at}: {instance} is not one of {values:?}"));
            }
        }
        if let Some(value) = schema.get("const") {
            if value != instance {
                errors.push(format!("{at}: {instance} is not {value}"));
            }
        }
        if let Value::Object(object) = instance {
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap();
                if !object.contains_key(name) {
                    errors.push(format!("{at}: required property {name:?} is missing"));
                }
            }
            for (name, value) in object {
                let at = format!("{at}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => self.check(property, value, &at, errors),
                    None => {
                        if let Some(extra) = schema.get("additionalProperties") {
                            self.check(extra, value, &at, errors);
                        }
                    }
                }
            }
        }
        if let (Value::Array(items), Some(item_schema)) = (instance, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{at}[{i}]"), errors);
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, instance, at, errors);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(|sub| self.is_valid(sub, instance)) {
                errors.push(format!("{at}: {instance} matches none of anyOf"));
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = one
                .iter()
                .filter(|sub| self.is_valid(sub, instance))
                .count();
            if matching != 1 {
                errors.push(format!(
                    "{at}: {instance} matches {matching} of oneOf, not exactly one"
                ));
            }
        }
        if let Some(not) = schema.get("not") {
            if self.is_valid(not, instance) {
                errors.push(format!("{at}: {instance} matches a `not` schema"));
            }
        }
        if let Value::String(s) = instance {
            let chars = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if chars < min {
                    errors.push(format!("{at}: {s:?} is shorter than {min}"));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if chars > max {
                    errors.push(format!("{at}: {s:?} is longer than {max}"));
                }
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                let mut patterns = self.patterns.borrow_mut();
                let re = patterns
                    .entry(pattern.to_owned())
                    .or_insert_with(|| regex::Regex::new(pattern).unwrap());
                if !re.is_match(s) {
                    errors.push(format!("{at}: {s:?} does not match {pattern}"));
                }
            }
            let well_formed = match schema.get("format").and_then(Value::as_str) {
                Some("date-time") => regex::Regex::new(
                    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
                )
                .unwrap()
                .is_match(s),
                Some("uri") => reqwest::Url::parse(s).is_ok(),
                _ => true,
            };
            if !well_formed {
                errors.push(format!("{at}: {s:?} is not a {}", schema["format"]));
            }
        }
        if let Some(n) = instance.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if n < min {
                    errors.push(format!("{at}: {n} is below {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if n > max {
                    errors.push(format!("{at}: {n} is above {max}"));
                }
            }
        }
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => panic!("unknown type {other}"),
    }
}

// ---- the document and real responses ----------------------------------------------------------

/// A response as it came back.
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    async fn of(resp: reqwest::Response) -> Self {
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.unwrap().to_vec(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }
}

fn media_matches(documented: &str, actual: &str) -> bool {
    if documented == "*/*" || documented == actual {
        return true;
    }
    match (documented.split_once('/'), actual.split_once('/')) {
        (Some((main, "*")), Some((actual_main, _))) => main == actual_main,
        _ => false,
    }
}

/// Everything wrong with `got` as an answer to `method template` according to the document
/// (`template` may also name a reusable response: `#/components/responses/NotFound`).
fn mismatches(doc: &Value, method: &str, template: &str, got: &Got) -> Vec<String> {
    let v = Validator::new(doc);
    let mut problems = Vec::new();
    let response = if let Some(reference) = template.strip_prefix('#') {
        doc.pointer(reference)
            .unwrap_or_else(|| panic!("no {template} in the document"))
    } else {
        let op = doc["paths"][template]
            .get(method)
            .unwrap_or_else(|| panic!("{method} {template} is not in the document"));
        let Some(response) = op["responses"]
            .get(got.status.to_string())
            .or_else(|| op["responses"].get("default"))
        else {
            return vec![format!(
                "status {} is not documented for {method} {template}",
                got.status
            )];
        };
        response
    };
    let response = match response.get("$ref").and_then(Value::as_str) {
        Some(reference) => v.resolve(reference),
        None => response,
    };
    for (name, header) in response
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        match got.header(name) {
            None => problems.push(format!("documented header {name} is missing")),
            Some(value) => {
                let value = match header["schema"]["type"].as_str() {
                    Some("integer") => match value.parse::<u64>() {
                        Ok(n) => json!(n),
                        Err(_) => json!(value),
                    },
                    _ => json!(value),
                };
                for e in v.errors(&header["schema"], &value) {
                    problems.push(format!("header {name}: {e}"));
                }
            }
        }
    }
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        if !got.body.is_empty() {
            problems.push(format!(
                "no body is documented, got {} bytes",
                got.body.len()
            ));
        }
        return problems;
    };
    if method == "head" {
        if !got.body.is_empty() {
            problems.push("a body on HEAD".into());
        }
        return problems;
    }
    let Some(actual) = got.media_type() else {
        problems.push("no Content-Type".into());
        return problems;
    };
    let Some((_, media)) = content.iter().find(|(m, _)| media_matches(m, &actual)) else {
        problems.push(format!(
            "Content-Type {actual} is not documented ({:?})",
            content.keys().collect::<Vec<_>>()
        ));
        return problems;
    };
    if let Some(schema) = media.get("schema") {
        if actual == "application/json" {
            match serde_json::from_slice::<Value>(&got.body) {
                Ok(body) => problems.extend(v.errors(schema, &body)),
                Err(e) => problems.push(format!("the body is not JSON: {e}")),
            }
        }
    }
    problems
}

/// Routes of the router that are not API endpoints: the storage browser's page and assets
/// (HTML, scripts, styles) are not described by the document.
const OUTSIDE_THE_API: &[&str] = &["/", "/ui/{}"];

/// The routes of the router as `src/api/mod.rs` writes them: `(method, path)`, with path
/// parameters written `{}`; without those `OUTSIDE_THE_API`.
fn router_routes() -> BTreeSet<(String, String)> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs")).unwrap();
    let start = source
        .find("Router::new()")
        .expect("the router in src/api/mod.rs");
    let end = source[start..]
        .find(".fallback(")
        .expect("the router's fallback")
        + start;
    let mut routes = BTreeSet::new();
    for chunk in source[start..end].split(".route(").skip(1) {
        let path = chunk
            .split('"')
            .nth(1)
            .expect("a route's path as a string literal");
        let methods = &chunk[chunk.find(',').unwrap()..];
        for method in ["get", "head", "put", "post", "delete", "patch", "options"] {
            if methods.contains(&format!("{method}("))
                && !OUTSIDE_THE_API.contains(&normalize(path).as_str())
            {
                routes.insert((method.to_owned(), normalize(path)));
            }
        }
    }
    assert!(routes.len() > 10, "could not read the router: {routes:?}");
    routes
}

/// `/a/{x}/b` → `/a/{}/b`.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "head", "put", "post", "delete", "patch", "options"]
                .contains(&method.as_str())
            {
                ops.insert((method.clone(), path.clone()));
            }
        }
    }
    ops
}

async fn fetch_document(srv: &TestServer) -> Value {
    let resp = srv
        .http
        .get(format!("{}/v2/openapi.json", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET /v2/openapi.json needs no token");
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    resp.json().await.unwrap()
}

// ---- the tests --------------------------------------------------------------------------------

#[tokio::test]
async fn the_document_is_openapi_3_1_and_covers_every_route() {
    let srv = TestServer::start().await;
    let doc = fetch_document(&srv).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "openapi: {}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let routed = router_routes();
    let documented: BTreeSet<(String, String)> = documented_operations(&doc)
        .into_iter()
        .map(|(m, p)| (m, normalize(&p)))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented operations the router does not serve: {unrouted:?}"
    );

    // Operation ids are unique, and every operation documents its answers.
    let mut ids = BTreeSet::new();
    for (method, path) in documented_operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let id = op["operationId"].as_str().expect("an operationId");
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no response"
        );
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["in"] == "path" {
                assert_eq!(param["required"], true, "{method} {path}: {param}");
                assert!(
                    path.contains(&format!("{{{}}}", param["name"].as_str().unwrap())),
                    "{method} {path} has no {{{}}}",
                    param["name"]
                );
            }
        }
    }

    // Links name existing operations and their parameters; a created store links to its uses.
    let mut params_of = BTreeMap::new();
    for (method, path) in documented_operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let names: BTreeSet<String> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        params_of.insert(op["operationId"].as_str().unwrap().to_owned(), names);
    }
    let mut links = 0;
    for (method, path) in documented_operations(&doc) {
        let responses = doc["paths"][&path][&method]["responses"]
            .as_object()
            .unwrap();
        for response in responses.values() {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let target = link["operationId"].as_str().expect("a link's operationId");
                let params = params_of
                    .get(target)
                    .unwrap_or_else(|| panic!("link {name} names no operation"));
                for param in link["parameters"].as_object().unwrap().keys() {
                    assert!(
                        params.contains(param),
                        "link {name}: {target} has no {param}"
                    );
                }
                links += 1;
            }
        }
    }
    let created = &doc["paths"]["/v2/key-value-stores"]["post"]["responses"]["201"]["links"];
    assert!(created.get("keyValueStore_get").is_some(), "{created}");
    assert!(links >= 10, "only {links} links");

    // Every local $ref resolves, and every schema uses only what the validator checks.
    let v = Validator::new(&doc);
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"").skip(1) {
        let reference = piece.split('"').next().unwrap();
        v.resolve(reference);
    }
    for schema in doc["components"]["schemas"].as_object().unwrap().values() {
        v.errors(schema, &Value::Null);
    }

    // Security: a bearer token or `?token=`.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["token"]["type"], "apiKey");
    assert_eq!(schemes["token"]["in"], "query");
    assert_eq!(schemes["token"]["name"], "token");

    // The store object: every field, the nullable ones nullable, the page keys required.
    let store = &doc["components"]["schemas"]["KeyValueStore"];
    for field in [
        "id",
        "name",
        "title",
        "userId",
        "username",
        "createdAt",
        "modifiedAt",
        "accessedAt",
        "actId",
        "actRunId",
        "keysPublicUrl",
        "recordsPublicUrl",
        "consoleUrl",
        "urlSigningSecretKey",
        "generalAccess",
        "stats",
        "schema",
    ] {
        assert!(
            store["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "KeyValueStore.{field} is not required"
        );
    }
    for nullable in [
        "name",
        "title",
        "username",
        "actId",
        "actRunId",
        "urlSigningSecretKey",
        "schema",
    ] {
        assert!(
            v.is_valid(&store["properties"][nullable], &Value::Null),
            "KeyValueStore.{nullable} is not nullable"
        );
    }
    assert_eq!(store["properties"]["consoleUrl"]["format"], "uri");
    // offset and limit are doubles, as Apify types them: 10.0 and 1e2 are valid values.
    for (path, name) in [
        ("/v2/key-value-stores", "offset"),
        ("/v2/key-value-stores", "limit"),
        ("/v2/key-value-stores/{store}/keys", "limit"),
    ] {
        let param = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no parameter {name}"));
        for value in [json!(10.0), json!(1e2), json!(0), json!("")] {
            assert!(
                v.is_valid(&param["schema"], &value),
                "{path} {name}={value}"
            );
        }
        for value in [json!(-1), json!(-0.5), json!("abc")] {
            assert!(
                !v.is_valid(&param["schema"], &value),
                "{path} {name}={value}"
            );
        }
    }
    let keys = &doc["components"]["schemas"]["KeyList"];
    for field in ["exclusiveStartKey", "nextExclusiveStartKey"] {
        assert!(keys["required"].as_array().unwrap().contains(&json!(field)));
        assert!(v.is_valid(&keys["properties"][field], &Value::Null));
        assert!(v.is_valid(&keys["properties"][field], &json!("a")));
    }
    srv.stop().await;
}

#[tokio::test]
async fn the_validator_rejects_what_the_document_forbids() {
    let srv = TestServer::start().await;
    let doc = fetch_document(&srv).await;
    let v = Validator::new(&doc);
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let good_store = json!({
        "id": "aaaaaaaaaaaaaaaaa", "name": null, "title": null, "userId": "bbbbbbbbbbbbbbbbb", "username": "alice",
        "createdAt": "2024-01-01T00:00:00.000Z", "modifiedAt": "2024-01-01T00:00:00.000Z",
        "accessedAt": "2024-01-01T00:00:00.000Z", "actId": null, "actRunId": null,
        "keysPublicUrl": "http://h/v2/key-value-stores/aaaaaaaaaaaaaaaaa/keys",
        "recordsPublicUrl": "http://h/v2/key-value-stores/aaaaaaaaaaaaaaaaa/records",
        "consoleUrl": "http://h/#store=aaaaaaaaaaaaaaaaa", "urlSigningSecretKey": null,
        "generalAccess": "RESTRICTED",
        "stats": {"readCount": 0, "writeCount": 0, "deleteCount": 0, "listCount": 0,
                  "storageBytes": 0, "s3StorageBytes": 0, "recordCount": 0},
        "schema": null
    });
    assert_eq!(
        v.errors(&schema("KeyValueStore"), &good_store),
        Vec::<String>::new()
    );
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut s = good_store.clone();
        f(&mut s);
        s
    };
    for (what, bad) in [
        (
            "a missing field",
            broken(&|s| {
                s.as_object_mut().unwrap().remove("name");
            }),
        ),
        ("a wrong type", broken(&|s| s["name"] = json!(5))),
        (
            "a value outside the enum",
            broken(&|s| s["generalAccess"] = json!("PUBLIC")),
        ),
        ("a short id", broken(&|s| s["id"] = json!("abc"))),
        (
            "a negative count",
            broken(&|s| s["stats"]["readCount"] = json!(-1)),
        ),
        (
            "a date that is not one",
            broken(&|s| s["createdAt"] = json!("yesterday")),
        ),
    ] {
        assert!(
            !v.errors(&schema("KeyValueStore"), &bad).is_empty(),
            "{what} was not caught"
        );
    }
    let error = |t: &str| json!({"error": {"type": t, "message": "m"}});
    assert!(v.is_valid(&schema("ErrorEnvelope"), &error("record-not-found")));
    assert!(!v.is_valid(&schema("ErrorEnvelope"), &error("no-such-type")));
    assert!(!v.is_valid(
        &schema("ErrorEnvelope"),
        &json!({"error": {"type": "record-not-found"}})
    ));

    // Whole responses: an undocumented status, a type the status never carries, a wrong media
    // type, a missing documented header.
    let got = |status: u16, content_type: &str, body: Value| Got {
        status,
        headers: {
            let mut h = HeaderMap::new();
            h.insert("content-type", content_type.parse().unwrap());
            h
        },
        body: serde_json::to_vec(&body).unwrap(),
    };
    let store_get = "/v2/key-value-stores/{store}";
    let created = json!({ "data": good_store });
    for (fits, what, method, template, got) in [
        (
            true,
            "a documented 404",
            "get",
            store_get,
            got(404, "application/json", error("record-not-found")),
        ),
        (
            false,
            "an undocumented status",
            "get",
            "/healthz",
            got(418, "application/json", json!({})),
        ),
        (
            false,
            "a type 404 never carries",
            "get",
            store_get,
            got(404, "application/json", error("invalid-token")),
        ),
        (
            false,
            "an undocumented media type",
            "get",
            store_get,
            got(404, "text/plain", error("record-not-found")),
        ),
        (
            false,
            "a 201 without Location",
            "post",
            "/v2/key-value-stores",
            got(201, "application/json", created),
        ),
    ] {
        let problems = mismatches(&doc, method, template, &got);
        assert_eq!(problems.is_empty(), fits, "{what}: {problems:?}");
    }
    srv.stop().await;
}

/// A scripted session over every operation and every error the server can be made to answer,
/// each response checked against the document.
struct Session {
    srv: TestServer,
    doc: Value,
    alice: String,
    bob: String,
    problems: Vec<String>,
    operations: BTreeSet<(String, String)>,
    error_types: BTreeSet<String>,
}

impl Session {
    /// Sends `request` and checks the answer as one to `method template`.
    async fn check(&mut self, method: &str, template: &str, request: RequestBuilder) -> Got {
        let got = Got::of(request.send().await.unwrap()).await;
        self.judge(method, template, &got);
        got
    }

    fn judge(&mut self, method: &str, template: &str, got: &Got) {
        for p in mismatches(&self.doc, method, template, got) {
            self.problems.push(format!(
                "{} {template} → {}: {p}\n    body: {}",
                method.to_uppercase(),
                got.status,
                String::from_utf8_lossy(&got.body[..got.body.len().min(300)])
            ));
        }
        if !template.starts_with('#') {
            self.operations
                .insert((method.to_owned(), template.to_owned()));
        }
        if got.status >= 400 && method != "head" {
            if let Some(t) = serde_json::from_slice::<Value>(&got.body)
                .ok()
                .and_then(|b| b["error"]["type"].as_str().map(str::to_owned))
            {
                self.error_types.insert(t);
            }
        }
    }

    fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        self.srv.req(method, path, token)
    }

    /// A raw request on its own connection, for what reqwest cannot send (a body that stalls).
    async fn raw(&self, request: &[u8], then_wait: Duration) -> Got {
        let addr = self.srv.url.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        tokio::time::sleep(then_wait).await;
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
            .await
            .expect("the server closes the connection")
            .unwrap();
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&bytes[..split]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap();
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                value.trim().parse().unwrap(),
            );
        }
        Got {
            status,
            headers,
            body: bytes[split + 4..].to_vec(),
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn real_responses_match_the_document() {
    let srv = TestServer::start_with(|c| {
        c.max_record_bytes = 1000;
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let doc = fetch_document(&srv).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let mut s = Session {
        srv,
        doc,
        alice,
        bob,
        problems: Vec::new(),
        operations: BTreeSet::new(),
        error_types: BTreeSet::new(),
    };
    let (a, b) = (s.alice.clone(), s.bob.clone());
    let (a, b) = (Some(a.as_str()), Some(b.as_str()));
    use Method as M;
    const STORES: &str = "/v2/key-value-stores";
    const STORE: &str = "/v2/key-value-stores/{store}";
    const KEYS: &str = "/v2/key-value-stores/{store}/keys";
    const ZIP: &str = "/v2/key-value-stores/{store}/records";
    const RECORD: &str = "/v2/key-value-stores/{store}/records/{key}";

    // Operations.
    s.check("get", "/healthz", s.req(M::GET, "/healthz", None))
        .await;
    s.check("get", "/readyz", s.req(M::GET, "/readyz", None))
        .await;
    s.check("get", "/metrics", s.req(M::GET, "/metrics", None))
        .await;
    s.check(
        "get",
        "/v2/openapi.json",
        s.req(M::GET, "/v2/openapi.json", None),
    )
    .await;

    // Users.
    let me = s
        .check("get", "/v2/users/me", s.req(M::GET, "/v2/users/me", a))
        .await;
    let alice_id = me.json()["data"]["id"].as_str().unwrap().to_owned();
    s.check(
        "get",
        "/v2/users/{userId}",
        s.req(M::GET, &format!("/v2/users/{alice_id}"), b),
    )
    .await;
    s.check(
        "get",
        "/v2/users/{userId}",
        s.req(M::GET, "/v2/users/alice", a),
    )
    .await;
    s.check(
        "get",
        "/v2/users/{userId}",
        s.req(M::GET, "/v2/users/nobody", a),
    )
    .await;
    s.check("get", "/v2/users/me", s.req(M::GET, "/v2/users/me", None))
        .await;
    // Not UTF-8 once decoded: no user has that id (it was a plain-text 400 from the framework).
    let not_utf8 = s
        .check(
            "get",
            "/v2/users/{userId}",
            s.req(M::GET, "/v2/users/%FF", a),
        )
        .await;
    assert_eq!(not_utf8.status, 404);

    // Stores: create (201), get-or-create (200), with a schema, list.
    let created = s
        .check(
            "post",
            STORES,
            s.req(M::POST, "/v2/key-value-stores?name=docs", a),
        )
        .await;
    assert_eq!(created.status, 201);
    let id = created.json()["data"]["id"].as_str().unwrap().to_owned();
    let again = s
        .check(
            "post",
            STORES,
            s.req(M::POST, "/v2/key-value-stores?name=docs", a),
        )
        .await;
    assert_eq!(again.status, 200);
    let schema = json!({"schema": {"actorKeyValueStoreSchemaVersion": 1,
        "collections": {"shots": {"keyPrefix": "shot-", "contentTypes": ["image/png"]}}}});
    let with_schema = s
        .check("post", STORES, s.req(M::POST, STORES, a).json(&schema))
        .await;
    assert_eq!(with_schema.status, 201);
    let unnamed = with_schema.json()["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.check(
        "get",
        STORES,
        s.req(
            M::GET,
            "/v2/key-value-stores?limit=1&desc=1&unnamed=true",
            a,
        ),
    )
    .await;
    s.check(
        "get",
        STORES,
        s.req(M::GET, "/v2/key-value-stores?ownership=sharedWithMe", a),
    )
    .await;
    s.check(
        "get",
        STORE,
        s.req(M::GET, &format!("/v2/key-value-stores/{id}"), a),
    )
    .await;
    s.check("get", STORE, s.req(M::GET, "/v2/key-value-stores/~docs", a))
        .await;
    s.check(
        "get",
        STORE,
        s.req(M::GET, "/v2/key-value-stores/alice~docs", a),
    )
    .await;
    let bad_schema = json!({"schema": {"collections": {"x": {"key": "a", "keyPrefix": "b"}}}});
    s.check(
        "post",
        STORES,
        s.req(M::POST, "/v2/key-value-stores?name=bad", a)
            .json(&bad_schema),
    )
    .await;

    // Let everyone with the id read it; then bob reads it (no secret) and may not write it.
    let public = s
        .check(
            "put",
            STORE,
            s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), a)
                .json(&json!({"generalAccess": "ANYONE_WITH_ID_CAN_READ"})),
        )
        .await;
    assert_eq!(public.status, 200);
    let as_bob = s
        .check(
            "get",
            STORE,
            s.req(M::GET, &format!("/v2/key-value-stores/{id}"), b),
        )
        .await;
    assert_eq!(
        as_bob.json()["data"].get("urlSigningSecretKey"),
        Some(&serde_json::Value::Null)
    );
    s.check(
        "get",
        STORE,
        s.req(M::GET, &format!("/v2/key-value-stores/{id}"), None),
    )
    .await;
    s.check(
        "put",
        STORE,
        s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), b)
            .json(&json!({"name": "mine"})),
    )
    .await;
    // Renames: to a name taken, an invalid name, a name of the wrong type, unnamed and back.
    s.check(
        "post",
        STORES,
        s.req(M::POST, "/v2/key-value-stores?name=other", a),
    )
    .await;
    s.check(
        "put",
        STORE,
        s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), a)
            .json(&json!({"name": "other"})),
    )
    .await;
    s.check(
        "put",
        STORE,
        s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), a)
            .json(&json!({"name": "-bad-"})),
    )
    .await;
    s.check(
        "put",
        STORE,
        s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), a)
            .json(&json!({"name": 5})),
    )
    .await;
    s.check(
        "put",
        STORE,
        s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), a)
            .json(&json!({"name": null})),
    )
    .await;
    s.check(
        "put",
        STORE,
        s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), a)
            .json(&json!({"name": "docs"})),
    )
    .await;
    s.check(
        "put",
        STORE,
        s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), a)
            .header("content-encoding", "compress")
            .body("{}"),
    )
    .await;
    s.check(
        "put",
        STORE,
        s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), a)
            .header("content-encoding", "gzip")
            .body(&b"\x1f\x8b\x08\x00garbage"[..]),
    )
    .await;
    s.check(
        "put",
        STORE,
        s.req(M::PUT, &format!("/v2/key-value-stores/{id}"), a)
            .header("content-type", "application/json")
            .body(vec![b' '; 2 * 1024 * 1024]),
    )
    .await;

    // Records.
    let rec = |key: &str| format!("/v2/key-value-stores/{id}/records/{key}");
    let put = s
        .check(
            "put",
            RECORD,
            s.req(M::PUT, &rec("INPUT"), a)
                .header("content-type", "application/json")
                .body(r#"{"hello":"world"}"#),
        )
        .await;
    assert_eq!(put.status, 201);
    s.check(
        "post",
        RECORD,
        s.req(M::POST, &rec("photo.png"), a)
            .header("content-type", "image/png")
            .body(vec![0x89, b'P', b'N', b'G']),
    )
    .await;
    s.check(
        "put",
        RECORD,
        s.req(M::PUT, &rec("zipped"), a)
            .header("content-encoding", "gzip")
            .body(gzip(b"plain text")),
    )
    .await;
    s.check("put", RECORD, s.req(M::PUT, &rec("empty"), a))
        .await;
    let got = s
        .check("get", RECORD, s.req(M::GET, &rec("INPUT"), a))
        .await;
    assert_eq!(got.status, 200);
    let etag = got.header("etag").unwrap().to_owned();
    s.check(
        "get",
        RECORD,
        s.req(M::GET, &format!("{}?attachment=1", rec("photo.png")), None),
    )
    .await;
    s.check(
        "get",
        RECORD,
        s.req(M::GET, &rec("INPUT"), a).header("range", "bytes=0-4"),
    )
    .await;
    s.check(
        "get",
        RECORD,
        s.req(M::GET, &rec("INPUT"), a)
            .header("if-none-match", &etag),
    )
    .await;
    s.check(
        "get",
        RECORD,
        s.req(M::GET, &rec("INPUT"), a)
            .header("range", "bytes=500-"),
    )
    .await;
    s.check("get", RECORD, s.req(M::GET, &rec("missing"), a))
        .await;
    s.check(
        "get",
        RECORD,
        s.req(M::GET, &format!("{}?attachment=maybe", rec("INPUT")), a),
    )
    .await;
    s.check("head", RECORD, s.req(M::HEAD, &rec("INPUT"), a))
        .await;
    s.check(
        "head",
        RECORD,
        s.req(M::HEAD, &rec("INPUT"), a)
            .header("if-none-match", &etag),
    )
    .await;
    s.check("head", RECORD, s.req(M::HEAD, &rec("missing"), a))
        .await;
    s.check("put", RECORD, s.req(M::PUT, &rec("a%20b"), a).body("x"))
        .await;
    s.check(
        "put",
        RECORD,
        s.req(M::PUT, &rec("too-big"), a).body(vec![b'x'; 1001]),
    )
    .await;
    s.check("put", RECORD, s.req(M::PUT, &rec("INPUT"), b).body("x"))
        .await;
    s.check("put", RECORD, s.req(M::PUT, &rec("INPUT"), None).body("x"))
        .await;
    let stalled = s
        .raw(
            format!(
                "PUT /v2/key-value-stores/{id}/records/slow HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {}\r\nContent-Length: 100\r\n\r\nabc",
                s.alice
            )
            .as_bytes(),
            Duration::from_millis(1500),
        )
        .await;
    assert_eq!(stalled.status, 408);
    s.judge("put", RECORD, &stalled);

    // Keys and the ZIP: pages, a collection, a collection the schema lacks, signatures.
    let page = s
        .check(
            "get",
            KEYS,
            s.req(
                M::GET,
                &format!("/v2/key-value-stores/{id}/keys?limit=1"),
                a,
            ),
        )
        .await;
    let next = page.json()["data"]["nextExclusiveStartKey"]
        .as_str()
        .unwrap()
        .to_owned();
    s.check(
        "get",
        KEYS,
        s.req(
            M::GET,
            &format!("/v2/key-value-stores/{id}/keys?exclusiveStartKey={next}&prefix=p"),
            a,
        ),
    )
    .await;
    s.check(
        "get",
        KEYS,
        s.req(
            M::GET,
            &format!("/v2/key-value-stores/{unnamed}/keys?collection=shots"),
            a,
        ),
    )
    .await;
    s.check(
        "get",
        KEYS,
        s.req(
            M::GET,
            &format!("/v2/key-value-stores/{unnamed}/keys?collection=nope"),
            a,
        ),
    )
    .await;
    s.check(
        "get",
        KEYS,
        s.req(
            M::GET,
            &format!("/v2/key-value-stores/{id}/keys?limit=-1"),
            a,
        ),
    )
    .await;
    s.check(
        "get",
        KEYS,
        s.req(
            M::GET,
            &format!("/v2/key-value-stores/{unnamed}/keys?signature=bogus"),
            None,
        ),
    )
    .await;
    s.check(
        "get",
        ZIP,
        s.req(
            M::GET,
            &format!("/v2/key-value-stores/{id}/records?prefix=I"),
            a,
        ),
    )
    .await;
    s.check(
        "get",
        ZIP,
        s.req(
            M::GET,
            &format!("/v2/key-value-stores/{unnamed}/records"),
            None,
        ),
    )
    .await;

    // Authentication and lookups that fail.
    s.check("get", STORES, s.req(M::GET, STORES, None)).await;
    s.check("get", STORES, s.req(M::GET, STORES, Some("not-a-token")))
        .await;
    s.check(
        "get",
        STORES,
        s.req(M::GET, "/v2/key-value-stores?token=a&token=b", None),
    )
    .await;
    s.check(
        "get",
        STORE,
        s.req(M::GET, "/v2/key-value-stores/AAAAAAAAAAAAAAAAA", a),
    )
    .await;
    s.check(
        "get",
        STORE,
        s.req(M::GET, "/v2/key-value-stores/AAAAAAAAAAAAAAAAA", None),
    )
    .await;
    let nowhere = s
        .check(
            "#",
            "#/components/responses/NotFound",
            s.req(M::GET, "/v2/nowhere", a),
        )
        .await;
    assert_eq!(nowhere.status, 404);
    let patch = s
        .check(
            "#",
            "#/components/responses/MethodNotAllowed",
            s.req(M::PATCH, STORES, a),
        )
        .await;
    assert_eq!(patch.status, 405);

    // Deletes.
    s.check("delete", RECORD, s.req(M::DELETE, &rec("INPUT"), a))
        .await;
    s.check("delete", RECORD, s.req(M::DELETE, &rec("INPUT"), a))
        .await;
    s.check(
        "delete",
        STORE,
        s.req(M::DELETE, &format!("/v2/key-value-stores/{id}"), b),
    )
    .await;
    s.check(
        "delete",
        STORE,
        s.req(M::DELETE, &format!("/v2/key-value-stores/{id}"), a),
    )
    .await;
    s.check(
        "delete",
        STORE,
        s.req(M::DELETE, &format!("/v2/key-value-stores/{id}"), a),
    )
    .await;

    // Backups: administrators only.
    let root = kvstore::model::Token::generate();
    s.srv
        .store
        .user_create(
            kvstore::model::Username::parse("root").unwrap(),
            true,
            root.hash(),
        )
        .await
        .unwrap();
    const BACKUP: &str = "/v2/admin/backup";
    let got = s
        .check("get", BACKUP, s.req(M::GET, BACKUP, Some(root.expose())))
        .await;
    assert_eq!(got.status, 200);
    let got = s.check("get", BACKUP, s.req(M::GET, BACKUP, a)).await;
    assert_eq!(got.status, 403);

    // Users and tokens (administrators), and shares (store owners).
    let r = Some(root.expose());
    const USERS: &str = "/v2/admin/users";
    const USER: &str = "/v2/admin/users/{user}";
    const TOKENS: &str = "/v2/admin/users/{user}/tokens";
    assert_eq!(
        s.check("get", USERS, s.req(M::GET, USERS, r)).await.status,
        200
    );
    let dave = json!({"username": "dave", "readOnly": true});
    let got = s
        .check("post", USERS, s.req(M::POST, USERS, r).json(&dave))
        .await;
    assert_eq!(got.status, 201);
    let got = s
        .check("post", USERS, s.req(M::POST, USERS, r).json(&dave))
        .await;
    assert_eq!(got.status, 409, "a taken username");
    let got = s
        .check("post", USERS, s.req(M::POST, USERS, a).json(&dave))
        .await;
    assert_eq!(got.status, 403);
    let disable = json!({"disabled": true});
    let got = s
        .check(
            "put",
            USER,
            s.req(M::PUT, "/v2/admin/users/dave", r).json(&disable),
        )
        .await;
    assert_eq!(got.status, 200);
    let got = s
        .check(
            "put",
            USER,
            s.req(M::PUT, "/v2/admin/users/nobody", r).json(&disable),
        )
        .await;
    assert_eq!(got.status, 404);
    let rotate = json!({"revokeOthers": true});
    let got = s
        .check(
            "post",
            TOKENS,
            s.req(M::POST, "/v2/admin/users/dave/tokens", r)
                .json(&rotate),
        )
        .await;
    assert_eq!(got.status, 201);
    const SHARES: &str = "/v2/key-value-stores/{store}/shares";
    const SHARE: &str = "/v2/key-value-stores/{store}/shares/{username}";
    let created = s
        .req(M::POST, "/v2/key-value-stores?name=to-share", a)
        .send()
        .await
        .unwrap();
    let sid = common::data(created).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let share_bob = format!("/v2/key-value-stores/{sid}/shares/bob");
    let got = s
        .check(
            "put",
            SHARE,
            s.req(M::PUT, &share_bob, a)
                .json(&json!({"access": "READ"})),
        )
        .await;
    assert_eq!(got.status, 200);
    let got = s
        .check(
            "put",
            SHARE,
            s.req(M::PUT, &share_bob, a)
                .json(&json!({"access": "NOPE"})),
        )
        .await;
    assert_eq!(got.status, 400);
    let shares = format!("/v2/key-value-stores/{sid}/shares");
    assert_eq!(
        s.check("get", SHARES, s.req(M::GET, &shares, a))
            .await
            .status,
        200
    );
    assert_eq!(
        s.check("get", SHARES, s.req(M::GET, &shares, b))
            .await
            .status,
        403
    );
    assert_eq!(
        s.check("delete", SHARE, s.req(M::DELETE, &share_bob, a))
            .await
            .status,
        204
    );
    assert_eq!(
        s.check("delete", USER, s.req(M::DELETE, "/v2/admin/users/dave", r))
            .await
            .status,
        204
    );

    // Request headers over 64 KiB in total: 431 in the envelope.
    let got = s
        .check(
            "get",
            STORES,
            s.req(M::GET, STORES, a)
                .header("x-padding", "p".repeat(70 * 1024)),
        )
        .await;
    assert_eq!(got.status, 431);

    // 429 comes from a second server limited to one request per second.
    let limited = TestServer::start_with(|c| c.rate_limit = std::num::NonZeroU32::new(1)).await;
    let carol = limited.user("carol").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let got = s
            .check("get", STORES, limited.req(M::GET, STORES, Some(&carol)))
            .await;
        statuses.push(got.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    limited.stop().await;

    // Every documented operation was exercised, and every error type the server can be made to
    // answer here was seen (a 503 or 500 needs a failing backend).
    let missed: Vec<_> = documented_operations(&s.doc)
        .difference(&s.operations)
        .cloned()
        .collect();
    let expected_types: BTreeSet<String> = s.doc["components"]["schemas"]["ErrorType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        // These need a failing backend or a full disk (tests/full_disk.rs).
        .filter(|t| {
            !matches!(
                t.as_str(),
                "service-unavailable" | "internal-server-error" | "insufficient-storage"
            )
        })
        .collect();
    let unseen: Vec<_> = expected_types.difference(&s.error_types).collect();
    let problems = std::mem::take(&mut s.problems);
    s.srv.stop().await;
    assert!(
        problems.is_empty(),
        "{} responses do not match the document:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        missed.is_empty(),
        "operations the session never called: {missed:?}"
    );
    assert!(
        unseen.is_empty(),
        "error types the session never saw: {unseen:?}"
    );
}

/// The 405 message names a path's methods from a table in `src/api/mod.rs`, apart from the router;
/// this holds the table to the router (its `Allow` header) and to the document, path by path.
#[tokio::test]
async fn the_405_table_names_the_methods_the_router_serves() {
    let srv = TestServer::start().await;
    let doc = fetch_document(&srv).await;
    let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (method, path) in documented_operations(&doc) {
        by_path
            .entry(path)
            .or_default()
            .insert(method.to_uppercase());
    }
    for (path, documented) in &by_path {
        // Any value fits a path parameter: the router answers 405 before a handler reads it.
        let concrete = normalize(path).replace("{}", "x");
        let resp = srv
            .req(Method::PATCH, &concrete, None)
            .send()
            .await
            .unwrap();
        let allow: BTreeSet<String> = resp.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        let message = common::assert_error(resp, 405, "method-not-allowed").await;
        let listed: BTreeSet<String> = message
            .rsplit(": ")
            .next()
            .unwrap()
            .split(", ")
            .map(str::to_owned)
            .collect();
        assert_eq!(&listed, documented, "PATCH {concrete}: {message}");
        // The router answers HEAD wherever it answers GET; the table names HEAD only where a
        // handler of its own serves it.
        let without_head = |s: &BTreeSet<String>| {
            s.iter()
                .filter(|m| *m != "HEAD")
                .cloned()
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(
            without_head(&allow),
            without_head(documented),
            "PATCH {concrete}: Allow"
        );
    }
}
