//! Checker 3, invented state: reads and the final state hold only commits the run produced.
//!
//! Every `(name, value)` in every read with outcome Ok (possibly stale or not) and in every
//! device's final refs must be an initial commit of that repository or the `new` of some
//! push update to the same ref name on that repository, whatever that push's outcome (a push
//! of unknown outcome, or even a refused one whose objects reached a disk, may surface).
//! Anything else was made up, for example by mixing up repositories or tearing a ref file.

use std::collections::{BTreeMap, BTreeSet};

use super::{end_of_run, ok_read, secs, CheckerId, Context, Verdict, Violation};
use crate::history::{History, OpKind};

/// Runs the invented-state checker.
pub(crate) fn check(history: &History, ctx: &Context) -> Verdict {
    let mut verdict = Verdict::new(CheckerId::InventedState);
    let allowed = Allowed::new(history);
    let mut reads = 0usize;
    let mut values = 0usize;
    for op in &history.ops {
        let Some((refs, _)) = ok_read(op) else {
            continue;
        };
        reads += 1;
        for (name, commit) in refs {
            values += 1;
            if allowed.allows(&op.repo, name, commit) {
                continue;
            }
            verdict.violations.push(Violation {
                checker: CheckerId::InventedState,
                op: Some(op.id),
                device: Some(op.device.clone()),
                repo: Some(op.repo.clone()),
                at_ms: op.completed_ms,
                expected: format!(
                    "{name} at an initial commit of {} or a commit some push to {name} produced",
                    op.repo
                ),
                seen: commit.clone(),
                explanation: format!(
                    "read op {} on {} returned {name} at {commit} at {}, but {} did not start \
                     with {commit} and no push to {name} produced it",
                    op.id,
                    op.device,
                    secs(op.completed_ms),
                    op.repo
                ),
            });
        }
    }

    // The final state is read off the devices after every operation.
    let end_ms = end_of_run(history);
    let mut final_sets = 0usize;
    for (device, repos) in &history.final_state.refs {
        for (repo, refs) in repos {
            final_sets += 1;
            for (name, commit) in refs {
                values += 1;
                if allowed.allows(repo, name, commit) {
                    continue;
                }
                verdict.violations.push(Violation {
                    checker: CheckerId::InventedState,
                    op: None,
                    device: Some(device.clone()),
                    repo: Some(repo.clone()),
                    at_ms: end_ms,
                    expected: format!(
                        "{name} at an initial commit of {repo} or a commit some push to {name} \
                         produced"
                    ),
                    seen: commit.clone(),
                    explanation: format!(
                        "the final state of device {device} holds {name} of {repo} at \
                         {commit}, but {repo} did not start with {commit} and no push to \
                         {name} produced it"
                    ),
                });
            }
        }
    }

    verdict.notes.push(format!(
        "checked {values} ref values in {reads} ok reads and {final_sets} final ref sets"
    ));
    // Malformed ancestry does not break this rule, but the other checkers rely on it.
    for (repo, graph) in ctx.graphs() {
        for anomaly in graph.anomalies() {
            verdict.notes.push(format!("{repo}: {anomaly}"));
        }
    }
    verdict
}

/// The commits each ref of each repository may legitimately hold.
struct Allowed<'a> {
    /// Repository to its initial commits (under any ref name).
    initial: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// (repository, ref name) to every commit a push update of that ref produced.
    pushed: BTreeMap<(&'a str, &'a str), BTreeSet<&'a str>>,
}

impl<'a> Allowed<'a> {
    fn new(history: &'a History) -> Self {
        let mut initial: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for start in &history.repositories {
            initial
                .entry(start.name.as_str())
                .or_default()
                .extend(start.initial_refs.values().map(String::as_str));
        }
        let mut pushed: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
        for op in &history.ops {
            if let OpKind::Push { updates } = &op.kind {
                for update in updates {
                    pushed
                        .entry((op.repo.as_str(), update.name.as_str()))
                        .or_default()
                        .insert(update.new.as_str());
                }
            }
        }
        Allowed { initial, pushed }
    }

    fn allows(&self, repo: &str, name: &str, commit: &str) -> bool {
        self.initial
            .get(repo)
            .is_some_and(|set| set.contains(commit))
            || self
                .pushed
                .get(&(repo, name))
                .is_some_and(|set| set.contains(commit))
            // A salvage ref keeps a value its original ref had (PROTOCOL.md 7.1).
            || super::discards::salvaged_name(name)
                .is_some_and(|(_, original)| self.allows(repo, original, commit))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::ErrorKind;

    const MAIN: &str = "refs/heads/main";

    fn run(b: &HistoryBuilder) -> Verdict {
        let h = b.build();
        check(&h, &Context::new(&h))
    }

    #[test]
    fn produced_commits_pass_whatever_the_push_outcome() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], unknown());
        b.push(
            "R1",
            300,
            400,
            &[(MAIN, Some("c1"), "c2")],
            refused(ErrorKind::Rejected),
        );
        b.read("R2", 500, 600, ok_refs(&[(MAIN, "c2")]));
        b.read("R2", 700, 800, stale_refs(&[(MAIN, "c1")]));
        b.final_refs_all(&[(MAIN, "c1")]);
        let v = run(&b);
        assert!(v.passed(), "{v}");
        assert_eq!(
            v.notes[0],
            "checked 4 ref values in 2 ok reads and 2 final ref sets"
        );
    }

    #[test]
    fn invented_commit_in_a_read_is_a_violation() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
        let read = b.read(
            "R2",
            300,
            400,
            ok_refs(&[(MAIN, "c1"), ("refs/heads/x", "zz")]),
        );
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        let x = &v.violations[0];
        assert_eq!(x.checker, CheckerId::InventedState);
        assert_eq!(x.op, Some(read));
        assert_eq!(x.seen, "zz");
        assert!(x.explanation.contains("refs/heads/x"));
    }

    #[test]
    fn commit_pushed_to_another_ref_is_invented_here() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[("refs/heads/b1", None, "b1-1")], ok());
        b.final_refs("R2", &[(MAIN, "b1-1")]);
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        let x = &v.violations[0];
        assert_eq!(x.op, None);
        assert_eq!(x.device.as_deref(), Some("R2"));
        assert!(x.explanation.contains(MAIN));
        assert_eq!(x.at_ms, 200);
    }
}
