//! Users and their tokens: the rows, authentication by token hash, and the writes that create,
//! change, import and delete users (a deleted user's stores and shares go with it).

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::codec::{decode, encode};
use super::schema::{READ_ONLY_TOKENS, SHARED_WITH, SHARES, TOKENS, USERNAMES, USERS};
use super::watch::engine;
use crate::model::{Authenticated, TokenGrant, TokenHash, User, UserId};
use crate::storage::{Result, StorageError, UserUpdate};

pub(super) fn read_user(txn: &redb::ReadTransaction, id: &str) -> Result<Option<User>> {
    let table = txn.open_table(USERS).map_err(engine)?;
    let row = table.get(id).map_err(engine)?;
    row.map(|v| decode(v.value())).transpose()
}

/// Every token of a user, with its scope (a scan: tokens are few, and this is administration).
pub(super) fn tokens_of(txn: &impl TokenTables, user: &str) -> Result<Vec<TokenGrant>> {
    let mut out = Vec::new();
    for (table, read_only) in [(TOKENS, false), (READ_ONLY_TOKENS, true)] {
        for (hash, id) in txn.token_entries(table)? {
            if id == user {
                out.push(TokenGrant {
                    hash: TokenHash(hash),
                    read_only,
                });
            }
        }
    }
    Ok(out)
}

/// The table a token of this scope lives in.
fn token_table(read_only: bool) -> TableDefinition<'static, &'static [u8; 32], &'static str> {
    if read_only {
        READ_ONLY_TOKENS
    } else {
        TOKENS
    }
}

fn save_token(txn: &WriteTransaction, grant: &TokenGrant, user: &str) -> Result<()> {
    txn.open_table(token_table(grant.read_only))
        .map_err(engine)?
        .insert(&grant.hash.0, user)
        .map_err(engine)?;
    Ok(())
}

/// Removes every token of a user.
fn revoke_tokens(txn: &WriteTransaction, user: &str) -> Result<()> {
    for grant in tokens_of(txn, user)? {
        txn.open_table(token_table(grant.read_only))
            .map_err(engine)?
            .remove(&grant.hash.0)
            .map_err(engine)?;
    }
    Ok(())
}

/// Reading the token tables from a read or a write transaction.
pub(super) trait TokenTables {
    fn token_entries(
        &self,
        table: TableDefinition<&[u8; 32], &str>,
    ) -> Result<Vec<([u8; 32], String)>>;
}

impl TokenTables for redb::ReadTransaction {
    fn token_entries(
        &self,
        table: TableDefinition<&[u8; 32], &str>,
    ) -> Result<Vec<([u8; 32], String)>> {
        entries_of(&self.open_table(table).map_err(engine)?)
    }
}

impl TokenTables for WriteTransaction {
    fn token_entries(
        &self,
        table: TableDefinition<&[u8; 32], &str>,
    ) -> Result<Vec<([u8; 32], String)>> {
        entries_of(&self.open_table(table).map_err(engine)?)
    }
}

fn entries_of(
    table: &impl ReadableTable<&'static [u8; 32], &'static str>,
) -> Result<Vec<([u8; 32], String)>> {
    let mut out = Vec::new();
    for entry in table.iter().map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        out.push((*k.value(), v.value().to_owned()));
    }
    Ok(out)
}

/// The user of a token (full or read-only), unless disabled.
pub(super) fn authenticate(
    txn: &redb::ReadTransaction,
    token: &TokenHash,
) -> Result<Option<Authenticated>> {
    let mut found = None;
    for (table, read_only) in [(TOKENS, false), (READ_ONLY_TOKENS, true)] {
        let tokens = txn.open_table(table).map_err(engine)?;
        if let Some(id) = tokens.get(&token.0).map_err(engine)? {
            found = Some((id.value().to_owned(), read_only));
            break;
        }
    }
    let Some((id, read_only)) = found else {
        return Ok(None);
    };
    Ok(read_user(txn, &id)?
        .filter(|u| !u.disabled)
        .map(|user| Authenticated { user, read_only }))
}

pub(super) fn insert_user(txn: &WriteTransaction, user: &User, token: &TokenHash) -> Result<()> {
    save_new_user(txn, user)?;
    let grant = TokenGrant {
        hash: *token,
        read_only: false,
    };
    save_token(txn, &grant, user.id.as_str())
}

/// Saves a user that does not exist yet; [`StorageError::UserExists`] if its name is taken.
fn save_new_user(txn: &WriteTransaction, user: &User) -> Result<()> {
    let mut names = txn.open_table(USERNAMES).map_err(engine)?;
    if names.get(user.username.as_str()).map_err(engine)?.is_some() {
        return Err(StorageError::UserExists);
    }
    names
        .insert(user.username.as_str(), user.id.as_str())
        .map_err(engine)?;
    txn.open_table(USERS)
        .map_err(engine)?
        .insert(user.id.as_str(), encode(user)?.as_slice())
        .map_err(engine)?;
    Ok(())
}

/// [`Administration::user_create_first`](crate::storage::Administration::user_create_first), in `txn`.
pub(super) fn create_first_user(
    txn: &WriteTransaction,
    user: User,
    token: &TokenHash,
) -> Result<Option<User>> {
    if !txn
        .open_table(USERS)
        .map_err(engine)?
        .is_empty()
        .map_err(engine)?
    {
        return Ok(None);
    }
    insert_user(txn, &user, token)?;
    Ok(Some(user))
}

/// [`Administration::user_update`](crate::storage::Administration::user_update), in `txn`.
pub(super) fn update_user(
    txn: &WriteTransaction,
    id: &UserId,
    update: UserUpdate,
) -> Result<Option<User>> {
    let mut users = txn.open_table(USERS).map_err(engine)?;
    let Some(mut user) = users
        .get(id.as_str())
        .map_err(engine)?
        .map(|v| decode::<User>(v.value()))
        .transpose()?
    else {
        return Ok(None);
    };
    if let Some(disabled) = update.disabled {
        user.disabled = disabled;
    }
    if let Some(is_admin) = update.is_admin {
        user.is_admin = is_admin;
    }
    users
        .insert(id.as_str(), encode(&user)?.as_slice())
        .map_err(engine)?;
    Ok(Some(user))
}

/// [`Administration::user_delete`](crate::storage::Administration::user_delete) but for the user's own stores (see
/// `stores::delete_stores_of`), in `txn`: the user, its tokens, and the shares it was given.
pub(super) fn delete_user(txn: &WriteTransaction, id: &UserId) -> Result<bool> {
    let Some(user) = txn
        .open_table(USERS)
        .map_err(engine)?
        .remove(id.as_str())
        .map_err(engine)?
        .map(|v| decode::<User>(v.value()))
        .transpose()?
    else {
        return Ok(false);
    };
    txn.open_table(USERNAMES)
        .map_err(engine)?
        .remove(user.username.as_str())
        .map_err(engine)?;
    revoke_tokens(txn, id.as_str())?;
    // Shares given to the user.
    let mut shared_with = txn.open_table(SHARED_WITH).map_err(engine)?;
    let mut stores = Vec::new();
    for entry in shared_with.range((id.as_str(), "")..).map_err(engine)? {
        let (k, _) = entry.map_err(engine)?;
        let (u, s) = k.value();
        if u != id.as_str() {
            break;
        }
        stores.push(s.to_owned());
    }
    let mut shares = txn.open_table(SHARES).map_err(engine)?;
    for store in &stores {
        shared_with
            .remove((id.as_str(), store.as_str()))
            .map_err(engine)?;
        shares
            .remove((store.as_str(), id.as_str()))
            .map_err(engine)?;
    }
    Ok(true)
}

/// [`Administration::token_add`](crate::storage::Administration::token_add), in `txn`.
pub(super) fn add_token(
    txn: &WriteTransaction,
    user: &UserId,
    grant: &TokenGrant,
    revoke_others: bool,
) -> Result<bool> {
    let exists = txn
        .open_table(USERS)
        .map_err(engine)?
        .get(user.as_str())
        .map_err(engine)?
        .is_some();
    if !exists {
        return Ok(false);
    }
    if revoke_others {
        revoke_tokens(txn, user.as_str())?;
    }
    save_token(txn, grant, user.as_str())?;
    Ok(true)
}

/// [`BulkTransfer::user_import`](crate::storage::BulkTransfer::user_import), in `txn`.
pub(super) fn import_user(
    txn: &WriteTransaction,
    user: &User,
    tokens: &[TokenGrant],
) -> Result<()> {
    let exists = txn
        .open_table(USERS)
        .map_err(engine)?
        .get(user.id.as_str())
        .map_err(engine)?
        .is_some();
    if !exists {
        save_new_user(txn, user)?;
    }
    for token in tokens {
        save_token(txn, token, user.id.as_str())?;
    }
    Ok(())
}

/// [`Administration::users_list`](crate::storage::Administration::users_list), in `txn`.
pub(super) fn list_users(txn: &redb::ReadTransaction) -> Result<Vec<User>> {
    let users = txn.open_table(USERS).map_err(engine)?;
    let mut out = Vec::new();
    for entry in users.iter().map_err(engine)? {
        let (_, v) = entry.map_err(engine)?;
        out.push(decode::<User>(v.value())?);
    }
    out.sort_by(|a, b| (a.created_at, &a.username).cmp(&(b.created_at, &b.username)));
    Ok(out)
}
