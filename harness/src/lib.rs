//! The stormcell simulator: the protocol of `stormcell-model` run as a whole cluster inside
//! one deterministic turmoil simulation, struck by faults drawn from a seed, and checked.

pub mod bench;
pub mod campaign;
pub mod checker;
pub mod coverage;
pub mod db;
pub mod env;
pub mod history;
pub mod junit;
pub mod mutants;
pub mod nemesis;
pub mod net;
pub mod operator;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod shard;
pub mod shrink;
pub mod status_sampler;
pub mod store;
pub mod timeline_html;
pub mod trace;
pub mod trace_filter;
pub mod workload;
