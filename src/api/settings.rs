//! What the HTTP layer needs to know about the server it runs in: the public URL it writes into
//! answers, the record size limit, the meaning of `FOLLOW_USER_SETTING`, how long a body upload
//! may stall, and the CORS origins. The connection layer builds it from its own settings.

use crate::model::GeneralAccess;

/// The HTTP layer's settings; handlers read them through [`super::AppState`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Without trailing slash, e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    pub max_record_bytes: u64,
    pub default_general_access: GeneralAccess,
    /// A request body that makes no progress this long is given up (the connection's idle bound).
    pub idle_timeout: std::time::Duration,
    /// Allowed CORS origins; `*` for any; empty for none.
    pub cors_origins: Vec<String>,
}
