//! Checker 1, durability: no acknowledged push is lost.
//!
//! For every push with outcome Ok and each of its ref updates `(name, new)`, every device
//! active at the end must hold `name` at `new` or a descendant of it. Only a run expected to
//! converge is judged: when the run ends frozen (write interruption, ambiguous leader) the
//! devices may legitimately disagree until a person acts, so the checker says it skipped.
//!
//! An update may be missing only when an operator action discarded it on purpose: the plan
//! that action printed listed the ref at that commit or a descendant as the data of a
//! device the history shows holding it, the push was acknowledged before the action began,
//! and, under the
//! stormcell profile, when the plan saw it in a readable working copy, some active device
//! keeps it under `refs/salvage/<device>/<version>/<ref>`.
//!
//! The converse holds too: a value a plan listed must not be back under its own name at
//! the end, unless something outside the cluster brought it back (see [`brought_back`]).

use std::collections::{BTreeMap, BTreeSet};

use super::discards::{salvaged_in, Discards, Listed, Value};
use super::{end_of_run, expectation_name, secs, seen_ref, CheckerId, Context, Verdict, Violation};
use crate::history::{FinalExpectation, History, OpKind};
use crate::operator::RESTORE_COMMAND;

/// Runs the durability checker.
pub(crate) fn check(history: &History, ctx: &Context) -> Verdict {
    let mut verdict = Verdict::new(CheckerId::Durability);
    if history.expect != FinalExpectation::Converged {
        verdict.notes.push(format!(
            "skipped: final expectation is {}",
            expectation_name(history.expect)
        ));
        return verdict;
    }
    // Deduplicated, in the order the history lists them.
    let mut listed: BTreeSet<&str> = BTreeSet::new();
    let active: Vec<&str> = history
        .final_state
        .active_devices
        .iter()
        .map(String::as_str)
        .filter(|d| listed.insert(d))
        .collect();
    if active.is_empty() {
        verdict
            .notes
            .push("no active devices at the end: nothing to hold the pushes".to_owned());
    }

    let discards = Discards::of(history);
    let stormcell = history.profile == "stormcell";
    let end_ms = end_of_run(history);
    let mut excused = 0usize;
    let mut pushes = 0usize;
    let mut updates_checked = 0usize;
    // A device without any refs for a repository is reported once, not once per update.
    let mut missing_repo: BTreeSet<(&str, &str)> = BTreeSet::new();
    // Ancestry of each final ref value, walked once: early pushes on a long-lived ref would
    // otherwise each walk the whole chain again.
    let mut ancestry: BTreeMap<(&str, &str, &str), BTreeSet<&str>> = BTreeMap::new();
    for op in &history.ops {
        let OpKind::Push { updates } = &op.kind else {
            continue;
        };
        if !op.outcome.is_ok() {
            continue;
        }
        pushes += 1;
        let graph = ctx.graph(&op.repo);
        for update in updates {
            updates_checked += 1;
            for &device in &active {
                let held = history
                    .final_state
                    .refs
                    .get(device)
                    .and_then(|repos| repos.get(&op.repo));
                let Some(refs) = held else {
                    if missing_repo.insert((device, op.repo.as_str())) {
                        verdict.violations.push(Violation {
                            checker: CheckerId::Durability,
                            op: Some(op.id),
                            device: Some(device.to_owned()),
                            repo: Some(op.repo.clone()),
                            at_ms: op.completed_ms,
                            expected: format!(
                                "{} at {} or a descendant (push op {} acknowledged at {})",
                                update.name,
                                update.new,
                                op.id,
                                secs(op.completed_ms)
                            ),
                            seen: format!("no refs of {} recorded on {device}", op.repo),
                            explanation: format!(
                                "active device {device} has no final state for {} at all, so \
                                 push op {} (and any later one) is not held there",
                                op.repo, op.id
                            ),
                        });
                    }
                    continue;
                };
                let holds = refs.get(&update.name).is_some_and(|commit| {
                    ancestry
                        .entry((device, op.repo.as_str(), update.name.as_str()))
                        .or_insert_with(|| graph.ancestry(commit))
                        .contains(update.new.as_str())
                });
                if holds {
                    continue;
                }
                let value = Value {
                    repo: &op.repo,
                    name: &update.name,
                    commit: &update.new,
                    device: &op.device,
                    acked_ms: op.completed_ms,
                };
                if let Some(listed) = discards.covering(graph, value, end_ms) {
                    // Discarded on purpose, as the plan said. Under stormcell what the plan
                    // saw in a working copy must still be kept under a salvage ref.
                    let salvaged = !stormcell
                        || !listed.salvageable
                        || listed.bundled
                        || active.iter().any(|d| {
                            history
                                .final_state
                                .refs
                                .get(*d)
                                .and_then(|repos| repos.get(&op.repo))
                                .is_some_and(|r| {
                                    salvaged_in(graph, r, listed.device, &update.name, &update.new)
                                })
                        });
                    if salvaged {
                        excused += 1;
                        continue;
                    }
                    verdict.violations.push(Violation {
                        checker: CheckerId::Durability,
                        op: Some(op.id),
                        device: Some(device.to_owned()),
                        repo: Some(op.repo.clone()),
                        at_ms: op.completed_ms,
                        expected: format!(
                            "refs/salvage/{}/*/{} at {} or a descendant on some active device",
                            listed.device, update.name, update.new
                        ),
                        seen: "no such salvage ref".to_owned(),
                        explanation: format!(
                            "push op {} was acknowledged, then discarded by `{}`, whose plan \
                             listed {} at {} from the working copy of {}; under the stormcell \
                             profile it must be recoverable from the salvage refs, and it is not",
                            op.id, listed.command, update.name, listed.commit, listed.device
                        ),
                    });
                    continue;
                }
                let seen = seen_ref(refs, &update.name);
                verdict.violations.push(Violation {
                    checker: CheckerId::Durability,
                    op: Some(op.id),
                    device: Some(device.to_owned()),
                    repo: Some(op.repo.clone()),
                    at_ms: op.completed_ms,
                    expected: format!(
                        "{} at {} or a descendant (push op {} acknowledged at {})",
                        update.name,
                        update.new,
                        op.id,
                        secs(op.completed_ms)
                    ),
                    seen: seen.clone(),
                    explanation: format!(
                        "push op {} to {} was acknowledged at {} but active device {device} \
                         ends with {} at {seen}, which does not contain {}: the acknowledged \
                         push was lost, and no plan printed by an operator action listed it",
                        op.id,
                        op.device,
                        secs(op.completed_ms),
                        update.name,
                        update.new
                    ),
                });
            }
        }
    }
    verdict.notes.push(format!(
        "checked {pushes} acknowledged pushes ({updates_checked} ref updates) against the \
         final refs of {} active devices",
        active.len()
    ));
    if !discards.listed.is_empty() || excused > 0 {
        verdict.notes.push(format!(
            "operator plans listed {} ref values; {excused} acknowledged updates missing at \
             the end were among them",
            discards.listed.len()
        ));
        for (l, device, value) in brought_back(history, ctx, &discards, &active) {
            verdict.violations.push(Violation {
                checker: CheckerId::Durability,
                op: None,
                device: Some(device.to_owned()),
                repo: Some(l.repo.to_owned()),
                at_ms: l.at_ms,
                expected: format!(
                    "{} without {} (discarded by `{}` at {})",
                    l.name,
                    l.commit,
                    l.command,
                    secs(l.at_ms)
                ),
                seen: value.to_owned(),
                explanation: format!(
                    "`{}` listed {} at {} from {} as discarded, and changed the rows at {}; \
                     active device {device} ends with {} at {value}, which contains it, and \
                     no later push brought it in and no later operator action promoted a \
                     row or restored a copy: the demote was undone (a sync recorded data \
                     the operator had given up)",
                    l.command,
                    l.name,
                    l.commit,
                    l.device,
                    secs(l.at_ms),
                    l.name
                ),
            });
        }
    }
    verdict
}

/// Values a plan listed as discarded that are back under their own name at the end. A
/// plan is made under the write lock and applied conditionally on the rows it read, so
/// what it lists is gone when it applies; the value can come back only from outside: a
/// push invoked afterwards that writes it (or a descendant) anew rather than building on
/// it, or a later operator action that promotes a row of that repository or restores a
/// working copy from a backup. Anything else is the cluster undoing the demote.
fn brought_back<'h>(
    history: &'h History,
    ctx: &Context,
    discards: &Discards<'h>,
    active: &[&'h str],
) -> Vec<(Listed<'h>, &'h str, &'h str)> {
    let mut out = Vec::new();
    let mut reported: BTreeSet<(&str, &str, &str)> = BTreeSet::new();
    for l in &discards.listed {
        let graph = ctx.graph(l.repo);
        let contains = |value: &str| graph.is_descendant_or_equal(value, l.commit);
        let survived = active.iter().find_map(|device| {
            let value = history
                .final_state
                .refs
                .get(*device)
                .and_then(|repos| repos.get(l.repo))
                .and_then(|refs| refs.get(l.name))?;
            contains(value).then_some((*device, value.as_str()))
        });
        let Some((device, value)) = survived else {
            continue;
        };
        let pushed_anew = history.ops.iter().any(|op| {
            let OpKind::Push { updates } = &op.kind else {
                return false;
            };
            op.repo == l.repo
                && op.invoked_ms >= l.at_ms
                && (op.outcome.is_ok() || op.outcome.is_unknown())
                && updates.iter().any(|u| {
                    u.name == l.name && contains(&u.new) && !u.old.as_deref().is_some_and(&contains)
                })
        });
        let restored = history.operator.iter().any(|a| {
            a.ok && a.started_ms >= l.at_ms
                && (a.promoted.iter().any(|p| p.repo == l.repo)
                    || a.command.starts_with(RESTORE_COMMAND))
        });
        if !pushed_anew && !restored && reported.insert((l.repo, l.name, l.commit)) {
            out.push((l.clone(), device, value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    const MAIN: &str = "refs/heads/main";

    #[test]
    fn acknowledged_push_held_everywhere_passes() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.push("R2", 300, 400, &[(MAIN, Some("c1"), "c2")], ok());
        // A descendant of the acknowledged commit is as good as the commit itself.
        b.push("R2", 500, 600, &[(MAIN, Some("c2"), "c3")], unknown());
        b.final_refs_all(&[(MAIN, "c3")]);
        let v = check(&b.build(), &Context::new(&b.build()));
        assert!(v.passed(), "{v}");
        assert!(
            v.notes[0].contains("2 acknowledged pushes"),
            "{:?}",
            v.notes
        );
    }

    #[test]
    fn lost_acknowledged_push_is_a_violation() {
        let mut b = HistoryBuilder::new();
        let lost = b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.final_refs("R1", &[(MAIN, "c1")]);
        b.final_refs("R2", &[(MAIN, "c0")]);
        let h = b.build();
        let v = check(&h, &Context::new(&h));
        assert_eq!(v.violations.len(), 1, "{v}");
        let violation = &v.violations[0];
        assert_eq!(violation.checker, CheckerId::Durability);
        assert_eq!(violation.op, Some(lost));
        assert_eq!(violation.device.as_deref(), Some("R2"));
        assert_eq!(violation.seen, "c0");
        assert!(violation.explanation.contains(MAIN));
        assert!(violation.to_string().contains("at 0.200s"), "{violation}");
    }

    #[test]
    fn missing_ref_and_missing_repo_are_violations() {
        let mut b = HistoryBuilder::new();
        let p = b.push("R1", 100, 200, &[("refs/heads/b1", None, "b1-1")], ok());
        b.final_refs("R1", &[(MAIN, "c0")]);
        b.drop_final_state("R2");
        let h = b.build();
        let v = check(&h, &Context::new(&h));
        assert_eq!(v.violations.len(), 2, "{v}");
        assert!(v.violations.iter().all(|x| x.op == Some(p)));
        assert_eq!(v.violations[0].seen, "no refs/heads/b1");
        assert!(v.violations[1].seen.contains("no refs of repo1"));
    }

    #[test]
    fn skipped_unless_converged_expected() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.expect(FinalExpectation::WriteFrozen);
        let h = b.build();
        let v = check(&h, &Context::new(&h));
        assert!(v.passed());
        assert_eq!(v.notes, ["skipped: final expectation is write-frozen"]);
    }

    /// A successful thaw at `at_ms` that demoted R1's row and whose plan listed `commit`
    /// of main on `device`.
    fn thaw(b: &mut HistoryBuilder, at_ms: u64, device: &str, commit: &str) -> History {
        let mut h = b.build();
        h.operator.push(crate::history::OperatorAction {
            applied_ms: None,
            started_ms: at_ms,
            completed_ms: at_ms + 1_000,
            command: "repository thaw repo1 --demote R1 --force".to_owned(),
            ok: true,
            result: "ok".to_owned(),
            demoted: vec![crate::history::RepoDevice {
                repo: "repo1".to_owned(),
                device: "R1".to_owned(),
            }],
            promoted: Vec::new(),
            plan: Some(vec![crate::history::PlannedDiscard {
                repo: "repo1".to_owned(),
                device: device.to_owned(),
                name: MAIN.to_owned(),
                commit: commit.to_owned(),
                salvageable: false,
                bundled: false,
            }]),
        });
        h
    }

    #[test]
    fn plans_excuse_only_earlier_pushes_on_the_devices_they_were_about() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.final_refs_all(&[(MAIN, "c0")]);
        // Acknowledged before the thaw, listed on the device it went to: excused.
        let h = thaw(&mut b, 5_000, "R1", "c1");
        let v = check(&h, &Context::new(&h));
        assert!(v.passed(), "{v}");
        // The plan was about another device that never held it.
        let h = thaw(&mut b, 5_000, "R2", "c1");
        let v = check(&h, &Context::new(&h));
        assert_eq!(v.violations.len(), 2, "{v}");
        // Acknowledged after the thaw that demoted its row began.
        let mut b = HistoryBuilder::new();
        let late = b.push("R1", 5_500, 7_000, &[(MAIN, Some("c0"), "c1")], ok());
        b.final_refs_all(&[(MAIN, "c0")]);
        let h = thaw(&mut b, 5_000, "R1", "c1");
        let v = check(&h, &Context::new(&h));
        assert_eq!(v.violations.len(), 2, "{v}");
        assert!(v.violations.iter().all(|x| x.op == Some(late)));
    }

    #[test]
    fn a_push_acknowledged_after_the_rows_changed_is_not_excused_by_the_plan() {
        // Invoked before the demote and acknowledged after it: from outside this is a push
        // the demote kept from being recorded that was acknowledged all the same.
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 9_000, &[(MAIN, Some("c0"), "c1")], ok());
        b.final_refs_all(&[(MAIN, "c0")]);
        let mut h = thaw(&mut b, 5_000, "R1", "c1");
        let v = check(&h, &Context::new(&h));
        assert!(!v.passed(), "{v}");
        // The rows changed after the acknowledgement, though the action began before it.
        h = thaw(&mut b, 8_500, "R1", "c1");
        let v = check(&h, &Context::new(&h));
        assert!(!v.passed(), "{v}");
        h.operator[0].applied_ms = Some(9_200);
        let v = check(&h, &Context::new(&h));
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn a_salvage_ref_of_the_listed_device_shows_it_held_the_value() {
        // c1 reached R2 by a sync no client saw; the plan lists it there and the salvage
        // ref of R2 keeps it: nothing is lost.
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.final_refs_all(&[(MAIN, "c0"), ("refs/salvage/R2/3/refs/heads/main", "c1")]);
        let mut h = thaw(&mut b, 5_000, "R2", "c1");
        for plan in h.operator.iter_mut().filter_map(|a| a.plan.as_mut()) {
            plan.iter_mut().for_each(|d| d.salvageable = true);
        }
        let v = check(&h, &Context::new(&h));
        assert!(v.passed(), "{v}");
        // The salvage ref of another device says nothing of R2.
        b.final_refs_all(&[(MAIN, "c0"), ("refs/salvage/R3/3/refs/heads/main", "c1")]);
        let h = thaw(&mut b, 5_000, "R2", "c1");
        let v = check(&h, &Context::new(&h));
        assert!(!v.passed(), "{v}");
    }

    #[test]
    fn a_push_of_unknown_outcome_shows_where_a_listed_descendant_was() {
        // c1 is acknowledged on R1; a push of c2 on top of it reaches R2 with an unknown
        // outcome; every copy is then lost and the plan lists c2 on R2. Giving up c2 on R2
        // gives up c1 with it, since R2 can only have taken c2 on top of c1.
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.push("R2", 300, 400, &[(MAIN, Some("c1"), "c2")], unknown());
        b.final_refs_all(&[(MAIN, "c0")]);
        let h = thaw(&mut b, 5_000, "R2", "c2");
        let v = check(&h, &Context::new(&h));
        assert!(v.passed(), "{v}");
        // A listing on a device no push of it went to still excuses nothing.
        let h = thaw(&mut b, 5_000, "R3", "c2");
        let v = check(&h, &Context::new(&h));
        assert!(!v.passed(), "{v}");
    }

    #[test]
    fn a_listed_value_back_at_the_end_is_a_violation() {
        // c1 was listed and discarded; every device ends with c2 built on it and no push
        // after the thaw wrote c1 anew: the cluster brought it back.
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.push("R1", 300, 400, &[(MAIN, Some("c1"), "c2")], ok());
        b.final_refs_all(&[(MAIN, "c2")]);
        let h = thaw(&mut b, 5_000, "R1", "c1");
        let v = check(&h, &Context::new(&h));
        assert_eq!(v.violations.len(), 1, "{v}");
        assert!(
            v.violations[0]
                .explanation
                .contains("the demote was undone"),
            "{v}"
        );
        // Not gone at all is fine when the plan listed nothing.
        let h = b.build();
        assert!(check(&h, &Context::new(&h)).passed());
    }

    #[test]
    fn a_listed_value_brought_in_again_from_outside_passes() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        // After the thaw a client pushes c1 again over what survived.
        b.push("R2", 7_000, 7_100, &[(MAIN, Some("c0"), "c1")], ok());
        b.final_refs_all(&[(MAIN, "c1")]);
        let h = thaw(&mut b, 5_000, "R1", "c1");
        let v = check(&h, &Context::new(&h));
        assert!(v.passed(), "{v}");

        // A push after the thaw that builds on c1 proves nothing: it could only land on a
        // ref already back at c1.
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        b.push("R1", 7_000, 7_100, &[(MAIN, Some("c1"), "c2")], ok());
        b.final_refs_all(&[(MAIN, "c2")]);
        let mut h = thaw(&mut b, 5_000, "R1", "c1");
        let v = check(&h, &Context::new(&h));
        assert_eq!(v.violations.len(), 1, "{v}");
        // A later promote of a row of that repository may bring back a copy that had it.
        let mut promote = h.operator[0].clone();
        promote.started_ms = 6_000;
        promote.demoted.clear();
        promote.promoted = vec![crate::history::RepoDevice {
            repo: "repo1".to_owned(),
            device: "R1".to_owned(),
        }];
        promote.plan = None;
        h.operator.push(promote);
        let v = check(&h, &Context::new(&h));
        assert!(v.passed(), "{v}");
    }
}
