//! The simulated SQL host (ARCHITECTURE.md, "Database model"): the cluster database's
//! tables as pure data ([`tables`]), its wire messages ([`wire`]), the host's software
//! ([`server`]) and the client behind the `ClusterDb` port ([`client`]).
//!
//! Committed requests are durable: the tables live in a [`DbHostState`] the harness creates
//! outside the host's software, so they survive a crash of that software; sessions and their
//! locks do not.

pub mod admin;
pub mod client;
pub mod cluster;
pub mod replication;
pub mod server;
pub mod tables;
pub mod wire;

#[cfg(test)]
mod tests;

pub use admin::{execute_admin, AdminRequest};
pub use client::{DbClientConfig, SimDb, SimDbSession};
pub use cluster::{Promotion, SimDbCluster, DB_PORT};
pub use replication::{LogEntry, ReplicaState};
pub use server::{lock_state, serve, serve_with, DbHostState, DbServerConfig};
pub use tables::{SessionId, Tables, SYNC_EVENTS_KEPT};
pub use wire::{execute, DbRequest, DbResponse};
