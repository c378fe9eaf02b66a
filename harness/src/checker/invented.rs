//! Checker 3, invented state: reads and the final state hold only commits the run produced,
//! produced by a push that may have taken effect, and not before that push was invoked.
//!
//! Every `(name, value)` in every read with outcome Ok (possibly stale or not) and in every
//! device's final refs must be an initial commit of that repository or the `new` of some
//! push update to the same ref name on that repository whose outcome is Ok or unknown. A
//! push refused with a definite refusal did not take effect (`rejected`, `lock-timeout`,
//! ... all say so), so its commit showing anywhere is a violation, unless another push of
//! the same commit (a client retrying elsewhere) may have taken effect. A read must also
//! not see a commit before any push that may have produced it was invoked: that would be a
//! read from the future. Anything else was made up, for example by mixing up repositories
//! or tearing a ref file.

use std::collections::{BTreeMap, BTreeSet};

use super::{end_of_run, ok_read, secs, CheckerId, Context, Verdict, Violation};
use crate::history::{History, OpKind, Operation, Outcome};

/// Why a ref value may not be where it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Provenance {
    /// An initial commit, or produced by a push that may have taken effect in time.
    Fine,
    /// Every push that produced it was invoked after the moment it was seen: the first
    /// such push and when it was invoked.
    FromTheFuture { op: u64, invoked_ms: u64 },
    /// Only pushes refused with a definite refusal produced it: the first one.
    Refused { op: u64 },
    /// Nothing produced it.
    Invented,
}

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
            let provenance = allowed.provenance(&op.repo, name, commit, Some(op.completed_ms));
            let Some((expected, why)) = explain(&provenance, &op.repo, name, commit) else {
                continue;
            };
            verdict.violations.push(Violation {
                checker: CheckerId::InventedState,
                op: Some(op.id),
                device: Some(op.device.clone()),
                repo: Some(op.repo.clone()),
                at_ms: op.completed_ms,
                expected,
                seen: commit.clone(),
                explanation: format!(
                    "read op {} on {} returned {name} at {commit} at {}, but {why}",
                    op.id,
                    op.device,
                    secs(op.completed_ms),
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
                let provenance = allowed.provenance(repo, name, commit, None);
                let Some((expected, why)) = explain(&provenance, repo, name, commit) else {
                    continue;
                };
                verdict.violations.push(Violation {
                    checker: CheckerId::InventedState,
                    op: None,
                    device: Some(device.clone()),
                    repo: Some(repo.clone()),
                    at_ms: end_ms,
                    expected,
                    seen: commit.clone(),
                    explanation: format!(
                        "the final state of device {device} holds {name} of {repo} at \
                         {commit}, but {why}"
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

/// The `expected` field and the end of the explanation of a bad provenance; `None` when
/// it is fine.
fn explain(
    provenance: &Provenance,
    repo: &str,
    name: &str,
    commit: &str,
) -> Option<(String, String)> {
    let expected = format!(
        "{name} at an initial commit of {repo} or a commit some push to {name} that may have \
         taken effect produced"
    );
    let why = match provenance {
        Provenance::Fine => return None,
        Provenance::FromTheFuture { op, invoked_ms } => format!(
            "the only push producing {commit} (op {op}) was invoked later, at {}: a read from \
             the future",
            secs(*invoked_ms)
        ),
        Provenance::Refused { op } => format!(
            "push op {op}, which produced {commit}, was refused with a definite refusal and \
             no other push of it may have taken effect: a refused push took effect"
        ),
        Provenance::Invented => {
            format!("{repo} did not start with {commit} and no push to {name} produced it")
        }
    };
    Some((expected, why))
}

/// Whether an outcome says the push did not take effect.
pub(crate) fn definitely_refused(op: &Operation) -> bool {
    matches!(op.outcome, Outcome::Refused { .. })
}

/// `(invoked_ms, op, definitely refused)` of a push that produced a commit.
type Producer = (u64, u64, bool);

/// The commits each ref of each repository may legitimately hold.
pub(crate) struct Allowed<'a> {
    /// Repository to its initial commits (under any ref name).
    initial: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// (repository, ref name, commit) to the pushes that produced it: `(invoked_ms, op,
    /// definitely refused)`, earliest invocation first among those that may have taken
    /// effect.
    pushed: BTreeMap<(&'a str, &'a str, &'a str), Vec<Producer>>,
}

impl<'a> Allowed<'a> {
    pub(crate) fn new(history: &'a History) -> Self {
        let mut initial: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for start in &history.repositories {
            initial
                .entry(start.name.as_str())
                .or_default()
                .extend(start.initial_refs.values().map(String::as_str));
        }
        let mut pushed: BTreeMap<(&str, &str, &str), Vec<Producer>> = BTreeMap::new();
        for op in &history.ops {
            if let OpKind::Push { updates } = &op.kind {
                for update in updates {
                    pushed
                        .entry((op.repo.as_str(), update.name.as_str(), update.new.as_str()))
                        .or_default()
                        .push((op.invoked_ms, op.id, definitely_refused(op)));
                }
            }
        }
        for list in pushed.values_mut() {
            list.sort_unstable_by_key(|&(invoked, id, refused)| (refused, invoked, id));
        }
        Allowed { initial, pushed }
    }

    /// Where `commit` of ref `name` may come from, for a read that completed at
    /// `seen_by_ms` (`None`: the final state, after everything).
    pub(crate) fn provenance(
        &self,
        repo: &str,
        name: &str,
        commit: &str,
        seen_by_ms: Option<u64>,
    ) -> Provenance {
        if self
            .initial
            .get(repo)
            .is_some_and(|set| set.contains(commit))
        {
            return Provenance::Fine;
        }
        if let Some(list) = self.pushed.get(&(repo, name, commit)) {
            // Sorted: pushes that may have taken effect first, earliest first.
            return match list.first() {
                Some(&(invoked, op, false)) => match seen_by_ms {
                    Some(seen) if invoked > seen => Provenance::FromTheFuture {
                        op,
                        invoked_ms: invoked,
                    },
                    _ => Provenance::Fine,
                },
                Some(&(_, op, true)) => Provenance::Refused { op },
                None => Provenance::Invented,
            };
        }
        // A salvage ref keeps a value its original ref had (PROTOCOL.md 7.1).
        match super::discards::salvaged_name(name) {
            Some((_, original)) => self.provenance(repo, original, commit, seen_by_ms),
            None => Provenance::Invented,
        }
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
            refused(ErrorKind::Unreachable),
        );
        // The client retried the same commit elsewhere, with an unknown outcome.
        b.push("R2", 410, 450, &[(MAIN, Some("c1"), "c2")], unknown());
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

    #[test]
    fn read_from_the_future_is_a_violation() {
        let mut b = HistoryBuilder::new();
        let read = b.read("R2", 100, 200, ok_refs(&[(MAIN, "c1")]));
        let push = b.push("R1", 300, 400, &[(MAIN, Some("c0"), "c1")], ok());
        b.final_refs_all(&[(MAIN, "c1")]);
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        let x = &v.violations[0];
        assert_eq!(x.op, Some(read));
        assert!(x.explanation.contains("read from the future"), "{x}");
        assert!(x.explanation.contains(&format!("op {push}")), "{x}");
    }

    #[test]
    fn refused_push_read_or_left_at_the_end_is_a_violation() {
        let mut b = HistoryBuilder::new();
        let push = b.push(
            "R1",
            100,
            200,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::LockTimeout),
        );
        let read = b.read("R2", 300, 400, ok_refs(&[(MAIN, "c1")]));
        b.final_refs("R1", &[(MAIN, "c1")]);
        let v = run(&b);
        assert_eq!(v.violations.len(), 2, "{v}");
        assert_eq!(v.violations[0].op, Some(read));
        assert_eq!(v.violations[1].op, None);
        assert_eq!(v.violations[1].device.as_deref(), Some("R1"));
        for x in &v.violations {
            assert!(x.explanation.contains("a refused push took effect"), "{x}");
            assert!(x.explanation.contains(&format!("push op {push}")), "{x}");
        }
    }
}
