//! `stormcell-chaos`: the simulator's scenarios run against real processes.
//!
//! A run reads the same scenario TOML as `stormcell-sim`, draws the same topology and
//! fault schedule from the seed (the simulator's own code: `stormcell_harness::scenario`
//! and `stormcell_harness::nemesis`), and then, on this machine, starts a PostgreSQL
//! primary and the scenario's replicas, one `stormcell node` per device with every peer
//! and database link behind an in-process TCP fault proxy, drives stock `git` clients,
//! injects the faults at their times on the wall clock, heals, probes, reads every
//! device's refs, and checks the recorded history with the simulator's checkers
//! (`stormcell_harness::checker`). Timing is real, so runs are not bit-identical; the
//! seed still fixes the schedule and the clients' choices.

pub mod cleanup;
pub mod cluster;
pub mod driver;
pub mod error;
pub mod node;
pub mod operator;
pub mod ports;
pub mod postgres;
mod procfs;
pub mod proxy;
pub mod run;
pub mod workload;

pub use cleanup::Registry;
pub use error::{ChaosError, Result};
pub use run::{run, Options, Report};
