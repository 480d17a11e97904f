//! Domain types: validated identifiers (parsed once, at the edge) and the records the storage layer keeps.
//!
//! Nothing here knows about HTTP or about a storage engine.

use std::fmt;

use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = u64;

pub fn now_millis() -> Millis {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Formats a timestamp as Apify does: ISO-8601 with milliseconds and `Z`.
pub fn format_millis(ms: Millis) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Why a piece of input was refused; the HTTP layer turns it into the right Apify error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn random_id() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 17)
}

fn is_apify_id(s: &str) -> bool {
    s.len() == 17 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A store's 17-character alphanumeric id.
    StoreId
);
string_newtype!(
    /// A user's 17-character alphanumeric id.
    UserId
);
string_newtype!(
    /// A store name: DNS-safe, at most 63 characters, unique per user.
    StoreName
);
string_newtype!(
    /// A record key: `^[a-zA-Z0-9!\-_.'()]{1,256}$`, never `.` or `..`.
    RecordKey
);
string_newtype!(
    /// A username: letters, digits, `-`, `_` and `.`; at most 64 characters; never contains `~`.
    Username
);

impl StoreId {
    pub fn generate() -> Self {
        Self(random_id())
    }
    pub fn parse(s: &str) -> Option<Self> {
        is_apify_id(s).then(|| Self(s.to_owned()))
    }
}

impl UserId {
    pub fn generate() -> Self {
        Self(random_id())
    }
    pub fn parse(s: &str) -> Option<Self> {
        is_apify_id(s).then(|| Self(s.to_owned()))
    }
}

pub const STORE_NAME_MAX_LEN: usize = 63;

impl StoreName {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let bytes = s.as_bytes();
        let ok_chars = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-');
        let ok_ends = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
        if bytes.is_empty() || bytes.len() > STORE_NAME_MAX_LEN || !ok_chars || !ok_ends {
            return Err(Invalid(format!(
                "Store name \"{}\" is not valid: it may contain only letters, digits and '-' \
                 (not at the start or end), and be at most {STORE_NAME_MAX_LEN} characters long.",
                truncate_for_message(s)
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

pub const RECORD_KEY_MAX_LEN: usize = 256;

impl RecordKey {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() || s.len() > RECORD_KEY_MAX_LEN {
            return Err(Invalid(format!(
                "Record key must be 1 to {RECORD_KEY_MAX_LEN} characters long."
            )));
        }
        if !s.bytes().all(is_key_byte) {
            return Err(Invalid(format!(
                "Record key \"{}\" contains invalid character. Allowed are a-z, A-Z, 0-9 and !-_.'()",
                truncate_for_message(s)
            )));
        }
        if s == "." || s == ".." {
            return Err(Invalid("Record key may not be \".\" or \"..\".".to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

/// Whether `b` may appear in a record key. Also used to validate prefixes and start keys.
pub fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'!' | b'-' | b'_' | b'.' | b'\'' | b'(' | b')')
}

impl Username {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(Invalid(format!(
                "Username \"{}\" is not valid: use 1 to 64 letters, digits, '-', '_' or '.'.",
                truncate_for_message(s)
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

/// How a request names a store (`{storeId}` of the API, the store argument of `kvstore share`):
/// parsed here once for every caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRef {
    Id(StoreId),
    /// `~name`: the caller's own store of that name.
    OwnName(StoreName),
    /// `username~name`.
    UserName(Username, StoreName),
    /// Cannot name any store.
    Invalid,
}

impl StoreRef {
    /// An id, `~name` or `username~name`.
    pub fn parse(raw: &str) -> Self {
        match raw.split_once('~') {
            None => StoreId::parse(raw).map_or(StoreRef::Invalid, StoreRef::Id),
            Some(("", name)) => StoreName::parse(name).map_or(StoreRef::Invalid, StoreRef::OwnName),
            Some((user, name)) => match (Username::parse(user), StoreName::parse(name)) {
                (Ok(u), Ok(n)) => StoreRef::UserName(u, n),
                _ => StoreRef::Invalid,
            },
        }
    }
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(80).collect()
}

/// An API token as the user holds it. Only its hash is ever stored.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn generate() -> Self {
        Self(format!(
            "kvs_{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 40)
        ))
    }
    pub fn from_secret(s: String) -> Self {
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a token. Tokens are long and random, so one unsalted hash is enough to make a stolen
/// database useless for logging in, and cheap enough for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

/// Who may read a store without being its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GeneralAccess {
    #[default]
    FollowUserSetting,
    Restricted,
    AnyoneWithIdCanRead,
    AnyoneWithNameCanRead,
}

impl GeneralAccess {
    pub const ALL: [GeneralAccess; 4] = [
        GeneralAccess::FollowUserSetting,
        GeneralAccess::Restricted,
        GeneralAccess::AnyoneWithIdCanRead,
        GeneralAccess::AnyoneWithNameCanRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GeneralAccess::FollowUserSetting => "FOLLOW_USER_SETTING",
            GeneralAccess::Restricted => "RESTRICTED",
            GeneralAccess::AnyoneWithIdCanRead => "ANYONE_WITH_ID_CAN_READ",
            GeneralAccess::AnyoneWithNameCanRead => "ANYONE_WITH_NAME_CAN_READ",
        }
    }

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                Invalid(format!(
                    "generalAccess must be one of FOLLOW_USER_SETTING, RESTRICTED, \
                     ANYONE_WITH_ID_CAN_READ, ANYONE_WITH_NAME_CAN_READ; got \"{}\".",
                    truncate_for_message(s)
                ))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub created_at: Millis,
    pub is_admin: bool,
    /// A disabled user's tokens stop working; its stores stay.
    #[serde(default)]
    pub disabled: bool,
}

impl User {
    /// A fresh user, not yet saved.
    pub fn new(username: Username, is_admin: bool) -> Self {
        Self {
            id: UserId::generate(),
            username,
            created_at: now_millis(),
            is_admin,
            disabled: false,
        }
    }
}

/// A stored token: its hash, and whether it may only read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenGrant {
    pub hash: TokenHash,
    pub read_only: bool,
}

/// The user a token authenticates, and what the token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub user: User,
    pub read_only: bool,
}

/// What a user a store is shared with may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShareAccess {
    Read,
    Write,
}

impl ShareAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareAccess::Read => "READ",
            ShareAccess::Write => "WRITE",
        }
    }

    /// `READ` or `WRITE`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "READ" => Ok(ShareAccess::Read),
            "WRITE" => Ok(ShareAccess::Write),
            _ => Err(Invalid(format!(
                "access must be READ or WRITE; got \"{}\".",
                truncate_for_message(s)
            ))),
        }
    }
}

/// Counters kept per store. `record_count` and `storage_bytes` change in the same transaction as the
/// write that changes them; the read/list counters may lag (they are batched in memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    pub record_count: u64,
    pub storage_bytes: u64,
    pub read_count: u64,
    pub write_count: u64,
    pub delete_count: u64,
    pub list_count: u64,
}

/// The longest `title` a store may have, in characters.
pub const MAX_TITLE_CHARS: usize = 1024;

/// A store as the storage layer keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub id: StoreId,
    pub name: Option<StoreName>,
    pub user_id: UserId,
    pub created_at: Millis,
    pub modified_at: Millis,
    pub accessed_at: Millis,
    pub general_access: GeneralAccess,
    pub url_signing_secret_key: String,
    /// The key-value store schema given at creation, kept as JSON text.
    pub schema: Option<String>,
    pub stats: StoreStats,
    /// A human-readable title (apify-client's `update(title=…)`); `None` until one is set.
    #[serde(default)]
    pub title: Option<String>,
    /// The owner is disabled: the store answers administrators only. Not kept with the store; the
    /// backend fills it in from the owner's row whenever it reads a store.
    #[serde(skip)]
    pub owner_disabled: bool,
}

impl StoreInfo {
    /// A fresh store, not yet saved.
    pub fn new(user_id: UserId, name: Option<StoreName>, schema: Option<String>) -> Self {
        let now = now_millis();
        Self {
            id: StoreId::generate(),
            name,
            user_id,
            created_at: now,
            modified_at: now,
            accessed_at: now,
            general_access: GeneralAccess::FollowUserSetting,
            url_signing_secret_key: Alphanumeric.sample_string(&mut rand::thread_rng(), 32),
            schema,
            stats: StoreStats::default(),
            title: None,
            owner_disabled: false,
        }
    }
}

/// What the listing shows of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    pub key: RecordKey,
    pub size: u64,
    pub content_type: String,
    /// Random, new on every write: the record's entity tag.
    pub version: u64,
}

impl RecordMeta {
    /// The strong `ETag` of this version of the record, quoted as HTTP wants it.
    pub fn etag(&self) -> String {
        // By hand: `format!` cost every GET about 1k instructions here.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut etag = String::with_capacity(18);
        etag.push('"');
        for nibble in (0..16).rev() {
            etag.push(char::from(
                HEX[((self.version >> (nibble * 4)) & 0xf) as usize],
            ));
        }
        etag.push('"');
        etag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_sixteen_hex_digits_quoted() {
        for version in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            let meta = RecordMeta {
                key: RecordKey::parse("k").unwrap(),
                size: 0,
                content_type: String::new(),
                version,
            };
            assert_eq!(meta.etag(), format!("\"{version:016x}\""));
        }
    }

    #[test]
    fn record_keys_follow_the_apify_regex() {
        for ok in ["INPUT", "a", "a.b-c_d!e'f(g)", &"x".repeat(256), "..."] {
            assert!(RecordKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ä",
            "a~b",
            &"x".repeat(257),
            "a%20",
        ] {
            assert!(RecordKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_names_are_dns_safe() {
        for ok in ["a", "my-store", "A1", &"x".repeat(63)] {
            assert!(StoreName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a_b", "a.b", "a~b", &"x".repeat(64)] {
            assert!(StoreName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        assert_eq!(format_millis(1_576_136_054_202), "2019-12-12T07:34:14.202Z");
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn ids_are_17_alphanumerics() {
        let id = StoreId::generate();
        assert!(StoreId::parse(id.as_str()).is_some());
        assert!(StoreId::parse("short").is_none());
        assert!(StoreId::parse("~name").is_none());
    }
}
