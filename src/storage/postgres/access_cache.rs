//! Per-node caches of what a request's access check reads (token → caller, store id → store,
//! (store, user) → share), so that a `GET record` by store id with a token is, in the common case,
//! one single-table `SELECT` on `records`.
//!
//! Exact across nodes, never time-based: every change that can alter an access decision (a token
//! revoked or rotated, a user disabled, promoted or deleted, a store renamed, re-shared, deleted
//! or its `generalAccess` changed, a share given, changed or removed) bumps the one-row
//! `kvstore_generation` counter in its own transaction — database triggers do it, so no write path
//! can forget — and sends `NOTIFY kvstore_access`. The cached read statement returns the current
//! generation alongside the record, from the same snapshot: entries are used only when they were
//! filled under exactly that generation; otherwise the request takes the full, uncached path,
//! whose own generation then tags the entries it fills. A change acknowledged on another node is
//! therefore seen by the first request that starts here afterwards, notification or not.
//!
//! The notifications only clear the caches early (sparing the first request after a change a
//! wasted round trip and keeping memory small); while the `LISTEN` connection is down the
//! generation check alone keeps every answer exact, and the caches are cleared again once it is
//! back, since notifications may have been missed meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use crate::model::{Authenticated, ShareAccess, StoreId, StoreInfo, TokenHash, UserId};
use crate::storage::{Record, RecordRead};

/// The channel the generation triggers notify (see the schema's migration 6).
pub(super) const CHANNEL: &str = "kvstore_access";

/// The `application_name` of the listening connection (operators and tests find it by it).
pub(super) const LISTENER_NAME: &str = "kvstore-listen";

/// Each map is cleared when it reaches this size: a bound on memory whatever the number of
/// distinct tokens, stores or shares the node sees.
const MAX_ENTRIES: usize = 65_536;

/// Between two attempts to reconnect the listening connection.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Entries {
    /// The generation every entry was filled under; `None` before the first fill.
    generation: Option<i64>,
    callers: HashMap<[u8; 32], Authenticated>,
    stores: HashMap<StoreId, StoreInfo>,
    shares: HashMap<(StoreId, UserId), Option<ShareAccess>>,
}

impl Entries {
    fn clear(&mut self) {
        self.callers.clear();
        self.stores.clear();
        self.shares.clear();
    }
}

/// What the caches hold for one request, and the generation it was filled under.
pub(super) struct Cached {
    pub generation: i64,
    pub caller: Option<Authenticated>,
    pub store: StoreInfo,
    pub share: Option<ShareAccess>,
}

impl Cached {
    /// The read the cached path answers once the generation is confirmed: the caller, store and
    /// share from the caches; the store's counter shards are not read on this path, so its
    /// counters are not exact.
    pub fn into_read(self, record: Option<Record>) -> RecordRead {
        RecordRead {
            caller: self.caller,
            store: Some(self.store),
            share: self.share,
            record,
            counters_exact: false,
            unconfirmed: None,
        }
    }
}

#[derive(Default)]
pub(super) struct AccessCache {
    entries: Mutex<Entries>,
}

impl AccessCache {
    /// The caller (if `token`), the store and the caller's share, all from the caches, or `None`
    /// if any of them is missing.
    pub fn lookup(&self, token: Option<&TokenHash>, store: &StoreId) -> Option<Cached> {
        let entries = self.entries.lock().ok()?;
        let generation = entries.generation?;
        let caller = match token {
            Some(token) => Some(entries.callers.get(&token.0)?.clone()),
            None => None,
        };
        let info = entries.stores.get(store)?;
        let share = match &caller {
            Some(who) => *entries.shares.get(&(store.clone(), who.user.id.clone()))?,
            None => None,
        };
        Some(Cached {
            generation,
            caller,
            store: info.clone(),
            share,
        })
    }

    /// Remembers what a full read at `generation` found. A token that authenticates nobody and a
    /// store that does not exist are not remembered: creating either changes no generation.
    pub fn fill(
        &self,
        generation: i64,
        token: Option<&TokenHash>,
        caller: Option<&Authenticated>,
        store: &StoreInfo,
        share: Option<ShareAccess>,
    ) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        match entries.generation {
            Some(current) if current > generation => return,
            Some(current) if current == generation => {}
            _ => {
                entries.clear();
                entries.generation = Some(generation);
            }
        }
        if entries.stores.len() >= MAX_ENTRIES {
            entries.stores.clear();
        }
        entries.stores.insert(store.id.clone(), store.clone());
        let (Some(token), Some(caller)) = (token, caller) else {
            return;
        };
        if entries.callers.len() >= MAX_ENTRIES {
            entries.callers.clear();
        }
        entries.callers.insert(token.0, caller.clone());
        if entries.shares.len() >= MAX_ENTRIES {
            entries.shares.clear();
        }
        entries
            .shares
            .insert((store.id.clone(), caller.user.id.clone()), share);
    }

    /// Drops every entry (a change was notified, or notifications may have been missed).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// How the caches fared, in `/metrics` as `kvstore_pg_access_cache_total{result}`: `hit` (the
/// request used them), `stale` (they were filled under an older generation: the request took the
/// full path) and `miss` (nothing cached).
#[derive(Clone, Copy)]
pub(super) enum Outcome {
    Hit,
    Stale,
    Miss,
}

pub(super) fn count(outcome: Outcome) {
    // Taken on first use, which is a request: the server installs its metrics recorder before.
    static COUNTERS: OnceLock<[metrics::Counter; 3]> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        ["hit", "stale", "miss"]
            .map(|result| metrics::counter!("kvstore_pg_access_cache_total", "result" => result))
    });
    counters[outcome as usize].increment(1);
}

/// Listens on [`CHANNEL`] for as long as the node runs, clearing `cache` on every notification,
/// and whenever listening starts again after the connection was lost (notifications may have been
/// missed meanwhile). While it is down the caches go on serving: the generation check alone keeps
/// them exact.
pub(super) async fn listen(pool: PgPool, cache: Arc<AccessCache>) {
    loop {
        if let Ok(mut listener) = PgListener::connect_with(&pool).await {
            if listener.listen(CHANNEL).await.is_ok() {
                cache.clear();
                // `Ok(None)`: the connection was lost and has been re-established, listening
                // again; an error: it could not be, or the server ended the session.
                while let Ok(notified) = listener.try_recv().await {
                    if notified.is_none() {
                        tracing::warn!("the cache invalidation connection was re-established");
                    }
                    cache.clear();
                }
            }
        }
        tracing::warn!("the cache invalidation connection is down; reconnecting");
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StoreName, User, Username};

    fn caller(name: &str) -> Authenticated {
        Authenticated {
            user: User::new(Username::parse(name).unwrap(), false),
            read_only: false,
        }
    }

    fn store(owner: &User) -> StoreInfo {
        StoreInfo::new(owner.id.clone(), Some(StoreName::parse("s").unwrap()), None)
    }

    #[test]
    fn entries_carry_the_generation_they_were_filled_under() {
        let cache = AccessCache::default();
        let token = TokenHash([3; 32]);
        let alice = caller("alice");
        let info = store(&alice.user);
        assert!(cache.lookup(Some(&token), &info.id).is_none());
        cache.fill(7, Some(&token), Some(&alice), &info, None);
        let hit = cache.lookup(Some(&token), &info.id).unwrap();
        assert_eq!(hit.generation, 7);
        assert_eq!(hit.caller.unwrap().user.id, alice.user.id);
        assert!(
            cache.lookup(Some(&TokenHash([4; 32])), &info.id).is_none(),
            "another token"
        );

        // A fill under an older generation is dropped; a newer one replaces everything.
        cache.fill(6, Some(&TokenHash([4; 32])), Some(&alice), &info, None);
        assert!(cache.lookup(Some(&TokenHash([4; 32])), &info.id).is_none());
        cache.fill(8, None, None, &info, None);
        assert!(cache.lookup(Some(&token), &info.id).is_none());
        assert_eq!(cache.lookup(None, &info.id).unwrap().generation, 8);

        cache.clear();
        assert!(cache.lookup(None, &info.id).is_none());
    }
}
