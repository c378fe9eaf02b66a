//! Checker 2, stale reads: a read sees every push acknowledged before it started, and reads
//! never go backwards.
//!
//! For every read R with outcome Ok that the server did not mark possibly stale:
//! - (a) for every push P with outcome Ok acknowledged before R was invoked
//!   (`P.completed_ms < R.invoked_ms`), each of P's updates `(name, new)` must show in R as
//!   `name` at `new` or a descendant;
//! - (b) for every read R1 with outcome Ok (stale or not) completed before R was invoked,
//!   each `(name, c)` R1 saw, where `c` is an initial commit or the commit of a push that
//!   may have taken effect (outcome Ok or unknown), must show in R as `name` at `c` or a
//!   descendant. A write of unknown outcome may vanish only as long as nobody saw it: once
//!   a read observed it, it took effect. The one exception is an operator's demote of the
//!   device the read saw it on: a demote gives up what that device alone had and the
//!   cluster never recorded (PROTOCOL.md 7.1).
//! - Values an operator action discarded are exempt from both rules for reads that end
//!   after the action began, when the plan it printed listed them (or a descendant) on the
//!   terms of [`super::discards`].
//! - A read the server marked possibly stale is exempt (and counted) only while the history
//!   shows its device could be read-only ([`super::read_only::possibly_read_only`]);
//!   otherwise it is judged like any other read.
//!
//! Rather than compare every pair, the reads and pushes of each repository are swept in
//! time order while keeping, per ref, a "high-water mark": the commits that every later read
//! must contain. A new requirement that an existing mark already contains is dropped, and
//! marks that the new requirement contains are replaced, so with fast-forward pushes there
//! is one mark per ref (several only when the history already split).

use std::collections::{BTreeMap, BTreeSet};

use super::discards::{Discards, Value};
use super::graph::CommitGraph;
use super::timeline::{overlaps, Timeline};
use super::{ok_read, secs, seen_ref, CheckerId, Context, Verdict, Violation};
use crate::history::{History, OpKind, Operation, Outcome};

/// A commit every later read must contain, and why.
#[derive(Debug, Clone)]
struct Mark<'a> {
    commit: &'a str,
    /// The operation that established it.
    op: u64,
    /// The device of that operation.
    device: &'a str,
    /// Whether the commit was acknowledged (or there from the start), rather than only
    /// produced by pushes of unknown outcome.
    recorded: bool,
    /// When it was established (acknowledgement or read completion).
    at_ms: u64,
}

/// High-water marks per ref name.
#[derive(Debug, Default)]
struct Frontier<'a> {
    by_ref: BTreeMap<&'a str, Vec<Mark<'a>>>,
}

impl<'a> Frontier<'a> {
    fn add(&mut self, graph: &CommitGraph, name: &'a str, mark: Mark<'a>) {
        let marks = self.by_ref.entry(name).or_default();
        if marks
            .iter()
            .any(|m| graph.is_descendant_or_equal(m.commit, mark.commit))
        {
            return;
        }
        marks.retain(|m| !graph.is_descendant_or_equal(mark.commit, m.commit));
        marks.push(mark);
    }
}

/// Runs the stale-read checker.
pub(crate) fn check(history: &History, ctx: &Context) -> Verdict {
    let mut verdict = Verdict::new(CheckerId::StaleRead);
    let mut by_repo: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        by_repo.entry(op.repo.as_str()).or_default().push(op);
    }
    // Commits a read may pin: initial commits and what pushes that may have taken effect
    // produced.
    let mut pinnable: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    // Of those, the ones the cluster recorded: initial commits and acknowledged pushes.
    let mut recorded: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for start in &history.repositories {
        for set in [&mut pinnable, &mut recorded] {
            let set = set.entry(start.name.as_str()).or_default();
            set.extend(start.initial_refs.values().map(String::as_str));
        }
    }
    for op in &history.ops {
        let refused = super::invented::definitely_refused(op);
        if let (OpKind::Push { updates }, false) = (&op.kind, refused) {
            let set = pinnable.entry(op.repo.as_str()).or_default();
            set.extend(updates.iter().map(|u| u.new.as_str()));
        }
    }

    let mut totals = Totals::default();
    let empty = BTreeSet::new();
    let discards = Discards::of(history);
    let timeline = Timeline::of(history);
    let read_only = super::read_only::possibly_read_only(history, &timeline);
    let exempt = |op: &Operation| {
        read_only
            .as_ref()
            .and_then(|windows| windows.get(op.device.as_str()))
            .is_some_and(|spans| overlaps(spans, op.invoked_ms, op.completed_ms))
    };
    for (repo, ops) in &by_repo {
        let pinnable = pinnable.get(repo).unwrap_or(&empty);
        check_repo(
            Repo {
                name: repo,
                graph: ctx.graph(repo),
                pinnable,
                recorded: recorded.get(repo).unwrap_or(&empty),
                discards: &discards,
            },
            ops,
            &exempt,
            &mut verdict,
            &mut totals,
        );
    }
    verdict.notes.push(format!(
        "checked {} reads against {} acknowledged pushes and {} earlier reads",
        totals.checked, totals.acked_pushes, totals.ok_reads
    ));
    verdict.notes.push(format!(
        "exempted {} possibly-stale reads",
        totals.possibly_stale
    ));
    if totals.marked_outside > 0 {
        verdict.notes.push(format!(
            "{} reads marked possibly stale while their device could not be read-only were \
             judged like any other",
            totals.marked_outside
        ));
    }
    if totals.without_refs > 0 {
        verdict.notes.push(format!(
            "{} ok reads carried no refs (treated as seeing none)",
            totals.without_refs
        ));
    }
    verdict
}

#[derive(Debug, Default)]
struct Totals {
    checked: usize,
    possibly_stale: usize,
    acked_pushes: usize,
    ok_reads: usize,
    without_refs: usize,
    marked_outside: usize,
}

/// What the sweep of one repository needs to know about it.
struct Repo<'a, 'h> {
    name: &'a str,
    graph: &'a CommitGraph,
    pinnable: &'a BTreeSet<&'a str>,
    recorded: &'a BTreeSet<&'a str>,
    discards: &'a Discards<'h>,
}

fn check_repo(
    repo: Repo<'_, '_>,
    ops: &[&Operation],
    exempt: &dyn Fn(&Operation) -> bool,
    verdict: &mut Verdict,
    totals: &mut Totals,
) {
    let Repo {
        name: repo,
        graph,
        pinnable,
        recorded,
        discards,
    } = repo;
    // Acknowledged pushes in order of acknowledgement.
    let mut pushes: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|op| matches!(op.kind, OpKind::Push { .. }) && op.outcome.is_ok())
        .collect();
    pushes.sort_by_key(|op| (op.completed_ms, op.id));
    // Ok reads in order of completion (the sources of "never backwards").
    let mut done_reads: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|op| ok_read(op).is_some())
        .collect();
    done_reads.sort_by_key(|op| (op.completed_ms, op.id));
    // The reads to judge, in order of invocation.
    let mut judged: Vec<&Operation> = Vec::new();
    for op in &done_reads {
        if matches!(&op.outcome, Outcome::Ok { refs: None, .. }) {
            totals.without_refs += 1;
        }
        match ok_read(op) {
            Some((_, true)) if exempt(op) => totals.possibly_stale += 1,
            Some((_, true)) => {
                totals.marked_outside += 1;
                judged.push(op);
            }
            Some((_, false)) => judged.push(op),
            None => {}
        }
    }
    judged.sort_by_key(|op| (op.invoked_ms, op.id));
    totals.acked_pushes += pushes.len();
    totals.ok_reads += done_reads.len();
    totals.checked += judged.len();

    let mut acked = Frontier::default();
    let mut observed = Frontier::default();
    let mut next_push = 0;
    let mut next_read = 0;
    for read in judged {
        while let Some(push) = pushes.get(next_push) {
            if push.completed_ms >= read.invoked_ms {
                break;
            }
            next_push += 1;
            if let OpKind::Push { updates } = &push.kind {
                for update in updates {
                    let mark = Mark {
                        commit: update.new.as_str(),
                        op: push.id,
                        device: push.device.as_str(),
                        recorded: true,
                        at_ms: push.completed_ms,
                    };
                    acked.add(graph, update.name.as_str(), mark);
                }
            }
        }
        while let Some(earlier) = done_reads.get(next_read) {
            if earlier.completed_ms >= read.invoked_ms {
                break;
            }
            next_read += 1;
            let Some((seen, _)) = ok_read(earlier) else {
                continue;
            };
            for (name, commit) in seen {
                if pinnable.contains(commit.as_str()) {
                    let mark = Mark {
                        commit: commit.as_str(),
                        op: earlier.id,
                        device: earlier.device.as_str(),
                        recorded: recorded.contains(commit.as_str()),
                        at_ms: earlier.completed_ms,
                    };
                    observed.add(graph, name.as_str(), mark);
                }
            }
        }

        let Some((refs, _)) = ok_read(read) else {
            continue;
        };
        // A value an operator's plan listed as discarded need not show in a read that ended
        // after the discarding action began (PROTOCOL.md 7.1).
        let contains = |name: &str, mark: &Mark<'_>| {
            refs.get(name)
                .is_some_and(|have| graph.is_descendant_or_equal(have, mark.commit))
                || discards
                    .covering(
                        graph,
                        Value {
                            repo,
                            name,
                            commit: mark.commit,
                            device: mark.device,
                            acked_ms: mark.at_ms,
                        },
                        read.completed_ms,
                    )
                    .is_some()
                || (!mark.recorded && discards.demoted(repo, mark.device, read.completed_ms))
        };
        // One violation per read and ref: a read that misses an acknowledged push usually
        // also goes backwards, and saying so twice adds nothing.
        let mut flagged: BTreeSet<&str> = BTreeSet::new();
        for (name, marks) in &acked.by_ref {
            if let Some(mark) = marks.iter().find(|m| !contains(name, m)) {
                flagged.insert(name);
                let seen = seen_ref(refs, name);
                verdict.violations.push(Violation {
                    checker: CheckerId::StaleRead,
                    op: Some(read.id),
                    device: Some(read.device.clone()),
                    repo: Some(repo.to_owned()),
                    at_ms: read.invoked_ms,
                    expected: format!(
                        "{name} at {} or a descendant (push op {} acknowledged at {})",
                        mark.commit,
                        mark.op,
                        secs(mark.at_ms)
                    ),
                    seen: seen.clone(),
                    explanation: format!(
                        "read op {} on {} started at {}, after push op {} was acknowledged at \
                         {}, yet saw {name} at {seen}: a stale read",
                        read.id,
                        read.device,
                        secs(read.invoked_ms),
                        mark.op,
                        secs(mark.at_ms)
                    ),
                });
            }
        }
        for (name, marks) in &observed.by_ref {
            if flagged.contains(name) {
                continue;
            }
            if let Some(mark) = marks.iter().find(|m| !contains(name, m)) {
                let seen = seen_ref(refs, name);
                verdict.violations.push(Violation {
                    checker: CheckerId::StaleRead,
                    op: Some(read.id),
                    device: Some(read.device.clone()),
                    repo: Some(repo.to_owned()),
                    at_ms: read.invoked_ms,
                    expected: format!(
                        "{name} at {} or a descendant (seen by read op {} completed at {})",
                        mark.commit,
                        mark.op,
                        secs(mark.at_ms)
                    ),
                    seen: seen.clone(),
                    explanation: format!(
                        "read op {} on {} started at {}, after read op {} had already seen \
                         {name} at {}, yet saw {name} at {seen}: reads went backwards",
                        read.id,
                        read.device,
                        secs(read.invoked_ms),
                        mark.op,
                        mark.commit
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::FaultKind;

    const MAIN: &str = "refs/heads/main";
    const B1: &str = "refs/heads/b1";

    fn run(b: &HistoryBuilder) -> Verdict {
        let h = b.build();
        check(&h, &Context::new(&h))
    }

    #[test]
    fn reads_after_acknowledgement_that_see_it_pass() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        // Concurrent with the push: may see either.
        b.read("R2", 150, 250, ok_refs(&[(MAIN, "c0")]));
        b.read("R2", 300, 400, ok_refs(&[(MAIN, "c1")]));
        b.push("R2", 500, 600, &[(MAIN, Some("c1"), "c2")], unknown());
        // c2 came from a push of unknown outcome: a later read need not see it.
        b.read("R2", 900, 1000, ok_refs(&[(MAIN, "c1")]));
        b.push("R1", 1_100, 1_200, &[(MAIN, Some("c1"), "c3")], unknown());
        // A descendant of the acknowledged commit is fine.
        b.read("R1", 1_300, 1_400, ok_refs(&[(MAIN, "c3")]));
        let v = run(&b);
        assert!(v.passed(), "{v}");
        assert_eq!(v.notes[1], "exempted 0 possibly-stale reads");
    }

    #[test]
    fn stale_read_after_ack_is_a_violation() {
        let mut b = HistoryBuilder::new();
        let push = b.push(
            "R1",
            11_000,
            11_900,
            &[(MAIN, Some("c0"), "c1"), (B1, None, "c-3-7")],
            ok(),
        );
        let read = b.read(
            "R2",
            12_345,
            12_400,
            ok_refs(&[(MAIN, "c1"), (B1, "c-3-5")]),
        );
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        let x = &v.violations[0];
        assert_eq!(x.checker, CheckerId::StaleRead);
        assert_eq!(x.op, Some(read));
        assert!(x.explanation.contains(B1));
        assert!(x.explanation.contains(&format!("push op {push}")));
        assert_eq!(
            x.to_string().split(';').next().unwrap_or_default(),
            format!(
                "[2 stale-read] op {read} on repo1/R2 at 12.345s: expected refs/heads/b1 at \
                 c-3-7 or a descendant (push op {push} acknowledged at 11.900s), saw c-3-5"
            )
        );
    }

    #[test]
    fn read_missing_an_acknowledged_ref_is_a_violation() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(B1, None, "b1-1")], ok());
        let read = b.read("R2", 300, 400, ok_refs(&[(MAIN, "c0")]));
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        assert_eq!(v.violations[0].op, Some(read));
        assert_eq!(v.violations[0].seen, "no refs/heads/b1");
    }

    #[test]
    fn backwards_read_is_a_violation() {
        let mut b = HistoryBuilder::new();
        // The push's acknowledgement came late, but a read saw its commit first.
        b.push("R1", 100, 5_000, &[(MAIN, Some("c0"), "c1")], ok());
        b.read("R1", 300, 400, ok_refs(&[(MAIN, "c1")]));
        let back = b.read("R2", 500, 600, ok_refs(&[(MAIN, "c0")]));
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        let x = &v.violations[0];
        assert_eq!(x.op, Some(back));
        assert_eq!(x.seen, "c0");
        assert!(x.explanation.contains("backwards"));
        assert!(x.explanation.contains(MAIN));
    }

    #[test]
    fn possibly_stale_read_is_exempted_and_counted_while_read_only() {
        let mut b = HistoryBuilder::new();
        b.with_replica();
        b.fault(50, FaultKind::Partition, &["R2", "db"]);
        b.fault(90_000, FaultKind::Repair, &["R2", "db"]);
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.read("R2", 300, 400, stale_refs(&[(MAIN, "c0")]));
        let v = run(&b);
        assert!(v.passed(), "{v}");
        assert_eq!(v.notes[1], "exempted 1 possibly-stale reads");
    }

    #[test]
    fn possibly_stale_marks_are_judged_when_the_device_cannot_be_read_only() {
        // No database replicas at all: no device can ever be read-only.
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        let stale = b.read("R2", 300, 400, stale_refs(&[(MAIN, "c0")]));
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        assert_eq!(v.violations[0].op, Some(stale));
        // Replicas, but the primary stays reachable from R2 (the outage is elsewhere, and
        // long over).
        let mut b = HistoryBuilder::new();
        b.with_replica();
        b.fault(50, FaultKind::Partition, &["R1", "db"]);
        b.fault(90_000, FaultKind::Repair, &["R1", "db"]);
        b.push("R1", 200_000, 200_100, &[(MAIN, Some("c0"), "c1")], ok());
        let stale = b.read("R2", 200_300, 200_400, stale_refs(&[(MAIN, "c0")]));
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        assert_eq!(v.violations[0].op, Some(stale));
    }

    #[test]
    fn possibly_stale_marks_need_a_replica_to_read_from() {
        // A database section without replicas: with the primary down there is nothing a
        // device could serve from in read-only mode.
        let mut b = HistoryBuilder::new();
        b.with_replica();
        if let Some(db) = &mut b.history.database {
            db.replicas.clear();
        }
        b.fault(50, FaultKind::Strike, &["db"]);
        b.fault(90_000, FaultKind::Restart, &["db"]);
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        let stale = b.read("R2", 300, 400, stale_refs(&[(MAIN, "c0")]));
        let v = run(&b);
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(stale)], "{v}");
        let v = crate::checker::check(crate::checker::CheckerId::Linearizable, &b.build());
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(stale)], "{v}");
    }

    #[test]
    fn an_observed_write_of_unknown_outcome_must_not_vanish() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], unknown());
        b.read("R1", 300, 400, ok_refs(&[(MAIN, "c1")]));
        let gone = b.read("R2", 500, 600, ok_refs(&[(MAIN, "c0")]));
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        assert_eq!(v.violations[0].op, Some(gone));
        assert!(v.violations[0].explanation.contains("backwards"));
    }

    #[test]
    fn possibly_stale_read_still_pins_later_reads() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 5_000, &[(MAIN, Some("c0"), "c1")], ok());
        b.read("R1", 300, 400, stale_refs(&[(MAIN, "c1")]));
        let back = b.read("R2", 500, 600, ok_refs(&[(MAIN, "c0")]));
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        assert_eq!(v.violations[0].op, Some(back));
    }

    #[test]
    fn one_violation_per_read_and_ref() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.read("R1", 300, 400, ok_refs(&[(MAIN, "c1")]));
        b.read("R2", 500, 600, ok_refs(&[(MAIN, "c0")]));
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        assert!(v.violations[0].expected.contains("push op"));
    }

    #[test]
    fn other_repositories_do_not_interfere() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.op_on(
            "repo2",
            "R2",
            300,
            400,
            OpKind::Read,
            ok_refs(&[(MAIN, "d0")]),
        );
        let v = run(&b);
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn a_demote_of_the_device_gives_up_its_unrecorded_write() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], unknown());
        b.read("R1", 300, 400, ok_refs(&[(MAIN, "c1")]));
        let gone = b.read("R2", 6_000, 6_100, ok_refs(&[(MAIN, "c0")]));
        let mut h = b.build();
        assert_eq!(check(&h, &Context::new(&h)).violations.len(), 1);
        h.operator.push(crate::history::OperatorAction {
            applied_ms: None,
            started_ms: 5_000,
            completed_ms: 5_500,
            command: "repository thaw repo1 --demote R1".to_owned(),
            ok: true,
            result: "ok".to_owned(),
            demoted: vec![crate::history::RepoDevice {
                repo: "repo1".to_owned(),
                device: "R1".to_owned(),
            }],
            promoted: Vec::new(),
            plan: Some(Vec::new()),
        });
        let v = check(&h, &Context::new(&h));
        assert!(v.passed(), "op {gone}: {v}");
    }
}
