//! Read and list counters and `accessedAt`, batched in memory so that a read never costs a write.
//! A background task hands the batch to [`super::Housekeeping::apply_access`] every few seconds.

// foldhash: these maps are looked up on every request; SipHash cost a GET ~1.8k instructions.
use foldhash::HashMap;
use std::sync::Mutex;

use crate::model::{Millis, StoreId, StoreInfo};

#[derive(Debug, Clone, Copy)]
pub enum AccessKind {
    Read,
    List,
    /// Any other access that only moves `accessedAt` (e.g. GET store).
    Touch,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessDelta {
    pub reads: u64,
    pub lists: u64,
    pub accessed_at: Millis,
}

#[derive(Debug, Default)]
pub struct AccessCounters {
    pending: Mutex<HashMap<StoreId, AccessDelta>>,
}

impl AccessCounters {
    pub fn record(&self, store: &StoreId, kind: AccessKind, now: Millis) {
        let Ok(mut pending) = self.pending.lock() else {
            return; // a poisoned lock only loses statistics
        };
        let delta = match pending.get_mut(store) {
            Some(d) => d,
            None => pending.entry(store.clone()).or_default(),
        };
        match kind {
            AccessKind::Read => delta.reads += 1,
            AccessKind::List => delta.lists += 1,
            AccessKind::Touch => {}
        }
        delta.accessed_at = delta.accessed_at.max(now);
    }

    /// Everything counted since the last call.
    pub fn take(&self) -> Vec<(StoreId, AccessDelta)> {
        match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Shows `store` with the counts that are not flushed yet.
    pub fn overlay(&self, store: &mut StoreInfo) {
        let Ok(pending) = self.pending.lock() else {
            return;
        };
        if let Some(d) = pending.get(&store.id) {
            apply_delta(store, d);
        }
    }
}

/// Adds a delta to a store; the backends use this when they flush.
pub fn apply_delta(store: &mut StoreInfo, d: &AccessDelta) {
    store.stats.read_count += d.reads;
    store.stats.list_count += d.lists;
    store.accessed_at = store.accessed_at.max(d.accessed_at);
}
