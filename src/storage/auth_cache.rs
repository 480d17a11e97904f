//! Token → caller, cached for the embedded engine: authenticating costs two or three B-tree table
//! opens per request (a tenth of a cached GET's instructions), and tokens change rarely.
//!
//! Exact, not eventually consistent: the engine has one writer, which brackets every commit that
//! may change users or tokens between two increments of a generation counter (odd while such a
//! commit is under way). An entry serves only callers that read the same even generation it was
//! filled under, and a fill is kept only if the generation did not move during its read, so once
//! a token change is committed and acknowledged no request sees the old answer.

// foldhash: these maps are looked up on every request; SipHash cost a GET ~1.8k instructions.
use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::model::{Authenticated, TokenHash};

/// Cleared when full: the working set of tokens is small, and a bound keeps a flood of distinct
/// valid tokens from growing memory.
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub(super) struct AuthCache {
    generation: AtomicU64,
    entries: RwLock<HashMap<[u8; 32], (u64, Authenticated)>>,
}

/// The generation a lookup started under; `None` while a change is being committed.
#[derive(Clone, Copy)]
pub(super) struct Generation(Option<u64>);

impl AuthCache {
    /// Call before the read transaction that would answer a miss begins.
    pub fn generation(&self) -> Generation {
        let g = self.generation.load(Ordering::SeqCst);
        Generation(g.is_multiple_of(2).then_some(g))
    }

    pub fn get(&self, at: Generation, token: &TokenHash) -> Option<Authenticated> {
        let g = at.0?;
        let entries = self.entries.read().ok()?;
        match entries.get(&token.0) {
            Some((filled, who)) if *filled == g => Some(who.clone()),
            _ => None,
        }
    }

    /// Remembers what a read transaction begun after `at` was taken found for `token`.
    pub fn fill(&self, at: Generation, token: &TokenHash, who: &Authenticated) {
        let Some(g) = at.0 else { return };
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        // Checked under the lock: a change committed since `at` may be what the read saw, or not.
        if self.generation.load(Ordering::SeqCst) != g {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(token.0, (g, who.clone()));
    }

    /// The writer calls this before a commit that may change users or tokens…
    pub fn change_begins(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// …and this after it, whether it succeeded or not.
    pub fn change_ends(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{User, Username};

    fn caller(name: &str) -> Authenticated {
        Authenticated {
            user: User::new(Username::parse(name).unwrap(), false),
            read_only: false,
        }
    }

    #[test]
    fn an_entry_serves_only_its_generation() {
        let cache = AuthCache::default();
        let token = TokenHash([7; 32]);
        let at = cache.generation();
        assert!(cache.get(at, &token).is_none());
        cache.fill(at, &token, &caller("alice"));
        let hit = cache.get(cache.generation(), &token).unwrap();
        assert_eq!(hit.user.username.as_str(), "alice");

        cache.change_begins();
        assert!(
            cache.get(cache.generation(), &token).is_none(),
            "used during a change"
        );
        cache.change_ends();
        assert!(
            cache.get(cache.generation(), &token).is_none(),
            "used after a change"
        );
    }

    #[test]
    fn a_fill_that_raced_a_change_is_dropped() {
        let cache = AuthCache::default();
        let token = TokenHash([1; 32]);
        let at = cache.generation();
        cache.change_begins();
        cache.change_ends();
        cache.fill(at, &token, &caller("bob"));
        assert!(cache.get(cache.generation(), &token).is_none());

        // Filled while a change is under way: never kept.
        cache.change_begins();
        let during = cache.generation();
        cache.fill(during, &token, &caller("bob"));
        cache.change_ends();
        assert!(cache.get(cache.generation(), &token).is_none());
    }
}
