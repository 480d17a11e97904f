//! [`AppState`]: what every handler is given (the backend, the batched access counters, the
//! settings, the rate limiter).

use std::sync::Arc;

use super::{rate_limit, Settings};
use crate::storage::{AccessCounters, Store};

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub access: Arc<AccessCounters>,
    pub config: Arc<Settings>,
    /// `None` unless `--rate-limit` is set.
    pub rate_limiter: Option<Arc<rate_limit::RateLimiter>>,
}
