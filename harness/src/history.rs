//! The history of a run: every client operation with its invocation and completion in
//! virtual time and its outcome, every fault the nemesis injected, and the final state
//! read off the devices' working copies after the cluster was healed.
//!
//! A history is plain data. The checkers are pure functions of it, so a history recorded
//! elsewhere (for example from the real daemon) can be checked with `stormcell-sim check`.
//! The JSON form is documented in `reports/README.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Refs of one working copy: ref name to commit id.
pub type Refs = BTreeMap<String, String>;

/// Why a text is not a history: where (the JSON path of the bad field, such as
/// `ops[3].outcome.error`) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The JSON path of the field that could not be read (`.` for the document itself).
    pub path: String,
    /// Line and column in the text.
    pub line: usize,
    /// Column in the line.
    pub column: usize,
    /// What is wrong there.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    /// `ops[3].outcome.error (line 40, column 21): unknown variant ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (line {}, column {}): {}",
            self.path, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

impl History {
    /// Reads a history from its JSON form. A malformed history is an error naming the
    /// JSON path of the first bad field, never a panic.
    pub fn from_json(text: &str) -> Result<History, ParseError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let history: History = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let (path, message) = refine(text, path, inner.to_string());
            ParseError {
                path,
                line: inner.line(),
                column: inner.column(),
                message,
            }
        })?;
        de.end().map_err(|e| ParseError {
            path: ".".to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        Ok(history)
    }
}

/// Points an error inside an internally tagged object (an operation's `kind` or
/// `outcome`, which serde reads as a whole) at the field that is wrong, by reading that
/// object's fields one by one.
fn refine(text: &str, path: String, message: String) -> (String, String) {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
        return (path, message);
    };
    let Some(value) = value_at(&doc, &path) else {
        return (path, message);
    };
    let Some(object) = value.as_object() else {
        return (path, message);
    };
    let Some(tag) = object.get("type") else {
        return (path, message);
    };
    // Each field of either tagged type, with how to read it: an error gives the path
    // inside the field (empty for the field itself) and what is wrong.
    type Reader = fn(&serde_json::Value) -> Result<(), (String, String)>;
    fn read<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<(), (String, String)> {
        serde_path_to_error::deserialize::<_, T>(v.clone())
            .map(|_| ())
            .map_err(|e| {
                let inner = e.path().to_string();
                let inner = match inner.as_str() {
                    "." => String::new(),
                    p if p.starts_with('[') => p.to_owned(),
                    p => format!(".{p}"),
                };
                (inner, e.into_inner().to_string())
            })
    }
    let fields: &[(&str, Reader)] = match tag.as_str() {
        Some("ok") => &[
            ("refs", read::<Option<Refs>>),
            ("possibly_stale", read::<bool>),
        ],
        Some("refused") => &[("error", read::<ErrorKind>), ("message", read::<String>)],
        Some("unknown") => &[("reason", read::<String>)],
        Some("push") => &[("updates", read::<Vec<RefUpdate>>)],
        Some("read") => &[],
        _ => return (format!("{path}.type"), message),
    };
    for (name, reader) in fields {
        if let Some(field) = object.get(*name) {
            if let Err((inner, why)) = reader(field) {
                return (format!("{path}.{name}{inner}"), why);
            }
        }
    }
    (path, message)
}

/// The value at a path as `serde_path_to_error` prints it (`ops[3].outcome`).
fn value_at<'v>(doc: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    let mut at = doc;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indices) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            at = at.get(name)?;
        }
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            at = at.get(index.parse::<usize>().ok()?)?;
        }
    }
    Some(at)
}

/// A complete, self-contained record of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Scenario name (informational).
    pub scenario: String,
    /// Seed of the run (informational).
    pub seed: u64,
    /// Protocol profile: `stormcell` or `phabricator`.
    pub profile: String,
    /// Every device of the cluster.
    pub devices: Vec<String>,
    /// Every repository with how it started.
    pub repositories: Vec<RepositoryStart>,
    /// Client operations, in order of invocation.
    pub ops: Vec<Operation>,
    /// Faults, in order of time.
    pub faults: Vec<FaultEvent>,
    /// The cluster database's hosts, when the run had replicas (checker 5 needs to know
    /// which host was the primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseHosts>,
    /// What the run expected the cluster to end as (from the scenario and profile).
    pub expect: FinalExpectation,
    /// What the scenario expects of availability (checker 7); the defaults when absent.
    #[serde(default, skip_serializing_if = "Availability::is_default")]
    pub availability: Availability,
    /// The state of every device's working copies after the final phase.
    pub final_state: FinalState,
    /// What the operator did, in order (histories without an operator have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator: Vec<OperatorAction>,
}

/// One operator action (PROTOCOL.md section 7) and what it printed and changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAction {
    /// Virtual milliseconds when the action started.
    pub started_ms: u64,
    /// Virtual milliseconds when it ended.
    pub completed_ms: u64,
    /// The command, as a person would type it.
    pub command: String,
    /// Whether it did what it was asked.
    pub ok: bool,
    /// What it answered: `ok`, the error, or why it was skipped.
    pub result: String,
    /// Rows deleted by a thaw: repository and device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demoted: Vec<RepoDevice>,
    /// Rows inserted by a thaw's promote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promoted: Vec<RepoDevice>,
    /// **[stormcell]** The plan the thaw printed before it acted: every ref value it said
    /// it would discard. Absent when no plan was printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<PlannedDiscard>>,
    /// When a thaw changed the rows, if known: the values its plan lists were given up
    /// then (the action's start stands in when this is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_ms: Option<u64>,
}

impl OperatorAction {
    /// Records what a thaw changed and the plan it printed.
    pub fn record_thaw(&mut self, outcome: &stormcell_model::admin::ThawOutcome) {
        use stormcell_model::admin::{DiscardSource, ThawKind};
        for (repo, device, kind) in &outcome.applied {
            let pair = RepoDevice {
                repo: repo.to_string(),
                device: device.to_string(),
            };
            match kind {
                ThawKind::Demote => self.demoted.push(pair),
                ThawKind::Promote => self.promoted.push(pair),
            }
        }
        self.plan = outcome.plan.as_ref().map(|plan| {
            plan.discards()
                .map(|(repo, d)| PlannedDiscard {
                    repo: repo.to_string(),
                    device: d.device.to_string(),
                    name: d.ref_name.clone(),
                    commit: d.commit.to_string(),
                    salvageable: d.source == DiscardSource::WorkingCopy,
                    bundled: outcome.bundles.iter().any(|b| {
                        b.repo == *repo
                            && b.device == d.device
                            && b.refs.get(&d.ref_name) == Some(&d.commit)
                    }),
                })
                .collect()
        });
    }
}

/// A (repository, device) pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RepoDevice {
    /// Repository name.
    pub repo: String,
    /// Device name.
    pub device: String,
}

/// One ref value a thaw plan said would be discarded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlannedDiscard {
    /// Repository name.
    pub repo: String,
    /// The device whose data it was.
    pub device: String,
    /// The ref.
    pub name: String,
    /// The commit.
    pub commit: String,
    /// Seen in a readable working copy, so it must be salvaged under
    /// `refs/salvage/<device>/<version>/<name>` (stormcell profile).
    pub salvageable: bool,
    /// Kept in a salvage bundle the thaw recorded before the rows changed (stormcell
    /// profile), so it is not lost even when the salvage push is refused.
    #[serde(default)]
    pub bundled: bool,
}

/// How a repository started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryStart {
    /// Repository name.
    pub name: String,
    /// Refs every device held at time zero (root commits, parentless).
    pub initial_refs: Refs,
    /// Whether version rows existed at time zero. `false` with more than one active
    /// device means the repository starts frozen as an ambiguous leader.
    pub has_rows: bool,
}

/// Which part of the run an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The workload, while faults may strike.
    Workload,
    /// The probes after every fault was healed: one push and one read per device and
    /// repository.
    Final,
}

/// One client operation against one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique, increasing in invocation order.
    pub id: u64,
    /// The workload client that issued it.
    pub client: String,
    /// The device it was sent to.
    pub device: String,
    /// The repository.
    pub repo: String,
    /// Workload or final probe.
    pub phase: Phase,
    /// Virtual milliseconds since the start of the run.
    pub invoked_ms: u64,
    /// Virtual milliseconds at which the client saw the outcome (or gave up).
    pub completed_ms: u64,
    /// What was asked.
    pub kind: OpKind,
    /// What came back.
    pub outcome: Outcome,
}

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum OpKind {
    /// A push: compare-and-swap of each ref from `old` to `new` (no force). `new` is a
    /// commit whose parent is `old` (or a root commit when `old` is absent).
    Push {
        /// The ref updates, applied all or nothing.
        updates: Vec<RefUpdate>,
    },
    /// A read of every ref (list refs and fetch).
    Read,
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefUpdate {
    /// Full ref name, such as `refs/heads/main`.
    pub name: String,
    /// The value the pusher expects; `None` creates the ref.
    pub old: Option<String>,
    /// The new commit; its parent is `old`.
    pub new: String,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Outcome {
    /// The operation succeeded. Reads carry the refs they saw.
    Ok {
        /// The refs a read returned; `None` for pushes.
        refs: Option<Refs>,
        /// A read the server marked as possibly stale (exempt from the stale-read check,
        /// but counted).
        #[serde(default)]
        possibly_stale: bool,
    },
    /// The operation definitely did not take effect.
    Refused {
        /// Machine-readable cause.
        error: ErrorKind,
        /// The message the client saw.
        message: String,
    },
    /// The client does not know whether the operation took effect (timeout, connection
    /// lost after the request was sent, or the server said the write may not have been
    /// recorded).
    Unknown {
        /// Why the outcome is unknown.
        reason: String,
    },
}

impl Outcome {
    /// Whether the operation was acknowledged as successful.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }

    /// Whether the client cannot tell if the operation took effect.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown { .. })
    }
}

/// What a scenario expects of availability (checker 7): how soon after a fault every
/// operation is served again, and which refusals it expects even with no fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Availability {
    /// A failure invoked more than this many seconds after every fault that could cause it
    /// ended has no cause.
    #[serde(default = "default_recovery_s")]
    pub recovery_s: u64,
    /// Refusals expected with the cluster healthy (for example `lock-timeout` where the
    /// workload queues more writers on one repository than a lock budget lets through).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_refuse: Vec<ErrorKind>,
}

/// The recovery window when a scenario states none: a health window and a database
/// session's expiry, with slack for the requests then in flight.
pub const DEFAULT_RECOVERY_S: u64 = 60;

fn default_recovery_s() -> u64 {
    DEFAULT_RECOVERY_S
}

impl Default for Availability {
    fn default() -> Self {
        Availability {
            recovery_s: DEFAULT_RECOVERY_S,
            may_refuse: Vec::new(),
        }
    }
}

impl Availability {
    /// Whether nothing differs from the defaults (then a history leaves it out).
    pub fn is_default(&self) -> bool {
        *self == Availability::default()
    }
}

/// The cause of a refusal, as the client can tell it from the error it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Frozen for writes: some row has `writing = true`.
    WriteInterruption,
    /// This device is behind and no leader could be fetched from.
    LeaderLost,
    /// No rows and several active devices.
    AmbiguousLeader,
    /// The device is not bound to the repository's service.
    NotBound,
    /// A lock wait ran past its budget.
    LockTimeout,
    /// The push's compare-and-swap failed: a ref was not at `old`.
    Rejected,
    /// The cluster database could not be reached.
    DatabaseUnavailable,
    /// The repository is in read-only maintenance.
    Maintenance,
    /// The server is in read-only mode.
    ReadOnly,
    /// The device could not be reached at all (nothing was sent).
    Unreachable,
    /// Anything else the server reported.
    Other,
}

/// A fault the nemesis injected or healed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// Virtual milliseconds since the start of the run.
    pub at_ms: u64,
    /// What happened.
    pub kind: FaultKind,
    /// The hosts involved (one for strikes, two for link faults).
    pub hosts: Vec<String>,
    /// A readable detail, such as the write step a strike hit.
    pub detail: String,
}

/// Kinds of fault events. Every fault that starts has a matching end event
/// (`Strike`/`Restart`, `Partition`/`Repair`, `Hold`/`Release`) unless the run ended first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A device was struck by lightning (crashed, unsynced writes lost).
    Strike,
    /// A struck device was restarted.
    Restart,
    /// The link between two hosts was cut.
    Partition,
    /// A cut link was repaired.
    Repair,
    /// Messages on a link are held back (slow link).
    Hold,
    /// Held messages are released.
    Release,
    /// An operator promoted a database replica and re-pointed the devices at it.
    Promote,
    /// A replica's replication delay spikes.
    Lag,
    /// The spike ends.
    LagEnd,
    /// A device's disk starts failing every sync (writes cannot be made durable).
    DiskFailing,
    /// Its disk works again.
    DiskRecovered,
    /// An instant: a device's working copies were lost (its disk replaced or wiped, or
    /// restored from an older backup); it is down from the `Strike` recorded with it. Only
    /// an operator action (or the old disk coming back) ends the freeze this may leave.
    DiskLost,
}

/// What the run expects the cluster to look like at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalExpectation {
    /// Every final push and read succeeds and all active devices hold the same refs.
    Converged,
    /// Every final read succeeds; every final push is refused as a write interruption.
    WriteFrozen,
    /// Every final read and push is refused as an ambiguous leader.
    Ambiguous,
    /// The devices stay read-only (the seed design recovers only on restart): every final
    /// read succeeds and every final push is refused as read-only.
    ReadOnly,
}

/// The database hosts of a run. A `promote` fault event names the host that becomes
/// primary from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseHosts {
    /// The primary at the start.
    pub primary: String,
    /// The replicas at the start.
    pub replicas: Vec<String>,
    /// Every change of a device's view of a database host's health, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_flips: Vec<HealthFlip>,
}

/// A device's health record of a database host flipped (PROTOCOL.md 9.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthFlip {
    /// Virtual milliseconds since the start.
    pub at_ms: u64,
    /// The device whose record flipped.
    pub device: String,
    /// The database host.
    pub host: String,
    /// The new state.
    pub healthy: bool,
}

/// The state read off the devices after the final phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// Devices whose binding is active at the end.
    pub active_devices: Vec<String>,
    /// Device name to repository name to its refs.
    pub refs: BTreeMap<String, BTreeMap<String, Refs>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "scenario": "s", "seed": 1, "profile": "stormcell",
            "devices": ["R1"],
            "repositories": [{"name": "repo1", "initial_refs": {}, "has_rows": true}],
            "ops": [
                {"id": 1, "client": "c", "device": "R1", "repo": "repo1", "phase": "workload",
                 "invoked_ms": 1, "completed_ms": 2, "kind": {"type": "read"},
                 "outcome": {"type": "ok", "refs": {}, "possibly_stale": false}},
                {"id": 2, "client": "c", "device": "R1", "repo": "repo1", "phase": "workload",
                 "invoked_ms": 3, "completed_ms": 4, "kind": {"type": "read"},
                 "outcome": {"type": "refused", "error": "lock-timeout", "message": "m"}}
            ],
            "faults": [],
            "expect": "converged",
            "final_state": {"active_devices": ["R1"], "refs": {}}
        })
    }

    #[test]
    fn a_well_formed_history_parses() {
        let h = History::from_json(&sample().to_string());
        assert!(h.is_ok(), "{h:?}");
    }

    #[test]
    fn a_malformed_history_names_the_json_path_of_the_bad_field() {
        let mut v = sample();
        v["ops"][1]["outcome"]["error"] = serde_json::json!("no-such-kind");
        let e = History::from_json(&v.to_string()).err();
        assert_eq!(e.map(|e| e.path), Some("ops[1].outcome.error".to_owned()));
        let mut v = sample();
        v["ops"][0]["invoked_ms"] = serde_json::json!(-5);
        let e = History::from_json(&v.to_string()).err();
        assert_eq!(e.map(|e| e.path), Some("ops[0].invoked_ms".to_owned()));
        let mut v = sample();
        if let Some(op) = v["ops"][0].as_object_mut() {
            op.remove("device");
        }
        let e = History::from_json(&v.to_string()).err();
        let e = e.map(|e| (e.path, e.message.contains("device")));
        assert_eq!(e, Some(("ops[0]".to_owned(), true)));
        let mut v = sample();
        v["ops"][0]["kind"] =
            serde_json::json!({"type": "push", "updates": [{"name": "x", "old": null, "new": 5}]});
        let e = History::from_json(&v.to_string()).err();
        assert_eq!(
            e.map(|e| e.path),
            Some("ops[0].kind.updates[0].new".to_owned())
        );
        for text in ["", "[", "{\"ops\": 3}", "null", "{} trailing"] {
            assert!(History::from_json(text).is_err(), "{text}");
        }
    }
}
