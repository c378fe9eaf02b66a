//! Checker 6, convergence: after the faults stop (and the operator steps ran), the final
//! probes behave as the run expects and the cluster agrees with itself.
//!
//! - Every active device got a final read and a final push on every repository (otherwise
//!   nothing was shown there).
//! - Converged: every final operation is Ok, and for each repository every active device
//!   holds identical refs.
//! - WriteFrozen: every final read is Ok and every final push is refused as a write
//!   interruption (the freeze must outlive the faults until a person thaws it).
//! - Ambiguous: every final operation is refused as an ambiguous leader.

use std::collections::BTreeSet;

use super::{
    describe_outcome, end_of_run, expectation_name, op_kind_name, secs, seen_ref, CheckerId,
    Verdict, Violation,
};
use crate::history::{ErrorKind, FinalExpectation, History, OpKind, Operation, Outcome, Phase};

/// Runs the convergence checker.
pub(crate) fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new(CheckerId::Convergence);
    let end_ms = end_of_run(history);
    let mut listed: BTreeSet<&str> = BTreeSet::new();
    let active: Vec<&str> = history
        .final_state
        .active_devices
        .iter()
        .map(String::as_str)
        .filter(|d| listed.insert(d))
        .collect();
    let finals: Vec<&Operation> = history
        .ops
        .iter()
        .filter(|op| op.phase == Phase::Final)
        .collect();

    let mut repos: BTreeSet<&str> = history
        .repositories
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    repos.extend(finals.iter().map(|op| op.repo.as_str()));
    for &device in &active {
        for &repo in &repos {
            let probed = |push: bool| {
                finals.iter().any(|op| {
                    op.device == device
                        && op.repo == repo
                        && matches!(op.kind, OpKind::Push { .. }) == push
                })
            };
            let missing: Vec<&str> = [(false, "read"), (true, "push")]
                .iter()
                .filter(|(push, _)| !probed(*push))
                .map(|(_, what)| *what)
                .collect();
            if missing.is_empty() {
                continue;
            }
            let missing = missing.join(" and ");
            verdict.violations.push(Violation {
                checker: CheckerId::Convergence,
                op: None,
                device: Some(device.to_owned()),
                repo: Some(repo.to_owned()),
                at_ms: end_ms,
                expected: format!("a final read and a final push of {repo} on {device}"),
                seen: format!("no final {missing}"),
                explanation: format!(
                    "final probes missing: device {device} is active at the end but the final \
                     phase sent it no {missing} of {repo}, so nothing shows it serves {repo} \
                     again"
                ),
            });
        }
    }

    for op in &finals {
        let (fine, expected) = judge_final(history.expect, op);
        if fine {
            continue;
        }
        verdict.violations.push(Violation {
            checker: CheckerId::Convergence,
            op: Some(op.id),
            device: Some(op.device.clone()),
            repo: Some(op.repo.clone()),
            at_ms: op.completed_ms,
            expected: expected.to_owned(),
            seen: describe_outcome(&op.outcome),
            explanation: format!(
                "final {} op {} on {} for {} ended at {}; with final expectation {} it \
                 should be {expected}",
                op_kind_name(op),
                op.id,
                op.device,
                op.repo,
                secs(op.completed_ms),
                expectation_name(history.expect)
            ),
        });
    }

    if history.expect == FinalExpectation::Converged {
        compare_refs(history, &active, end_ms, &mut verdict);
    } else {
        verdict.notes.push(format!(
            "final refs not compared: final expectation is {}",
            expectation_name(history.expect)
        ));
    }
    verdict.notes.push(format!(
        "checked {} final ops on {} active devices",
        finals.len(),
        active.len()
    ));
    verdict
}

/// Whether a final operation behaved as `expect` requires, and a description of that.
fn judge_final(expect: FinalExpectation, op: &Operation) -> (bool, &'static str) {
    let refused_as =
        |kind: ErrorKind| matches!(&op.outcome, Outcome::Refused { error, .. } if *error == kind);
    let is_push = matches!(op.kind, OpKind::Push { .. });
    match expect {
        FinalExpectation::Converged => (op.outcome.is_ok(), "ok"),
        FinalExpectation::WriteFrozen if is_push => (
            refused_as(ErrorKind::WriteInterruption),
            "refused as write-interruption",
        ),
        FinalExpectation::WriteFrozen => (op.outcome.is_ok(), "ok"),
        FinalExpectation::Ambiguous => (
            refused_as(ErrorKind::AmbiguousLeader),
            "refused as ambiguous-leader",
        ),
        FinalExpectation::ReadOnly if is_push => {
            (refused_as(ErrorKind::ReadOnly), "refused as read-only")
        }
        FinalExpectation::ReadOnly => (op.outcome.is_ok(), "ok"),
    }
}

/// For each repository, every active device must hold the same refs. The first active
/// device that holds the repository is the reference each other device is compared to.
fn compare_refs(history: &History, active: &[&str], end_ms: u64, verdict: &mut Verdict) {
    let mut repos: BTreeSet<&str> = history
        .repositories
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    for &device in active {
        if let Some(held) = history.final_state.refs.get(device) {
            repos.extend(held.keys().map(String::as_str));
        }
    }
    let held = |device: &str, repo: &str| {
        history
            .final_state
            .refs
            .get(device)
            .and_then(|repos| repos.get(repo))
    };
    let mut compared = 0usize;
    for repo in repos {
        let Some((reference, reference_refs)) = active
            .iter()
            .find_map(|&d| held(d, repo).map(|refs| (d, refs)))
        else {
            if !active.is_empty() {
                verdict
                    .notes
                    .push(format!("{repo}: no active device has final refs recorded"));
            }
            continue;
        };
        compared += 1;
        for &device in active {
            if device == reference {
                continue;
            }
            let Some(refs) = held(device, repo) else {
                verdict.violations.push(Violation {
                    checker: CheckerId::Convergence,
                    op: None,
                    device: Some(device.to_owned()),
                    repo: Some(repo.to_owned()),
                    at_ms: end_ms,
                    expected: format!("the refs of {repo} as on {reference}"),
                    seen: format!("no refs of {repo} recorded on {device}"),
                    explanation: format!(
                        "after the final phase device {device} holds nothing for {repo} while \
                         device {reference} holds it; active devices must converge"
                    ),
                });
                continue;
            };
            let names: BTreeSet<&String> = reference_refs.keys().chain(refs.keys()).collect();
            for name in names {
                if reference_refs.get(name) == refs.get(name) {
                    continue;
                }
                let expected = match reference_refs.get(name) {
                    Some(commit) => format!("{name} at {commit} (as on {reference})"),
                    None => format!("no {name} (as on {reference})"),
                };
                let seen = seen_ref(refs, name);
                verdict.violations.push(Violation {
                    checker: CheckerId::Convergence,
                    op: None,
                    device: Some(device.to_owned()),
                    repo: Some(repo.to_owned()),
                    at_ms: end_ms,
                    expected: expected.clone(),
                    seen: seen.clone(),
                    explanation: format!(
                        "after the final phase device {device} holds {name} of {repo} as \
                         {seen}, but device {reference} holds {}; active devices must converge",
                        seen_ref(reference_refs, name)
                    ),
                });
            }
        }
    }
    verdict.notes.push(format!(
        "compared the final refs of {compared} repositories across {} active devices",
        active.len()
    ));
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    const MAIN: &str = "refs/heads/main";

    fn run(b: &HistoryBuilder) -> Verdict {
        check(&b.build())
    }

    #[test]
    fn converged_cluster_passes() {
        let mut b = HistoryBuilder::new();
        b.final_probes(1_000, &[(MAIN, "c0")]);
        let v = run(&b);
        assert!(v.passed(), "{v}");
        assert!(v
            .notes
            .iter()
            .any(|n| n == "checked 4 final ops on 2 active devices"));
    }

    #[test]
    fn divergent_final_refs_are_a_violation() {
        let mut b = HistoryBuilder::new();
        b.final_probes(1_000, &[(MAIN, "c0")]);
        b.final_refs("R1", &[(MAIN, "c1")]);
        b.final_refs("R2", &[(MAIN, "c0"), ("refs/heads/b1", "b1")]);
        let v = run(&b);
        assert_eq!(v.violations.len(), 2, "{v}");
        let x = &v.violations[0];
        assert_eq!(x.checker, CheckerId::Convergence);
        assert_eq!(x.device.as_deref(), Some("R2"));
        assert_eq!(x.repo.as_deref(), Some("repo1"));
        assert_eq!(x.expected, "no refs/heads/b1 (as on R1)");
        assert_eq!(x.seen, "b1");
        let y = &v.violations[1];
        assert_eq!(y.expected, "refs/heads/main at c1 (as on R1)");
        assert_eq!(y.seen, "c0");
        assert!(y.explanation.contains(MAIN));
        assert!(y.explanation.contains("device R1"));
    }

    #[test]
    fn inactive_devices_may_differ() {
        let mut b = HistoryBuilder::new();
        b.active(&["R1"]);
        b.final_probes(1_000, &[(MAIN, "c0")]);
        b.final_refs("R2", &[(MAIN, "old")]);
        assert!(run(&b).passed());
    }

    #[test]
    fn missing_probes_and_failed_probes_are_violations() {
        let mut b = HistoryBuilder::new();
        let failed = b.final_op("R1", 1_000, OpKind::Read, unknown());
        let v = run(&b);
        assert_eq!(v.violations.len(), 3, "{v}");
        assert_eq!(v.violations[0].device.as_deref(), Some("R1"));
        assert_eq!(v.violations[0].seen, "no final push");
        assert_eq!(v.violations[1].device.as_deref(), Some("R2"));
        assert_eq!(v.violations[1].seen, "no final read and push");
        assert!(v.violations[1].explanation.contains("final probes missing"));
        assert_eq!(v.violations[2].op, Some(failed));
        assert_eq!(v.violations[2].expected, "ok");
    }

    #[test]
    fn a_repository_without_final_probes_fails() {
        let mut b = HistoryBuilder::new();
        b.final_probes(1_000, &[(MAIN, "c0")]);
        let mut h = b.build();
        h.repositories.push(crate::history::RepositoryStart {
            name: "repo2".to_owned(),
            initial_refs: Default::default(),
            has_rows: true,
        });
        let v = check(&h);
        assert_eq!(v.violations.len(), 2, "{v}");
        assert!(v
            .violations
            .iter()
            .all(|x| x.repo.as_deref() == Some("repo2")));
    }

    #[test]
    fn write_frozen_expectation() {
        let mut b = HistoryBuilder::new();
        b.expect(FinalExpectation::WriteFrozen);
        b.final_op("R1", 1_000, OpKind::Read, ok_refs(&[(MAIN, "c0")]));
        b.final_op(
            "R1",
            1_100,
            push_kind(&[(MAIN, Some("c0"), "c1")]),
            refused(ErrorKind::WriteInterruption),
        );
        let bad = b.final_op("R2", 1_200, push_kind(&[(MAIN, Some("c0"), "c2")]), ok());
        b.final_op("R2", 1_300, OpKind::Read, ok_refs(&[(MAIN, "c2")]));
        // Divergent refs are not judged while the repository is frozen.
        b.final_refs("R2", &[(MAIN, "c2")]);
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        assert_eq!(v.violations[0].op, Some(bad));
        assert_eq!(v.violations[0].expected, "refused as write-interruption");
    }

    #[test]
    fn ambiguous_expectation() {
        let mut b = HistoryBuilder::new();
        b.expect(FinalExpectation::Ambiguous);
        b.final_op(
            "R1",
            1_000,
            OpKind::Read,
            refused(ErrorKind::AmbiguousLeader),
        );
        let bad = b.final_op("R2", 1_100, OpKind::Read, ok_refs(&[(MAIN, "c0")]));
        for device in ["R1", "R2"] {
            b.final_op(
                device,
                1_200,
                push_kind(&[(MAIN, Some("c0"), "c1")]),
                refused(ErrorKind::AmbiguousLeader),
            );
        }
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        assert_eq!(v.violations[0].op, Some(bad));
    }
}
