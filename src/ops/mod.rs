//! Services that both the HTTP admin API and the command line use, knowing no HTTP: administration
//! (users, tokens, shares), backup and restore, copying between backends, and Crawlee storage folders;
//! [`walk`] reads a backend whole for them.

pub mod admin;
pub mod backup;
pub mod copy;
pub mod crawlee;
pub mod walk;
