//! The database hosts a node knows about, and the numbers of PROTOCOL.md 9.2 and 9.3.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a database host is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DbRole {
    /// Takes writes; its committed transactions stream to the replicas.
    Primary,
    /// A read-only copy of the primary, behind by its replication delay.
    Replica,
}

impl DbRole {
    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            DbRole::Primary => "primary",
            DbRole::Replica => "replica",
        }
    }
}

/// One database host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbHostConfig {
    /// The host's name, as shown in status and messages.
    pub name: String,
    /// Where it listens (`host:port`, or whatever the adapter understands).
    pub address: String,
    /// Primary or replica.
    pub role: DbRole,
    /// A disabled host is never used.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// What a read does when, in read-only mode, it cannot prove it is fresh (PROTOCOL.md 9.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaleReads {
    /// Serve it, marked possibly stale.
    #[default]
    Mark,
    /// Refuse it.
    Refuse,
}

/// Health and connection numbers (PROTOCOL.md 9.2, 9.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverTiming {
    /// A health check is due this long after the last one, and results are recorded at
    /// most this often.
    pub check_interval: Duration,
    /// How many recent results a health record keeps; all of them agreeing flips the state.
    pub window: usize,
    /// Connect retries to a healthy host.
    pub healthy_retries: u32,
    /// Connect timeout to a healthy host.
    pub healthy_connect: Duration,
    /// Connect timeout to an unhealthy host, for health checks and admin connections (no
    /// retry).
    pub unhealthy_connect: Duration,
    /// A request-serving query without an answer after this long fails.
    pub query_timeout: Duration,
    /// A replica further behind than this is shown as slow ("data is at risk").
    pub slow_replica: Duration,
}

impl Default for FailoverTiming {
    fn default() -> Self {
        FailoverTiming {
            check_interval: Duration::from_secs(3),
            window: 5,
            healthy_retries: 3,
            healthy_connect: Duration::from_secs(10),
            unhealthy_connect: Duration::from_secs(2),
            query_timeout: Duration::from_secs(30),
            slow_replica: Duration::from_secs(30),
        }
    }
}

impl FailoverTiming {
    /// The longest a request may spend finding out that a host will not connect: every
    /// attempt of the healthy policy timing out.
    pub fn worst_connect(&self) -> Duration {
        self.healthy_connect * (self.healthy_retries + 1)
    }

    /// How long a health state takes to flip once every check agrees.
    pub fn flip_time(&self) -> Duration {
        self.check_interval * self.window as u32
    }
}

/// The cluster database as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbClusterConfig {
    /// Every host, in the operator's order (the phabricator profile uses the first enabled
    /// replica).
    pub hosts: Vec<DbHostConfig>,
    /// The operator put the cluster in read-only mode.
    #[serde(default)]
    pub read_only: bool,
    /// What an unprovable read does while read-only.
    #[serde(default)]
    pub stale_reads: StaleReads,
}

impl DbClusterConfig {
    /// A single primary at `address`.
    pub fn single(name: &str, address: &str) -> Self {
        DbClusterConfig {
            hosts: vec![DbHostConfig {
                name: name.to_owned(),
                address: address.to_owned(),
                role: DbRole::Primary,
                enabled: true,
            }],
            read_only: false,
            stale_reads: StaleReads::Mark,
        }
    }

    /// The enabled primary, if there is one.
    pub fn primary(&self) -> Option<&DbHostConfig> {
        self.hosts
            .iter()
            .find(|h| h.enabled && h.role == DbRole::Primary)
    }

    /// The enabled replicas, in configuration order.
    pub fn replicas(&self) -> impl Iterator<Item = &DbHostConfig> {
        self.hosts
            .iter()
            .filter(|h| h.enabled && h.role == DbRole::Replica)
    }

    /// Whether the database is clustered at all (a single host is never severed).
    pub fn is_clustered(&self) -> bool {
        self.hosts.iter().filter(|h| h.enabled).count() > 1
    }

    /// Makes `name` the primary and every other host a replica (disabling the old primary):
    /// what an operator does after promoting a replica. Returns whether `name` exists.
    pub fn repoint(&mut self, name: &str) -> bool {
        if !self.hosts.iter().any(|h| h.name == name) {
            return false;
        }
        for h in &mut self.hosts {
            if h.name == name {
                h.role = DbRole::Primary;
                h.enabled = true;
            } else if h.role == DbRole::Primary {
                h.role = DbRole::Replica;
                h.enabled = false;
            }
        }
        true
    }
}

/// A configuration an operator may change while nodes run (re-pointing them at a promoted
/// replica); every request reads the current value.
pub type SharedDbConfig = Arc<Mutex<DbClusterConfig>>;
