//! The OpenAPI schemas of what handlers read and write beyond the wire types of `dto.rs`: path
//! and query parameters (`StoreRef`, `RecordKey`, `QueryBool`, `NonNegativeNumber`, …), record
//! bodies, the JSON bodies of the store operations and `/healthz`. Kept apart from the document
//! (`mod.rs`), which lists the handlers, so that handlers can name these without an import cycle.

use utoipa::openapi::schema::{
    AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{self, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::model::{GeneralAccess, RECORD_KEY_MAX_LEN, STORE_NAME_MAX_LEN};

/// A string schema that allows only `values`.
pub(super) fn string_enum(values: Vec<&'static str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
}

/// `GET /healthz` and `GET /readyz`.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the JSON that `ops.rs` writes
pub struct Health {
    #[schema(schema_with = health_status)]
    status: String,
}

fn health_status() -> ObjectBuilder {
    string_enum(vec!["ok", "unavailable"])
}

/// `generalAccess` of a store object.
pub fn general_access_schema() -> ObjectBuilder {
    string_enum(GeneralAccess::ALL.iter().map(|a| a.as_str()).collect())
        .description(Some("Who may read the store besides its owner"))
}

/// The characters of a record key.
const KEY_CHARS: &str = "a-zA-Z0-9!_.'()-";
/// The same without `.`.
const KEY_CHARS_NO_DOT: &str = "a-zA-Z0-9!_'()-";

/// `{store}`: a 17-character id, `~name` (the caller's store) or `username~name`.
pub struct StoreRef;

impl PartialSchema for StoreRef {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                "^(?:[a-zA-Z0-9]{{17}}|[a-zA-Z0-9._-]{{0,64}}~{})$",
                store_name_pattern()
            )))
            .description(Some(
                "A store id (17 characters), `~name` (the caller's store) or `username~name`",
            ))
            .into()
    }
}

impl ToSchema for StoreRef {}

/// A store name, without anchors.
fn store_name_pattern() -> String {
    format!(
        "[a-zA-Z0-9](?:[a-zA-Z0-9-]{{0,{}}}[a-zA-Z0-9])?",
        STORE_NAME_MAX_LEN - 2
    )
}

/// A store name: letters, digits and `-` (not at the ends), at most 63 characters.
pub struct StoreName;

impl PartialSchema for StoreName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^{}$", store_name_pattern())))
            .max_length(Some(STORE_NAME_MAX_LEN))
            .into()
    }
}

impl ToSchema for StoreName {}

/// `?name=` of get-or-create: a store name; empty (or absent) makes an unnamed store.
pub struct StoreNameParam;

impl PartialSchema for StoreNameParam {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^(?:{})?$", store_name_pattern())))
            .max_length(Some(STORE_NAME_MAX_LEN))
            .into()
    }
}

impl ToSchema for StoreNameParam {}

/// `{key}`: `^[a-zA-Z0-9!\-_.'()]{1,256}$`, but not `.` or `..`.
pub struct RecordKey;

impl PartialSchema for RecordKey {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                "^(?:[{KEY_CHARS}]*[{KEY_CHARS_NO_DOT}][{KEY_CHARS}]*|\\.{{3,}})$"
            )))
            .min_length(Some(1))
            .max_length(Some(RECORD_KEY_MAX_LEN))
            .description(Some("1 to 256 of `a-zA-Z0-9!-_.'()`; not `.` or `..`"))
            .into()
    }
}

impl ToSchema for RecordKey {}

/// A boolean query parameter as both clients send them.
pub struct QueryBool;

impl PartialSchema for QueryBool {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(?:1|0|[tT][rR][uU][eE]|[fF][aA][lL][sS][eE])?$"))
            .description(Some(
                "A boolean: `1`, `0`, `true` or `false` (any case); empty or absent is false",
            ))
            .into()
    }
}

impl ToSchema for QueryBool {}

/// A record body: any bytes, of any content type.
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(
                openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for Binary {}

/// `limit` and `offset`: Apify types them `double`. A fraction is truncated; values above
/// 2^53 − 1 count as 2^53 − 1; an empty value counts as absent (the one string allowed).
pub struct NonNegativeNumber;

impl PartialSchema for NonNegativeNumber {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Number, Type::String]))
            .format(Some(SchemaFormat::KnownFormat(
                openapi::KnownFormat::Double,
            )))
            .minimum(Some(0))
            .max_length(Some(0))
            .description(Some(
                "A finite non-negative number, in decimal or exponent notation (`10`, `10.0`, \
                 `1e2`); a fraction is truncated, and values above 2^53 − 1 count as 2^53 − 1. \
                 An empty value counts as absent",
            ))
            .into()
    }
}

impl ToSchema for NonNegativeNumber {}

/// The JSON body of `POST /v2/key-value-stores` (optional; `null` or empty is no schema).
#[derive(ToSchema)]
#[allow(dead_code)] // documents what `stores_create` reads
pub struct CreateStoreBody {
    /// A store schema; `null` or absent for none.
    #[schema(schema_with = nullable_store_schema)]
    schema: Option<serde_json::Value>,
}

/// The JSON body of `PUT /v2/key-value-stores/{store}`; absent fields are left unchanged.
#[derive(ToSchema)]
#[allow(dead_code)] // documents what `store_update` reads
#[serde(rename_all = "camelCase")]
pub struct UpdateStoreBody {
    /// The new name, or `null` to make the store unnamed.
    #[schema(schema_with = nullable_store_name)]
    name: Option<String>,
    /// `null` leaves it unchanged.
    #[schema(schema_with = nullable_general_access)]
    general_access: Option<String>,
    /// A human-readable title, or `null` to remove it.
    #[schema(schema_with = nullable_title)]
    title: Option<String>,
}

fn nullable_title() -> OneOfBuilder {
    nullable(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(crate::model::MAX_TITLE_CHARS)),
    )
}

fn nullable(schema: impl Into<RefOr<Schema>>) -> OneOfBuilder {
    OneOfBuilder::new()
        .item(schema)
        .item(ObjectBuilder::new().schema_type(Type::Null))
}

fn nullable_store_name() -> OneOfBuilder {
    nullable(StoreName::schema())
}

fn nullable_general_access() -> OneOfBuilder {
    nullable(general_access_schema())
}

fn nullable_store_schema() -> OneOfBuilder {
    nullable(store_schema())
}

/// A key-value store schema, as far as kvstore checks it: `collections` maps names to objects
/// with exactly one of `key` or `keyPrefix` (a string) and optional `contentTypes` (strings).
fn store_schema() -> ObjectBuilder {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let has = |field: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .required(field)
    };
    let collection = AllOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("key", string())
                .property("keyPrefix", string())
                .property("contentTypes", ArrayBuilder::new().items(string())),
        )
        .item(OneOfBuilder::new().item(has("key")).item(has("keyPrefix")));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "A key-value store schema (`actorKeyValueStoreSchemaVersion` format)",
        ))
        .property(
            "collections",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(collection)),
        )
}
