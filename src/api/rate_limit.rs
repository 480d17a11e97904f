//! Per-token rate limiting (`serve --rate-limit`), off by default. Requests with a token are
//! counted against that token (hashed, verified or not: the check runs before any storage work);
//! requests without one against the client's IP address. Over the limit: 429
//! `rate-limit-exceeded` with `X-RateLimit-Limit` and `Retry-After`, which the Apify clients retry.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::AppState;
use crate::error::ApiError;

/// Whom a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Bucket {
    Token([u8; 32]),
    Address(IpAddr),
    Unknown,
}

/// The limiter of one server: `per_second` requests a second per bucket, bursts of as many.
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<Bucket>,
    per_second: NonZeroU32,
}

impl RateLimiter {
    pub fn new(per_second: NonZeroU32) -> Arc<Self> {
        let limiter = Arc::new(Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(per_second)),
            per_second,
        });
        // Buckets of callers who went quiet are forgotten, so memory follows active callers.
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.limiter.retain_recent();
                limiter.limiter.shrink_to_fit();
            }
        });
        limiter
    }

    fn check(&self, bucket: &Bucket) -> Result<(), ApiError> {
        self.limiter
            .check_key(bucket)
            .map_err(|_| ApiError::RateLimitExceeded {
                limit: self.per_second.get(),
            })
    }
}

fn bucket_of(parts: &Parts) -> Bucket {
    match super::caller::token_of(parts) {
        Ok(Some(token)) => Bucket::Token(token.hash().0),
        _ => match parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
            Some(ConnectInfo(addr)) => Bucket::Address(addr.ip()),
            None => Bucket::Unknown,
        },
    }
}

/// Middleware on the API routes (not on health checks, metrics or the storage browser's files).
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limiter) = &state.rate_limiter else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    if let Err(e) = limiter.check(&bucket_of(&parts)) {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}
