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
}
