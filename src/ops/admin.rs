//! Administration of users, tokens and shares, written once: the admin API (`/v2/admin/…` and
//! `/v2/key-value-stores/{store}/shares`) calls [`Local`] on the server's backend, `kvstore users …`
//! and `kvstore share` call [`Local`] on a data directory or database directly, or [`Remote`]
//! against a running server with `--server` and an administrator's token.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{ShareAccess, StoreInfo, StoreRef, Token, TokenGrant, User, UserId, Username};
use crate::storage::{StorageError, Store, UserUpdate};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("there is no user named \"{0}\"")]
    NoSuchUser(String),
    #[error("there is no store \"{0}\"")]
    NoSuchStore(String),
    #[error("a user named \"{0}\" already exists")]
    UserExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// What a running server answered (`--server`).
    #[error("the server answered {status}: {message}")]
    Remote { status: u16, message: String },
    #[error("could not talk to the server: {0}")]
    Connection(String),
}

/// A user as administrators see it (`GET /v2/admin/users`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub id: String,
    pub username: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub is_admin: bool,
    pub disabled: bool,
}

impl UserInfo {
    pub fn new(user: &User) -> Self {
        Self {
            id: user.id.to_string(),
            username: user.username.to_string(),
            created_at: crate::model::format_millis(user.created_at),
            is_admin: user.is_admin,
            disabled: user.disabled,
        }
    }
}

/// A new token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    pub user: UserInfo,
    pub token: String,
    pub read_only: bool,
}

/// One user a store is shared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareInfo {
    pub user_id: String,
    pub username: String,
    /// `READ` or `WRITE`.
    pub access: String,
}

/// The operations, wherever they run.
#[async_trait]
pub trait Admin: Send + Sync {
    async fn users(&self) -> Result<Vec<UserInfo>, AdminError>;
    async fn create_user(
        &self,
        name: &Username,
        is_admin: bool,
        read_only: bool,
    ) -> Result<IssuedToken, AdminError>;
    async fn update_user(
        &self,
        name: &Username,
        update: UserUpdate,
    ) -> Result<UserInfo, AdminError>;
    async fn delete_user(&self, name: &Username) -> Result<(), AdminError>;
    /// A new token; with `revoke_others` (rotate), the user's other tokens stop working at once.
    async fn new_token(
        &self,
        name: &Username,
        read_only: bool,
        revoke_others: bool,
    ) -> Result<IssuedToken, AdminError>;
    /// Shares `store` (an id or `username~name`) with a user, or stops sharing it (`None`).
    async fn share(
        &self,
        store: &str,
        with: &Username,
        access: Option<ShareAccess>,
    ) -> Result<(), AdminError>;
}

/// The operations on a backend.
pub struct Local(pub Arc<dyn Store>);

impl Local {
    async fn user(&self, name: &Username) -> Result<User, AdminError> {
        self.0
            .user_by_name(name)
            .await?
            .ok_or_else(|| AdminError::NoSuchUser(name.to_string()))
    }

    /// A user by id or username.
    pub async fn user_by_ref(&self, raw: &str) -> Result<User, AdminError> {
        if let Some(id) = UserId::parse(raw) {
            if let Some(user) = self.0.user_by_id(&id).await? {
                return Ok(user);
            }
        }
        match Username::parse(raw) {
            Ok(name) => self.user(&name).await,
            Err(_) => Err(AdminError::NoSuchUser(raw.to_owned())),
        }
    }

    /// A store by id or `username~name`.
    pub async fn store_by_ref(&self, raw: &str) -> Result<StoreInfo, AdminError> {
        let missing = || AdminError::NoSuchStore(raw.to_owned());
        let found = match StoreRef::parse(raw) {
            StoreRef::Id(id) => self.0.store_get(&id).await?,
            StoreRef::UserName(user, name) => match self.0.user_by_name(&user).await? {
                Some(owner) => self.0.store_get_by_name(&owner.id, &name).await?,
                None => None,
            },
            // `~name` is the caller's own store, and here there is no caller.
            StoreRef::OwnName(_) | StoreRef::Invalid => None,
        };
        found.ok_or_else(missing)
    }

    /// Shares of one store, with usernames.
    pub async fn shares_of(&self, store: &StoreInfo) -> Result<Vec<ShareInfo>, AdminError> {
        let mut out = Vec::new();
        for (user, access) in self.0.shares_list(&store.id).await? {
            if let Some(user) = self.0.user_by_id(&user).await? {
                out.push(ShareInfo {
                    user_id: user.id.to_string(),
                    username: user.username.to_string(),
                    access: access.as_str().to_owned(),
                });
            }
        }
        out.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(out)
    }

    /// Shares `store` with `with` (by then looked up), or stops sharing it.
    pub async fn share_store(
        &self,
        store: &StoreInfo,
        with: &User,
        access: Option<ShareAccess>,
    ) -> Result<(), AdminError> {
        if with.id == store.user_id {
            return Err(AdminError::Invalid(
                "a store cannot be shared with its owner".into(),
            ));
        }
        if !self.0.share_set(&store.id, &with.id, access).await? {
            return Err(AdminError::NoSuchStore(store.id.to_string()));
        }
        Ok(())
    }
}

#[async_trait]
impl Admin for Local {
    async fn users(&self) -> Result<Vec<UserInfo>, AdminError> {
        Ok(self
            .0
            .users_list()
            .await?
            .iter()
            .map(UserInfo::new)
            .collect())
    }

    async fn create_user(
        &self,
        name: &Username,
        is_admin: bool,
        read_only: bool,
    ) -> Result<IssuedToken, AdminError> {
        let token = Token::generate();
        let full = if read_only {
            Token::generate()
        } else {
            token.clone()
        };
        let user = match self
            .0
            .user_create(name.clone(), is_admin, full.hash())
            .await
        {
            Ok(user) => user,
            Err(StorageError::UserExists) => return Err(AdminError::UserExists(name.to_string())),
            Err(e) => return Err(e.into()),
        };
        if read_only {
            // Only the read-only token is handed out: the full one is replaced at once.
            let grant = TokenGrant {
                hash: token.hash(),
                read_only: true,
            };
            self.0.token_add(&user.id, grant, true).await?;
        }
        Ok(IssuedToken {
            user: UserInfo::new(&user),
            token: token.expose().to_owned(),
            read_only,
        })
    }

    async fn update_user(
        &self,
        name: &Username,
        update: UserUpdate,
    ) -> Result<UserInfo, AdminError> {
        let user = self.user(name).await?;
        let updated = self
            .0
            .user_update(&user.id, update)
            .await?
            .ok_or_else(|| AdminError::NoSuchUser(name.to_string()))?;
        Ok(UserInfo::new(&updated))
    }

    async fn delete_user(&self, name: &Username) -> Result<(), AdminError> {
        let user = self.user(name).await?;
        if !self.0.user_delete(&user.id).await? {
            return Err(AdminError::NoSuchUser(name.to_string()));
        }
        Ok(())
    }

    async fn new_token(
        &self,
        name: &Username,
        read_only: bool,
        revoke_others: bool,
    ) -> Result<IssuedToken, AdminError> {
        let user = self.user(name).await?;
        let token = Token::generate();
        let grant = TokenGrant {
            hash: token.hash(),
            read_only,
        };
        if !self.0.token_add(&user.id, grant, revoke_others).await? {
            return Err(AdminError::NoSuchUser(name.to_string()));
        }
        Ok(IssuedToken {
            user: UserInfo::new(&user),
            token: token.expose().to_owned(),
            read_only,
        })
    }

    async fn share(
        &self,
        store: &str,
        with: &Username,
        access: Option<ShareAccess>,
    ) -> Result<(), AdminError> {
        let store = self.store_by_ref(store).await?;
        let with = self.user(with).await?;
        self.share_store(&store, &with, access).await
    }
}

/// The operations on a running server, through its admin API.
pub struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    pub fn new(server: &str, token: &str) -> Self {
        Self {
            base: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request and returns the `data` of the answer (or `Null` for 204).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, AdminError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| AdminError::Connection(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(serde_json::Value::Null);
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(AdminError::Remote {
                status: status.as_u16(),
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_owned(),
            });
        }
        Ok(body["data"].clone())
    }

    fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, AdminError> {
        serde_json::from_value(value)
            .map_err(|e| AdminError::Connection(format!("unexpected answer: {e}")))
    }
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[async_trait]
impl Admin for Remote {
    async fn users(&self) -> Result<Vec<UserInfo>, AdminError> {
        let data = self
            .call(reqwest::Method::GET, "/v2/admin/users", None)
            .await?;
        Self::decode(data["items"].clone())
    }

    async fn create_user(
        &self,
        name: &Username,
        is_admin: bool,
        read_only: bool,
    ) -> Result<IssuedToken, AdminError> {
        let body = serde_json::json!({
            "username": name.as_str(),
            "isAdmin": is_admin,
            "readOnly": read_only,
        });
        let data = self
            .call(reqwest::Method::POST, "/v2/admin/users", Some(body))
            .await?;
        Self::decode(data)
    }

    async fn update_user(
        &self,
        name: &Username,
        update: UserUpdate,
    ) -> Result<UserInfo, AdminError> {
        let mut body = serde_json::Map::new();
        if let Some(disabled) = update.disabled {
            body.insert("disabled".into(), disabled.into());
        }
        if let Some(is_admin) = update.is_admin {
            body.insert("isAdmin".into(), is_admin.into());
        }
        let path = format!("/v2/admin/users/{}", segment(name.as_str()));
        let data = self
            .call(reqwest::Method::PUT, &path, Some(body.into()))
            .await?;
        Self::decode(data)
    }

    async fn delete_user(&self, name: &Username) -> Result<(), AdminError> {
        let path = format!("/v2/admin/users/{}", segment(name.as_str()));
        self.call(reqwest::Method::DELETE, &path, None).await?;
        Ok(())
    }

    async fn new_token(
        &self,
        name: &Username,
        read_only: bool,
        revoke_others: bool,
    ) -> Result<IssuedToken, AdminError> {
        let path = format!("/v2/admin/users/{}/tokens", segment(name.as_str()));
        let body = serde_json::json!({ "readOnly": read_only, "revokeOthers": revoke_others });
        let data = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        Self::decode(data)
    }

    async fn share(
        &self,
        store: &str,
        with: &Username,
        access: Option<ShareAccess>,
    ) -> Result<(), AdminError> {
        let path = format!(
            "/v2/key-value-stores/{}/shares/{}",
            segment(store),
            segment(with.as_str())
        );
        match access {
            Some(access) => {
                let body = serde_json::json!({ "access": access.as_str() });
                self.call(reqwest::Method::PUT, &path, Some(body)).await?;
            }
            None => {
                self.call(reqwest::Method::DELETE, &path, None).await?;
            }
        }
        Ok(())
    }
}
