//! Turning `{storeId}` (an id, `~name` or `username~name`) plus the caller into a store the caller
//! may use, with the error answers of `shared/DECISIONS.md`:
//! no token where one is needed → 401; may not read → 404 `record-or-token-not-found` (existence is
//! never revealed); may read but not write → 403; missing store, caller may look → 404
//! `record-not-found`.

pub use crate::auth::ReachedBy;
use crate::auth::{self, Access, Caller, SignatureError};
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, ShareAccess, StoreInfo, StoreRef};

use super::AppState;

/// What the request wants to do with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    /// Put or delete records.
    Write,
    /// Update, delete or share the store itself.
    Manage,
}

/// A signature given with the request and what it may open.
#[derive(Debug, Clone, Copy)]
pub enum Signed<'a> {
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

pub struct Resolved {
    pub store: StoreInfo,
    pub access: Access,
    /// Access came from a valid signature rather than a token or `generalAccess`.
    pub by_signature: bool,
}

impl Resolved {
    pub fn may_write(&self) -> bool {
        self.access >= Access::Write
    }
}

pub async fn resolve(
    state: &AppState,
    caller: &Caller,
    raw_ref: &str,
    need: Need,
    signed: Signed<'_>,
) -> ApiResult<Resolved> {
    if need != Need::Read && caller.user().is_none() {
        return Err(ApiError::TokenNotProvided);
    }
    let (store, reached_by) = match StoreRef::parse(raw_ref) {
        StoreRef::Invalid => {
            return Err(match caller.user() {
                Some(_) => ApiError::StoreNotFound,
                None => ApiError::RecordOrTokenNotFound,
            })
        }
        StoreRef::Id(id) => match state.store.store_get(&id).await? {
            Some(store) => (store, ReachedBy::Id),
            None => return Err(missing_store(caller)),
        },
        StoreRef::OwnName(name) => {
            let user = caller.user().ok_or(ApiError::TokenNotProvided)?;
            match state.store.store_get_by_name(&user.id, &name).await? {
                Some(store) => (store, ReachedBy::Name),
                None => return Err(ApiError::StoreNotFound),
            }
        }
        StoreRef::UserName(username, name) => {
            let is_self = caller.user().is_some_and(|u| u.username == username);
            let owner = state.store.user_by_name(&username).await?;
            let store = match owner {
                Some(owner) => state.store.store_get_by_name(&owner.id, &name).await?,
                None => None,
            };
            match store {
                Some(store) => (store, ReachedBy::Name),
                None if is_self => return Err(ApiError::StoreNotFound),
                None => return Err(ApiError::RecordOrTokenNotFound),
            }
        }
    };
    // A share matters only to a signed-in caller who does not own the store.
    let shared = match caller.user() {
        Some(user) if user.id != store.user_id => {
            state.store.share_get(&store.id, &user.id).await?
        }
        _ => None,
    };
    decide(state, caller, store, reached_by, shared, need, signed)
}

/// The answer when a store named by id does not exist: existence is never revealed to anonymous
/// callers.
pub fn missing_store(caller: &Caller) -> ApiError {
    match caller.user() {
        Some(_) => ApiError::StoreNotFound,
        None => ApiError::RecordOrTokenNotFound,
    }
}

/// The access decision once the store (and the caller's share of it) is known.
pub fn decide(
    state: &AppState,
    caller: &Caller,
    store: StoreInfo,
    reached_by: ReachedBy,
    shared: Option<ShareAccess>,
    need: Need,
    signed: Signed<'_>,
) -> ApiResult<Resolved> {
    if need != Need::Read && caller.user().is_none() {
        return Err(ApiError::TokenNotProvided);
    }
    let mut access = auth::access(
        caller,
        &store,
        reached_by,
        state.config.default_general_access,
        shared,
    );
    let mut by_signature = false;
    // No signature opens the store of a disabled owner.
    if access == Access::None && !store.owner_disabled {
        access = check_signature(&store, signed)?;
        by_signature = access != Access::None;
    }
    match (access, need) {
        (Access::None, _) => Err(ApiError::RecordOrTokenNotFound),
        (Access::Read, Need::Write | Need::Manage) | (Access::Write, Need::Manage) => {
            Err(ApiError::InsufficientPermissions)
        }
        (Access::Read, Need::Read)
        | (Access::Write, Need::Read | Need::Write)
        | (Access::Manage, _) => Ok(Resolved {
            store,
            access,
            by_signature,
        }),
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
