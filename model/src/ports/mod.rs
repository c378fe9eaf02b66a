//! The seams between the protocol and the world (ARCHITECTURE.md, "Ports"). The protocol
//! talks to the network, the working copies, the cluster database, time and randomness only
//! through these traits; the daemon and the simulator each implement them.

pub mod db;
pub mod env;
pub mod net;
pub mod store;

pub use db::{ClusterDb, DbSession, FinishWrite, LockName, ReplicationState};
pub use env::{
    BackgroundTask, Clock, Coverage, Event, Events, Failpoints, Random, Spawn, TokioSpawn,
    WritePoint,
};
pub use net::{BoxConn, Connection, Listener, Network};
pub use store::{
    check_salvage_request, valid_bundle_label, PushApplied, PushPayload, SalvageBundle, Snapshot,
    Store,
};
