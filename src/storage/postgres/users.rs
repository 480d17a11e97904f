//! Users and their tokens: creation (the first user under the advisory lock), look-ups, updates,
//! deletion and the import of users with their tokens.

use sqlx::{Postgres, Row, Transaction};

use super::errors::{db_err, is_unique_violation};
use super::purge::purge_deleted;
use super::rows::{to_i64, token_row, user_from_row};
use super::schema::LOCK_KEY;
use super::sql::USER_COLS;
use super::{PgQuery, PgStore};
use crate::model::{now_millis, Authenticated, TokenGrant, TokenHash, User, UserId, Username};
use crate::storage::{Result, StorageError, UserUpdate};

impl PgStore {
    /// The one user a query selects (the columns of `USER_COLS`), if any.
    async fn fetch_user(&self, query: PgQuery<'_>) -> Result<Option<User>> {
        self.bounded(self.op_timeout, async {
            self.maybe_row(query)
                .await?
                .as_ref()
                .map(user_from_row)
                .transpose()
        })
        .await
    }

    pub(super) async fn user_create_impl(
        &self,
        username: Username,
        is_admin: bool,
        token: TokenHash,
    ) -> Result<User> {
        self.bounded(self.op_timeout, async move {
            let user = User::new(username, is_admin);
            let mut txn = self.begin().await?;
            insert_user(&mut txn, &user, &token).await?;
            txn.commit().await.map_err(db_err)?;
            Ok(user)
        })
        .await
    }

    pub(super) async fn user_create_first_impl(
        &self,
        username: Username,
        token: TokenHash,
    ) -> Result<Option<User>> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(LOCK_KEY)
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
                .fetch_one(&mut *txn)
                .await
                .map_err(db_err)?;
            if any {
                return Ok(None);
            }
            let user = User::new(username, true);
            insert_user(&mut txn, &user, &token).await?;
            txn.commit().await.map_err(db_err)?;
            Ok(Some(user))
        })
        .await
    }

    pub(super) async fn user_by_token_impl(
        &self,
        token: &TokenHash,
    ) -> Result<Option<Authenticated>> {
        self.bounded(self.op_timeout, async {
            let row = self
                .maybe_row(
                    sqlx::query(
                        "SELECT u.id, u.username, u.created_at, u.is_admin, u.disabled, t.read_only
                         FROM tokens t JOIN users u ON u.id = t.user_id
                         WHERE t.hash = $1 AND NOT u.disabled",
                    )
                    .bind(token.0.as_slice()),
                )
                .await?;
            row.map(|row| {
                Ok(Authenticated {
                    user: user_from_row(&row)?,
                    read_only: row.try_get("read_only").map_err(db_err)?,
                })
            })
            .transpose()
        })
        .await
    }

    pub(super) async fn user_by_name_impl(&self, username: &Username) -> Result<Option<User>> {
        self.fetch_user(
            sqlx::query(&format!(
                "SELECT {USER_COLS} FROM users WHERE username = $1"
            ))
            .bind(username.as_str()),
        )
        .await
    }

    pub(super) async fn user_by_id_impl(&self, id: &UserId) -> Result<Option<User>> {
        self.fetch_user(
            sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1")).bind(id.as_str()),
        )
        .await
    }

    pub(super) async fn user_update_impl(
        &self,
        id: &UserId,
        update: UserUpdate,
    ) -> Result<Option<User>> {
        self.fetch_user(
            sqlx::query(&format!(
                "UPDATE users SET disabled = coalesce($2, disabled), is_admin = coalesce($3, is_admin)
                 WHERE id = $1 RETURNING {USER_COLS}"
            ))
            .bind(id.as_str())
            .bind(update.disabled)
            .bind(update.is_admin),
        )
        .await
    }

    pub(super) async fn user_delete_impl(&self, id: &UserId) -> Result<bool> {
        let deleted = self
            .bounded(self.op_timeout, async move {
                let mut txn = self.begin().await?;
                sqlx::query(
                    "DELETE FROM store_shares WHERE store_id IN
                         (SELECT id FROM stores WHERE user_id = $1 AND NOT deleted)",
                )
                .bind(id.as_str())
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
                sqlx::query(
                    "UPDATE stores SET deleted = true, modified_at = $2
                     WHERE user_id = $1 AND NOT deleted",
                )
                .bind(id.as_str())
                .bind(to_i64(now_millis()))
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
                // Tokens and shares given to the user go with it (ON DELETE CASCADE).
                let gone = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *txn)
                    .await
                    .map_err(db_err)?
                    .rows_affected()
                    == 1;
                txn.commit().await.map_err(db_err)?;
                Ok(gone)
            })
            .await?;
        if deleted {
            tokio::spawn(purge_deleted(self.pool.clone()));
        }
        Ok(deleted)
    }

    pub(super) async fn token_add_impl(
        &self,
        user: &UserId,
        grant: TokenGrant,
        revoke_others: bool,
    ) -> Result<bool> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 FOR UPDATE)")
                    .bind(user.as_str())
                    .fetch_one(&mut *txn)
                    .await
                    .map_err(db_err)?;
            if !exists {
                return Ok(false);
            }
            if revoke_others {
                sqlx::query("DELETE FROM tokens WHERE user_id = $1")
                    .bind(user.as_str())
                    .execute(&mut *txn)
                    .await
                    .map_err(db_err)?;
            }
            sqlx::query("INSERT INTO tokens (hash, user_id, read_only) VALUES ($1, $2, $3)")
                .bind(grant.hash.0.as_slice())
                .bind(user.as_str())
                .bind(grant.read_only)
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            txn.commit().await.map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn users_list_impl(&self) -> Result<Vec<User>> {
        self.bounded(self.op_timeout, async move {
            sqlx::query(&format!(
                "SELECT {USER_COLS} FROM users ORDER BY created_at, username"
            ))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(user_from_row)
            .collect()
        })
        .await
    }

    pub(super) async fn user_tokens_impl(&self, user: &UserId) -> Result<Vec<TokenGrant>> {
        self.bounded(self.op_timeout, async move {
            sqlx::query("SELECT hash, read_only FROM tokens WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(token_row)
                .collect()
        })
        .await
    }

    pub(super) async fn user_import_impl(&self, user: &User, tokens: &[TokenGrant]) -> Result<()> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO users (id, username, created_at, is_admin, disabled)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )
            .bind(user.id.as_str())
            .bind(user.username.as_str())
            .bind(to_i64(user.created_at))
            .bind(user.is_admin)
            .bind(user.disabled)
            .execute(&mut *txn)
            .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StorageError::UserExists),
                other => other.map_err(db_err)?,
            };
            for token in tokens {
                sqlx::query(
                    "INSERT INTO tokens (hash, user_id, read_only) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(token.hash.0.as_slice())
                .bind(user.id.as_str())
                .bind(token.read_only)
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            }
            txn.commit().await.map_err(db_err)
        })
        .await
    }
}

async fn insert_user(
    txn: &mut Transaction<'_, Postgres>,
    user: &User,
    token: &TokenHash,
) -> Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO users (id, username, created_at, is_admin) VALUES ($1, $2, $3, $4)",
    )
    .bind(user.id.as_str())
    .bind(user.username.as_str())
    .bind(to_i64(user.created_at))
    .bind(user.is_admin)
    .execute(&mut **txn)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => return Err(StorageError::UserExists),
        other => other.map_err(db_err)?,
    };
    sqlx::query("INSERT INTO tokens (hash, user_id) VALUES ($1, $2)")
        .bind(token.0.as_slice())
        .bind(user.id.as_str())
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
    Ok(())
}
