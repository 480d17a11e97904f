//! Stores shared with other users: granting, reading and revoking a share, and the stores shared
//! with a user.

use super::errors::db_err;
use super::rows::{corrupt, share_row};
use super::PgStore;
use crate::model::{ShareAccess, StoreId, UserId};
use crate::storage::{Result, StoreListQuery, StorePage};

impl PgStore {
    pub(super) async fn share_set_impl(
        &self,
        store: &StoreId,
        user: &UserId,
        access: Option<ShareAccess>,
    ) -> Result<bool> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM stores WHERE id = $1 AND NOT deleted FOR UPDATE)",
            )
            .bind(store.as_str())
            .fetch_one(&mut *txn)
            .await
            .map_err(db_err)?;
            if !exists {
                return Ok(false);
            }
            match access {
                Some(access) => sqlx::query(
                    "INSERT INTO store_shares (store_id, user_id, access) VALUES ($1, $2, $3)
                     ON CONFLICT (store_id, user_id) DO UPDATE SET access = EXCLUDED.access",
                )
                .bind(store.as_str())
                .bind(user.as_str())
                .bind(access.as_str()),
                None => {
                    sqlx::query("DELETE FROM store_shares WHERE store_id = $1 AND user_id = $2")
                        .bind(store.as_str())
                        .bind(user.as_str())
                }
            }
            .execute(&mut *txn)
            .await
            .map_err(db_err)?;
            txn.commit().await.map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn share_get_impl(
        &self,
        store: &StoreId,
        user: &UserId,
    ) -> Result<Option<ShareAccess>> {
        self.bounded(self.op_timeout, async move {
            let access: Option<String> = sqlx::query_scalar(
                "SELECT access FROM store_shares WHERE store_id = $1 AND user_id = $2",
            )
            .bind(store.as_str())
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            access
                .map(|a| ShareAccess::parse(&a).map_err(corrupt))
                .transpose()
        })
        .await
    }

    pub(super) async fn shares_list_impl(
        &self,
        store: &StoreId,
    ) -> Result<Vec<(UserId, ShareAccess)>> {
        self.bounded(self.op_timeout, async move {
            sqlx::query(
                "SELECT store_id, user_id, access FROM store_shares WHERE store_id = $1 ORDER BY user_id",
            )
            .bind(store.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(share_row)
            .map(|r| r.map(|(_, user, access)| (user, access)))
            .collect()
        })
        .await
    }

    pub(super) async fn stores_shared_with_impl(
        &self,
        user: &UserId,
        query: &StoreListQuery,
    ) -> Result<StorePage> {
        // A disabled owner's stores answer nobody but administrators, listings included.
        let filter = "id IN (SELECT store_id FROM store_shares WHERE user_id = $1)
                      AND NOT deleted AND ($2 OR name IS NOT NULL)
                      AND user_id IN (SELECT id FROM users WHERE NOT disabled)";
        self.stores_page(filter, user.as_str(), query).await
    }
}
