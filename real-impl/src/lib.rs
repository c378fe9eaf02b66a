//! The stormcell node daemon: real implementations of the ports defined in
//! `stormcell-model` (tokio TCP, Git working copies, PostgreSQL).
//!
//! Nothing lives here yet: the daemon is built on top of the protocol core and the
//! database failover. This crate intentionally holds no stand-in implementation.
