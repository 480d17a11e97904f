//! kvstore: a self-hosted key-value store server that speaks the Apify API v2 key-value-store
//! dialect. The library holds everything, the command bodies included ([`cli`]); `main.rs` only
//! parses the command line, sets up logging and dispatches.

pub mod api;
pub mod auth;
pub mod cli;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod ops;
mod server;
pub mod storage;
pub mod tls;

pub use server::{serve, ServerConfig};
