//! An in-memory backend for tests and experiments: the reference model the other backends are
//! checked against. Nothing survives a restart.

use crate::storage::{page_stores, Administration, BulkTransfer, Housekeeping, RecordStore};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::RwLock;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    apply_delta, AccessDelta, BodyOutput, KeyListQuery, KeyPage, Record, RecordWrite, Result,
    Snapshot, StorageError, StoreListQuery, StorePage, StoreUpdate, UserUpdate, WriteOutcome,
};
use crate::model::{
    now_millis, Authenticated, Millis, RecordKey, RecordMeta, ShareAccess, StoreId, StoreInfo,
    StoreName, TokenGrant, TokenHash, User, UserId, Username,
};

#[derive(Default, Clone)]
struct State {
    users: HashMap<UserId, User>,
    usernames: HashMap<Username, UserId>,
    /// token → (user, read-only)
    tokens: HashMap<TokenHash, (UserId, bool)>,
    shares: BTreeMap<(StoreId, UserId), ShareAccess>,
    stores: HashMap<StoreId, StoreInfo>,
    names: HashMap<(UserId, StoreName), StoreId>,
    /// store → key → (content type, body, version)
    records: HashMap<StoreId, BTreeMap<String, (String, Bytes, u64)>>,
}

pub struct MemoryStore {
    state: RwLock<State>,
    spool: tempfile::TempDir,
}

impl MemoryStore {
    pub fn new() -> Result<Self> {
        Ok(Self {
            state: RwLock::new(State::default()),
            spool: tempfile::tempdir()?,
        })
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, State>> {
        self.state
            .read()
            .map_err(|_| StorageError::Engine("memory store lock poisoned".into()))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, State>> {
        self.state
            .write()
            .map_err(|_| StorageError::Engine("memory store lock poisoned".into()))
    }
}

/// Removes a store with its records and shares; `false` when it did not exist.
fn remove_store(state: &mut State, id: &StoreId) -> bool {
    let Some(store) = state.stores.remove(id) else {
        return false;
    };
    if let Some(name) = store.name {
        state.names.remove(&(store.user_id, name));
    }
    state.records.remove(id);
    state.shares.retain(|(s, _), _| s != id);
    true
}

impl State {
    /// A copy of `store` as the API sees it: whether its owner is disabled filled in.
    fn store_seen(&self, store: &StoreInfo) -> StoreInfo {
        let mut seen = store.clone();
        seen.owner_disabled = self.users.get(&store.user_id).is_none_or(|u| u.disabled);
        seen
    }

    fn record(&self, store: &StoreId, key: &RecordKey) -> Option<Record> {
        let (content_type, body, version) = self.records.get(store)?.get(key.as_str())?;
        Some(Record {
            meta: RecordMeta {
                key: key.clone(),
                size: body.len() as u64,
                content_type: content_type.clone(),
                version: *version,
            },
            body: BodyOutput::Bytes(body.clone()),
        })
    }
}

fn insert_user(state: &mut State, user: &User, token: TokenHash) -> Result<()> {
    if state.usernames.contains_key(&user.username) {
        return Err(StorageError::UserExists);
    }
    state
        .usernames
        .insert(user.username.clone(), user.id.clone());
    state.users.insert(user.id.clone(), user.clone());
    state.tokens.insert(token, (user.id.clone(), false));
    Ok(())
}

// The request path: callers, stores, keys and records.
#[async_trait]
impl RecordStore for MemoryStore {
    async fn user_by_token(&self, token: &TokenHash) -> Result<Option<Authenticated>> {
        let state = self.read()?;
        Ok(state.tokens.get(token).and_then(|(id, read_only)| {
            let user = state.users.get(id).filter(|u| !u.disabled)?;
            Some(Authenticated {
                user: user.clone(),
                read_only: *read_only,
            })
        }))
    }

    async fn share_get(&self, store: &StoreId, user: &UserId) -> Result<Option<ShareAccess>> {
        Ok(self
            .read()?
            .shares
            .get(&(store.clone(), user.clone()))
            .copied())
    }

    async fn stores_shared_with(&self, user: &UserId, query: &StoreListQuery) -> Result<StorePage> {
        let state = self.read()?;
        let stores = state
            .shares
            .keys()
            .filter(|(_, u)| u == user)
            .filter_map(|(s, _)| state.stores.get(s))
            .filter(|s| query.unnamed || s.name.is_some())
            .map(|s| state.store_seen(s))
            // A disabled owner's stores answer nobody but administrators, listings included.
            .filter(|s| !s.owner_disabled)
            .collect();
        Ok(page_stores(stores, query))
    }

    async fn store_get_or_create(&self, store: StoreInfo) -> Result<(StoreInfo, bool)> {
        let mut state = self.write()?;
        if let Some(name) = &store.name {
            let key = (store.user_id.clone(), name.clone());
            if let Some(existing) = state.names.get(&key).and_then(|id| state.stores.get(id)) {
                return Ok((existing.clone(), false));
            }
            state.names.insert(key, store.id.clone());
        }
        state.records.insert(store.id.clone(), BTreeMap::new());
        state.stores.insert(store.id.clone(), store.clone());
        Ok((store, true))
    }

    async fn store_get(&self, id: &StoreId) -> Result<Option<StoreInfo>> {
        let state = self.read()?;
        Ok(state.stores.get(id).map(|s| state.store_seen(s)))
    }

    async fn store_get_by_name(
        &self,
        owner: &UserId,
        name: &StoreName,
    ) -> Result<Option<StoreInfo>> {
        let state = self.read()?;
        Ok(state
            .names
            .get(&(owner.clone(), name.clone()))
            .and_then(|id| state.stores.get(id))
            .map(|s| state.store_seen(s)))
    }

    async fn stores_list(&self, owner: &UserId, query: &StoreListQuery) -> Result<StorePage> {
        let state = self.read()?;
        let stores = state
            .stores
            .values()
            .filter(|s| &s.user_id == owner && (query.unnamed || s.name.is_some()))
            .map(|s| state.store_seen(s))
            .collect();
        Ok(page_stores(stores, query))
    }

    async fn store_update(
        &self,
        id: &StoreId,
        mut update: StoreUpdate,
    ) -> Result<Option<StoreInfo>> {
        let mut state = self.write()?;
        let Some(mut store) = state.stores.get(id).cloned() else {
            return Ok(None);
        };
        if let Some(new_name) = update.name.take() {
            if new_name != store.name {
                if let Some(name) = &new_name {
                    if state
                        .names
                        .contains_key(&(store.user_id.clone(), name.clone()))
                    {
                        return Err(StorageError::NameTaken);
                    }
                    state
                        .names
                        .insert((store.user_id.clone(), name.clone()), id.clone());
                }
                if let Some(old) = &store.name {
                    state.names.remove(&(store.user_id.clone(), old.clone()));
                }
                store.name = new_name;
            }
        }
        update.apply_settings(&mut store);
        state.stores.insert(id.clone(), store.clone());
        Ok(Some(store))
    }

    async fn store_delete(&self, id: &StoreId) -> Result<bool> {
        Ok(remove_store(&mut *self.write()?, id))
    }

    async fn keys_list(&self, store: &StoreId, query: &KeyListQuery) -> Result<Option<KeyPage>> {
        let state = self.read()?;
        let Some(records) = state.records.get(store) else {
            return Ok(None);
        };
        let start = super::scan_start(query);
        let mut matching = records
            .range::<String, _>((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(query.prefix.as_str()));
        let mut items = Vec::new();
        for (key, (content_type, body, version)) in matching.by_ref().take(query.limit) {
            items.push(RecordMeta {
                key: RecordKey::parse(key).map_err(|e| StorageError::Corrupt(e.0))?,
                size: body.len() as u64,
                content_type: content_type.clone(),
                version: *version,
            });
        }
        let is_truncated = matching.next().is_some();
        Ok(Some(KeyPage {
            items,
            is_truncated,
        }))
    }

    async fn record_get(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>> {
        Ok(self.read()?.record(store, key))
    }

    async fn records_write(
        &self,
        store: &StoreId,
        records: Vec<RecordWrite>,
    ) -> Result<WriteOutcome> {
        let records = tokio::task::spawn_blocking(move || {
            records
                .into_iter()
                .map(|r| {
                    Ok((
                        r.key,
                        r.content_type,
                        r.body.into_bytes_blocking()?,
                        r.version,
                    ))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| StorageError::Engine(e.to_string()))??;
        let mut state = self.write()?;
        let state = &mut *state;
        let (Some(info), Some(stored)) =
            (state.stores.get_mut(store), state.records.get_mut(store))
        else {
            return Ok(WriteOutcome::StoreMissing);
        };
        for (key, content_type, body, version) in records {
            let size = body.len() as u64;
            match stored.insert(key.as_str().to_owned(), (content_type, body, version)) {
                Some((_, old, _)) => {
                    info.stats.storage_bytes =
                        info.stats.storage_bytes.saturating_sub(old.len() as u64)
                }
                None => info.stats.record_count += 1,
            }
            info.stats.storage_bytes += size;
            info.stats.write_count += 1;
        }
        let now = now_millis();
        info.modified_at = now;
        info.accessed_at = now;
        Ok(WriteOutcome::Written)
    }

    async fn record_delete(&self, store: &StoreId, key: &RecordKey) -> Result<WriteOutcome> {
        let mut state = self.write()?;
        let state = &mut *state;
        let (Some(info), Some(records)) =
            (state.stores.get_mut(store), state.records.get_mut(store))
        else {
            return Ok(WriteOutcome::StoreMissing);
        };
        if let Some((_, old, _)) = records.remove(key.as_str()) {
            info.stats.storage_bytes = info.stats.storage_bytes.saturating_sub(old.len() as u64);
            info.stats.record_count = info.stats.record_count.saturating_sub(1);
        }
        info.stats.delete_count += 1;
        let now = now_millis();
        info.modified_at = now;
        info.accessed_at = now;
        Ok(WriteOutcome::Written)
    }

    async fn ping(&self) -> Result<()> {
        self.read().map(|_| ())
    }

    fn spool_dir(&self) -> PathBuf {
        self.spool.path().to_path_buf()
    }
}

// Users, tokens and shares.
#[async_trait]
impl Administration for MemoryStore {
    async fn user_create(
        &self,
        username: Username,
        is_admin: bool,
        token: TokenHash,
    ) -> Result<User> {
        let user = User::new(username, is_admin);
        insert_user(&mut *self.write()?, &user, token)?;
        Ok(user)
    }

    async fn user_create_first(
        &self,
        username: Username,
        token: TokenHash,
    ) -> Result<Option<User>> {
        let mut state = self.write()?;
        if !state.users.is_empty() {
            return Ok(None);
        }
        let user = User::new(username, true);
        insert_user(&mut state, &user, token)?;
        Ok(Some(user))
    }

    async fn user_by_name(&self, username: &Username) -> Result<Option<User>> {
        let state = self.read()?;
        Ok(state
            .usernames
            .get(username)
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>> {
        Ok(self.read()?.users.get(id).cloned())
    }

    async fn users_list(&self) -> Result<Vec<User>> {
        let mut users: Vec<User> = self.read()?.users.values().cloned().collect();
        users.sort_by(|a, b| (a.created_at, &a.username).cmp(&(b.created_at, &b.username)));
        Ok(users)
    }

    async fn user_update(&self, id: &UserId, update: UserUpdate) -> Result<Option<User>> {
        let mut state = self.write()?;
        let Some(user) = state.users.get_mut(id) else {
            return Ok(None);
        };
        if let Some(disabled) = update.disabled {
            user.disabled = disabled;
        }
        if let Some(is_admin) = update.is_admin {
            user.is_admin = is_admin;
        }
        Ok(Some(user.clone()))
    }

    async fn user_delete(&self, id: &UserId) -> Result<bool> {
        let mut state = self.write()?;
        let Some(user) = state.users.remove(id) else {
            return Ok(false);
        };
        state.usernames.remove(&user.username);
        state.tokens.retain(|_, (owner, _)| owner != id);
        state.shares.retain(|(_, with), _| with != id);
        let owned: Vec<StoreId> = state
            .stores
            .values()
            .filter(|s| &s.user_id == id)
            .map(|s| s.id.clone())
            .collect();
        for store in owned {
            remove_store(&mut state, &store);
        }
        Ok(true)
    }

    async fn token_add(
        &self,
        user: &UserId,
        grant: TokenGrant,
        revoke_others: bool,
    ) -> Result<bool> {
        let mut state = self.write()?;
        if !state.users.contains_key(user) {
            return Ok(false);
        }
        if revoke_others {
            state.tokens.retain(|_, (owner, _)| owner != user);
        }
        state
            .tokens
            .insert(grant.hash, (user.clone(), grant.read_only));
        Ok(true)
    }

    async fn share_set(
        &self,
        store: &StoreId,
        user: &UserId,
        access: Option<ShareAccess>,
    ) -> Result<bool> {
        let mut state = self.write()?;
        if !state.stores.contains_key(store) {
            return Ok(false);
        }
        let key = (store.clone(), user.clone());
        match access {
            Some(access) => state.shares.insert(key, access),
            None => state.shares.remove(&key),
        };
        Ok(true)
    }

    async fn shares_list(&self, store: &StoreId) -> Result<Vec<(UserId, ShareAccess)>> {
        Ok(self
            .read()?
            .shares
            .iter()
            .filter(|((s, _), _)| s == store)
            .map(|((_, u), a)| (u.clone(), *a))
            .collect())
    }
}

// Whole users and stores moved between backends, and snapshots for backups.
#[async_trait]
impl BulkTransfer for MemoryStore {
    async fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        // Bodies are reference-counted `Bytes`: the copy is of the maps, not of the data.
        Ok(Box::new(MemorySnapshot(self.read()?.clone())))
    }

    async fn user_tokens(&self, user: &UserId) -> Result<Vec<TokenGrant>> {
        Ok(self
            .read()?
            .tokens
            .iter()
            .filter(|(_, (id, _))| id == user)
            .map(|(hash, (_, read_only))| TokenGrant {
                hash: *hash,
                read_only: *read_only,
            })
            .collect())
    }

    async fn user_import(&self, user: &User, tokens: &[TokenGrant]) -> Result<()> {
        let mut state = self.write()?;
        if !state.users.contains_key(&user.id) {
            if state.usernames.contains_key(&user.username) {
                return Err(StorageError::UserExists);
            }
            state
                .usernames
                .insert(user.username.clone(), user.id.clone());
            state.users.insert(user.id.clone(), user.clone());
        }
        for token in tokens {
            state
                .tokens
                .insert(token.hash, (user.id.clone(), token.read_only));
        }
        Ok(())
    }

    async fn store_import(&self, store: &StoreInfo) -> Result<()> {
        let mut state = self.write()?;
        if let Some(name) = &store.name {
            let key = (store.user_id.clone(), name.clone());
            if state.names.get(&key).is_some_and(|id| id != &store.id) {
                return Err(StorageError::NameTaken);
            }
        }
        if let Some(old) = state.stores.get(&store.id).cloned() {
            if let Some(old_name) = old.name {
                state.names.remove(&(old.user_id, old_name));
            }
        }
        if let Some(name) = &store.name {
            state
                .names
                .insert((store.user_id.clone(), name.clone()), store.id.clone());
        }
        state.records.entry(store.id.clone()).or_default();
        state.stores.insert(store.id.clone(), store.clone());
        Ok(())
    }
}

// Background work: retention, orphans, counter flushes, shutdown.
#[async_trait]
impl Housekeeping for MemoryStore {
    async fn stores_unnamed_idle(&self, idle_since: Millis, limit: usize) -> Result<Vec<StoreId>> {
        let state = self.read()?;
        let mut idle: Vec<&StoreInfo> = state
            .stores
            .values()
            .filter(|s| s.name.is_none() && s.accessed_at < idle_since)
            .collect();
        idle.sort_by_key(|s| s.accessed_at);
        Ok(idle.into_iter().take(limit).map(|s| s.id.clone()).collect())
    }

    async fn apply_access(&self, batch: Vec<(StoreId, AccessDelta)>) -> Result<()> {
        let mut state = self.write()?;
        for (id, delta) in &batch {
            if let Some(store) = state.stores.get_mut(id) {
                apply_delta(store, delta);
            }
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

struct MemorySnapshot(State);

#[async_trait]
impl Snapshot for MemorySnapshot {
    async fn users(&self) -> Result<Vec<(User, Vec<TokenGrant>)>> {
        Ok(self
            .0
            .users
            .values()
            .map(|user| {
                let tokens = self
                    .0
                    .tokens
                    .iter()
                    .filter(|(_, (id, _))| *id == user.id)
                    .map(|(hash, (_, read_only))| TokenGrant {
                        hash: *hash,
                        read_only: *read_only,
                    })
                    .collect();
                (user.clone(), tokens)
            })
            .collect())
    }

    async fn shares(&self) -> Result<Vec<(StoreId, UserId, ShareAccess)>> {
        Ok(self
            .0
            .shares
            .iter()
            .map(|((s, u), a)| (s.clone(), u.clone(), *a))
            .collect())
    }

    async fn stores(&self) -> Result<Vec<StoreInfo>> {
        Ok(self.0.stores.values().cloned().collect())
    }

    async fn keys(
        &self,
        store: &StoreId,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<RecordMeta>> {
        let Some(records) = self.0.records.get(store) else {
            return Ok(Vec::new());
        };
        let range = match &after {
            Some(after) => records
                .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => records.range::<String, _>(..),
        };
        range
            .take(limit)
            .map(|(key, (content_type, body, version))| {
                Ok(RecordMeta {
                    key: RecordKey::parse(key).map_err(|e| StorageError::Corrupt(e.0))?,
                    size: body.len() as u64,
                    content_type: content_type.clone(),
                    version: *version,
                })
            })
            .collect()
    }

    async fn record(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>> {
        Ok(self.0.record(store, key))
    }
}
