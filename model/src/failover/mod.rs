//! The cluster database as a set of hosts (PROTOCOL.md section 9): which host a request
//! talks to, when the device degrades to read-only and why, and when it comes back.
//!
//! The configuration ([`DbClusterConfig`]) names a primary and replicas; every host has a
//! [`HealthRecord`] kept per node daemon; [`Failover`] turns both into a database session for
//! one request, or into the read-only refusal the client sees.

mod config;
mod health;
mod router;

pub use config::{
    DbClusterConfig, DbHostConfig, DbRole, FailoverTiming, SharedDbConfig, StaleReads,
};
pub use health::HealthRecord;
pub use router::{monitor, DbLink, Failover, HostStatus, Intent};

use serde::{Deserialize, Serialize};

/// Why a device is in read-only mode (PROTOCOL.md 9.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadOnlyReason {
    /// An operator configured the cluster read-only.
    Config,
    /// No enabled primary is configured.
    Masterless,
    /// The primary failed to connect during this request (brief).
    Unreachable,
    /// The primary's health record says it is unhealthy (lasting until it recovers).
    Severed,
}

impl ReadOnlyReason {
    /// Every reason, in a stable order.
    pub const ALL: [ReadOnlyReason; 4] = [
        ReadOnlyReason::Config,
        ReadOnlyReason::Masterless,
        ReadOnlyReason::Unreachable,
        ReadOnlyReason::Severed,
    ];

    /// The reason's name, as in configuration and reports.
    pub fn name(self) -> &'static str {
        match self {
            ReadOnlyReason::Config => "config",
            ReadOnlyReason::Masterless => "masterless",
            ReadOnlyReason::Unreachable => "unreachable",
            ReadOnlyReason::Severed => "severed",
        }
    }

    /// The words the client's message uses.
    pub fn describe(self) -> &'static str {
        match self {
            ReadOnlyReason::Config => "configured read-only",
            ReadOnlyReason::Masterless => "no primary database",
            ReadOnlyReason::Unreachable => "unreachable primary",
            ReadOnlyReason::Severed => "severed primary",
        }
    }
}

impl std::fmt::Display for ReadOnlyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
