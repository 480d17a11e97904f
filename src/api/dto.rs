//! Wire types: every JSON shape the API reads or writes (Apify's objects, field names exactly as
//! Apify spells them, and the shares and admin objects beyond Apify's API), with their `ToSchema`
//! derives for the OpenAPI document.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth;
// The admin and share objects are shared with `kvstore admin --remote`, which reads them back
// from this API; they are defined next to that client and are part of this module's wire types.
use crate::model::{format_millis, now_millis, StoreInfo, User, Username};
pub use crate::ops::admin::{IssuedToken, ShareInfo, UserInfo};

/// Apify's success envelope.
#[derive(Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

/// A store's counters.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = KeyValueStoreStats)]
pub struct StoreStatsDto {
    pub read_count: u64,
    pub write_count: u64,
    pub delete_count: u64,
    pub list_count: u64,
    pub storage_bytes: u64,
    pub s3_storage_bytes: u64,
    /// Not in Apify's object; clients ignore unknown fields.
    pub record_count: u64,
}

/// A key-value store object.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = KeyValueStore)]
pub struct StoreDto {
    /// The store's 17-character id.
    #[schema(pattern = "^[a-zA-Z0-9]{17}$")]
    pub id: String,
    /// `null` for an unnamed store.
    #[schema(required = true)]
    pub name: Option<String>,
    /// A human-readable title; `null` until one is set.
    #[schema(required = true)]
    pub title: Option<String>,
    pub user_id: String,
    /// The owner's username; `null` when the owner no longer exists.
    #[schema(required = true)]
    pub username: Option<String>,
    /// ISO 8601, UTC, milliseconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub modified_at: String,
    #[schema(format = DateTime)]
    pub accessed_at: String,
    /// Always `null` (kvstore runs no Actors).
    #[schema(required = true)]
    pub act_id: Option<String>,
    /// Always `null` (kvstore runs no Actors).
    #[schema(required = true)]
    pub act_run_id: Option<String>,
    /// The key listing; signed (`?signature=`, valid 14 days) for callers who may write.
    #[schema(format = "uri")]
    pub keys_public_url: String,
    /// The records ZIP; signed for callers who may write.
    #[schema(format = "uri")]
    pub records_public_url: String,
    /// The store in kvstore's console (the storage browser at `/`).
    #[schema(format = "uri")]
    pub console_url: String,
    /// The secret of the store's signed URLs; `null` for callers who may not write.
    #[schema(required = true)]
    pub url_signing_secret_key: Option<String>,
    #[schema(schema_with = super::openapi::schemas::general_access_schema)]
    pub general_access: &'static str,
    pub stats: StoreStatsDto,
    /// The store's schema (`actorKeyValueStoreSchemaVersion` format), or `null`.
    #[schema(value_type = Option<Object>, required = true)]
    pub schema: Option<serde_json::Value>,
}

impl StoreDto {
    /// `show_secret`: the caller may write, so it may see `urlSigningSecretKey` and signed URLs.
    pub fn new(
        store: &StoreInfo,
        owner: Option<&Username>,
        public_url: &str,
        show_secret: bool,
    ) -> Self {
        let base = format!("{public_url}/v2/key-value-stores/{}", store.id);
        let signature = show_secret.then(|| {
            auth::storage_signature(
                &store.url_signing_secret_key,
                store.id.as_str(),
                now_millis() + auth::PUBLIC_URL_SIGNATURE_TTL_MS,
            )
        });
        let signed = |url: String| match &signature {
            Some(sig) => format!("{url}?signature={sig}"),
            None => url,
        };
        Self {
            id: store.id.to_string(),
            name: store.name.as_ref().map(ToString::to_string),
            title: store.title.clone(),
            user_id: store.user_id.to_string(),
            username: owner.map(ToString::to_string),
            created_at: format_millis(store.created_at),
            modified_at: format_millis(store.modified_at),
            accessed_at: format_millis(store.accessed_at),
            act_id: None,
            act_run_id: None,
            console_url: format!("{public_url}/#store={}", store.id),
            keys_public_url: signed(format!("{base}/keys")),
            records_public_url: signed(format!("{base}/records")),
            url_signing_secret_key: show_secret.then(|| store.url_signing_secret_key.clone()),
            general_access: store.general_access.as_str(),
            stats: StoreStatsDto {
                read_count: store.stats.read_count,
                write_count: store.stats.write_count,
                delete_count: store.stats.delete_count,
                list_count: store.stats.list_count,
                storage_bytes: store.stats.storage_bytes,
                s3_storage_bytes: store.stats.storage_bytes,
                record_count: store.stats.record_count,
            },
            schema: store
                .schema
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
        }
    }
}

/// One page of the caller's stores.
#[derive(Serialize, ToSchema)]
#[schema(as = KeyValueStoreList)]
pub struct StoreListDto {
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
    pub desc: bool,
    pub count: u64,
    pub unnamed: bool,
    pub items: Vec<StoreDto>,
}

/// One key of a key listing.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = KeyListItem)]
pub struct KeyDto {
    pub key: String,
    /// The record's size in bytes.
    pub size: u64,
    /// Signed (`?signature=`) for callers who may write and under a storage signature.
    #[schema(format = "uri")]
    pub record_public_url: String,
}

/// One page of a store's keys.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = KeyList)]
pub struct KeyListDto {
    pub items: Vec<KeyDto>,
    pub count: u64,
    pub limit: u64,
    /// Always present: `null` on the first page.
    #[schema(required = true)]
    pub exclusive_start_key: Option<String>,
    pub is_truncated: bool,
    /// Always present: an explicit `null` on the last page ends the clients' iteration.
    #[schema(required = true)]
    pub next_exclusive_start_key: Option<String>,
}

/// `GET /v2/users/me`: the caller's own account. Apify's private user object also has `email`,
/// `proxy` and `plan`; kvstore has none of them, and the Apify CLI needs only `id` and `username`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PrivateUser)]
pub struct PrivateUserDto {
    pub id: String,
    pub username: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Not in Apify's object; clients ignore unknown fields.
    pub is_admin: bool,
    pub profile: ProfileDto,
}

impl PrivateUserDto {
    pub fn new(user: &User) -> Self {
        Self {
            id: user.id.to_string(),
            username: user.username.to_string(),
            created_at: format_millis(user.created_at),
            is_admin: user.is_admin,
            profile: ProfileDto {},
        }
    }
}

/// `GET /v2/users/{userId}`: what Apify shows on a public profile page.
#[derive(Serialize, ToSchema)]
#[schema(as = PublicUser)]
pub struct PublicUserDto {
    pub username: String,
    pub profile: ProfileDto,
}

impl PublicUserDto {
    pub fn new(user: &User) -> Self {
        Self {
            username: user.username.to_string(),
            profile: ProfileDto {},
        }
    }
}

/// Apify's `profile` (name, bio, picture…): kvstore keeps none of it, so always `{}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Profile)]
pub struct ProfileDto {}

// ---- shares ------------------------------------------------------------------------------------

/// `GET …/shares`.
#[derive(Serialize, ToSchema)]
pub struct ShareListDto {
    pub items: Vec<ShareInfo>,
}

/// `PUT …/shares/{username}`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ShareBody {
    /// `READ` or `WRITE`.
    #[schema(pattern = "^(READ|WRITE)$")]
    pub access: String,
}

// ---- admin -------------------------------------------------------------------------------------

/// `GET /v2/admin/users`.
#[derive(Serialize, ToSchema)]
pub struct UserListDto {
    pub items: Vec<UserInfo>,
}

/// `POST /v2/admin/users`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserBody {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub username: String,
    #[serde(default)]
    pub is_admin: bool,
    /// Hand out a read-only token instead of a full one.
    #[serde(default)]
    pub read_only: bool,
}

/// `PUT /v2/admin/users/{user}`: absent fields are left as they are.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUserBody {
    pub disabled: Option<bool>,
    pub is_admin: Option<bool>,
}

/// `POST /v2/admin/users/{user}/tokens`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTokenBody {
    #[serde(default)]
    pub read_only: bool,
    /// Rotate: every other token of the user stops working at once.
    #[serde(default)]
    pub revoke_others: bool,
}
