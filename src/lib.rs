//! kvstore: a self-hosted key-value store server that speaks the Apify API v2 key-value-store
//! dialect. The library holds everything; `main.rs` only parses the command line.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod ops;
mod server;
pub mod storage;
pub mod tls;

pub use server::{serve, ServerConfig};
