//! The stormcell node daemon: real implementations of the ports defined in
//! `stormcell-model` and the adapters around them.
//!
//! - [`net`]: the network port over tokio TCP, with a per-device credential handshake;
//! - [`access`]: what one device may ask of another (PROTOCOL.md section 10);
//! - [`objects`]: object transfer between devices over the peer connection;
//! - [`secret`]: constant-time comparison of tokens and credentials;
//! - [`store`]: the working-copy port over bare Git repositories on disk;
//! - [`db`]: the cluster database port over PostgreSQL (schema, migrations, advisory locks);
//! - [`http`]: Git smart HTTP in front of the protocol engine;
//! - [`env`]: clock, randomness, failpoints and events (logs and metrics);
//! - [`config`]: the node's TOML configuration;
//! - [`node`]: assembling and running a device;
//! - [`startup`]: what a node checks about its own identity before it serves;
//! - [`reload`]: re-reading the database hosts of a running node's configuration;
//! - [`tls`]: intra-cluster TLS for peer connections.
//!
//! Everything that decides what the cluster does lives in `stormcell-model`; this crate
//! only connects it to the world.

pub mod access;
pub mod config;
pub mod db;
pub mod env;
pub mod http;
pub mod metrics;
pub mod net;
pub mod node;
pub mod objects;
pub mod pktline;
pub mod reload;
pub mod secret;
pub mod startup;
pub mod store;
pub mod tls;
