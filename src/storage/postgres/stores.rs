//! Stores: creation, look-ups, listings, updates, deletion, import, and the access counters
//! flushed from every node.

use sqlx::Row;

use super::errors::{db_err, is_unique_violation};
use super::purge::purge_deleted;
use super::rows::{corrupt, store_from_row, to_i64, to_u64};
use super::sql::select_stores;
use super::{PgQuery, PgStore};
use crate::model::{now_millis, Millis, StoreId, StoreInfo, StoreName, UserId};
use crate::storage::{
    AccessDelta, RecordStore, Result, StorageError, StoreListQuery, StorePage, StoreUpdate,
};

impl PgStore {
    /// One page of stores in creation order: `filter` takes the user id as $1 and `unnamed` as $2.
    pub(super) async fn stores_page(
        &self,
        filter: &str,
        user: &str,
        query: &StoreListQuery,
    ) -> Result<StorePage> {
        self.bounded(self.op_timeout, async move {
            let total: i64 =
                sqlx::query_scalar(&format!("SELECT count(*) FROM stores WHERE {filter}"))
                    .bind(user)
                    .bind(query.unnamed)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_err)?;
            let order = if query.desc { "DESC" } else { "ASC" };
            let items = sqlx::query(&select_stores(
                filter,
                &format!("ORDER BY created_at {order}, id {order} OFFSET $3 LIMIT $4"),
            ))
            .bind(user)
            .bind(query.unnamed)
            .bind(to_i64(query.offset))
            .bind(to_i64(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(store_from_row)
            .collect::<Result<Vec<_>>>()?;
            Ok(StorePage {
                total: to_u64(total),
                items,
            })
        })
        .await
    }

    pub(super) async fn store_get_or_create_impl(
        &self,
        store: StoreInfo,
    ) -> Result<(StoreInfo, bool)> {
        self.bounded(self.op_timeout, async move {
            for _ in 0..3 {
                let inserted = bind_settings(sqlx::query(
                    "INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at,
                         general_access, url_signing_secret_key, schema)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (user_id, name) WHERE name IS NOT NULL AND NOT deleted DO NOTHING",
                ), &store)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                if inserted.rows_affected() == 1 {
                    return Ok((store, true));
                }
                if let Some(name) = &store.name {
                    if let Some(existing) = self.store_get_by_name(&store.user_id, name).await? {
                        return Ok((existing, false));
                    }
                }
                // The clashing store was deleted meanwhile: try again.
            }
            Err(StorageError::Engine(
                "store creation kept conflicting".into(),
            ))
        })
        .await
    }

    pub(super) async fn store_get_impl(&self, id: &StoreId) -> Result<Option<StoreInfo>> {
        self.bounded(self.op_timeout, async move {
            self.maybe_row(
                sqlx::query(&select_stores("id = $1 AND NOT deleted", "")).bind(id.as_str()),
            )
            .await?
            .as_ref()
            .map(store_from_row)
            .transpose()
        })
        .await
    }

    pub(super) async fn store_get_by_name_impl(
        &self,
        owner: &UserId,
        name: &StoreName,
    ) -> Result<Option<StoreInfo>> {
        self.bounded(self.op_timeout, async move {
            sqlx::query(&select_stores(
                "user_id = $1 AND name = $2 AND NOT deleted",
                "",
            ))
            .bind(owner.as_str())
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(store_from_row)
            .transpose()
        })
        .await
    }

    pub(super) async fn stores_list_impl(
        &self,
        owner: &UserId,
        query: &StoreListQuery,
    ) -> Result<StorePage> {
        let filter = "user_id = $1 AND NOT deleted AND ($2 OR name IS NOT NULL)";
        self.stores_page(filter, owner.as_str(), query).await
    }

    pub(super) async fn store_update_impl(
        &self,
        id: &StoreId,
        update: StoreUpdate,
    ) -> Result<Option<StoreInfo>> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            let Some(row) = sqlx::query(&select_stores(
                "id = $1 AND NOT deleted",
                "FOR UPDATE OF s",
            ))
            .bind(id.as_str())
            .fetch_optional(&mut *txn)
            .await
            .map_err(db_err)?
            else {
                return Ok(None);
            };
            let mut store = store_from_row(&row)?;
            if let Some(name) = update.name {
                store.name = name;
            }
            if let Some(access) = update.general_access {
                store.general_access = access;
            }
            if let Some(title) = update.title {
                store.title = title;
            }
            let now = now_millis();
            store.modified_at = now;
            store.accessed_at = store.accessed_at.max(now);
            let updated = sqlx::query(
                "UPDATE stores SET name = $2, general_access = $3, modified_at = $4, accessed_at = $5,
                     title = $6
                 WHERE id = $1",
            )
            .bind(id.as_str())
            .bind(store.name.as_ref().map(StoreName::as_str))
            .bind(store.general_access.as_str())
            .bind(to_i64(store.modified_at))
            .bind(to_i64(store.accessed_at))
            .bind(store.title.as_deref())
            .execute(&mut *txn)
            .await;
            match updated {
                Err(e) if is_unique_violation(&e) => return Err(StorageError::NameTaken),
                other => other.map_err(db_err)?,
            };
            txn.commit().await.map_err(db_err)?;
            Ok(Some(store))
        })
        .await
    }

    pub(super) async fn store_delete_impl(&self, id: &StoreId) -> Result<bool> {
        self.bounded(self.op_timeout, async move {
            let deleted = sqlx::query(
                "WITH unshared AS (DELETE FROM store_shares WHERE store_id = $1)
                 UPDATE stores SET deleted = true, modified_at = $2 WHERE id = $1 AND NOT deleted",
            )
            .bind(id.as_str())
            .bind(to_i64(now_millis()))
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected()
                == 1;
            if deleted {
                tokio::spawn(purge_deleted(self.pool.clone()));
            }
            Ok(deleted)
        })
        .await
    }

    pub(super) async fn stores_unnamed_idle_impl(
        &self,
        idle_since: Millis,
        limit: usize,
    ) -> Result<Vec<StoreId>> {
        self.bounded(self.op_timeout, async move {
            let rows = sqlx::query(
                "SELECT id FROM stores WHERE name IS NULL AND NOT deleted AND accessed_at < $1
                 ORDER BY accessed_at LIMIT $2",
            )
            .bind(to_i64(idle_since))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|row| {
                    StoreId::parse(row.try_get("id").map_err(db_err)?)
                        .ok_or_else(|| corrupt("store id"))
                })
                .collect()
        })
        .await
    }

    pub(super) async fn store_import_impl(&self, store: &StoreInfo) -> Result<()> {
        self.bounded(self.op_timeout, async move {
            // One transaction: a fold of the shards (`counters.rs`) between the two statements
            // would add the old shards to the exact counters written here.
            let mut txn = self.begin().await?;
            let saved = bind_settings(
                sqlx::query(
                    "INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at,
                     general_access, url_signing_secret_key, schema, record_count, storage_bytes,
                     read_count, write_count, delete_count, list_count, title, deleted)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     false)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, user_id = EXCLUDED.user_id,
                     created_at = EXCLUDED.created_at, modified_at = EXCLUDED.modified_at,
                     accessed_at = EXCLUDED.accessed_at, general_access = EXCLUDED.general_access,
                     url_signing_secret_key = EXCLUDED.url_signing_secret_key,
                     schema = EXCLUDED.schema, record_count = EXCLUDED.record_count,
                     storage_bytes = EXCLUDED.storage_bytes, read_count = EXCLUDED.read_count,
                     write_count = EXCLUDED.write_count, delete_count = EXCLUDED.delete_count,
                     list_count = EXCLUDED.list_count, title = EXCLUDED.title, deleted = false",
                ),
                store,
            )
            .bind(to_i64(store.stats.record_count))
            .bind(to_i64(store.stats.storage_bytes))
            .bind(to_i64(store.stats.read_count))
            .bind(to_i64(store.stats.write_count))
            .bind(to_i64(store.stats.delete_count))
            .bind(to_i64(store.stats.list_count))
            .bind(store.title.as_deref())
            .execute(&mut *txn)
            .await;
            match saved {
                Err(e) if is_unique_violation(&e) => return Err(StorageError::NameTaken),
                other => other.map_err(db_err)?,
            };
            // The row now holds the exact counters: drop the shards' share of them.
            sqlx::query("DELETE FROM store_counters WHERE store_id = $1")
                .bind(store.id.as_str())
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            txn.commit().await.map_err(db_err)
        })
        .await
    }

    pub(super) async fn apply_access_impl(
        &self,
        mut batch: Vec<(StoreId, AccessDelta)>,
    ) -> Result<()> {
        self.bounded(self.op_timeout, async move {
            // Rows are locked in id order, so that two nodes flushing at once cannot deadlock.
            batch.sort_by(|a, b| a.0.cmp(&b.0));
            let mut txn = self.begin().await?;
            for (id, delta) in &batch {
                sqlx::query(
                    "UPDATE stores SET read_count = read_count + $2, list_count = list_count + $3,
                         accessed_at = greatest(accessed_at, $4)
                     WHERE id = $1",
                )
                .bind(id.as_str())
                .bind(to_i64(delta.reads))
                .bind(to_i64(delta.lists))
                .bind(to_i64(delta.accessed_at))
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            }
            txn.commit().await.map_err(db_err)
        })
        .await
    }
}

/// Binds a store's id and settings as $1 … $9: id, name, owner, created, modified, accessed,
/// general access, signing secret, schema (the columns both store inserts start with).
fn bind_settings<'q>(query: PgQuery<'q>, store: &'q StoreInfo) -> PgQuery<'q> {
    query
        .bind(store.id.as_str())
        .bind(store.name.as_ref().map(StoreName::as_str))
        .bind(store.user_id.as_str())
        .bind(to_i64(store.created_at))
        .bind(to_i64(store.modified_at))
        .bind(to_i64(store.accessed_at))
        .bind(store.general_access.as_str())
        .bind(&store.url_signing_secret_key)
        .bind(store.schema.as_deref())
}
