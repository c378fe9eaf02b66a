//! The checkers: pure functions of a [`History`] that say whether the run kept the
//! protocol's promises (see `ARCHITECTURE.md`, "History and checkers").
//!
//! Each checker returns one [`Verdict`]: its violations, each explaining itself with the
//! operation, device, repository, virtual time, what was expected and what was seen, plus
//! notes with counts (how much was checked, what was exempted) so that a passing verdict is
//! not mistaken for a vacuous one.
//!
//! The checkers never trust the history to be well formed (it may come from a file): they
//! never panic on it, and odd input either shows up as a violation or as a note.
//! They iterate only ordered collections, so the same history always gives the same
//! verdicts in the same order.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{ErrorKind, FinalExpectation, History, Operation, Outcome, Refs};

pub mod availability;
pub mod convergence;
pub mod discards;
pub mod durability;
pub mod freeze;
pub mod graph;
pub mod invented;
pub mod linearizable;
pub mod read_only;
pub mod stale_read;
mod timeline;

#[cfg(test)]
mod testkit;

use graph::CommitGraph;

/// Which checker a verdict or violation comes from. The numbers follow the list in
/// `ARCHITECTURE.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckerId {
    /// 1: no acknowledged push is lost.
    Durability,
    /// 2: no stale read, and reads never go backwards.
    StaleRead,
    /// 3: reads and the final state hold only commits the run produced.
    InventedState,
    /// 4: repositories are frozen exactly when the protocol says, for the right operations.
    Freeze,
    /// 5: while the primary database is lost, pushes are refused promptly as read-only and
    /// reads are served; writes come back after it returns.
    ReadOnly,
    /// 6: after the faults stop, the cluster converges and the final probes behave.
    Convergence,
    /// 7: with no fault active, every operation is served; every failure to serve has a
    /// cause.
    Availability,
    /// 8: every ref of every repository behaves as one linearizable compare-and-swap
    /// register.
    Linearizable,
}

impl CheckerId {
    /// Every checker, in the order [`check_all`] runs them.
    pub const ALL: [CheckerId; 8] = [
        CheckerId::Durability,
        CheckerId::StaleRead,
        CheckerId::InventedState,
        CheckerId::Freeze,
        CheckerId::ReadOnly,
        CheckerId::Convergence,
        CheckerId::Availability,
        CheckerId::Linearizable,
    ];

    /// The checker's number in `ARCHITECTURE.md`.
    pub fn number(self) -> u8 {
        match self {
            CheckerId::Durability => 1,
            CheckerId::StaleRead => 2,
            CheckerId::InventedState => 3,
            CheckerId::Freeze => 4,
            CheckerId::ReadOnly => 5,
            CheckerId::Convergence => 6,
            CheckerId::Availability => 7,
            CheckerId::Linearizable => 8,
        }
    }

    /// The checker's name, as serialized (kebab-case).
    pub fn name(self) -> &'static str {
        match self {
            CheckerId::Durability => "durability",
            CheckerId::StaleRead => "stale-read",
            CheckerId::InventedState => "invented-state",
            CheckerId::Freeze => "freeze",
            CheckerId::ReadOnly => "read-only",
            CheckerId::Convergence => "convergence",
            CheckerId::Availability => "availability",
            CheckerId::Linearizable => "linearizable",
        }
    }
}

impl fmt::Display for CheckerId {
    /// `"1 durability"`, `"2 stale-read"`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.number(), self.name())
    }
}

/// One broken promise, with enough context to find it in the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The checker that found it.
    pub checker: CheckerId,
    /// The operation at fault, when there is one (the final state has none).
    pub op: Option<u64>,
    /// The device involved.
    pub device: Option<String>,
    /// The repository involved.
    pub repo: Option<String>,
    /// Virtual milliseconds since the start of the run: the moment the rule is about (a
    /// read's invocation, a push's acknowledgement, a refusal's arrival, the end of the run
    /// for the final state).
    pub at_ms: u64,
    /// What the rule required.
    pub expected: String,
    /// What the history shows instead.
    pub seen: String,
    /// Why this is a violation, in a sentence.
    pub explanation: String,
}

impl Violation {
    /// A violation about one operation, naming its device and repository.
    pub fn of_op(
        checker: CheckerId,
        op: &Operation,
        at_ms: u64,
        expected: String,
        seen: String,
        explanation: String,
    ) -> Self {
        Violation {
            checker,
            op: Some(op.id),
            device: Some(op.device.clone()),
            repo: Some(op.repo.clone()),
            at_ms,
            expected,
            seen,
            explanation,
        }
    }
}

impl fmt::Display for Violation {
    /// One line: `[2 stale-read] op 17 on repo002/R1 at 12.345s: expected refs/heads/b1 at
    /// c-3-7 or a descendant (push op 12 acknowledged at 11.900s), saw c-3-5; <explanation>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.checker)?;
        if let Some(op) = self.op {
            write!(f, "op {op} on ")?;
        }
        match (&self.repo, &self.device) {
            (Some(repo), Some(device)) => write!(f, "{repo}/{device}")?,
            (Some(repo), None) => write!(f, "{repo}")?,
            (None, Some(device)) => write!(f, "{device}")?,
            (None, None) => write!(f, "the run")?,
        }
        write!(
            f,
            " at {}: expected {}, saw {}",
            secs(self.at_ms),
            self.expected,
            self.seen
        )?;
        if !self.explanation.is_empty() {
            write!(f, "; {}", self.explanation)?;
        }
        Ok(())
    }
}

/// What one checker concluded about a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The checker.
    pub checker: CheckerId,
    /// Everything it found wrong; empty when it passed.
    pub violations: Vec<Violation>,
    /// Counts and remarks: how much was checked, what was exempted or skipped, oddities in
    /// the history that are not violations.
    pub notes: Vec<String>,
}

impl Verdict {
    /// An empty (passing) verdict of `checker`.
    pub fn new(checker: CheckerId) -> Self {
        Verdict {
            checker,
            violations: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Whether the checker found nothing wrong.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Verdict {
    /// A summary line, then one line per violation and per note.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            write!(f, "[{}] passed", self.checker)?;
        } else {
            write!(
                f,
                "[{}] FAILED: {} violation(s)",
                self.checker,
                self.violations.len()
            )?;
        }
        for violation in &self.violations {
            write!(f, "\n  {violation}")?;
        }
        for note in &self.notes {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}

/// Runs every checker on `history`: one verdict per checker, in the order of
/// [`CheckerId::ALL`].
pub fn check_all(history: &History) -> Vec<Verdict> {
    let ctx = Context::new(history);
    CheckerId::ALL
        .iter()
        .map(|&id| run(id, history, &ctx))
        .collect()
}

/// Runs one checker on `history`.
pub fn check(checker: CheckerId, history: &History) -> Verdict {
    run(checker, history, &Context::new(history))
}

fn run(checker: CheckerId, history: &History, ctx: &Context) -> Verdict {
    match checker {
        CheckerId::Durability => durability::check(history, ctx),
        CheckerId::StaleRead => stale_read::check(history, ctx),
        CheckerId::InventedState => invented::check(history, ctx),
        CheckerId::Freeze => freeze::check(history),
        CheckerId::ReadOnly => read_only::check(history),
        CheckerId::Convergence => convergence::check(history),
        CheckerId::Availability => availability::check(history),
        CheckerId::Linearizable => linearizable::check(history),
    }
}

/// What several checkers derive from the history, computed once.
pub(crate) struct Context {
    /// Commit ancestry per repository.
    graphs: BTreeMap<String, CommitGraph>,
    /// Stand-in for repositories that appear nowhere (only equality holds there).
    empty: CommitGraph,
}

impl Context {
    pub(crate) fn new(history: &History) -> Self {
        Context {
            graphs: CommitGraph::for_history(history),
            empty: CommitGraph::new(),
        }
    }

    /// The commit graph of `repo`.
    pub(crate) fn graph(&self, repo: &str) -> &CommitGraph {
        self.graphs.get(repo).unwrap_or(&self.empty)
    }

    /// Every repository's graph, by name.
    pub(crate) fn graphs(&self) -> &BTreeMap<String, CommitGraph> {
        &self.graphs
    }
}

/// The last moment the history mentions: when the final state was (at the latest) read.
pub(crate) fn end_of_run(history: &History) -> u64 {
    let ops = history
        .ops
        .iter()
        .map(|op| op.completed_ms.max(op.invoked_ms));
    let faults = history.faults.iter().map(|f| f.at_ms);
    let operator = history
        .operator
        .iter()
        .map(|a| a.completed_ms.max(a.started_ms));
    ops.chain(faults).chain(operator).max().unwrap_or(0)
}

/// Formats virtual milliseconds as seconds with three decimals: `12345` is `"12.345s"`.
pub fn secs(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// The serialized (kebab-case) name of an error kind, such as `write-interruption`.
pub(crate) fn error_name(kind: ErrorKind) -> String {
    // Going through serde keeps this in step with the history format without repeating
    // the variant list here.
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{kind:?}"),
    }
}

/// The serialized (kebab-case) name of a final expectation, such as `write-frozen`.
pub(crate) fn expectation_name(expect: FinalExpectation) -> String {
    match serde_json::to_value(expect) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{expect:?}"),
    }
}

/// A short description of an outcome for the `seen` field of a violation.
pub(crate) fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok { .. } => "ok".to_owned(),
        Outcome::Refused { error, message } => {
            format!("refused as {} ({message:?})", error_name(*error))
        }
        Outcome::Unknown { reason } => format!("unknown outcome ({reason:?})"),
    }
}

/// `"push"` or `"read"`, for explanations.
pub(crate) fn op_kind_name(op: &Operation) -> &'static str {
    match op.kind {
        crate::history::OpKind::Push { .. } => "push",
        crate::history::OpKind::Read => "read",
    }
}

/// The refs of an acknowledged read, with whether it was marked possibly stale. `None` for
/// anything that is not a read with outcome Ok. An Ok read without refs (a malformed
/// history) counts as having seen no refs at all.
pub(crate) fn ok_read(op: &Operation) -> Option<(&Refs, bool)> {
    static NO_REFS: Refs = Refs::new();
    match (&op.kind, &op.outcome) {
        (
            crate::history::OpKind::Read,
            Outcome::Ok {
                refs,
                possibly_stale,
            },
        ) => Some((refs.as_ref().unwrap_or(&NO_REFS), *possibly_stale)),
        _ => None,
    }
}

/// The value of ref `name` for the `seen` field: the commit, or a note that it is missing.
pub(crate) fn seen_ref(refs: &Refs, name: &str) -> String {
    match refs.get(name) {
        Some(commit) => commit.clone(),
        None => format!("no {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;

    #[test]
    fn checker_ids_display_and_serialize() {
        let shown: Vec<String> = CheckerId::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            shown,
            [
                "1 durability",
                "2 stale-read",
                "3 invented-state",
                "4 freeze",
                "5 read-only",
                "6 convergence",
                "7 availability",
                "8 linearizable"
            ]
        );
        for id in CheckerId::ALL {
            let json = serde_json::to_string(&id).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", id.name()));
            let back: CheckerId = serde_json::from_str(&json).unwrap_or(CheckerId::Freeze);
            assert_eq!(back, id);
        }
    }

    #[test]
    fn seconds_have_three_decimals() {
        assert_eq!(secs(0), "0.000s");
        assert_eq!(secs(12_345), "12.345s");
        assert_eq!(secs(11_900), "11.900s");
        assert_eq!(secs(7), "0.007s");
    }

    #[test]
    fn violation_is_one_readable_line() {
        let v = Violation {
            checker: CheckerId::StaleRead,
            op: Some(17),
            device: Some("R1".into()),
            repo: Some("repo002".into()),
            at_ms: 12_345,
            expected: "refs/heads/b1 at c-3-7 or a descendant (push op 12 acknowledged at 11.900s)"
                .into(),
            seen: "c-3-5".into(),
            explanation: "the read missed an acknowledged push".into(),
        };
        assert_eq!(
            v.to_string(),
            "[2 stale-read] op 17 on repo002/R1 at 12.345s: expected refs/heads/b1 at c-3-7 \
             or a descendant (push op 12 acknowledged at 11.900s), saw c-3-5; the read missed \
             an acknowledged push"
        );
        assert!(!v.to_string().contains('\n'));
        let json = serde_json::to_string(&v).unwrap_or_default();
        let back: Option<Violation> = serde_json::from_str(&json).ok();
        assert_eq!(back, Some(v));
    }

    #[test]
    fn a_clean_history_passes_every_checker() {
        let mut b = HistoryBuilder::new();
        let p = b.push(
            "R1",
            100,
            200,
            &[("refs/heads/main", Some("c0"), "c1")],
            ok(),
        );
        b.read("R2", 300, 400, ok_refs(&[("refs/heads/main", "c1")]));
        b.final_probes(1_000, &[("refs/heads/main", "c1")]);
        b.final_refs_all(&[("refs/heads/main", "c1")]);
        let verdicts = check_all(&b.build());
        assert_eq!(verdicts.len(), CheckerId::ALL.len());
        for (verdict, id) in verdicts.iter().zip(CheckerId::ALL) {
            assert_eq!(verdict.checker, id);
            assert!(verdict.passed(), "{verdict}");
        }
        assert!(p > 0);
    }

    #[test]
    fn thousands_of_ops_on_one_ref() {
        // Histories of a few thousand operations must stay cheap: the sweeps keep one
        // high-water mark per ref instead of comparing every pair.
        let mut b = HistoryBuilder::new();
        let main = "refs/heads/main";
        let mut head = "c0".to_owned();
        for i in 1..=3_000u64 {
            let next = format!("c{i}");
            let t = i * 100;
            b.push("R1", t, t + 10, &[(main, Some(&head), &next)], ok());
            b.read("R2", t + 20, t + 30, ok_refs(&[(main, &next)]));
            head = next;
        }
        b.final_probes(1_000_000, &[(main, &head)]);
        b.final_refs_all(&[(main, &head)]);
        for verdict in check_all(&b.build()) {
            assert!(verdict.passed(), "{verdict}");
        }
    }

    #[test]
    fn random_odd_histories_never_panic() {
        // Well-formed JSON, nonsense content: times at the edges of u64 and backwards,
        // unknown hosts, devices and repositories, fault ends without starts, link events
        // naming one or three hosts, operator actions that end before they begin. Every
        // checker must judge them (pass or fail), never panic or overflow.
        use crate::history::{
            ErrorKind as E, FaultKind as F, OpKind, OperatorAction, Phase, PlannedDiscard,
            RepoDevice,
        };
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        fn time(rng: &mut rand_chacha::ChaCha8Rng) -> u64 {
            match rng.random_range(0..6) {
                0 => 0,
                1 => u64::MAX,
                2 => u64::MAX - rng.random_range(0..100_000),
                _ => rng.random_range(0..200_000),
            }
        }
        let hosts = ["R1", "R2", "R3", "db", "db-r1", "elsewhere"];
        let commits = ["c0", "c1", "c2", "c3"];
        let faults = [
            F::Strike,
            F::Restart,
            F::Partition,
            F::Repair,
            F::Hold,
            F::Release,
            F::Promote,
            F::Lag,
            F::LagEnd,
            F::DiskFailing,
            F::DiskRecovered,
            F::DiskLost,
        ];
        let errors = [
            E::WriteInterruption,
            E::LeaderLost,
            E::AmbiguousLeader,
            E::NotBound,
            E::LockTimeout,
            E::Rejected,
            E::DatabaseUnavailable,
            E::Maintenance,
            E::ReadOnly,
            E::Unreachable,
            E::Other,
        ];
        for case in 0..300 {
            let mut b = HistoryBuilder::new();
            if rng.random_bool(0.5) {
                b.with_replica();
            }
            b.history.profile = if case % 3 == 0 {
                "phabricator"
            } else {
                "stormcell"
            }
            .to_owned();
            b.has_rows(rng.random_bool(0.7));
            for _ in 0..rng.random_range(0..12) {
                let n = rng.random_range(0..4);
                let on: Vec<&str> = (0..n)
                    .map(|_| hosts[rng.random_range(0..hosts.len())])
                    .collect();
                let kind = faults[rng.random_range(0..faults.len())];
                b.fault_with(time(&mut rng), kind, &on, "finish_write repo1/R1");
            }
            for _ in 0..rng.random_range(0..3) {
                if let Some(db) = &mut b.history.database {
                    db.health_flips.push(crate::history::HealthFlip {
                        at_ms: time(&mut rng),
                        device: hosts[rng.random_range(0..3)].to_owned(),
                        host: "db".to_owned(),
                        healthy: rng.random_bool(0.5),
                    });
                }
            }
            for _ in 0..rng.random_range(0..15) {
                let device = hosts[rng.random_range(0..hosts.len())];
                let repo = if rng.random_bool(0.9) {
                    "repo1"
                } else {
                    "other"
                };
                let c =
                    |rng: &mut rand_chacha::ChaCha8Rng| commits[rng.random_range(0..commits.len())];
                let kind = if rng.random_bool(0.5) {
                    let (old, new) = (c(&mut rng), c(&mut rng));
                    push_kind(&[("refs/heads/main", rng.random_bool(0.8).then_some(old), new)])
                } else {
                    OpKind::Read
                };
                let outcome = match rng.random_range(0..4) {
                    0 => unknown(),
                    1 => refused(errors[rng.random_range(0..errors.len())]),
                    2 => stale_refs(&[("refs/heads/main", c(&mut rng))]),
                    _ => ok_refs(&[("refs/heads/main", c(&mut rng))]),
                };
                let phase = if rng.random_bool(0.8) {
                    Phase::Workload
                } else {
                    Phase::Final
                };
                let times = (time(&mut rng), time(&mut rng));
                b.op_full(repo, device, phase, times, kind, outcome);
            }
            if rng.random_bool(0.3) {
                let rd = || RepoDevice {
                    repo: "repo1".to_owned(),
                    device: "R1".to_owned(),
                };
                b.history.operator.push(OperatorAction {
                    started_ms: time(&mut rng),
                    completed_ms: time(&mut rng),
                    command: "stormcell repository thaw repo1 --demote R1".to_owned(),
                    ok: rng.random_bool(0.8),
                    result: String::new(),
                    demoted: vec![rd()],
                    promoted: vec![rd()],
                    plan: Some(vec![PlannedDiscard {
                        repo: "repo1".to_owned(),
                        device: "R1".to_owned(),
                        name: "refs/heads/main".to_owned(),
                        commit: "c1".to_owned(),
                        salvageable: true,
                        bundled: rng.random_bool(0.5),
                    }]),
                    applied_ms: rng.random_bool(0.5).then(|| time(&mut rng)),
                });
            }
            let h = b.build();
            let verdicts = check_all(&h);
            assert_eq!(verdicts.len(), CheckerId::ALL.len(), "case {case}");
        }
    }

    #[test]
    fn malformed_history_does_not_panic() {
        let mut b = HistoryBuilder::new();
        // A push whose new commit names itself as parent, reads of an unknown repository,
        // an Ok read without refs, times running backwards, unmatched fault ends.
        b.push("R1", 500, 100, &[("refs/heads/main", Some("x"), "x")], ok());
        b.op_on(
            "nowhere",
            "R9",
            10,
            5,
            crate::history::OpKind::Read,
            ok_refs(&[]),
        );
        b.op_on(
            "repo1",
            "R1",
            10,
            20,
            crate::history::OpKind::Read,
            Outcome::Ok {
                refs: None,
                possibly_stale: false,
            },
        );
        b.fault(5, crate::history::FaultKind::Repair, &["R1"]);
        b.fault(6, crate::history::FaultKind::Restart, &[]);
        let verdicts = check_all(&b.build());
        assert_eq!(verdicts.len(), CheckerId::ALL.len());
    }
}
