//! Checker 4, freezes: a repository is frozen exactly when the protocol says, and frozen
//! for the right operations (`PROTOCOL.md` section 6).
//!
//! - (a) Reads go on during a write freeze: a read is never refused as a write interruption.
//! - (b) Ambiguous leader: a repository that started without version rows on a cluster of
//!   several devices is frozen for everything. Every operation on it must be refused as an
//!   ambiguous leader (an unknown outcome proves nothing, and refusals that happen before
//!   the server looks at the rows, such as an unreachable device or a lock timeout, are
//!   tolerated); an Ok, or a refusal only a repository with rows can produce (write
//!   interruption, leader lost, rejected), is a violation. Conversely an ambiguous-leader
//!   refusal on any other repository is unjustified.
//! - (c) Leader lost needs a cause: some fault active while the operation ran, or ended less
//!   than 30 s before it was invoked (devices take a while to catch up after a heal).
//! - (d) A write interruption needs a cause. `writing = true` is left behind for another
//!   writer to see only when a writer's database session died mid-push, which takes a fault
//!   on the writer's device while its push was running on the server. So a push X refused
//!   as a write interruption on repository R is justified iff some other push P on R (any
//!   client, device, outcome or phase) invoked before X was refused (X may have waited for
//!   the write lock behind P) had its device D hit while
//!   P could still be running: P's server-side window is `[invoked, completed]` for an Ok
//!   or refused P and `[invoked, end of history]` for an unknown one (the client gave up,
//!   the server may not have). D is hit when a strike on D falls inside the window, a
//!   partition involving D overlaps it, a database host (any host that is not a device) is
//!   struck inside it, or a hold (slow link) involving D overlaps it and
//!   lasts at least [`SESSION_EXPIRING_HOLD_MS`] (long enough to expire the database
//!   session; an unhealed fault lasts to the end of the history).
//!
//! - (e) Operator actions (PROTOCOL.md 7.1): a promote ends an ambiguous leader, so
//!   operations on the repository invoked after it are judged by the other rules; a demote
//!   may leave a repository without rows, so an ambiguous-leader refusal after a demote of
//!   that repository is justified.
//!
//! Other refusals are not judged here; the notes count refusals by kind.

use std::collections::{BTreeMap, BTreeSet};

use super::{describe_outcome, error_name, op_kind_name, secs, CheckerId, Verdict, Violation};
use crate::history::{ErrorKind, FaultKind, History, OpKind, Operation, Outcome};

/// How long after a fault ends a leader-lost refusal is still blamed on it.
pub const LEADER_LOST_GRACE_MS: u64 = 30_000;

/// How long a hold (slow link) on a writer's device must last to expire its database
/// session, and so possibly leave `writing` set behind it.
pub const SESSION_EXPIRING_HOLD_MS: u64 = 25_000;

/// Runs the freeze checker.
pub(crate) fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new(CheckerId::Freeze);
    let (faults, fault_notes) = fault_intervals(history);
    verdict.notes.extend(fault_notes);
    let interrupted = interrupted_pushes(history, &faults);

    let ambiguous: BTreeSet<&str> = if history.devices.len() > 1 {
        history
            .repositories
            .iter()
            .filter(|r| !r.has_rows)
            .map(|r| r.name.as_str())
            .collect()
    } else {
        BTreeSet::new()
    };
    // (e) When the operator promoted or demoted each repository first.
    // An action takes effect between its start and its end: operations overlapping it may
    // see either side.
    let mut promoted_at: BTreeMap<&str, u64> = BTreeMap::new();
    let mut demoted_at: BTreeMap<&str, u64> = BTreeMap::new();
    let mut promote_ended: BTreeMap<&str, u64> = BTreeMap::new();
    for action in history.operator.iter().filter(|a| a.ok) {
        for p in &action.promoted {
            let end = promote_ended
                .entry(p.repo.as_str())
                .or_insert(action.completed_ms);
            *end = (*end).min(action.completed_ms);
            let at = promoted_at
                .entry(p.repo.as_str())
                .or_insert(action.started_ms);
            *at = (*at).min(action.started_ms);
        }
        for d in &action.demoted {
            let at = demoted_at
                .entry(d.repo.as_str())
                .or_insert(action.started_ms);
            *at = (*at).min(action.started_ms);
        }
    }
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    let mut ambiguous_ops = 0usize;
    let mut tolerated = 0usize;
    for op in &history.ops {
        if let Outcome::Refused { error, .. } = &op.outcome {
            *refusals.entry(error_name(*error)).or_default() += 1;
        }
        let refusal = match &op.outcome {
            Outcome::Refused { error, .. } => Some(*error),
            _ => None,
        };
        let is_read = matches!(op.kind, OpKind::Read);

        // (a)
        if is_read && refusal == Some(ErrorKind::WriteInterruption) {
            verdict.violations.push(violation(
                op,
                op.completed_ms,
                "the read served (reads go on during a write freeze)".to_owned(),
                describe_outcome(&op.outcome),
                format!(
                    "read op {} on {} was refused as a write interruption at {}, but a write \
                     freeze stops only writes",
                    op.id,
                    op.device,
                    secs(op.completed_ms)
                ),
            ));
            continue;
        }

        // (b)
        let promoted_before = promoted_at
            .get(op.repo.as_str())
            .is_some_and(|&at| at <= op.completed_ms);
        if ambiguous.contains(op.repo.as_str()) && !promoted_before {
            ambiguous_ops += 1;
            let wrong = match refusal {
                None => op.outcome.is_ok(),
                Some(kind) => matches!(
                    kind,
                    ErrorKind::WriteInterruption | ErrorKind::LeaderLost | ErrorKind::Rejected
                ),
            };
            if refusal.is_some() && refusal != Some(ErrorKind::AmbiguousLeader) && !wrong {
                tolerated += 1;
            }
            if wrong {
                verdict.violations.push(violation(
                    op,
                    op.completed_ms,
                    "refused as ambiguous-leader".to_owned(),
                    describe_outcome(&op.outcome),
                    format!(
                        "{} op {} on {}: {} started without version rows on a cluster of {} \
                         devices, so it should be frozen as ambiguous leader",
                        op_kind_name(op),
                        op.id,
                        op.device,
                        op.repo,
                        history.devices.len()
                    ),
                ));
            }
            continue;
        }

        match refusal {
            Some(ErrorKind::AmbiguousLeader)
                if demoted_at
                    .get(op.repo.as_str())
                    .is_some_and(|&at| at <= op.completed_ms)
                    || (ambiguous.contains(op.repo.as_str())
                        && promote_ended
                            .get(op.repo.as_str())
                            .is_some_and(|&end| op.invoked_ms <= end)) => {}
            Some(ErrorKind::AmbiguousLeader) => {
                let why = if !history.repositories.iter().any(|r| r.name == op.repo) {
                    format!("{} is not among the history's repositories", op.repo)
                } else if history.devices.len() <= 1 {
                    "the cluster has a single device, which simply takes the lead".to_owned()
                } else {
                    format!("{} started with version rows", op.repo)
                };
                verdict.violations.push(violation(
                    op,
                    op.completed_ms,
                    "no ambiguous-leader refusal".to_owned(),
                    describe_outcome(&op.outcome),
                    format!(
                        "{} op {} on {} was refused as ambiguous leader at {}, but {why}",
                        op_kind_name(op),
                        op.id,
                        op.device,
                        secs(op.completed_ms)
                    ),
                ));
            }
            // (c)
            Some(ErrorKind::LeaderLost) => {
                let justified = faults.iter().any(|f| {
                    f.start_ms <= op.completed_ms
                        && f.end_ms.is_none_or(|end| {
                            end.saturating_add(LEADER_LOST_GRACE_MS) > op.invoked_ms
                        })
                });
                if !justified {
                    verdict.violations.push(violation(
                        op,
                        op.completed_ms,
                        format!(
                            "a fault active during {}..{} or ended less than {}s before",
                            secs(op.invoked_ms),
                            secs(op.completed_ms),
                            LEADER_LOST_GRACE_MS / 1000
                        ),
                        describe_outcome(&op.outcome),
                        format!(
                            "{} op {} on {} was refused as leader lost at {}, but no fault \
                             was active then or shortly before: leaders should be fetchable",
                            op_kind_name(op),
                            op.id,
                            op.device,
                            secs(op.completed_ms)
                        ),
                    ));
                }
            }
            // (d)
            Some(ErrorKind::WriteInterruption) => {
                // The two earliest interrupted pushes on the repository: if the first is
                // this very push, the second may still justify it.
                let justified = interrupted.get(op.repo.as_str()).is_some_and(|earliest| {
                    earliest
                        .iter()
                        .any(|&(invoked, id)| id != op.id && invoked < op.completed_ms)
                });
                if !justified {
                    verdict.violations.push(violation(
                        op,
                        op.completed_ms,
                        format!(
                            "a push on {} invoked before {} whose device was struck, \
                             partitioned or held for at least {}s while the push was running",
                            op.repo,
                            secs(op.completed_ms),
                            SESSION_EXPIRING_HOLD_MS / 1000
                        ),
                        describe_outcome(&op.outcome),
                        format!(
                            "push op {} on {} to {} was refused as a write interruption at {}, \
                             but no push on {} had its device struck or cut off while it was \
                             running before op {}, so no writer's session can have died \
                             mid-push and left {} frozen for writes",
                            op.id,
                            op.device,
                            op.repo,
                            secs(op.completed_ms),
                            op.repo,
                            op.id,
                            op.repo
                        ),
                    ));
                }
            }
            _ => {}
        }
    }

    let counts: Vec<String> = refusals.iter().map(|(k, n)| format!("{k} {n}")).collect();
    verdict.notes.push(if counts.is_empty() {
        "refusals by kind: none".to_owned()
    } else {
        format!("refusals by kind: {}", counts.join(", "))
    });
    if !ambiguous.is_empty() {
        let names: Vec<&str> = ambiguous.iter().copied().collect();
        verdict.notes.push(format!(
            "ambiguous-leader repositories: {} ({ambiguous_ops} ops, {tolerated} refused \
             before the rows are looked at)",
            names.join(", ")
        ));
    }
    verdict
}

fn violation(
    op: &Operation,
    at_ms: u64,
    expected: String,
    seen: String,
    explanation: String,
) -> Violation {
    Violation::of_op(CheckerId::Freeze, op, at_ms, expected, seen, explanation)
}

/// Per repository, the (at most two) earliest pushes, as `(invoked_ms, id)` in increasing
/// order, whose device was hit by a fault while the push could be running on the server
/// (rule (d)). Two, so that a push that is itself interrupted can still be justified by
/// another one.
fn interrupted_pushes<'h>(
    history: &'h History,
    faults: &[FaultInterval],
) -> BTreeMap<&'h str, Vec<(u64, u64)>> {
    let end_of_history = history
        .ops
        .iter()
        .map(|op| op.completed_ms.max(op.invoked_ms))
        .chain(history.faults.iter().map(|f| f.at_ms))
        .max()
        .unwrap_or(0);
    let index = HostFaults::index(history, faults, end_of_history);
    let mut earliest: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for op in &history.ops {
        if !matches!(op.kind, OpKind::Push { .. }) {
            continue;
        }
        let until = match op.outcome {
            Outcome::Unknown { .. } => end_of_history.max(op.invoked_ms),
            Outcome::Ok { .. } | Outcome::Refused { .. } => op.completed_ms.max(op.invoked_ms),
        };
        // A struck database host kills every session on it, so it hits every writer.
        let hit = index
            .iter()
            .filter(|(host, _)| **host == op.device || !history.devices.iter().any(|d| d == **host))
            .any(|(host, h)| {
                if **host == op.device {
                    h.hit_during(op.invoked_ms, until)
                } else {
                    h.struck_during(op.invoked_ms, until)
                }
            });
        if hit {
            let list = earliest.entry(op.repo.as_str()).or_default();
            list.push((op.invoked_ms, op.id));
            list.sort_unstable();
            list.truncate(2);
        }
    }
    earliest
}

/// The faults that can kill a database session of one host, indexed for window queries.
#[derive(Debug, Default)]
struct HostFaults {
    /// Times of strikes on the host, sorted.
    strikes: Vec<u64>,
    /// Partitions and session-expiring holds involving the host, as `(start, end)` sorted
    /// by start (an unhealed one ends at the end of the history).
    cuts: Vec<(u64, u64)>,
    /// `cut_end_max[i]`: the latest end among `cuts[..=i]`.
    cut_end_max: Vec<u64>,
}

impl HostFaults {
    fn index<'a>(
        history: &'a History,
        faults: &'a [FaultInterval],
        end_of_history: u64,
    ) -> BTreeMap<&'a str, HostFaults> {
        let mut index: BTreeMap<&str, HostFaults> = BTreeMap::new();
        for event in &history.faults {
            if event.kind == FaultKind::Strike {
                for host in &event.hosts {
                    index
                        .entry(host.as_str())
                        .or_default()
                        .strikes
                        .push(event.at_ms);
                }
            }
        }
        for fault in faults {
            let end = fault.end_ms.unwrap_or(end_of_history).max(fault.start_ms);
            let counts = match fault.kind {
                FaultKind::Partition => true,
                FaultKind::Hold => end - fault.start_ms >= SESSION_EXPIRING_HOLD_MS,
                // A push whose working copy cannot be made durable is left `writing`.
                FaultKind::DiskFailing => true,
                _ => false,
            };
            if !counts {
                continue;
            }
            for host in &fault.hosts {
                index
                    .entry(host.as_str())
                    .or_default()
                    .cuts
                    .push((fault.start_ms, end));
            }
        }
        for host in index.values_mut() {
            host.strikes.sort_unstable();
            host.cuts.sort_unstable();
            let mut latest = 0;
            host.cut_end_max = host
                .cuts
                .iter()
                .map(|&(_, end)| {
                    latest = latest.max(end);
                    latest
                })
                .collect();
        }
        index
    }

    /// Whether a strike falls in `[from, until]`.
    fn struck_during(&self, from: u64, until: u64) -> bool {
        let first_strike = self.strikes.partition_point(|&t| t < from);
        self.strikes.get(first_strike).is_some_and(|&t| t <= until)
    }

    /// Whether a strike falls in `[from, until]` or a cut overlaps it.
    fn hit_during(&self, from: u64, until: u64) -> bool {
        if self.struck_during(from, until) {
            return true;
        }
        // Among the cuts that started by `until`, is the latest end at or after `from`?
        let started = self.cuts.partition_point(|&(start, _)| start <= until);
        started > 0 && self.cut_end_max[started - 1] >= from
    }
}

/// When a fault was in force: from its start event to its matching end (`None`: never
/// healed before the run ended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultInterval {
    /// The start event's kind (`Strike`, `Partition` or `Hold`).
    pub kind: FaultKind,
    /// The start event's hosts.
    pub hosts: Vec<String>,
    /// The start event's time.
    pub start_ms: u64,
    /// The matching end event's time, if any.
    pub end_ms: Option<u64>,
}

/// Pairs every fault start with its end: `Strike`/`Restart` of the same host,
/// `Partition`/`Repair` and `Hold`/`Release` of the same unordered pair of hosts. An end
/// closes the oldest open start of its kind and hosts. Also returns notes about ends that
/// match nothing.
pub fn fault_intervals(history: &History) -> (Vec<FaultInterval>, Vec<String>) {
    let mut events: Vec<&crate::history::FaultEvent> = history.faults.iter().collect();
    // Stable: events at the same time keep the history's order.
    events.sort_by_key(|f| f.at_ms);
    let mut intervals: Vec<FaultInterval> = Vec::new();
    let mut open: BTreeMap<(u8, Vec<&str>), Vec<usize>> = BTreeMap::new();
    let mut unmatched = 0usize;
    for event in events {
        let (family, starts) = match event.kind {
            FaultKind::Strike => (0, true),
            FaultKind::Restart => (0, false),
            FaultKind::Partition => (1, true),
            FaultKind::Repair => (1, false),
            FaultKind::Hold => (2, true),
            FaultKind::Release => (2, false),
            FaultKind::Lag => (3, true),
            FaultKind::LagEnd => (3, false),
            FaultKind::DiskFailing => (4, true),
            FaultKind::DiskRecovered => (4, false),
            // An operator action at one instant, not a fault in force for a while.
            FaultKind::Promote => continue,
        };
        let mut hosts: Vec<&str> = event.hosts.iter().map(String::as_str).collect();
        hosts.sort_unstable();
        let key = (family, hosts);
        if starts {
            open.entry(key).or_default().push(intervals.len());
            intervals.push(FaultInterval {
                kind: event.kind,
                hosts: event.hosts.clone(),
                start_ms: event.at_ms,
                end_ms: None,
            });
        } else {
            let started = open.get_mut(&key).and_then(|queue| {
                if queue.is_empty() {
                    None
                } else {
                    Some(queue.remove(0))
                }
            });
            match started.and_then(|i| intervals.get_mut(i)) {
                Some(interval) => interval.end_ms = Some(event.at_ms),
                None => unmatched += 1,
            }
        }
    }
    let mut notes = Vec::new();
    if unmatched > 0 {
        notes.push(format!(
            "{unmatched} fault end events match no earlier start (ignored)"
        ));
    }
    (intervals, notes)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::Phase;

    const MAIN: &str = "refs/heads/main";

    fn run(b: &HistoryBuilder) -> Verdict {
        check(&b.build())
    }

    #[test]
    fn read_refused_with_write_interruption_is_a_violation() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 40, 60, &[(MAIN, Some("c0"), "c1")], unknown());
        b.fault(50, FaultKind::Strike, &["R1"]);
        // A push refused this way after a writer was struck mid-push is fine.
        b.push(
            "R1",
            100,
            200,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::WriteInterruption),
        );
        let read = b.read("R2", 300, 400, refused(ErrorKind::WriteInterruption));
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        let x = &v.violations[0];
        assert_eq!(x.checker, CheckerId::Freeze);
        assert_eq!(x.op, Some(read));
        assert!(x.explanation.contains("write interruption"));
        assert!(v
            .notes
            .iter()
            .any(|n| n == "refusals by kind: write-interruption 2"));
    }

    /// Records a push on `device` refused as a write interruption.
    fn interrupted(b: &mut HistoryBuilder, device: &str, from: u64, to: u64) -> u64 {
        b.push(
            device,
            from,
            to,
            &[(MAIN, Some("c0"), "c9")],
            refused(ErrorKind::WriteInterruption),
        )
    }

    /// The ids of the ops the checker blamed.
    fn blamed(b: &HistoryBuilder) -> Vec<u64> {
        run(b).violations.iter().filter_map(|x| x.op).collect()
    }

    #[test]
    fn unjustified_write_interruption_is_a_violation() {
        let mut b = HistoryBuilder::new();
        b.push(
            "R1",
            100,
            200,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::Rejected),
        );
        let p = interrupted(&mut b, "R1", 300, 400);
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        let x = &v.violations[0];
        assert_eq!(x.op, Some(p));
        assert_eq!(x.device.as_deref(), Some("R1"));
        assert_eq!(x.repo.as_deref(), Some("repo1"));
        assert_eq!(x.at_ms, 400);
        assert!(
            x.explanation.contains(&format!(
                "no push on repo1 had its device struck or cut off while it was running \
                 before op {p}"
            )),
            "{}",
            x.explanation
        );
        assert!(x.explanation.contains(&format!("push op {p} on R1")));
    }

    #[test]
    fn strike_on_the_device_during_an_ok_push_justifies() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], ok());
        b.fault(2_000, FaultKind::Strike, &["R1"]);
        b.fault(9_000, FaultKind::Restart, &["R1"]);
        interrupted(&mut b, "R2", 5_000, 5_100);
        // Invoked at the same time as the struck push: still justified.
        interrupted(&mut b, "R2", 1_000, 1_100);
        let v = run(&b);
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn strike_after_the_client_gave_up_on_an_unknown_push_justifies() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], unknown());
        b.fault(60_000, FaultKind::Strike, &["R1"]);
        interrupted(&mut b, "R2", 5_000, 5_100);
        let v = run(&b);
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn strike_after_an_ok_push_completed_does_not_justify() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], ok());
        b.fault(3_500, FaultKind::Strike, &["R1"]);
        let x = interrupted(&mut b, "R2", 5_000, 5_100);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn strike_on_another_device_does_not_justify() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], unknown());
        b.fault(2_000, FaultKind::Strike, &["R2"]);
        // The refused push's own device is struck while it runs: it cannot justify itself.
        let x = interrupted(&mut b, "R2", 1_500, 2_500);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn strike_before_the_push_started_does_not_justify() {
        let mut b = HistoryBuilder::new();
        b.fault(500, FaultKind::Strike, &["R1"]);
        b.fault(800, FaultKind::Restart, &["R1"]);
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], unknown());
        let x = interrupted(&mut b, "R2", 5_000, 5_100);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn struck_push_invoked_later_does_not_justify() {
        let mut b = HistoryBuilder::new();
        let x = interrupted(&mut b, "R2", 500, 600);
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], ok());
        b.fault(2_000, FaultKind::Strike, &["R1"]);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn struck_push_on_another_repo_does_not_justify() {
        let mut b = HistoryBuilder::new();
        b.op_on(
            "repo2",
            "R1",
            1_000,
            3_000,
            push_kind(&[(MAIN, Some("c0"), "c1")]),
            ok(),
        );
        b.fault(2_000, FaultKind::Strike, &["R1"]);
        let x = interrupted(&mut b, "R2", 5_000, 5_100);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn short_hold_during_the_push_does_not_justify() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], unknown());
        b.fault(1_500, FaultKind::Hold, &["R1", "db"]);
        b.fault(3_500, FaultKind::Release, &["db", "R1"]);
        let x = interrupted(&mut b, "R2", 5_000, 5_100);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn unhealed_hold_shorter_than_the_session_does_not_justify() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], unknown());
        b.fault(1_500, FaultKind::Hold, &["R1", "db"]);
        // The history ends 10 s after the hold began.
        let x = interrupted(&mut b, "R2", 5_000, 11_500);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn session_expiring_hold_during_the_push_justifies() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], ok());
        b.fault(1_500, FaultKind::Hold, &["R1", "db"]);
        b.fault(31_500, FaultKind::Release, &["db", "R1"]);
        interrupted(&mut b, "R2", 40_000, 40_100);
        let v = run(&b);
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn partition_overlapping_the_push_justifies() {
        let mut b = HistoryBuilder::new();
        // Cut before the push began, repaired while it ran.
        b.fault(500, FaultKind::Partition, &["db", "R1"]);
        b.fault(1_200, FaultKind::Repair, &["R1", "db"]);
        b.push(
            "R1",
            1_000,
            3_000,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::DatabaseUnavailable),
        );
        interrupted(&mut b, "R2", 5_000, 5_100);
        let v = run(&b);
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn earlier_push_of_unknown_outcome_alone_does_not_justify() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], unknown());
        b.push(
            "R1",
            250,
            280,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::LockTimeout),
        );
        let x = interrupted(&mut b, "R2", 300, 400);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn leader_lost_during_or_shortly_after_a_fault_is_justified() {
        let mut b = HistoryBuilder::new();
        b.fault(1_000, FaultKind::Partition, &["R1", "R2"]);
        b.fault(2_000, FaultKind::Repair, &["R2", "R1"]);
        b.read("R1", 1_500, 1_600, refused(ErrorKind::LeaderLost));
        b.read("R1", 31_000, 31_100, refused(ErrorKind::LeaderLost));
        // Started before the fault, still running when it struck.
        b.read("R2", 500, 1_200, refused(ErrorKind::LeaderLost));
        let v = run(&b);
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn unjustified_leader_lost_is_a_violation() {
        let mut b = HistoryBuilder::new();
        b.fault(1_000, FaultKind::Strike, &["R1"]);
        b.fault(2_000, FaultKind::Restart, &["R1"]);
        // 30 s after the restart: too late to blame it.
        let late = b.read("R2", 32_000, 32_100, refused(ErrorKind::LeaderLost));
        // Before any fault.
        let early = b.push(
            "R2",
            100,
            900,
            &[(MAIN, Some("c0"), "c1")],
            refused(ErrorKind::LeaderLost),
        );
        let v = run(&b);
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(late), Some(early)], "{v}");
        assert!(v.violations[0].explanation.contains("leader lost"));
    }

    #[test]
    fn unhealed_fault_stays_active() {
        let mut b = HistoryBuilder::new();
        b.fault(1_000, FaultKind::Hold, &["R1", "db"]);
        b.fault(1_500, FaultKind::Release, &["R1", "R2"]);
        b.read("R1", 90_000, 90_100, refused(ErrorKind::LeaderLost));
        let v = run(&b);
        assert!(v.passed(), "{v}");
        assert!(v.notes[0].contains("1 fault end events match no earlier start"));
    }

    #[test]
    fn ambiguous_repo_op_succeeding_is_a_violation() {
        let mut b = HistoryBuilder::new();
        b.has_rows(false);
        b.read("R1", 100, 200, refused(ErrorKind::AmbiguousLeader));
        b.push("R2", 100, 200, &[(MAIN, Some("c0"), "c1")], unknown());
        b.read("R2", 300, 400, refused(ErrorKind::Unreachable));
        let bad = b.read("R2", 500, 600, ok_refs(&[(MAIN, "c0")]));
        let final_push = b.final_op(
            "R1",
            1_000,
            push_kind(&[(MAIN, Some("c0"), "c2")]),
            refused(ErrorKind::LeaderLost),
        );
        let v = run(&b);
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(bad), Some(final_push)], "{v}");
        assert!(v.violations[0]
            .explanation
            .contains("should be frozen as ambiguous leader"));
        assert!(v.violations[0].explanation.contains("repo1"));
        assert_eq!(b.build().ops[4].phase, Phase::Final);
    }

    #[test]
    fn ambiguous_leader_on_a_repo_with_rows_is_a_violation() {
        let mut b = HistoryBuilder::new();
        let op = b.read("R1", 100, 200, refused(ErrorKind::AmbiguousLeader));
        let v = run(&b);
        assert_eq!(v.violations.len(), 1, "{v}");
        assert_eq!(v.violations[0].op, Some(op));
        assert!(v.violations[0]
            .explanation
            .contains("started with version rows"));
    }

    #[test]
    fn single_device_repo_without_rows_is_not_ambiguous() {
        let mut b = HistoryBuilder::new();
        b.has_rows(false);
        let mut h = b.build();
        h.devices.truncate(1);
        h.ops.clear();
        let v = check(&h);
        assert!(v.passed(), "{v}");
    }
}
