//! Time, randomness, failpoints and events: the parts of the world that are not I/O.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, RepoId};

/// Wall-clock time for timestamps in rows and messages. Waiting always uses `tokio::time`,
/// which the simulator makes virtual.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// A task started in the background.
pub type BackgroundTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts background tasks. The daemon hands them to tokio; the simulator keeps them on its
/// host, where a crash drops them in the order they started (tokio's own task lists are
/// ordered by a process-wide task counter, which would make a crash depend on earlier runs).
pub trait Spawn: Send + Sync {
    /// Starts `task`; the handle stops it.
    fn spawn(&self, task: BackgroundTask) -> tokio::task::AbortHandle;
}

/// [`Spawn`] on the current tokio runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSpawn;

impl Spawn for TokioSpawn {
    fn spawn(&self, task: BackgroundTask) -> tokio::task::AbortHandle {
        tokio::spawn(task).abort_handle()
    }
}

/// A source of randomness (seeded in the simulator).
pub trait Random: Send + Sync {
    /// A uniformly random number in `0..n` (`n > 0`; returns 0 for `n == 0`).
    fn below(&self, n: u64) -> u64;
}

/// Shuffles a slice with the given random source (Fisher-Yates).
pub fn shuffle<T>(rng: &dyn Random, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Named points of the write path at which the simulator can strike a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WritePoint {
    /// Step 4 done: `writing` is set.
    AfterWritingSet,
    /// Step 5 under way: refs written, not yet synced.
    AfterRefsWritten,
    /// Step 6 done: the version is bumped, the client not yet acknowledged.
    AfterVersionBump,
    /// The client was acknowledged; peers not yet notified.
    AfterAck,
}

impl WritePoint {
    /// Every point, in write order.
    pub const ALL: [WritePoint; 4] = [
        WritePoint::AfterWritingSet,
        WritePoint::AfterRefsWritten,
        WritePoint::AfterVersionBump,
        WritePoint::AfterAck,
    ];

    /// The point's name.
    pub fn name(self) -> &'static str {
        match self {
            WritePoint::AfterWritingSet => "after-writing-set",
            WritePoint::AfterRefsWritten => "after-refs-written",
            WritePoint::AfterVersionBump => "after-version-bump",
            WritePoint::AfterAck => "after-ack",
        }
    }
}

/// Hooks on the write path. The daemon's do nothing unless a test arms them; the
/// simulator's may never return (the device is struck there).
#[async_trait]
pub trait Failpoints: Send + Sync {
    /// Called when a write on `repo` reaches `point`.
    async fn hit(&self, point: WritePoint, repo: &RepoId);
}

/// Failpoints that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFailpoints;

#[async_trait]
impl Failpoints for NoFailpoints {
    async fn hit(&self, _point: WritePoint, _repo: &RepoId) {}
}

/// Things the protocol did that an operator (or a trace) wants to know about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A lock was taken after `waited_ms`.
    LockAcquired {
        /// The lock.
        lock: String,
        /// How long it took.
        waited_ms: u64,
    },
    /// A lock was released.
    LockReleased {
        /// The lock.
        lock: String,
    },
    /// A lock was left held on an error path (phabricator profile).
    LockLeaked {
        /// The lock.
        lock: String,
    },
    /// This device fetched from a leader.
    Synced {
        /// The repository.
        repo: RepoId,
        /// The leader.
        from: DeviceId,
        /// The version reached.
        version: u64,
    },
    /// A fetch from a leader failed.
    SyncFailed {
        /// The repository.
        repo: RepoId,
        /// The leader.
        from: DeviceId,
        /// Why.
        reason: String,
    },
    /// A write was recorded.
    WriteRecorded {
        /// The repository.
        repo: RepoId,
        /// The new version.
        version: u64,
        /// Whether refs changed.
        changed: bool,
    },
    /// A write could not be recorded and the repository stays frozen for writes.
    WriteNotRecorded {
        /// The repository.
        repo: RepoId,
        /// Why.
        reason: String,
    },
    /// **[stormcell]** Fenced recovery resolved a write interruption.
    Recovered {
        /// The repository.
        repo: RepoId,
        /// The interrupted device.
        device: DeviceId,
        /// `cleared` (nothing was written) or `adopted` (the write became a new version).
        how: String,
    },
    /// A request was refused by a freeze.
    Frozen {
        /// The repository.
        repo: RepoId,
        /// The refusal.
        message: String,
    },
    /// The database mode this device's requests see changed: read-only for a reason, or
    /// back to read/write (`reason` is `None`).
    DbMode {
        /// Why the device is read-only, if it is.
        reason: Option<crate::failover::ReadOnlyReason>,
    },
    /// A database host's health record flipped.
    DbHealth {
        /// The host.
        host: String,
        /// Its new state.
        healthy: bool,
    },
    /// A rare state worth covering was reached (see [`Coverage`]).
    Reached {
        /// Which.
        point: Coverage,
    },
    /// Free text.
    Note {
        /// The text.
        text: String,
    },
}

/// Receives events. The daemon logs them; the simulator adds them to the trace.
pub trait Events: Send + Sync {
    /// Records one event.
    fn emit(&self, event: Event);

    /// Says the protocol reached a rare state worth covering (a "sometimes" assertion):
    /// one call at the spot where the state is reached, counted by simulation campaigns.
    fn reached(&self, point: Coverage) {
        self.emit(Event::Reached { point });
    }
}

/// Rare protocol states a simulation campaign wants to see reached at least sometimes
/// (FoundationDB's `TEST()`, Antithesis' `sometimes`). Each is reported by one
/// [`Events::reached`] call where the protocol reaches it; a scenario may require some of
/// them (`reach = [...]`), and `stormcell-sim run` prints how many runs reached each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coverage {
    /// Fenced recovery (PROTOCOL.md 5) adopted an interrupted write as a new version.
    RecoveryAdopted,
    /// Fenced recovery cleared an interrupted write that did not take effect.
    RecoveryCleared,
    /// A copy whose `writing` mark was lost with the old primary was adopted (PROTOCOL.md 12).
    LostMarkAdopted,
    /// A request was refused by a write-interruption freeze.
    FrozenWriteInterruption,
    /// A request was refused because every leader of the repository is lost.
    FrozenLeaderLost,
    /// A request was refused because no active device has a row (ambiguous leader).
    FrozenAmbiguousLeader,
    /// A request was refused because the only newest copy is not intact (lost disk).
    FrozenNotIntact,
    /// An operator's thaw demoted a device, resolving a freeze (PROTOCOL.md 7).
    ThawDemoted,
    /// An operator's thaw promoted a device, resolving a freeze.
    ThawPromoted,
    /// A thaw's plan discards refs or commits.
    ThawPlanDiscards,
    /// A thaw wrote a salvage bundle of discarded refs.
    SalvageWritten,
    /// A device went read-only because the primary did not answer (PROTOCOL.md 9).
    ReadOnlyUnreachable,
    /// A device went read-only because the primary's health record says unhealthy.
    ReadOnlySevered,
    /// A read was served read-only without proof it is fresh (PROTOCOL.md 9.6).
    PossiblyStaleRead,
    /// The cluster database changed primary and a device re-checked its versions with its
    /// peers (PROTOCOL.md 12).
    GenerationCheck,
    /// A device found its working copy is not the one its row describes (PROTOCOL.md 12,
    /// device incarnation).
    IncarnationMismatch,
    /// A lock was taken, or given up, after waiting more than half its budget (section 2).
    LockWaitOverHalfBudget,
    /// The simulated operator promoted a database replica (harness-side, PROTOCOL.md 9.4).
    ReplicaPromoted,
    /// Fenced recovery adopted a write whose multi-ref update a crash had torn (some refs
    /// moved, some not; harness-side: only the simulated disk knows it was torn).
    TornWriteAdopted,
}

impl Coverage {
    /// Every point, in a stable order.
    pub const ALL: [Coverage; 19] = [
        Coverage::RecoveryAdopted,
        Coverage::RecoveryCleared,
        Coverage::LostMarkAdopted,
        Coverage::FrozenWriteInterruption,
        Coverage::FrozenLeaderLost,
        Coverage::FrozenAmbiguousLeader,
        Coverage::FrozenNotIntact,
        Coverage::ThawDemoted,
        Coverage::ThawPromoted,
        Coverage::ThawPlanDiscards,
        Coverage::SalvageWritten,
        Coverage::ReadOnlyUnreachable,
        Coverage::ReadOnlySevered,
        Coverage::PossiblyStaleRead,
        Coverage::GenerationCheck,
        Coverage::IncarnationMismatch,
        Coverage::LockWaitOverHalfBudget,
        Coverage::ReplicaPromoted,
        Coverage::TornWriteAdopted,
    ];

    /// The point's name, as scenario files and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Coverage::RecoveryAdopted => "recovery-adopted",
            Coverage::RecoveryCleared => "recovery-cleared",
            Coverage::LostMarkAdopted => "lost-mark-adopted",
            Coverage::FrozenWriteInterruption => "frozen-write-interruption",
            Coverage::FrozenLeaderLost => "frozen-leader-lost",
            Coverage::FrozenAmbiguousLeader => "frozen-ambiguous-leader",
            Coverage::FrozenNotIntact => "frozen-not-intact",
            Coverage::ThawDemoted => "thaw-demoted",
            Coverage::ThawPromoted => "thaw-promoted",
            Coverage::ThawPlanDiscards => "thaw-plan-discards",
            Coverage::SalvageWritten => "salvage-written",
            Coverage::ReadOnlyUnreachable => "read-only-unreachable",
            Coverage::ReadOnlySevered => "read-only-severed",
            Coverage::PossiblyStaleRead => "possibly-stale-read",
            Coverage::GenerationCheck => "generation-check",
            Coverage::IncarnationMismatch => "incarnation-mismatch",
            Coverage::LockWaitOverHalfBudget => "lock-wait-over-half-budget",
            Coverage::ReplicaPromoted => "replica-promoted",
            Coverage::TornWriteAdopted => "torn-write-adopted",
        }
    }

    /// The freeze a refusal shows, if it is one.
    pub fn of_refusal(e: &crate::error::ClusterError) -> Option<Coverage> {
        use crate::error::ClusterError as E;
        match e {
            E::WriteInterruption { .. } => Some(Coverage::FrozenWriteInterruption),
            E::LeaderLost { .. } => Some(Coverage::FrozenLeaderLost),
            E::AmbiguousLeader { .. } => Some(Coverage::FrozenAmbiguousLeader),
            E::NotIntact { .. } => Some(Coverage::FrozenNotIntact),
            _ => None,
        }
    }

    /// The read-only mode worth covering, if `reason` is one.
    pub fn of_read_only(reason: crate::failover::ReadOnlyReason) -> Option<Coverage> {
        use crate::failover::ReadOnlyReason as R;
        match reason {
            R::Unreachable => Some(Coverage::ReadOnlyUnreachable),
            R::Severed => Some(Coverage::ReadOnlySevered),
            R::Config | R::Masterless => None,
        }
    }
}

impl std::fmt::Display for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Coverage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Coverage::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Coverage::ALL.iter().map(|c| c.name()).collect();
                format!("unknown coverage point {s:?}; known: {}", names.join(", "))
            })
    }
}
