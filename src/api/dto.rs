//! Wire types: the JSON shapes of Apify's API, field names exactly as Apify spells them.

use serde::Serialize;

use crate::auth;
use crate::model::{format_millis, now_millis, StoreInfo, User, Username};

#[derive(Serialize)]
pub struct Data<T> {
    pub data: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreDto {
    pub id: String,
    pub name: Option<String>,
    pub user_id: String,
    pub username: Option<String>,
    pub created_at: String,
    pub modified_at: String,
    pub accessed_at: String,
    pub act_id: Option<String>,
    pub act_run_id: Option<String>,
    pub keys_public_url: String,
    pub records_public_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_signing_secret_key: Option<String>,
    pub general_access: &'static str,
    pub stats: StoreStatsDto,
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
            user_id: store.user_id.to_string(),
            username: owner.map(ToString::to_string),
            created_at: format_millis(store.created_at),
            modified_at: format_millis(store.modified_at),
            accessed_at: format_millis(store.accessed_at),
            act_id: None,
            act_run_id: None,
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

#[derive(Serialize)]
pub struct StoreListDto {
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
    pub desc: bool,
    pub count: u64,
    pub unnamed: bool,
    pub items: Vec<StoreDto>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyDto {
    pub key: String,
    pub size: u64,
    pub record_public_url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyListDto {
    pub items: Vec<KeyDto>,
    pub count: u64,
    pub limit: u64,
    /// Always present: `null` on the first page.
    pub exclusive_start_key: Option<String>,
    pub is_truncated: bool,
    /// Always present: an explicit `null` on the last page ends the clients' iteration.
    pub next_exclusive_start_key: Option<String>,
}

/// `GET /v2/users/me`: the caller's own account. Apify's private user object also has `email`,
/// `proxy` and `plan`; kvstore has none of them, and the Apify CLI needs only `id` and `username`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivateUserDto {
    pub id: String,
    pub username: String,
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
#[derive(Serialize)]
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
#[derive(Serialize)]
pub struct ProfileDto {}
