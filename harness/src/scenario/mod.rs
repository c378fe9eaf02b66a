//! Scenarios as data: a topology, a workload, the faults that may strike and what must hold
//! at the end, read from TOML and validated.
//!
//! Built-in scenarios live in `scenarios/*.toml` at the top of the repository and are
//! compiled into the binary, so `stormcell-sim` works from any directory; a user may also
//! load a scenario file by path. Anything a scenario leaves as a [`Range`] is drawn from the
//! run's seed, and every type serializes so that a run report can print what was drawn from.
//!
//! The file format is the serde form of the types below (snake_case keys, kebab-case enum
//! values); unknown keys are errors. Every error names the file, the line when it is known,
//! and the field.

mod database;
mod locate;
mod operator;
mod range;
mod schedule;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

pub use self::database::{
    Database, DeviceRestarts, Flaps, PrimaryCuts, PrimaryHangs, PrimaryStrikes, ReplicaLag,
};
pub use self::operator::{Action, Condition, Operator, Step, ThawStep, ANY_REPOSITORY};
pub use self::range::Range;
pub use self::schedule::{planned, Fault, ScheduledFault};
use crate::history::FinalExpectation;

/// One scenario: what cluster to build, how clients use it, which faults may strike, and
/// what the cluster must look like once everything is healed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// Short name, `[a-z0-9-]+`; a built-in's name is its file stem.
    pub name: String,
    /// One line saying what the scenario exercises.
    pub description: String,
    /// Where it was read from: `scenarios/NAME.toml` for a built-in, else the user's path.
    pub source: String,
    /// The cluster.
    pub topology: Topology,
    /// The cluster database.
    pub database: Database,
    /// The clients.
    pub workload: Workload,
    /// The faults.
    pub faults: Faults,
    /// The final state each profile must reach.
    pub expect: Expect,
    /// What the operator does, if anything.
    pub operator: Operator,
    /// An explicit fault schedule: when set, a run applies exactly these faults and draws
    /// none from `faults` (the rest of the run still comes from the seed).
    pub schedule: Option<Vec<ScheduledFault>>,
    /// Rare protocol states ("sometimes" assertions) that some seed of every campaign of
    /// this scenario must reach; a campaign that never reaches one fails.
    pub reach: Vec<stormcell_model::ports::Coverage>,
}

/// The cluster a run builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Repository devices; each bound within `1..=9`.
    pub devices: Range<u32>,
    /// Repositories, each hosted on every device; each bound within `1..=16`.
    pub repositories: Range<u32>,
    /// The version rows that exist at time zero.
    #[serde(default)]
    pub initial_rows: InitialRows,
    /// One-way latency of every simulated link, drawn per link.
    #[serde(default = "default_link_latency_ms")]
    pub link_latency_ms: Range<u64>,
    /// Devices that run from the start but are not registered: an operator step adds them
    /// (expanding the cluster). They are named after the others.
    #[serde(default)]
    pub spare_devices: u32,
    /// Whether repositories start on the service; if not, an operator clusterizes them.
    #[serde(default = "yes")]
    pub clustered: bool,
}

/// The version rows a repository starts with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitialRows {
    /// Every device has a row at version 0, so every device is a leader.
    #[default]
    AllLeaders,
    /// No rows at all: with more than one active device the repository starts frozen as an
    /// ambiguous leader.
    None,
}

/// The workload clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Concurrent clients, `1..=32`.
    pub clients: u32,
    /// Virtual seconds the workload runs, `1..=3600`.
    pub duration_s: u64,
    /// Branches per repository that pushes update, `1..=16`.
    pub branches: u32,
    /// Refs one push updates; at least 1 and at most `branches`.
    pub refs_per_push: Range<u32>,
    /// Relative weight of pushes among operations.
    pub push_weight: u32,
    /// Relative weight of reads among operations; the two weights may not both be 0.
    pub read_weight: u32,
    /// A client's pause between operations.
    pub think_ms: Range<u64>,
    /// How long a client waits for an outcome before recording it as unknown; at least 1.
    pub client_timeout_s: u64,
    /// Virtual seconds between healing every fault and the final probes.
    pub settle_s: u64,
    /// The devices pushes go to (tried in random order, like reads); empty for any
    /// device. Aims a scenario at one writer while the others copy from it.
    pub push_to: Vec<String>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 3,
            duration_s: 60,
            branches: 3,
            refs_per_push: Range::exactly(1),
            push_weight: 1,
            read_weight: 1,
            think_ms: Range::new(50, 1000),
            client_timeout_s: 30,
            settle_s: 30,
            push_to: Vec::new(),
        }
    }
}

/// The faults that may strike during the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Which of the configured kinds a run uses.
    pub mix: FaultMix,
    /// Virtual seconds into the run during which faults may start; `max` must be below
    /// `workload.duration_s` (checked only when some fault kind is configured).
    pub window_s: Range<u64>,
    /// Lightning strikes: crash a random device, restart it later.
    pub strikes: Option<Strikes>,
    /// Strikes at a chosen point of a push.
    pub write_strikes: Option<WriteStrikes>,
    /// Network partitions between groups of hosts.
    pub partitions: Option<Partitions>,
    /// Cuts of a device's link to the database.
    pub db_link_drops: Option<DbLinkDrops>,
    /// Links whose messages are held back for a while.
    pub slow_links: Option<SlowLinks>,
    /// Strikes on the primary database host.
    pub db_primary_strikes: Option<PrimaryStrikes>,
    /// The primary database cut off from some or all devices.
    pub db_primary_cuts: Option<PrimaryCuts>,
    /// Replication delay spikes.
    pub db_replica_lag: Option<ReplicaLag>,
    /// Strikes on a replica.
    pub db_replica_strikes: Option<Strikes>,
    /// A flapping primary.
    pub db_flaps: Option<Flaps>,
    /// A hung primary (links to it hold their messages).
    pub db_primary_hangs: Option<PrimaryHangs>,
    /// A device loses its working copies and version files, then restarts under its name.
    pub disk_losses: Option<DiskLosses>,
    /// A device's disk refuses to make writes durable (fsync fails, or the disk is full).
    pub fsync_failures: Option<FsyncFailures>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            mix: FaultMix::All,
            window_s: Range::new(5, 40),
            strikes: None,
            write_strikes: None,
            partitions: None,
            db_link_drops: None,
            slow_links: None,
            db_primary_strikes: None,
            db_primary_cuts: None,
            db_replica_lag: None,
            db_replica_strikes: None,
            db_flaps: None,
            db_primary_hangs: None,
            disk_losses: None,
            fsync_failures: None,
        }
    }
}

impl Faults {
    /// Names of the configured fault kinds, as spelled in TOML, in a fixed order.
    pub fn kinds(&self) -> Vec<&'static str> {
        let configured = [
            ("strikes", self.strikes.is_some()),
            ("write_strikes", self.write_strikes.is_some()),
            ("partitions", self.partitions.is_some()),
            ("db_link_drops", self.db_link_drops.is_some()),
            ("slow_links", self.slow_links.is_some()),
            ("db_primary_strikes", self.db_primary_strikes.is_some()),
            ("db_primary_cuts", self.db_primary_cuts.is_some()),
            ("db_replica_lag", self.db_replica_lag.is_some()),
            ("db_replica_strikes", self.db_replica_strikes.is_some()),
            ("db_flaps", self.db_flaps.is_some()),
            ("db_primary_hangs", self.db_primary_hangs.is_some()),
            ("disk_losses", self.disk_losses.is_some()),
            ("fsync_failures", self.fsync_failures.is_some()),
        ];
        configured
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect()
    }

    /// The fault kinds one run uses, with the mix applied: for [`FaultMix::Seeded`] each
    /// configured kind is kept with probability 1/2 (one draw per configured kind, in the
    /// order of [`Faults::kinds`]); for [`FaultMix::All`] nothing is drawn. The result's mix is
    /// `All`, since every kind left in it is to be used.
    pub fn apply_mix<R: Rng + ?Sized>(&self, rng: &mut R) -> Faults {
        fn keep<T: Clone, R: Rng + ?Sized>(kind: &Option<T>, rng: &mut R) -> Option<T> {
            kind.as_ref().filter(|_| rng.random_bool(0.5)).cloned()
        }
        match self.mix {
            FaultMix::All => self.clone(),
            FaultMix::Seeded => Faults {
                mix: FaultMix::All,
                window_s: self.window_s,
                strikes: keep(&self.strikes, rng),
                write_strikes: keep(&self.write_strikes, rng),
                partitions: keep(&self.partitions, rng),
                db_link_drops: keep(&self.db_link_drops, rng),
                slow_links: keep(&self.slow_links, rng),
                db_primary_strikes: keep(&self.db_primary_strikes, rng),
                db_primary_cuts: keep(&self.db_primary_cuts, rng),
                db_replica_lag: keep(&self.db_replica_lag, rng),
                db_replica_strikes: keep(&self.db_replica_strikes, rng),
                db_flaps: keep(&self.db_flaps, rng),
                db_primary_hangs: keep(&self.db_primary_hangs, rng),
                disk_losses: keep(&self.disk_losses, rng),
                fsync_failures: keep(&self.fsync_failures, rng),
            },
        }
    }
}

/// Which of the configured fault kinds a run uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultMix {
    /// Every configured kind.
    #[default]
    All,
    /// Each configured kind with probability 1/2, drawn from the seed (swarm testing: runs
    /// without some kinds reach states that the others would keep interrupting).
    Seeded,
}

/// Lightning strikes: crash a random device, restart it after `down_s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strikes {
    /// How many strikes.
    pub count: Range<u32>,
    /// Seconds a struck device stays down.
    pub down_s: Range<u64>,
}

/// Strikes at a chosen point of a push on the device serving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteStrikes {
    /// How many strikes.
    pub count: Range<u32>,
    /// The points a strike may hit, one drawn per strike; not empty, no repeats.
    pub points: Vec<WritePoint>,
    /// Seconds a struck device stays down.
    pub down_s: Range<u64>,
    /// Whether the device comes back after `down_s`; if not, it stays down for the rest of
    /// the run.
    #[serde(default = "yes")]
    pub restart: bool,
}

/// A point of the write path (PROTOCOL.md 4.2) where a write strike may hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WritePoint {
    /// The row says `writing = true`; nothing received yet.
    AfterWritingSet,
    /// The push is durable in the working copy; the version is not bumped.
    AfterRefsWritten,
    /// The version is bumped and `writing` cleared; the lock is still held.
    AfterVersionBump,
    /// The client has its acknowledgement; other devices have not pulled yet.
    AfterAck,
}

impl fmt::Display for WritePoint {
    /// The TOML spelling, such as `after-writing-set`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WritePoint::AfterWritingSet => "after-writing-set",
            WritePoint::AfterRefsWritten => "after-refs-written",
            WritePoint::AfterVersionBump => "after-version-bump",
            WritePoint::AfterAck => "after-ack",
        })
    }
}

/// Partitions: the hosts split into groups that cannot reach each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    /// How many partitions.
    pub count: Range<u32>,
    /// Seconds until a partition heals.
    pub duration_s: Range<u64>,
    /// Whether the database host may land in a group; if not, only devices are split.
    #[serde(default = "yes")]
    pub include_database: bool,
    /// Whether a partition may be one-way (each is, with probability 1/2): messages from
    /// the first group to the second are dropped while the other direction works.
    #[serde(default)]
    pub one_way: bool,
}

/// Disk losses: a device's working copies and local version files are gone (disk replaced,
/// data directory wiped), optionally restored from an older backup; it restarts under the
/// same name. A run with a single device draws none (that device holds every copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskLosses {
    /// How many losses.
    pub count: Range<u32>,
    /// Seconds the device stays down.
    pub down_s: Range<u64>,
    /// When set, each loss is restored (with probability 1/2) from a backup taken this many
    /// seconds before it, as an operator restoring a backup would.
    #[serde(default)]
    pub backup_age_s: Option<Range<u64>>,
}

/// Disk write failures: for a while, every attempt of one device to make its working copy
/// durable fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsyncFailures {
    /// How many failing periods.
    pub count: Range<u32>,
    /// Seconds a period lasts.
    pub duration_s: Range<u64>,
}

/// Cuts of one device's link to the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbLinkDrops {
    /// How many drops.
    pub count: Range<u32>,
    /// Seconds until the link comes back.
    pub duration_s: Range<u64>,
    /// Whether to cut the link of a device in the middle of a push (else of any device).
    #[serde(default = "yes")]
    pub during_push: bool,
}

/// Slow links: messages on a link are held, then released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowLinks {
    /// How many slow periods.
    pub count: Range<u32>,
    /// Milliseconds messages are held.
    pub hold_ms: Range<u64>,
}

/// The final state each protocol profile must reach, and the availability expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Under the `stormcell` profile.
    #[serde(default = "converged")]
    pub stormcell: FinalExpectation,
    /// Under the `phabricator` profile.
    #[serde(default = "converged")]
    pub phabricator: FinalExpectation,
    /// What availability the scenario expects under either profile (checker 7).
    #[serde(
        default,
        skip_serializing_if = "crate::history::Availability::is_default"
    )]
    pub availability: crate::history::Availability,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            stormcell: FinalExpectation::Converged,
            phabricator: FinalExpectation::Converged,
            availability: crate::history::Availability::default(),
        }
    }
}

fn default_link_latency_ms() -> Range<u64> {
    Range::new(1, 5)
}

pub(crate) fn yes() -> bool {
    true
}

fn converged() -> FinalExpectation {
    FinalExpectation::Converged
}

/// The file as written: a [`Scenario`] without its `source`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: String,
    topology: Topology,
    #[serde(default)]
    database: Database,
    #[serde(default)]
    workload: Workload,
    #[serde(default)]
    faults: Faults,
    #[serde(default)]
    expect: Expect,
    #[serde(default)]
    operator: Operator,
    #[serde(default)]
    schedule: Option<Vec<ScheduledFault>>,
    #[serde(default)]
    reach: Vec<stormcell_model::ports::Coverage>,
}

/// The file as [`to_toml`] writes it: a [`Scenario`] without its `source`.
#[derive(Serialize)]
struct ScenarioFileOut<'a> {
    name: &'a str,
    description: &'a str,
    topology: &'a Topology,
    database: &'a Database,
    workload: &'a Workload,
    faults: &'a Faults,
    expect: &'a Expect,
    operator: &'a Operator,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<&'a Vec<ScheduledFault>>,
}

/// The scenario as a file [`parse`] reads back to the same scenario (but its `source`).
pub fn to_toml(scenario: &Scenario) -> Result<String, toml::ser::Error> {
    toml::to_string(&ScenarioFileOut {
        name: &scenario.name,
        description: &scenario.description,
        topology: &scenario.topology,
        database: &scenario.database,
        workload: &scenario.workload,
        faults: &scenario.faults,
        expect: &scenario.expect,
        operator: &scenario.operator,
        schedule: scenario.schedule.as_ref(),
    })
}

impl Scenario {
    /// One line for listings: name, description, size, fault kinds and expectations.
    pub fn summary(&self) -> String {
        let kinds = self.faults.kinds();
        let faults = match (kinds.is_empty(), self.faults.mix) {
            _ if self.schedule.is_some() => format!(
                "explicit schedule of {}",
                self.schedule.as_ref().map_or(0, Vec::len)
            ),
            (true, _) => "none".to_owned(),
            (false, FaultMix::All) => kinds.join(", "),
            (false, FaultMix::Seeded) => format!("seeded mix of {}", kinds.join(", ")),
        };
        format!(
            "{}: {} (devices {}, repositories {}, {} s; faults: {}; expect stormcell {}, phabricator {})",
            self.name,
            self.description,
            self.topology.devices,
            self.topology.repositories,
            self.workload.duration_s,
            faults,
            expectation_name(self.expect.stormcell),
            expectation_name(self.expect.phabricator),
        )
    }
}

/// The TOML spelling of an expectation.
fn expectation_name(expectation: FinalExpectation) -> &'static str {
    match expectation {
        FinalExpectation::Converged => "converged",
        FinalExpectation::WriteFrozen => "write-frozen",
        FinalExpectation::Ambiguous => "ambiguous",
        FinalExpectation::ReadOnly => "read-only",
    }
}

/// Why a scenario could not be read. `Display` is the message a user sees:
/// `scenarios/x.toml:12: field `faults.strikes.count`: min (5) is greater than max (2)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// The file (or built-in name) the error is about.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted path of the field, when known, such as `faults.strikes.count`.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The built-in scenarios: name and text, sorted by name.
const BUILTINS: &[(&str, &str)] = &[
    (
        "ambiguous-leader",
        include_str!("../../../scenarios/ambiguous-leader.toml"),
    ),
    (
        "ambiguous-promote",
        include_str!("../../../scenarios/ambiguous-promote.toml"),
    ),
    (
        "busy-repository",
        include_str!("../../../scenarios/busy-repository.toml"),
    ),
    (
        "contention",
        include_str!("../../../scenarios/contention.toml"),
    ),
    ("contract", include_str!("../../../scenarios/contract.toml")),
    ("db-flap", include_str!("../../../scenarios/db-flap.toml")),
    (
        "db-link-drop",
        include_str!("../../../scenarios/db-link-drop.toml"),
    ),
    (
        "db-partial-partition",
        include_str!("../../../scenarios/db-partial-partition.toml"),
    ),
    (
        "db-primary-hang",
        include_str!("../../../scenarios/db-primary-hang.toml"),
    ),
    (
        "db-primary-loss",
        include_str!("../../../scenarios/db-primary-loss.toml"),
    ),
    (
        "db-promote",
        include_str!("../../../scenarios/db-promote.toml"),
    ),
    (
        "db-promote-cold-restart",
        include_str!("../../../scenarios/db-promote-cold-restart.toml"),
    ),
    (
        "db-promote-missed-rows",
        include_str!("../../../scenarios/db-promote-missed-rows.toml"),
    ),
    (
        "db-promote-restart",
        include_str!("../../../scenarios/db-promote-restart.toml"),
    ),
    (
        "db-stale-replica",
        include_str!("../../../scenarios/db-stale-replica.toml"),
    ),
    (
        "db-stale-writer-down",
        include_str!("../../../scenarios/db-stale-writer-down.toml"),
    ),
    (
        "demote-all-promote",
        include_str!("../../../scenarios/demote-all-promote.toml"),
    ),
    (
        "demote-during-read-sync",
        include_str!("../../../scenarios/demote-during-read-sync.toml"),
    ),
    (
        "demote-during-write",
        include_str!("../../../scenarios/demote-during-write.toml"),
    ),
    (
        "demote-then-promote",
        include_str!("../../../scenarios/demote-then-promote.toml"),
    ),
    (
        "demote-under-load",
        include_str!("../../../scenarios/demote-under-load.toml"),
    ),
    (
        "disk-loss",
        include_str!("../../../scenarios/disk-loss.toml"),
    ),
    ("expand", include_str!("../../../scenarios/expand.toml")),
    (
        "fsync-failure",
        include_str!("../../../scenarios/fsync-failure.toml"),
    ),
    (
        "lightning",
        include_str!("../../../scenarios/lightning.toml"),
    ),
    (
        "loss-of-leaders",
        include_str!("../../../scenarios/loss-of-leaders.toml"),
    ),
    (
        "maintenance-lock",
        include_str!("../../../scenarios/maintenance-lock.toml"),
    ),
    (
        "maintenance-lock-interrupted",
        include_str!("../../../scenarios/maintenance-lock-interrupted.toml"),
    ),
    (
        "partition",
        include_str!("../../../scenarios/partition.toml"),
    ),
    ("steady", include_str!("../../../scenarios/steady.toml")),
    ("swarm", include_str!("../../../scenarios/swarm.toml")),
    (
        "thaw-during-sync",
        include_str!("../../../scenarios/thaw-during-sync.toml"),
    ),
    (
        "thaw-loss-of-leaders",
        include_str!("../../../scenarios/thaw-loss-of-leaders.toml"),
    ),
    (
        "thaw-write-interruption",
        include_str!("../../../scenarios/thaw-write-interruption.toml"),
    ),
    (
        "write-interruption",
        include_str!("../../../scenarios/write-interruption.toml"),
    ),
];

fn builtin_source(name: &str) -> String {
    format!("scenarios/{name}.toml")
}

/// Every built-in scenario, sorted by name.
///
/// # Panics
/// Never in practice: the unit test `every_builtin_is_valid` parses each of them.
pub fn builtin() -> Vec<Scenario> {
    BUILTINS
        .iter()
        .map(|(name, text)| {
            parse(&builtin_source(name), text).unwrap_or_else(|e| panic!("built-in scenario: {e}"))
        })
        .collect()
}

/// The built-in scenario called `name`; an unknown name is an error listing the known ones.
pub fn builtin_named(name: &str) -> Result<Scenario, ScenarioError> {
    match BUILTINS.iter().find(|(known, _)| *known == name) {
        Some((_, text)) => parse(&builtin_source(name), text),
        None => Err(ScenarioError {
            file: name.to_owned(),
            line: None,
            field: None,
            message: format!(
                "no built-in scenario of that name; built-in scenarios: {}",
                BUILTINS
                    .iter()
                    .map(|(known, _)| *known)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Reads and validates the scenario file at `path`; its `source` is the path as given.
pub fn load_file(path: &Path) -> Result<Scenario, ScenarioError> {
    let source = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&source, &text),
        Err(e) => Err(ScenarioError {
            file: source,
            line: None,
            field: None,
            message: format!("cannot read the file: {e}"),
        }),
    }
}

/// Parses and validates the scenario `text`; `source_name` names it in errors and becomes
/// the scenario's `source`.
pub fn parse(source_name: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let locator = locate::Locator::new(text);
    let error = |line: Option<usize>, field: Option<String>, message: String| ScenarioError {
        file: source_name.to_owned(),
        line,
        field,
        message,
    };
    let file: ScenarioFile = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let mut line = span.as_ref().map(|span| locate::line_of(text, span.start));
        let field = match (missing_field(e.message()), &locator, span) {
            // serde reports a missing field at its table: name the field itself.
            (Some(missing), Some(locator), Some(span)) => match locator.table_at(text, span) {
                Some(table) => Some(format!("{table}.{missing}")),
                None => {
                    // The top-level table's span starts at its first key: a misleading line.
                    line = None;
                    Some(missing.to_owned())
                }
            },
            (Some(missing), _, _) => Some(missing.to_owned()),
            (None, Some(locator), Some(span)) => locator.path_at(text, span.start),
            (None, _, _) => None,
        };
        // toml's messages may span lines ("invalid table header\nexpected ..."); keep one.
        let message = e.message().trim().replace('\n', "; ");
        error(line, field, message)
    })?;
    let scenario = Scenario {
        name: file.name,
        description: file.description,
        source: source_name.to_owned(),
        topology: file.topology,
        database: file.database,
        workload: file.workload,
        faults: file.faults,
        expect: file.expect,
        operator: file.operator,
        schedule: file.schedule,
        reach: file.reach,
    };
    validate::check(&scenario).map_err(|invalid| {
        let offset = locator
            .as_ref()
            .and_then(|locator| locator.offset_of(&invalid.field));
        error(
            offset.map(|at| locate::line_of(text, at)),
            Some(invalid.field),
            invalid.message,
        )
    })?;
    Ok(scenario)
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}
