//! Checker 7, availability: with no fault active (and once a recovery window has passed
//! since the last one ended), every operation is served.
//!
//! An operation that was not served needs a cause, like the freezes do (checker 4 judges
//! the freezes themselves, checker 5 read-only refusals, and `rejected` is the answer of a
//! compare-and-swap, not a failure to serve). A cause is a fault active while the
//! operation ran, or ended less than [`RECOVERY_MS`] before it was invoked, on a host or
//! link that can cause that kind of failure, or an operator action running in the same
//! window (an operator takes locks and changes rows). A repository the operator
//! clusterizes is not known to the cluster before that: failures on it that end before
//! the clusterizing action does are caused by it.
//!
//! - `unreachable`: a fault on the operation's device or one of its links;
//! - `database-unavailable`: a fault on a database host, on the operation's device or one
//!   of its links, or a promotion of a replica;
//! - `lock-timeout`: a fault on any host or link (whoever held the lock may be the one
//!   struck or cut off), or a promotion;
//! - `other`, and outcomes the client could not learn (unknown): any fault or promotion.
//!
//! The violation names the kind of failure and the window in which nothing could cause it;
//! the notes name the first causes found for the failures that had one.

use super::timeline::{Fault, Timeline};
use super::{describe_outcome, op_kind_name, secs, CheckerId, Verdict, Violation};
use crate::history::{ErrorKind, FaultKind, History, Operation, Outcome};

/// How long after a fault ended failures are still blamed on it: the health window and a
/// database session's expiry, with slack for the requests then in flight.
pub const RECOVERY_MS: u64 = 60_000;

/// The failures this checker judges, and the label it gives them.
fn judged(op: &Operation) -> Option<(&'static str, Scope)> {
    match &op.outcome {
        Outcome::Refused { error, .. } => match error {
            ErrorKind::Unreachable => Some(("unreachable", Scope::Device)),
            ErrorKind::DatabaseUnavailable => Some(("database-unavailable", Scope::Database)),
            ErrorKind::LockTimeout => Some(("lock-timeout", Scope::Anywhere)),
            ErrorKind::Other => Some(("other", Scope::Anywhere)),
            _ => None,
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
    /// Anywhere.
    Anywhere,
}

impl Scope {
    fn allows(self, fault: &Fault, device: &str, timeline: &Timeline) -> bool {
        match self {
            Scope::Anywhere => true,
            Scope::Device => fault.involves(device),
            Scope::Database => {
                fault.involves(device) || fault.hosts.iter().any(|h| timeline.is_database_host(h))
            }
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
    let mut judged_count = 0usize;
    let mut causes: Vec<String> = Vec::new();
    for op in &history.ops {
        let Some((label, scope)) = judged(op) else {
            continue;
        };
        judged_count += 1;
        let (from, until) = (op.invoked_ms, op.completed_ms.max(op.invoked_ms));
        let in_window =
            |start: u64, end: u64| start <= until && end.saturating_add(RECOVERY_MS) > from;
        let fault = faults
            .iter()
            .find(|f| in_window(f.start_ms, f.end_ms) && scope.allows(f, &op.device, &timeline))
            .map(Fault::describe);
        let promotion = (scope != Scope::Device)
            .then(|| promotions.iter().find(|&&t| in_window(t, t)))
            .flatten()
            .map(|t| format!("promotion of a replica at {}", secs(*t)));
        let action = history
            .operator
            .iter()
            .find(|a| in_window(a.started_ms, a.completed_ms.max(a.started_ms)))
            .map(|a| format!("`{}` at {}", a.command, secs(a.started_ms)));
        let clusterize = history
            .operator
            .iter()
            .find(|a| a.ok && until <= a.completed_ms && clusterizes(&a.command, &op.repo))
            .map(|a| {
                format!(
                    "`{}` (not clusterized before {})",
                    a.command,
                    secs(a.completed_ms)
                )
            });
        if let Some(cause) = fault.or(promotion).or(action).or(clusterize) {
            if causes.len() < 5 {
                causes.push(format!("op {} ({label}) by {cause}", op.id));
            }
            continue;
        }
        let where_ = match scope {
            Scope::Device => format!("on {} or its links", op.device),
            Scope::Database => format!("on a database host or on {} or its links", op.device),
            Scope::Anywhere => "anywhere".to_owned(),
        };
        verdict.violations.push(Violation::of_op(
            CheckerId::Availability,
            op,
            op.completed_ms,
            format!(
                "served, or a fault {where_} active during {}..{} or ended less than {}s before",
                secs(from),
                secs(until),
                RECOVERY_MS / 1000
            ),
            describe_outcome(&op.outcome),
            format!(
                "{} op {} on {} for {} ended as {label} at {}, but no fault {where_}, no \
                 promotion and no operator action was active then or in the {}s before: with \
                 the cluster healthy every operation must be served",
                op_kind_name(op),
                op.id,
                op.device,
                op.repo,
                secs(op.completed_ms),
                RECOVERY_MS / 1000
            ),
        ));
    }
    verdict.notes.push(format!(
        "judged {judged_count} operations that were not served ({} without a cause)",
        verdict.violations.len()
    ));
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
    fn a_repository_is_unknown_until_clusterized() {
        let mut b = HistoryBuilder::new();
        b.read("R1", 100, 200, refused(ErrorKind::Other));
        let after = b.read("R1", 90_000, 90_100, refused(ErrorKind::Other));
        let mut h = b.build();
        h.operator.push(crate::history::OperatorAction {
            applied_ms: None,
            started_ms: 5_000,
            completed_ms: 5_100,
            command: "stormcell repository clusterize repo1 --service svc".to_owned(),
            ok: true,
            result: "ok".to_owned(),
            demoted: Vec::new(),
            promoted: Vec::new(),
            plan: None,
        });
        let v = check(&h);
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(after)], "{v}");
    }
}
