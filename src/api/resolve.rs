//! The one access path of every request on a store, its keys, its records or its shares: the
//! token, `{storeId}` (an id, `~name` or `username~name`), the record key and any signature become
//! the store the caller may use, with one question to [`auth::access`], or the error answers of
//! `shared/DECISIONS.md`: no token where one is needed → 401; may not read → 404
//! `record-or-token-not-found` (existence is never revealed); may read but not write → 403; missing
//! store, caller may look → 404 `record-not-found`.
//!
//! A store named by id (what the clients send) costs one storage call,
//! [`crate::storage::RecordStore::record_read`]: the token's user, the store, the caller's share and, for
//! `GET record`, the record, for a key listing, its page of keys. A name costs the lookups it
//! needs.
//!
//! Errors come in this order: a token that authenticates nobody (401), a bad record key (400), no
//! token for a write (401), a repeated `signature` (400), then the store and the access decision.

use crate::auth::{self, Access, Caller, ReachedBy, SignatureError};
use crate::error::{ApiError, ApiResult};
use crate::model::{
    now_millis, Invalid, RecordKey, ShareAccess, StoreId, StoreInfo, StoreRef, TokenHash,
};
use crate::storage::{AccessStamp, KeyListQuery, KeyPage, Record};

use super::{AppState, BearerToken};

/// What the request wants to do with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    /// Put or delete records.
    Write,
    /// Update, delete or share the store itself.
    Manage,
}

/// What a request names and asks for, as it arrived: [`resolve`] checks it in the order of the
/// error answers.
pub struct Ask<'a> {
    /// `{storeId}`, unparsed.
    store: &'a str,
    /// `{key}` of a record request.
    key: Option<&'a Result<RecordKey, Invalid>>,
    need: Need,
    /// The `signature` query parameter: a record signature on a record request, a storage
    /// signature (key listing, records ZIP) otherwise.
    signature: ApiResult<Option<&'a str>>,
    /// Read the record too (`GET record`).
    read_record: bool,
    /// List these keys too (`GET keys`).
    keys: Option<&'a KeyListQuery>,
    /// A PUT or DELETE of the record, which confirms the access check itself (see
    /// [`Resolved::unconfirmed`]).
    writing: bool,
}

impl<'a> Ask<'a> {
    /// A request on the store itself, its keys, its records ZIP or its shares.
    pub fn store(store: &'a str, need: Need) -> Self {
        Ask {
            store,
            key: None,
            need,
            signature: Ok(None),
            read_record: false,
            keys: None,
            writing: false,
        }
    }

    /// A request on one record.
    pub fn record(store: &'a str, key: &'a Result<RecordKey, Invalid>, need: Need) -> Self {
        Ask {
            key: Some(key),
            ..Ask::store(store, need)
        }
    }

    /// With the request's `signature` parameter.
    pub fn signed(self, signature: ApiResult<Option<&'a str>>) -> Self {
        Ask { signature, ..self }
    }

    /// Also read the record; by id it comes in the same storage call as the access check.
    pub fn reading_record(self) -> Self {
        Ask {
            read_record: true,
            ..self
        }
    }

    /// Also list the store's keys; by id they come in the same storage call as the access check.
    pub fn listing_keys(self, query: &'a KeyListQuery) -> Self {
        Ask {
            keys: Some(query),
            ..self
        }
    }

    /// A PUT or DELETE of the record that carries [`Resolved::unconfirmed`] into its write.
    pub fn writing_record(self) -> Self {
        Ask {
            writing: true,
            ..self
        }
    }
}

/// The answer to a record key that is not valid.
pub fn bad_key(invalid: &Invalid) -> ApiError {
    ApiError::InvalidRecordKey(invalid.0.clone())
}

pub struct Resolved {
    /// The store; its counters may lag (see [`Resolved::store_with_counters`]).
    pub store: StoreInfo,
    pub access: Access,
    /// Access came from a valid signature rather than a token or `generalAccess`.
    pub by_signature: bool,
    /// The record, when the ask read it and it exists.
    pub record: Option<Record>,
    /// The page of keys, when the ask listed them; `None` then if the store is gone since.
    pub keys: Option<KeyPage>,
    /// Whether `store`'s counters are exact: `record_read` may leave them out.
    counters_exact: bool,
    /// For an ask [`Ask::writing_record`]: the access was decided from the backend's caches, not
    /// yet confirmed; the write must carry this and, if it comes back stale, resolve again without
    /// [`Ask::writing_record`] (see [`crate::storage::RecordStore::record_read_for_write`]).
    pub unconfirmed: Option<AccessStamp>,
}

impl Resolved {
    pub fn may_write(&self) -> bool {
        self.access >= Access::Write
    }

    /// The store with exact counters, for showing it (`GET store`).
    pub async fn store_with_counters(&self, state: &AppState) -> ApiResult<StoreInfo> {
        if self.counters_exact {
            return Ok(self.store.clone());
        }
        // Deleted since the access check: gone for whoever asks.
        state
            .store
            .store_get(&self.store.id)
            .await?
            .ok_or(ApiError::StoreNotFound)
    }
}

/// A signature given with the request and what it may open.
#[derive(Debug, Clone, Copy)]
enum Signed<'a> {
    None,
    /// A record signature for this key (GET/HEAD record).
    Record {
        key: &'a str,
        signature: &'a str,
    },
    /// A storage signature (key listing, records ZIP).
    Storage {
        signature: &'a str,
    },
}

/// The syntax of an ask, checked before any store is looked up.
struct Checked<'a> {
    key: Option<&'a RecordKey>,
    signed: Signed<'a>,
}

fn check<'a>(
    token: &BearerToken,
    key: Option<&'a Result<RecordKey, Invalid>>,
    need: Need,
    signature: ApiResult<Option<&'a str>>,
) -> ApiResult<Checked<'a>> {
    let key = key.map(|k| k.as_ref().map_err(bad_key)).transpose()?;
    if need != Need::Read && !token.given() {
        return Err(ApiError::TokenNotProvided);
    }
    let signed = match (signature?, key) {
        (None, _) => Signed::None,
        (Some(signature), Some(key)) => Signed::Record {
            key: key.as_str(),
            signature,
        },
        (Some(signature), None) => Signed::Storage { signature },
    };
    Ok(Checked { key, signed })
}

/// What the storage layer found for an ask.
struct Found {
    caller: Caller,
    store: StoreInfo,
    reached_by: ReachedBy,
    share: Option<ShareAccess>,
    record: Option<Record>,
    keys: Option<KeyPage>,
    /// Everything came from one `record_read` (by id), the record or the keys too when asked for.
    one_call: bool,
    counters_exact: bool,
    unconfirmed: Option<AccessStamp>,
}

/// The store, key or record request's one way to the store and the caller's access.
pub async fn resolve(state: &AppState, token: &BearerToken, ask: Ask<'_>) -> ApiResult<Resolved> {
    let Ask {
        store: raw,
        key,
        need,
        signature,
        read_record,
        keys,
        writing,
    } = ask;
    let (found, checked) = match (check(token, key, need, signature), StoreRef::parse(raw)) {
        (Ok(checked), StoreRef::Id(id)) => {
            let key = checked.key.filter(|_| read_record);
            let found = by_id(state, token, &id, key, keys, writing).await?;
            // Refused on the caches' word alone: ask the database before answering.
            let found = if found.unconfirmed.is_some()
                && decide(state, &found, need, checked.signed).is_err()
            {
                by_id(state, token, &id, key, keys, false).await?
            } else {
                found
            };
            (found, checked)
        }
        (Ok(checked), by_name) => (by_name_of(state, token, by_name).await?, checked),
        (Err(e), _) => {
            // A token that authenticates nobody is answered first.
            token.caller(token.lookup(state).await?)?;
            return Err(e);
        }
    };
    let (access, by_signature) = decide(state, &found, need, checked.signed)?;
    let record = match checked.key.filter(|_| read_record && !found.one_call) {
        Some(key) => state.store.record_get(&found.store.id, key).await?,
        None => found.record,
    };
    let keys = match keys.filter(|_| !found.one_call) {
        Some(query) => state.store.keys_list(&found.store.id, query).await?,
        None => found.keys,
    };
    Ok(Resolved {
        store: found.store,
        access,
        by_signature,
        record,
        keys,
        counters_exact: found.counters_exact,
        unconfirmed: found.unconfirmed,
    })
}

/// [`resolve`] of a token-bearing `GET` of a record by store id, without `signature`, answered
/// from the backend's memory alone ([`crate::storage::RecordStore::record_read_cached`]): `Some`
/// only where `resolve` would grant the read, with what it would find; `None` (the backend does
/// not hold it all, or any refusal) sends the request down the normal path, which answers it.
pub fn resolve_cached(
    state: &AppState,
    token: &TokenHash,
    id: &StoreId,
    key: &RecordKey,
) -> Option<Resolved> {
    let read = state.store.record_read_cached(token, id, key)?;
    let found = Found {
        caller: Caller::authenticated(read.caller?),
        store: read.store?,
        reached_by: ReachedBy::Id,
        share: read.share,
        record: read.record,
        keys: None,
        one_call: true,
        counters_exact: read.counters_exact,
        unconfirmed: None,
    };
    let (access, by_signature) = decide(state, &found, Need::Read, Signed::None).ok()?;
    Some(Resolved {
        store: found.store,
        access,
        by_signature,
        record: found.record,
        keys: None,
        counters_exact: found.counters_exact,
        unconfirmed: None,
    })
}

/// The hot path: the caller, the store, the caller's share and (given a key) the record or (given
/// a query) the keys in one storage call.
async fn by_id(
    state: &AppState,
    token: &BearerToken,
    id: &StoreId,
    key: Option<&RecordKey>,
    keys: Option<&KeyListQuery>,
    writing: bool,
) -> ApiResult<Found> {
    let mut listed = None;
    let read = if let Some(query) = keys {
        let (read, page) = state
            .store
            .keys_read(token.hash().as_ref(), id, query)
            .await?;
        listed = page;
        read
    } else if writing {
        state
            .store
            .record_read_for_write(token.hash().as_ref(), id)
            .await?
    } else {
        state
            .store
            .record_read(token.hash().as_ref(), id, key)
            .await?
    };
    let caller = token.caller(read.caller)?;
    let store = read.store.ok_or_else(|| missing_store(&caller))?;
    Ok(Found {
        caller,
        store,
        reached_by: ReachedBy::Id,
        share: read.share,
        record: read.record,
        keys: listed,
        one_call: true,
        counters_exact: read.counters_exact,
        unconfirmed: read.unconfirmed,
    })
}

/// `~name`, `username~name`, or a reference that names no store.
async fn by_name_of(state: &AppState, token: &BearerToken, by: StoreRef) -> ApiResult<Found> {
    let caller = token.caller(token.lookup(state).await?)?;
    let store = match by {
        // Ids go to `by_id`.
        StoreRef::Id(_) | StoreRef::Invalid => None,
        StoreRef::OwnName(name) => {
            let user = caller.user().ok_or(ApiError::TokenNotProvided)?;
            let store = state.store.store_get_by_name(&user.id, &name).await?;
            Some(store.ok_or(ApiError::StoreNotFound)?)
        }
        StoreRef::UserName(username, name) => {
            let is_self = caller.user().is_some_and(|u| u.username == username);
            let store = match state.store.user_by_name(&username).await? {
                Some(owner) => state.store.store_get_by_name(&owner.id, &name).await?,
                None => None,
            };
            match store {
                Some(store) => Some(store),
                None if is_self => return Err(ApiError::StoreNotFound),
                None => return Err(ApiError::RecordOrTokenNotFound),
            }
        }
    };
    let store = store.ok_or_else(|| missing_store(&caller))?;
    let share = match caller.user() {
        Some(user) if auth::share_counts(&caller, &store) => {
            state.store.share_get(&store.id, &user.id).await?
        }
        _ => None,
    };
    Ok(Found {
        caller,
        store,
        reached_by: ReachedBy::Name,
        share,
        record: None,
        keys: None,
        one_call: false,
        counters_exact: true,
        unconfirmed: None,
    })
}

/// The answer when no store has the id (or the reference names none): existence is never
/// revealed to anonymous callers.
fn missing_store(caller: &Caller) -> ApiError {
    match caller.user() {
        Some(_) => ApiError::StoreNotFound,
        None => ApiError::RecordOrTokenNotFound,
    }
}

/// The access decision once the store (and the caller's share of it) is known: the access and
/// whether a signature gave it.
fn decide(
    state: &AppState,
    found: &Found,
    need: Need,
    signed: Signed<'_>,
) -> ApiResult<(Access, bool)> {
    let store = &found.store;
    let mut access = auth::access(
        &found.caller,
        store,
        found.reached_by,
        state.config.default_general_access,
        found.share,
    );
    let mut by_signature = false;
    // No signature opens the store of a disabled owner.
    if access == Access::None && !store.owner_disabled {
        access = check_signature(store, signed)?;
        by_signature = access != Access::None;
    }
    match (access, need) {
        (Access::None, _) => Err(ApiError::RecordOrTokenNotFound),
        (Access::Read, Need::Write | Need::Manage) | (Access::Write, Need::Manage) => {
            Err(ApiError::InsufficientPermissions)
        }
        (Access::Read, Need::Read)
        | (Access::Write, Need::Read | Need::Write)
        | (Access::Manage, _) => Ok((access, by_signature)),
    }
}

/// A valid signature gives read access to what it covers; an invalid one is a 403.
fn check_signature(store: &StoreInfo, signed: Signed<'_>) -> ApiResult<Access> {
    let secret = &store.url_signing_secret_key;
    let verdict = match signed {
        Signed::None => return Ok(Access::None),
        Signed::Record { key, .. } if auth::key_spells_storage_message(key, store.id.as_str()) => {
            Err(SignatureError::Mismatch)
        }
        Signed::Record { key, signature } => auth::verify_record_signature(secret, key, signature),
        Signed::Storage { signature } => {
            auth::verify_storage_signature(secret, store.id.as_str(), signature, now_millis())
        }
    };
    match verdict {
        Ok(()) => Ok(Access::Read),
        Err(
            e @ (SignatureError::Malformed | SignatureError::Mismatch | SignatureError::Expired),
        ) => Err(ApiError::InvalidSignature(e.to_string())),
    }
}
