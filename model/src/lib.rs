//! The stormcell protocol (see `PROTOCOL.md`): a cluster of Git repository hosts, each
//! readable and writable, kept consistent through per-device versions and locks in a
//! cluster database.
//!
//! Everything here talks to the world only through the [`ports`]; the daemon and the
//! simulator run this same code over their own implementations of them.

pub mod admin;
pub mod config;
pub mod engine;
pub mod error;
pub mod failover;
pub mod ids;
pub mod leaders;
pub mod lock_wait;
pub mod node;
pub mod peer;
pub mod plant;
pub mod ports;
pub mod profile;
pub mod replication;
pub mod routing;
pub mod rows;
pub mod service;
pub mod status;
pub mod wire;
