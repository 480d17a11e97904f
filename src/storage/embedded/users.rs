//! Users and their tokens: the rows, authentication by token hash, and the writes that create,
//! change, import and delete users (a deleted user's stores and shares go with it).

use std::ops::Bound;

use super::codec::{decode, encode};
use super::engine::{pair, pair_prefix, split_pair, Read, Table, WriteTxn};
use crate::model::{Authenticated, TokenGrant, TokenHash, User, UserId};
use crate::storage::{Result, StorageError, UserUpdate};

pub(super) fn read_user(txn: &impl Read, id: &str) -> Result<Option<User>> {
    let row = txn.get(Table::Users, id.as_bytes())?;
    row.map(|v| decode(&v)).transpose()
}

/// The token tables, with the scope of the tokens each holds.
const TOKEN_TABLES: [(Table, bool); 2] = [(Table::Tokens, false), (Table::ReadOnlyTokens, true)];

/// Every token of a user, with its scope (a scan: tokens are few, and this is administration).
pub(super) fn tokens_of(txn: &impl Read, user: &str) -> Result<Vec<TokenGrant>> {
    let mut out = Vec::new();
    for (table, read_only) in TOKEN_TABLES {
        for entry in txn.all(table) {
            let (hash, id) = entry?;
            if &*id == user.as_bytes() {
                let hash = <[u8; 32]>::try_from(&*hash)
                    .map_err(|_| StorageError::Corrupt("token hash".into()))?;
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
fn token_table(read_only: bool) -> Table {
    if read_only {
        Table::ReadOnlyTokens
    } else {
        Table::Tokens
    }
}

fn save_token(txn: &mut WriteTxn<'_>, grant: &TokenGrant, user: &str) {
    txn.insert(token_table(grant.read_only), &grant.hash.0[..], user);
}

/// Removes every token of a user.
fn revoke_tokens(txn: &mut WriteTxn<'_>, user: &str) -> Result<()> {
    for grant in tokens_of(txn, user)? {
        txn.remove(token_table(grant.read_only), &grant.hash.0[..]);
    }
    Ok(())
}

/// The user of a token (full or read-only), unless disabled.
pub(super) fn authenticate(txn: &impl Read, token: &TokenHash) -> Result<Option<Authenticated>> {
    let mut found = None;
    for (table, read_only) in TOKEN_TABLES {
        if let Some(id) = txn.get(table, &token.0)? {
            found = Some((id, read_only));
            break;
        }
    }
    let Some((id, read_only)) = found else {
        return Ok(None);
    };
    let id = std::str::from_utf8(&id).map_err(|_| StorageError::Corrupt("user id".into()))?;
    Ok(read_user(txn, id)?
        .filter(|u| !u.disabled)
        .map(|user| Authenticated { user, read_only }))
}

pub(super) fn insert_user(txn: &mut WriteTxn<'_>, user: &User, token: &TokenHash) -> Result<()> {
    save_new_user(txn, user)?;
    let grant = TokenGrant {
        hash: *token,
        read_only: false,
    };
    save_token(txn, &grant, user.id.as_str());
    Ok(())
}

/// Saves a user that does not exist yet; [`StorageError::UserExists`] if its name is taken.
fn save_new_user(txn: &mut WriteTxn<'_>, user: &User) -> Result<()> {
    if txn.contains(Table::Usernames, user.username.as_str().as_bytes())? {
        return Err(StorageError::UserExists);
    }
    txn.insert(Table::Usernames, user.username.as_str(), user.id.as_str());
    txn.insert(Table::Users, user.id.as_str(), encode(user)?);
    Ok(())
}

/// [`Administration::user_create_first`](crate::storage::Administration::user_create_first), in `txn`.
pub(super) fn create_first_user(
    txn: &mut WriteTxn<'_>,
    user: User,
    token: &TokenHash,
) -> Result<Option<User>> {
    if !txn.is_empty(Table::Users)? {
        return Ok(None);
    }
    insert_user(txn, &user, token)?;
    Ok(Some(user))
}

/// [`Administration::user_update`](crate::storage::Administration::user_update), in `txn`.
pub(super) fn update_user(
    txn: &mut WriteTxn<'_>,
    id: &UserId,
    update: UserUpdate,
) -> Result<Option<User>> {
    let Some(mut user) = read_user(txn, id.as_str())? else {
        return Ok(None);
    };
    if let Some(disabled) = update.disabled {
        user.disabled = disabled;
    }
    if let Some(is_admin) = update.is_admin {
        user.is_admin = is_admin;
    }
    txn.insert(Table::Users, id.as_str(), encode(&user)?);
    Ok(Some(user))
}

/// [`Administration::user_delete`](crate::storage::Administration::user_delete) but for the user's own stores (see
/// `stores::delete_stores_of`), in `txn`: the user, its tokens, and the shares it was given.
pub(super) fn delete_user(txn: &mut WriteTxn<'_>, id: &UserId) -> Result<bool> {
    let Some(user) = txn
        .take(Table::Users, id.as_str().as_bytes())?
        .map(|v| decode::<User>(&v))
        .transpose()?
    else {
        return Ok(false);
    };
    txn.remove(Table::Usernames, user.username.as_str());
    revoke_tokens(txn, id.as_str())?;
    // Shares given to the user.
    let mut stores = Vec::new();
    for entry in txn.rows(
        Table::SharedWith,
        &pair_prefix(id.as_str()),
        Bound::Unbounded,
    ) {
        let (k, _) = entry?;
        stores.push(split_pair(&k)?.1.to_owned());
    }
    for store in &stores {
        txn.remove(Table::SharedWith, pair(id.as_str(), store));
        txn.remove(Table::Shares, pair(store, id.as_str()));
    }
    Ok(true)
}

/// [`Administration::token_add`](crate::storage::Administration::token_add), in `txn`.
pub(super) fn add_token(
    txn: &mut WriteTxn<'_>,
    user: &UserId,
    grant: &TokenGrant,
    revoke_others: bool,
) -> Result<bool> {
    if !txn.contains(Table::Users, user.as_str().as_bytes())? {
        return Ok(false);
    }
    if revoke_others {
        revoke_tokens(txn, user.as_str())?;
    }
    save_token(txn, grant, user.as_str());
    Ok(true)
}

/// [`BulkTransfer::user_import`](crate::storage::BulkTransfer::user_import), in `txn`.
pub(super) fn import_user(
    txn: &mut WriteTxn<'_>,
    user: &User,
    tokens: &[TokenGrant],
) -> Result<()> {
    if !txn.contains(Table::Users, user.id.as_str().as_bytes())? {
        save_new_user(txn, user)?;
    }
    for token in tokens {
        save_token(txn, token, user.id.as_str());
    }
    Ok(())
}

/// [`Administration::users_list`](crate::storage::Administration::users_list), in `txn`.
pub(super) fn list_users(txn: &impl Read) -> Result<Vec<User>> {
    let mut out = Vec::new();
    for entry in txn.all(Table::Users) {
        let (_, v) = entry?;
        out.push(decode::<User>(&v)?);
    }
    out.sort_by(|a, b| (a.created_at, &a.username).cmp(&(b.created_at, &b.username)));
    Ok(out)
}
