//! Checker 7, availability: with no fault active (and once a recovery window has passed
//! since the last one ended), every operation is served.
//!
//! An operation that was not served needs a cause, like the freezes do (checker 4 judges
//! the freezes themselves, and `rejected` is the answer of a compare-and-swap, not a
//! failure to serve). A cause is a fault active while the operation ran, or ended less
//! than the scenario's recovery window (`[expect.availability] recovery_s`, 60 s unless
//! stated) before it was invoked, on a host or link that can cause that kind
//! of failure, or an operator action running in the same window (an operator takes locks
//! and changes rows). A repository the operator clusterizes is not known to the cluster
//! before that: failures on it that end before the clusterizing action does are caused by
//! it.
//!
//! - `unreachable`: a fault on the operation's device or one of its links;
//! - `database-unavailable`: a fault on a database host, on the operation's device or one
//!   of its links, or a promotion of a replica;
//! - `lock-timeout`: a fault on a device or one of its links (whoever held the lock may be
//!   the one struck or cut off), on a host that was the primary database (which keeps the
//!   locks), or a promotion; a fault that touches only replicas holds no lock;
//! - `read-only`: the history shows the device read-only then (checker 5's view: the
//!   primary unreachable from it, until [`super::read_only::RECOVER_MS`] after it is back;
//!   under phabricator until the device restarts; after a promotion while a peer cannot be
//!   asked). Checker 5 judges promptness and recovery on top of this;
//! - `maintenance` and `not-bound`: an operator action that began before (a maintenance
//!   lock, a contract or a removal lasts until someone acts again), or a fault on the
//!   device;
//! - `other`, and outcomes the client could not learn (unknown): any fault or promotion.
//!
//! - a refusal the scenario lists in `[expect.availability] may_refuse` needs no cause.
//!
//! The violation names the kind of failure and the window in which nothing could cause it;
//! the notes name the first causes found for the failures that had one, and how long after
//! its cause ended the latest failure came (what a scenario's `recovery_s` must allow).

use std::collections::BTreeMap;

use super::timeline::{overlaps, Fault, Spans, Timeline};
use super::{describe_outcome, op_kind_name, secs, CheckerId, Verdict, Violation};
use crate::history::{ErrorKind, FaultKind, History, Operation, Outcome};

/// The failures this checker judges, and the label it gives them.
fn judged(op: &Operation) -> Option<(&'static str, Scope)> {
    match &op.outcome {
        Outcome::Refused { error, .. } => match error {
            ErrorKind::Unreachable => Some(("unreachable", Scope::Device)),
            ErrorKind::DatabaseUnavailable => Some(("database-unavailable", Scope::Database)),
            ErrorKind::LockTimeout => Some(("lock-timeout", Scope::Lock)),
            ErrorKind::ReadOnly => Some(("read-only", Scope::ReadOnly)),
            ErrorKind::Maintenance => Some(("maintenance", Scope::Operator)),
            ErrorKind::NotBound => Some(("not-bound", Scope::Operator)),
            ErrorKind::Other => Some(("other", Scope::Anywhere)),
            ErrorKind::WriteInterruption
            | ErrorKind::LeaderLost
            | ErrorKind::AmbiguousLeader
            | ErrorKind::Rejected => None,
        },
        Outcome::Unknown { .. } => Some(("unknown outcome", Scope::Anywhere)),
        Outcome::Ok { .. } => None,
    }
}

/// Where a fault must be to cause a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// On the operation's device or its links.
    Device,
    /// On a database host, or the operation's device or its links.
    Database,
    /// On any device or its links, or on a host that was the primary database.
    Lock,
    /// The device read-only as the history shows it; faults alone are no cause (except,
    /// in a history without replicas, a database fault as for [`Scope::Database`]).
    ReadOnly,
    /// An earlier operator action, or a fault on the device or its links.
    Operator,
    /// Anywhere.
    Anywhere,
}

/// What the scopes need to know about the history's hosts.
struct Hosts<'h> {
    devices: &'h [String],
    /// Every host that was the primary database at some point (every database host when
    /// the history does not say which).
    primaries: Vec<String>,
}

impl Scope {
    fn allows(self, fault: &Fault, device: &str, timeline: &Timeline, hosts: &Hosts) -> bool {
        match self {
            Scope::Anywhere => true,
            Scope::Device | Scope::Operator => fault.involves(device),
            Scope::Database | Scope::ReadOnly => {
                fault.involves(device) || fault.hosts.iter().any(|h| timeline.is_database_host(h))
            }
            Scope::Lock => fault.hosts.iter().any(|h| {
                hosts.devices.iter().any(|d| d == h) || hosts.primaries.iter().any(|p| p == h)
            }),
        }
    }

    /// Where a cause must be, for explanations.
    fn describe(self, device: &str) -> String {
        match self {
            Scope::Device => format!("a fault on {device} or its links"),
            Scope::Database => format!("a fault on a database host or on {device} or its links"),
            Scope::Lock => "a fault on a device or its links or on the primary database".to_owned(),
            Scope::ReadOnly => format!("the primary database unreachable from {device}"),
            Scope::Operator => format!("an earlier operator action or a fault on {device}"),
            Scope::Anywhere => "a fault anywhere".to_owned(),
        }
    }
}

/// Runs checker 7.
pub(crate) fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new(CheckerId::Availability);
    let timeline = Timeline::of(history);
    let faults = timeline.all_faults();
    let promotions: Vec<u64> = history
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::Promote)
        .map(|f| f.at_ms)
        .collect();
    let primaries = match &history.database {
        Some(db) => {
            let mut hosts = vec![db.primary.clone()];
            hosts.extend(
                history
                    .faults
                    .iter()
                    .filter(|f| f.kind == FaultKind::Promote)
                    .flat_map(|f| f.hosts.iter().cloned()),
            );
            hosts
        }
        None => timeline.database_hosts().to_vec(),
    };
    let hosts = Hosts {
        devices: &history.devices,
        primaries,
    };
    let read_only: Option<BTreeMap<String, Spans>> =
        super::read_only::possibly_read_only(history, &timeline);
    let recovery_ms = history.availability.recovery_s.saturating_mul(1000);
    let mut judged_count = 0usize;
    let mut expected = 0usize;
    let mut causes: Vec<String> = Vec::new();
    // The latest a failure came after the fault that caused it ended.
    let mut latest: Option<(u64, u64)> = None;
    for op in &history.ops {
        let Some((label, scope)) = judged(op) else {
            continue;
        };
        judged_count += 1;
        if matches!(&op.outcome, Outcome::Refused { error, .. }
            if history.availability.may_refuse.contains(error))
        {
            expected += 1;
            continue;
        }
        let (from, until) = (op.invoked_ms, op.completed_ms.max(op.invoked_ms));
        let in_window =
            |start: u64, end: u64| start <= until && end.saturating_add(recovery_ms) > from;
        // Each possible cause, with how long after it ended the failure was invoked.
        let late = |end: u64| from.saturating_sub(end);
        let fault = match (scope, &read_only) {
            // The read-only spans already carry their own recovery bound.
            (Scope::ReadOnly, Some(spans)) => spans
                .get(op.device.as_str())
                .filter(|spans| overlaps(spans, from, until))
                .map(|_| {
                    let cause = format!("{} read-only (primary database unreachable)", op.device);
                    (cause, 0)
                }),
            _ => faults
                .iter()
                .filter(|f| {
                    in_window(f.start_ms, f.end_ms)
                        && scope.allows(f, &op.device, &timeline, &hosts)
                })
                .max_by_key(|f| f.end_ms)
                .map(|f| (f.describe(), late(f.end_ms))),
        };
        // A maintenance lock, a contract or a removal lasts until someone acts again.
        let earlier_action = (scope == Scope::Operator)
            .then(|| history.operator.iter().find(|a| a.started_ms <= until))
            .flatten()
            .map(|a| (format!("`{}` at {}", a.command, secs(a.started_ms)), 0));
        let promotion = matches!(scope, Scope::Database | Scope::Lock | Scope::Anywhere)
            .then(|| promotions.iter().rfind(|&&t| in_window(t, t)))
            .flatten()
            .map(|t| (format!("promotion of a replica at {}", secs(*t)), late(*t)));
        let action = history
            .operator
            .iter()
            .filter(|a| in_window(a.started_ms, a.completed_ms.max(a.started_ms)))
            .max_by_key(|a| a.completed_ms)
            .map(|a| {
                let cause = format!("`{}` at {}", a.command, secs(a.started_ms));
                (cause, late(a.completed_ms))
            });
        let clusterize = history
            .operator
            .iter()
            .find(|a| a.ok && until <= a.completed_ms && clusterizes(&a.command, &op.repo))
            .map(|a| {
                let cause = format!(
                    "`{}` (not clusterized before {})",
                    a.command,
                    secs(a.completed_ms)
                );
                (cause, 0)
            });
        // The closest cause explains the failure (ties keep the order above).
        let closest = [fault, earlier_action, promotion, action, clusterize]
            .into_iter()
            .flatten()
            .min_by_key(|(_, late)| *late);
        if let Some((cause, late)) = closest {
            if latest.is_none_or(|(l, _)| late > l) {
                latest = Some((late, op.id));
            }
            if causes.len() < 5 {
                causes.push(format!("op {} ({label}) by {cause}", op.id));
            }
            continue;
        }
        let where_ = scope.describe(&op.device);
        verdict.violations.push(Violation::of_op(
            CheckerId::Availability,
            op,
            op.completed_ms,
            format!(
                "served, or a cause: {where_} during {}..{} or ended less than {}s before",
                secs(from),
                secs(until),
                history.availability.recovery_s
            ),
            describe_outcome(&op.outcome),
            format!(
                "{} op {} on {} for {} ended as {label} at {}, but there was no {where_}, \
                 no promotion and no operator action then or in the {}s before: with the \
                 cluster healthy every operation must be served",
                op_kind_name(op),
                op.id,
                op.device,
                op.repo,
                secs(op.completed_ms),
                history.availability.recovery_s
            ),
        ));
    }
    verdict.notes.push(format!(
        "judged {judged_count} operations that were not served ({} without a cause, \
         {expected} refusals the scenario expects)",
        verdict.violations.len()
    ));
    if let Some((late, id)) = latest {
        verdict.notes.push(format!(
            "latest failure after its cause ended: op {id}, {} later (recovery window {}s)",
            secs(late),
            history.availability.recovery_s
        ));
    }
    if !causes.is_empty() {
        verdict
            .notes
            .push(format!("first causes: {}", causes.join("; ")));
    }
    verdict
}

/// Whether an operator command clusterizes `repo` (names it, or all repositories).
fn clusterizes(command: &str, repo: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    words.contains(&"clusterize")
        && (words.contains(&repo) || words.contains(&"--all-repositories"))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    const MAIN: &str = "refs/heads/main";

    #[test]
    fn refusals_without_any_fault_are_violations() {
        let mut b = HistoryBuilder::new();
        let a = b.push(
            "R1",
            100,
            200,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::LockTimeout),
        );
        let c = b.read("R2", 300, 400, refused(ErrorKind::Other));
        let d = b.push("R2", 500, 600, &[(MAIN, Some("c0"), "c2")], unknown());
        // A compare-and-swap answer is not a failure to serve.
        b.push(
            "R2",
            700,
            800,
            &[(MAIN, Some("c9"), "c3")],
            refused(ErrorKind::Rejected),
        );
        let v = check(&b.build());
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(a), Some(c), Some(d)], "{v}");
        assert!(v.violations[0].explanation.contains("lock-timeout"));
    }

    #[test]
    fn refusals_long_after_recovery_need_a_cause() {
        let mut b = HistoryBuilder::new();
        b.with_replica();
        b.fault(1_000, FaultKind::Strike, &["db"]);
        b.fault(10_000, FaultKind::Restart, &["db"]);
        b.read("R1", 5_000, 5_100, refused(ErrorKind::DatabaseUnavailable));
        b.read(
            "R1",
            60_000,
            60_100,
            refused(ErrorKind::DatabaseUnavailable),
        );
        let late = b.read(
            "R1",
            90_000,
            90_100,
            refused(ErrorKind::DatabaseUnavailable),
        );
        let v = check(&b.build());
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(late)], "{v}");
        assert!(v.notes.iter().any(|n| n.contains("strike of db")), "{v}");
    }

    #[test]
    fn a_scenario_states_its_recovery_window_and_the_refusals_it_expects() {
        let mut b = HistoryBuilder::new();
        b.with_replica();
        b.fault(1_000, FaultKind::Strike, &["db"]);
        b.fault(10_000, FaultKind::Restart, &["db"]);
        let late = b.read(
            "R1",
            40_000,
            40_100,
            refused(ErrorKind::DatabaseUnavailable),
        );
        let busy = b.push(
            "R2",
            75_000,
            105_000,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::LockTimeout),
        );
        // The default window blames the late refusal on the strike; a lock-timeout with no
        // fault in reach has no cause.
        let v = check(&b.build());
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(busy)], "{v}");
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains(&format!("op {late}, 30.000s later"))),
            "{v}"
        );
        // A scenario that recovers within 20 s, and expects its lock waits to time out.
        b.availability(crate::history::Availability {
            recovery_s: 20,
            may_refuse: vec![ErrorKind::LockTimeout],
        });
        let v = check(&b.build());
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(late)], "{v}");
        assert!(v.violations[0].expected.contains("20s"), "{v}");
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains("1 refusals the scenario expects")),
            "{v}"
        );
    }

    #[test]
    fn unreachable_needs_a_fault_on_the_device() {
        let mut b = HistoryBuilder::new();
        b.fault(1_000, FaultKind::Strike, &["R2"]);
        b.fault(2_000, FaultKind::Restart, &["R2"]);
        b.read("R2", 1_500, 1_600, refused(ErrorKind::Unreachable));
        let wrong = b.read("R1", 1_500, 1_600, refused(ErrorKind::Unreachable));
        let v = check(&b.build());
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(wrong)], "{v}");
    }

    #[test]
    fn read_only_maintenance_and_not_bound_refusals_need_a_cause() {
        let mut b = HistoryBuilder::new();
        let push = b.push(
            "R1",
            100,
            200,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::ReadOnly),
        );
        let read = b.read("R2", 300, 400, refused(ErrorKind::ReadOnly));
        let maintenance = b.read("R1", 500, 600, refused(ErrorKind::Maintenance));
        let unbound = b.read("R2", 700, 800, refused(ErrorKind::NotBound));
        let v = check(&b.build());
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(
            ops,
            [Some(push), Some(read), Some(maintenance), Some(unbound)],
            "{v}"
        );

        // Read-only while the primary is cut off from the device (and for the recovery
        // bound after), not on a device that can reach it, nor long after.
        let mut b = HistoryBuilder::new();
        b.with_replica();
        b.fault(1_000, FaultKind::Partition, &["R1", "db"]);
        b.fault(60_000, FaultKind::Repair, &["R1", "db"]);
        b.read("R1", 30_000, 30_100, refused(ErrorKind::ReadOnly));
        b.read("R1", 70_000, 70_100, refused(ErrorKind::ReadOnly));
        let elsewhere = b.read("R2", 30_000, 30_100, refused(ErrorKind::ReadOnly));
        let late = b.read("R1", 200_000, 200_100, refused(ErrorKind::ReadOnly));
        let v = check(&b.build());
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(elsewhere), Some(late)], "{v}");

        // Maintenance and an unbound device follow from an operator action, and last
        // until someone acts again.
        let mut b = HistoryBuilder::new();
        b.read("R1", 90_000, 90_100, refused(ErrorKind::Maintenance));
        b.read("R2", 95_000, 95_100, refused(ErrorKind::NotBound));
        let mut h = b.build();
        h.operator.push(operator_action(
            5_000,
            5_100,
            "stormcell repository maintenance repo1 --config R1.toml",
        ));
        let v = check(&h);
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn lock_timeout_needs_a_fault_that_can_hold_a_lock() {
        // Only a replica was disturbed: no lock holder was struck, cut off or slowed.
        let mut b = HistoryBuilder::new();
        b.with_replica();
        b.fault(1_000, FaultKind::Strike, &["db-r1"]);
        b.fault(2_000, FaultKind::Restart, &["db-r1"]);
        b.fault(1_000, FaultKind::Lag, &["db-r1"]);
        b.fault(9_000, FaultKind::LagEnd, &["db-r1"]);
        let timeout = b.push(
            "R1",
            1_500,
            31_500,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::LockTimeout),
        );
        let v = check(&b.build());
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(timeout)], "{v}");
        // A strike of another device (perhaps the lock holder) is a cause.
        b.fault(1_200, FaultKind::Strike, &["R2"]);
        let v = check(&b.build());
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn a_repository_is_unknown_until_clusterized() {
        let mut b = HistoryBuilder::new();
        b.read("R1", 100, 200, refused(ErrorKind::Other));
        let after = b.read("R1", 90_000, 90_100, refused(ErrorKind::Other));
        let mut h = b.build();
        h.operator.push(operator_action(
            5_000,
            5_100,
            "stormcell repository clusterize repo1 --service svc",
        ));
        let v = check(&h);
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(after)], "{v}");
    }
}
