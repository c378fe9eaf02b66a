//! Simulated time, randomness, events and failpoints for the model's ports, and the board
//! through which a failpoint asks the nemesis to strike.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stormcell_model::failover::ReadOnlyReason;
use stormcell_model::ids::RepoId;
use stormcell_model::ports::{Clock, Event, Events, Failpoints, Random, WritePoint};

use crate::history::HealthFlip;
use crate::trace::{sim_now_ms, Trace};

/// Milliseconds since the Unix epoch at virtual time zero.
pub const SIM_EPOCH_MS: u64 = 1_750_000_000_000;

/// Wall-clock time: a fixed epoch plus virtual time.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    /// Milliseconds since the Unix epoch at virtual time zero.
    pub epoch_ms: u64,
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock {
            epoch_ms: SIM_EPOCH_MS,
        }
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.epoch_ms + sim_now_ms()
    }
}

/// A seeded random source.
#[derive(Debug)]
pub struct SimRandom(Mutex<ChaCha8Rng>);

impl SimRandom {
    /// A source seeded from the run's seed and a stream number (one per host).
    pub fn new(seed: u64, stream: u64) -> Self {
        SimRandom(Mutex::new(stream_rng(seed, stream)))
    }
}

/// A ChaCha stream derived from the run's seed: independent streams per purpose keep one
/// part's draws from shifting another's.
pub fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

impl Random for SimRandom {
    fn below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_range(0..n)
    }
}

/// Protocol events into the trace.
#[derive(Debug, Clone)]
pub struct SimEvents {
    /// The host emitting.
    pub host: String,
    /// The trace.
    pub trace: Trace,
    /// Where changes of the device's database mode are collected, for the run's report.
    pub modes: Option<ModeLog>,
    /// Where the rare states the protocol reached are collected (coverage).
    pub reached: crate::coverage::ReachedLog,
}

/// A device's database mode changed at `at_ms`: read-only for `reason`, or back to
/// read/write (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    /// Virtual milliseconds since the start.
    pub at_ms: u64,
    /// The device.
    pub device: String,
    /// Its new mode.
    pub reason: Option<ReadOnlyReason>,
}

/// Every device's database mode changes and health flips, each in order.
#[derive(Debug, Default)]
pub struct DbStateChanges {
    /// Read-only or read/write.
    pub modes: Vec<ModeChange>,
    /// Health records flipping.
    pub health: Vec<HealthFlip>,
}

/// Where the devices' database state changes are collected.
pub type ModeLog = Arc<Mutex<DbStateChanges>>;

impl Events for SimEvents {
    fn emit(&self, event: Event) {
        if let Some(log) = &self.modes {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            match &event {
                Event::DbMode { reason } => log.modes.push(ModeChange {
                    at_ms: sim_now_ms(),
                    device: self.host.clone(),
                    reason: *reason,
                }),
                Event::DbHealth { host, healthy } => log.health.push(HealthFlip {
                    at_ms: sim_now_ms(),
                    device: self.host.clone(),
                    host: host.clone(),
                    healthy: *healthy,
                }),
                _ => {}
            }
        }
        match &event {
            Event::Reached { point } => {
                crate::coverage::note(&self.reached, *point, sim_now_ms());
            }
            Event::Recovered { repo, device, how } if how == "adopted" => {
                let (device, repo) = (device.as_str(), repo.as_str());
                crate::coverage::adopted(&self.reached, device, repo, sim_now_ms());
            }
            _ => {}
        }
        let text =
            serde_json::to_string(&event).unwrap_or_else(|e| format!("unprintable event: {e}"));
        self.trace.record(sim_now_ms(), &self.host, text);
    }
}

/// Background tasks on the simulated host's local set: a crash drops them in the order they
/// started, whatever ran earlier in the process.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimSpawn;

impl stormcell_model::ports::Spawn for SimSpawn {
    fn spawn(&self, task: stormcell_model::ports::BackgroundTask) -> tokio::task::AbortHandle {
        tokio::task::spawn_local(task).abort_handle()
    }
}

/// What an armed failpoint does when a write reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ArmedAction {
    /// Strike the device there; restart it after `down` (never, with `None`).
    Strike {
        /// Downtime.
        #[serde(rename = "down_ms", serialize_with = "opt_ms")]
        down: Option<Duration>,
    },
    /// Strike the primary database host there (for good, with `None`), and let the write
    /// go on.
    StrikePrimary {
        /// Downtime.
        #[serde(rename = "down_ms", serialize_with = "opt_ms")]
        down: Option<Duration>,
    },
    /// Cut the device's link to the database for `duration`, and let the write go on.
    DropDbLink {
        /// How long the link stays down.
        #[serde(rename = "duration_ms", serialize_with = "ms")]
        duration: Duration,
    },
}

/// A duration as whole milliseconds, for reports.
fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// An optional duration as whole milliseconds (`null`: for good).
fn opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

/// A failpoint armed by the nemesis: the next write on any device reaching one of
/// `points` triggers `action`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Arm {
    /// The points that trigger.
    pub points: Vec<WritePoint>,
    /// What happens. Serialized as `effect`: inside the nemesis's [`crate::nemesis::Action`]
    /// the key `action` already holds the tag (`"action": "arm"`), and a second `action`
    /// key would make the JSON object hold one key twice.
    #[serde(rename = "effect")]
    pub action: ArmedAction,
}

/// A failpoint that triggered, waiting for the driver to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggered {
    /// The device whose write reached the point.
    pub device: String,
    /// The point.
    pub point: WritePoint,
    /// The repository written.
    pub repo: RepoId,
    /// What to do.
    pub action: ArmedAction,
}

/// Shared between the devices' failpoints and the driver.
#[derive(Debug, Default)]
pub struct Board {
    /// Armed failpoints, oldest first.
    pub armed: Vec<Arm>,
    /// Triggered failpoints not yet acted on.
    pub triggered: Vec<Triggered>,
}

/// The simulator's failpoints for one device.
#[derive(Debug, Clone)]
pub struct SimFailpoints {
    /// The device.
    pub device: String,
    /// The shared board.
    pub board: Arc<Mutex<Board>>,
}

#[async_trait]
impl Failpoints for SimFailpoints {
    async fn hit(&self, point: WritePoint, repo: &RepoId) {
        // One write can trigger one arm of each kind: a strike of the primary and a strike
        // of the writer armed for the same point land together (the writer dies holding a
        // push the lost primary acknowledged), while two arms of one kind still take two
        // writes.
        let actions = {
            let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
            let mut taken: Vec<ArmedAction> = Vec::new();
            let mut i = 0;
            while i < board.armed.len() {
                let arm = &board.armed[i];
                let kind = std::mem::discriminant(&arm.action);
                if arm.points.contains(&point)
                    && !taken.iter().any(|t| std::mem::discriminant(t) == kind)
                {
                    let arm = board.armed.remove(i);
                    board.triggered.push(Triggered {
                        device: self.device.clone(),
                        point,
                        repo: repo.clone(),
                        action: arm.action,
                    });
                    taken.push(arm.action);
                } else {
                    i += 1;
                }
            }
            taken
        };
        let Some(action) = actions
            .iter()
            .find(|a| matches!(a, ArmedAction::Strike { .. }))
            .or(actions.first())
            .copied()
        else {
            return;
        };
        match action {
            // The driver strikes this host at the end of the current step; nothing more
            // happens here before that.
            ArmedAction::Strike { .. } => std::future::pending::<()>().await,
            // Give the driver a step to cut the link (or strike the primary) before the
            // write goes on.
            ArmedAction::DropDbLink { .. } | ArmedAction::StrikePrimary { .. } => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
        }
    }
}
