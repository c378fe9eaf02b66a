//! The scenario's cluster database: how many replicas and how far behind they run, and the
//! faults that may strike its hosts (PROTOCOL.md section 9).

use serde::{Deserialize, Serialize};
use stormcell_model::failover::StaleReads;

use super::{Range, WritePoint};

/// The cluster database of a run: one primary and some replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// Replicas streaming from the primary, `0..=3`.
    pub replicas: u32,
    /// How long after its commit a replica applies a transaction, drawn per replica.
    pub replica_delay_ms: Range<u64>,
    /// What a read that cannot prove it is fresh does while read-only.
    pub stale_reads: StaleReads,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            replicas: 0,
            replica_delay_ms: Range::new(50, 500),
            stale_reads: StaleReads::Mark,
        }
    }
}

/// Strikes on the primary database host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryStrikes {
    /// How many strikes.
    pub count: Range<u32>,
    /// Seconds the primary stays down.
    pub down_s: Range<u64>,
    /// Whether it comes back; if not, it is lost for good.
    #[serde(default = "super::yes")]
    pub restart: bool,
    /// Seconds after a strike at which the operator promotes the best replica and re-points
    /// the devices (needs a replica).
    #[serde(default)]
    pub promote_after_s: Option<Range<u64>>,
    /// Strike when the next push reaches this point of the write path (armed at the drawn
    /// time) instead of at the drawn time itself: `after-ack` kills the primary just after
    /// a push was acknowledged, before a lagging replica has its version row.
    #[serde(default)]
    pub at_write_point: Option<WritePoint>,
    /// Devices restarted around the loss and the promotion: each restart strikes a random
    /// device at a drawn time after the primary is lost (before, during or after the
    /// promotion), so a process that starts after a change of primary is tested too.
    #[serde(default)]
    pub device_restarts: Option<DeviceRestarts>,
    /// The replicas stop receiving this many seconds before the primary is lost (each is
    /// struck then, and is back a second after the loss), so they miss every commit of
    /// that time, acknowledged pushes' versions among them: a promotion then loses rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_behind_s: Option<Range<u64>>,
}

/// Restarts of devices relative to the loss of the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRestarts {
    /// How many restarts.
    pub count: Range<u32>,
    /// Seconds after the primary's loss at which a device goes down.
    pub after_s: Range<u64>,
    /// Seconds it stays down.
    pub down_s: Range<u64>,
    /// The restarts go to every device in turn, from a drawn one on, instead of to a
    /// random device each: with `count` at least the number of devices, every process runs
    /// on after the change of primary without having seen it (as after restarting the
    /// whole cluster).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_device: bool,
}

/// A hung primary: it accepts connections and never answers (every link to it holds its
/// messages), as distinct from a refused connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryHangs {
    /// How many hangs.
    pub count: Range<u32>,
    /// Seconds the primary stays hung.
    pub duration_s: Range<u64>,
}

/// The primary cut off from some or all devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryCuts {
    /// How many cuts.
    pub count: Range<u32>,
    /// Seconds until the links come back.
    pub duration_s: Range<u64>,
    /// Cut every device (else a random non-empty proper subset, when there are two or more).
    #[serde(default)]
    pub all_devices: bool,
}

/// Replication delay spikes on a random replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaLag {
    /// How many spikes.
    pub count: Range<u32>,
    /// The delay during a spike, in seconds.
    pub delay_s: Range<u64>,
    /// Seconds a spike lasts.
    pub duration_s: Range<u64>,
}

/// A primary going down and up faster than the health window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flaps {
    /// How many flapping episodes.
    pub count: Range<u32>,
    /// Down-up cycles per episode.
    pub cycles: Range<u32>,
    /// Seconds down per cycle.
    pub down_s: Range<u64>,
    /// Seconds up per cycle.
    pub up_s: Range<u64>,
}
