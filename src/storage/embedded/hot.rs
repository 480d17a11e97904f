//! Hot records: small inline records kept in memory by (store, key), so that a repeated GET skips
//! the records table (a table open and a B-tree descent) and the copy of its body.
//!
//! Exact, like [`AuthCache`](crate::storage::auth_cache::AuthCache), but invalidated per store
//! and per key rather than wholesale, so that writes to one store do not make the reads of another
//! miss. The single writer reports what each batch changes ([`Changes`]) and, before its commit,
//! marks those stores busy and removes their changed entries; after the commit (or its failure) it
//! clears the marks and stamps the stores with a new sequence number. A fill is kept only if its
//! store was not busy and not stamped since the reader took its sequence number (before its read
//! transaction began), so a read that saw the state before a commit never lands in the cache after
//! it, and an entry in the cache always holds what the last acknowledged write left.

// foldhash: these maps are looked up on every request; SipHash cost a GET ~1.8k instructions.
use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::model::{RecordKey, RecordMeta, StoreInfo};
use crate::storage::{BodyOutput, Record};

/// Records larger than this are not kept.
pub(super) const HOT_BODY_MAX: usize = 4 * 1024;
/// Bounds on the whole cache. Reaching either evicts down to [`EVICT_TO_PERCENT`] of both, records
/// not read since the last eviction first (a clock's second chance: hot records stay, one
/// eviction pass per many fills).
const MAX_ENTRIES: usize = 64 * 1024;
const MAX_BYTES: usize = 32 * 1024 * 1024;
const EVICT_TO_PERCENT: usize = 85;
/// What an entry costs besides its key, content type and body: map slots, the `Arc`, the strings'
/// headers.
const ENTRY_OVERHEAD: usize = 128;
/// Stores with a stamp but no entries (say, deleted ones) are forgotten past this many; a fill
/// whose ticket predates the newest forgotten stamp is then refused.
const MAX_IDLE_STORES: usize = 4096;

/// A cached record: what a GET answers with.
#[derive(Debug)]
pub(super) struct HotRecord {
    pub(super) content_type: String,
    pub(super) size: u64,
    pub(super) version: u64,
    pub(super) body: Bytes,
    /// Read since the last eviction pass.
    pub(super) touched: AtomicBool,
}

impl HotRecord {
    pub(super) fn new(content_type: String, size: u64, version: u64, body: Bytes) -> Self {
        Self {
            content_type,
            size,
            version,
            body,
            touched: AtomicBool::new(false),
        }
    }

    pub(super) fn meta(&self, key: &RecordKey) -> RecordMeta {
        RecordMeta {
            key: key.clone(),
            size: self.size,
            content_type: self.content_type.clone(),
            version: self.version,
        }
    }

    pub(super) fn record(&self, key: &RecordKey) -> Record {
        Record {
            meta: self.meta(key),
            body: BodyOutput::Bytes(self.body.clone()),
        }
    }

    fn cost(&self, key: &str) -> usize {
        ENTRY_OVERHEAD + key.len() + self.content_type.len() + self.body.len()
    }
}

/// What a write batch changes, as its jobs report it.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// A job that does not report its changes ran: everything is dropped.
    pub(super) everything: bool,
    /// Stores created, imported or deleted: all their entries are dropped.
    pub(super) stores: Vec<String>,
    /// Stores whose row changed (counters, settings): their cached row is dropped.
    pub(super) rows: Vec<String>,
    /// Records written or deleted.
    pub(super) records: Vec<(String, String)>,
}

impl Changes {
    pub(super) fn is_empty(&self) -> bool {
        !self.everything
            && self.stores.is_empty()
            && self.records.is_empty()
            && self.rows.is_empty()
    }

    fn touched_stores(&self) -> impl Iterator<Item = &str> {
        self.stores
            .iter()
            .map(String::as_str)
            .chain(self.records.iter().map(|(s, _)| s.as_str()))
            .chain(self.rows.iter().map(String::as_str))
    }
}

#[derive(Default)]
struct StoreEntries {
    records: HashMap<String, Arc<HotRecord>>,
    /// The store's row as its owner reads it (`owner_disabled` false).
    row: Option<Arc<StoreInfo>>,
    /// While a commit that changes this store is under way.
    busy: bool,
    /// The sequence number of the last commit that changed this store (0: none seen).
    stamped: u64,
}

#[derive(Default)]
struct Inner {
    stores: HashMap<String, StoreEntries>,
    /// While a batch that changes everything is being committed.
    all_busy: bool,
    /// The sequence number of the last commit that changed everything.
    all_stamped: u64,
    /// The newest stamp of the stores whose bookkeeping was dropped (see [`MAX_IDLE_STORES`]).
    forgotten: u64,
    entries: usize,
    bytes: usize,
}

#[derive(Default)]
pub(super) struct HotRecords {
    seq: AtomicU64,
    inner: RwLock<Inner>,
}

/// Where a reader stands: take it before the read transaction that would answer a miss.
#[derive(Clone, Copy)]
pub(super) struct Ticket(u64);

impl HotRecords {
    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.seq.load(Ordering::SeqCst))
    }

    pub(super) fn get(&self, store: &str, key: &str) -> Option<Arc<HotRecord>> {
        let inner = self.inner.read().ok()?;
        let record = inner.stores.get(store)?.records.get(key)?;
        record.touched.store(true, Ordering::Relaxed);
        Some(record.clone())
    }

    /// The store's row and the record, both cached: a GET by the store's owner needs nothing else.
    pub(super) fn get_with_row(
        &self,
        store: &str,
        key: &str,
    ) -> Option<(Arc<StoreInfo>, Arc<HotRecord>)> {
        let inner = self.inner.read().ok()?;
        let entries = inner.stores.get(store)?;
        let record = entries.records.get(key)?;
        let row = entries.row.clone()?;
        record.touched.store(true, Ordering::Relaxed);
        Some((row, record.clone()))
    }

    /// Keeps the row of `store` as its owner read it in a read transaction begun after `at` was
    /// taken, under the same conditions as [`Self::fill`]. Only stores with cached records keep
    /// a row, so rows are bounded by the records' bounds.
    pub(super) fn fill_row(&self, at: Ticket, row: &StoreInfo) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if inner.all_busy || inner.all_stamped > at.0 || inner.forgotten > at.0 {
            return;
        }
        let Some(entries) = inner.stores.get_mut(row.id.as_str()) else {
            return;
        };
        if entries.busy || entries.stamped > at.0 || entries.row.is_some() {
            return;
        }
        if entries.records.is_empty() {
            return;
        }
        entries.row = Some(Arc::new(row.clone()));
    }

    /// Keeps what a read transaction begun after `at` was taken found, unless a commit changed
    /// its store since.
    pub(super) fn fill(&self, at: Ticket, store: &str, key: &str, record: HotRecord) {
        if record.body.len() > HOT_BODY_MAX {
            return;
        }
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if inner.all_busy || inner.all_stamped > at.0 || inner.forgotten > at.0 {
            return;
        }
        if let Some(entries) = inner.stores.get(store) {
            if entries.busy || entries.stamped > at.0 || entries.records.contains_key(key) {
                return;
            }
        }
        let cost = record.cost(key);
        if inner.entries >= MAX_ENTRIES || inner.bytes + cost > MAX_BYTES {
            inner.evict();
        }
        inner.entries += 1;
        inner.bytes += cost;
        inner
            .stores
            .entry(store.to_owned())
            .or_default()
            .records
            .insert(key.to_owned(), Arc::new(record));
    }

    /// The writer calls this once a batch is applied and before its commit…
    pub(super) fn change_begins(&self, changes: &Changes) {
        if changes.is_empty() {
            return;
        }
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        let inner = &mut *inner;
        if changes.everything {
            inner.all_busy = true;
            inner.clear_records();
            return;
        }
        for store in &changes.rows {
            inner.stores.entry(store.clone()).or_default().row = None;
        }
        for store in &changes.stores {
            let entries = inner.stores.entry(store.clone()).or_default();
            entries.row = None;
            for (key, record) in entries.records.drain() {
                inner.entries -= 1;
                inner.bytes -= record.cost(&key);
            }
        }
        for (store, key) in &changes.records {
            let entries = inner.stores.entry(store.clone()).or_default();
            if let Some(record) = entries.records.remove(key.as_str()) {
                inner.entries -= 1;
                inner.bytes -= record.cost(key);
            }
        }
        for store in changes.touched_stores() {
            if let Some(entries) = inner.stores.get_mut(store) {
                entries.busy = true;
            }
        }
    }

    /// …and this after the commit, whether it succeeded or not, with the same changes.
    pub(super) fn change_ends(&self, changes: &Changes) {
        if changes.is_empty() {
            return;
        }
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        // Under the lock, so a fill sees the stamp and the cleared mark together.
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        if changes.everything {
            inner.all_busy = false;
            inner.all_stamped = seq;
            // Stamps below `all_stamped` say nothing more; drop the bookkeeping with the entries.
            inner.stores.clear();
            return;
        }
        for store in changes.touched_stores() {
            if let Some(entries) = inner.stores.get_mut(store) {
                entries.busy = false;
                entries.stamped = seq;
            }
        }
        if inner.stores.len() > MAX_IDLE_STORES + inner.entries {
            let mut forgotten = inner.forgotten;
            inner.stores.retain(|_, e| {
                let keep = !e.records.is_empty();
                if !keep {
                    forgotten = forgotten.max(e.stamped);
                }
                keep
            });
            inner.forgotten = forgotten;
        }
    }
}

impl Inner {
    /// Removes records until both bounds are [`EVICT_TO_PERCENT`] full: first those not read since
    /// the last pass (clearing the mark of the others), then, if that was not enough, any.
    fn evict(&mut self) {
        let entries_goal = MAX_ENTRIES * EVICT_TO_PERCENT / 100;
        let bytes_goal = MAX_BYTES * EVICT_TO_PERCENT / 100;
        for spare_touched in [true, false] {
            let (mut entries, mut bytes) = (self.entries, self.bytes);
            for store in self.stores.values_mut() {
                store.records.retain(|key, record| {
                    if entries <= entries_goal && bytes <= bytes_goal {
                        return true;
                    }
                    if spare_touched && record.touched.swap(false, Ordering::Relaxed) {
                        return true;
                    }
                    entries -= 1;
                    bytes -= record.cost(key);
                    false
                });
                if store.records.is_empty() {
                    store.row = None;
                }
            }
            (self.entries, self.bytes) = (entries, bytes);
            if entries <= entries_goal && bytes <= bytes_goal {
                return;
            }
        }
    }

    fn clear_records(&mut self) {
        for entries in self.stores.values_mut() {
            entries.records.clear();
            entries.row = None;
        }
        self.entries = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &'static [u8]) -> HotRecord {
        HotRecord::new(
            "text/plain".into(),
            body.len() as u64,
            1,
            Bytes::from_static(body),
        )
    }

    fn changed(store: &str, key: &str) -> Changes {
        Changes {
            records: vec![(store.into(), key.into())],
            ..Changes::default()
        }
    }

    fn body(cache: &HotRecords, store: &str, key: &str) -> Option<Bytes> {
        cache.get(store, key).map(|r| r.body.clone())
    }

    #[test]
    fn a_change_drops_its_record_and_spares_the_others() {
        let cache = HotRecords::default();
        let at = cache.ticket();
        cache.fill(at, "s1", "a", record(b"a1"));
        cache.fill(at, "s1", "b", record(b"b1"));
        cache.fill(at, "s2", "a", record(b"x"));
        assert_eq!(body(&cache, "s1", "a").as_deref(), Some(&b"a1"[..]));

        let change = changed("s1", "a");
        cache.change_begins(&change);
        assert!(
            body(&cache, "s1", "a").is_none(),
            "served during its commit"
        );
        cache.change_ends(&change);
        assert!(body(&cache, "s1", "a").is_none());
        assert_eq!(body(&cache, "s1", "b").as_deref(), Some(&b"b1"[..]));
        assert_eq!(body(&cache, "s2", "a").as_deref(), Some(&b"x"[..]));

        // A store's deletion drops all of its records.
        let change = Changes {
            stores: vec!["s1".into()],
            ..Changes::default()
        };
        cache.change_begins(&change);
        cache.change_ends(&change);
        assert!(body(&cache, "s1", "b").is_none());
        assert_eq!(body(&cache, "s2", "a").as_deref(), Some(&b"x"[..]));

        // An unreported change drops everything.
        let change = Changes {
            everything: true,
            ..Changes::default()
        };
        cache.change_begins(&change);
        cache.change_ends(&change);
        assert!(body(&cache, "s2", "a").is_none());
    }

    #[test]
    fn a_fill_that_raced_a_change_of_its_store_is_dropped() {
        let cache = HotRecords::default();
        // Read before the commit, filled after it.
        let at = cache.ticket();
        let change = changed("s", "k");
        cache.change_begins(&change);
        cache.change_ends(&change);
        cache.fill(at, "s", "k", record(b"old"));
        assert!(body(&cache, "s", "k").is_none());
        // Another key of the same store: its read may predate the commit too.
        cache.fill(at, "s", "other", record(b"old"));
        assert!(body(&cache, "s", "other").is_none());
        // A store the commit did not touch is filled.
        cache.fill(at, "t", "k", record(b"t"));
        assert!(body(&cache, "t", "k").is_some());

        // Filled while the commit is under way.
        let change = changed("s", "k");
        cache.change_begins(&change);
        cache.fill(cache.ticket(), "s", "k", record(b"during"));
        cache.change_ends(&change);
        assert!(body(&cache, "s", "k").is_none());

        // Filled under the ticket taken after the commit.
        cache.fill(cache.ticket(), "s", "k", record(b"new"));
        assert_eq!(body(&cache, "s", "k").as_deref(), Some(&b"new"[..]));

        // During and after a change of everything.
        let at = cache.ticket();
        let all = Changes {
            everything: true,
            ..Changes::default()
        };
        cache.change_begins(&all);
        cache.fill(cache.ticket(), "u", "k", record(b"during"));
        cache.change_ends(&all);
        cache.fill(at, "u", "k", record(b"before"));
        assert!(body(&cache, "u", "k").is_none());
    }

    #[test]
    fn a_store_row_is_kept_beside_its_records_and_dropped_when_it_changes() {
        use crate::model::UserId;
        let cache = HotRecords::default();
        let mut row = StoreInfo::new(UserId::generate(), None, None);
        let sid = row.id.as_str().to_owned();
        let at = cache.ticket();
        cache.fill_row(at, &row);
        assert!(
            cache.get_with_row(&sid, "k").is_none(),
            "a row without records"
        );
        cache.fill(at, &sid, "k", record(b"v"));
        cache.fill_row(at, &row);
        let (cached, _) = cache.get_with_row(&sid, "k").unwrap();
        assert_eq!(cached.id, row.id);

        // A write of the row (say, counters flushed) drops it, and a read from before stays out.
        let change = Changes {
            rows: vec![sid.clone()],
            ..Changes::default()
        };
        cache.change_begins(&change);
        cache.fill_row(cache.ticket(), &row);
        assert!(
            cache.get_with_row(&sid, "k").is_none(),
            "served during its commit"
        );
        cache.change_ends(&change);
        cache.fill_row(at, &row);
        assert!(cache.get_with_row(&sid, "k").is_none());
        assert!(cache.get(&sid, "k").is_some(), "the record stays");
        row.stats.write_count = 7;
        cache.fill_row(cache.ticket(), &row);
        let (cached, _) = cache.get_with_row(&sid, "k").unwrap();
        assert_eq!(cached.stats.write_count, 7);
    }

    #[test]
    fn forgotten_stores_still_refuse_older_fills() {
        let cache = HotRecords::default();
        let at = cache.ticket();
        for i in 0..=MAX_IDLE_STORES + 1 {
            let change = Changes {
                stores: vec![format!("s{i}")],
                ..Changes::default()
            };
            cache.change_begins(&change);
            cache.change_ends(&change);
        }
        cache.fill(at, "s0", "k", record(b"old"));
        assert!(body(&cache, "s0", "k").is_none());
        assert!(cache.inner.read().unwrap().stores.len() <= MAX_IDLE_STORES + 1);
    }

    #[test]
    fn the_cache_stays_within_its_bounds() {
        let cache = HotRecords::default();
        static BIG: [u8; HOT_BODY_MAX] = [0; HOT_BODY_MAX];
        static TOO_BIG: [u8; HOT_BODY_MAX + 1] = [0; HOT_BODY_MAX + 1];
        cache.fill(cache.ticket(), "s", "big", record(&TOO_BIG));
        assert!(cache.get("s", "big").is_none());
        for i in 0..MAX_BYTES / HOT_BODY_MAX + 10 {
            cache.fill(cache.ticket(), "s", &format!("k{i}"), record(&BIG));
            let inner = cache.inner.read().unwrap();
            assert!(inner.bytes <= MAX_BYTES && inner.entries <= MAX_ENTRIES);
            let counted: usize = inner.stores.values().map(|e| e.records.len()).sum();
            assert_eq!(counted, inner.entries);
        }
    }

    #[test]
    fn a_full_cache_evicts_records_not_read_lately_and_keeps_the_hot_ones() {
        let cache = HotRecords::default();
        static BODY: [u8; 1024] = [0; 1024];
        let hot: Vec<String> = (0..100).map(|i| format!("hot{i}")).collect();
        for key in &hot {
            cache.fill(cache.ticket(), "s", key, record(&BODY));
        }
        // Several times the cache's size in records read once, the hot ones read in between.
        for i in 0..3 * MAX_ENTRIES {
            cache.fill(cache.ticket(), "t", &format!("cold{i}"), record(&BODY));
            if i % 1000 == 0 {
                for key in &hot {
                    assert!(
                        cache.get("s", key).is_some(),
                        "{key} evicted after {i} fills"
                    );
                }
            }
        }
        let inner = cache.inner.read().unwrap();
        assert!(inner.entries <= MAX_ENTRIES && inner.bytes <= MAX_BYTES);
        assert!(
            inner.bytes > MAX_BYTES / 2 || inner.entries > MAX_ENTRIES / 2,
            "an eviction pass emptied the cache: {} entries, {} bytes",
            inner.entries,
            inner.bytes
        );
        let counted: usize = inner.stores.values().map(|e| e.records.len()).sum();
        assert_eq!(counted, inner.entries);
    }
}
