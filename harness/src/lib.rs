//! The stormcell simulator: the protocol of `stormcell-model` run as a whole cluster inside
//! one deterministic turmoil simulation, struck by faults drawn from a seed, and checked.

pub mod checker;
pub mod history;
pub mod scenario;
