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
//! - (c) Leader lost needs a cause that can make this device unable to fetch from a
//!   leader: any fault on this device or one of its links, a strike of another device
//!   (a leader down), a partition between another device and a database host (a leader
//!   whose copy cannot be vouched for; a cut between two other devices leaves this device
//!   free to fetch from both), or a hold on another device long enough to
//!   expire its database session ([`SESSION_EXPIRING_HOLD_MS`]), active while the
//!   operation ran or ended less than
//!   [`LEADER_LOST_GRACE_MS`] before it was invoked (devices take a while to catch up after
//!   a heal). A fault between two other hosts is no cause. The message names the fault.
//!   A push interrupted on another device (as in (d), while the freeze it left lasts) is a
//!   cause too: that leader's copy holds refs its row does not vouch for until the write is
//!   recorded or recovered, so it cannot be copied from.
//!   A device that lost its disk may have held the only copy of the newest version, which
//!   freezes the repository until an operator acts, so a disk loss justifies leader-lost
//!   refusals from the loss until the first operator action that begins after it.
//! - (d) A write interruption needs a cause. `writing = true` is left behind for another
//!   writer to see only when a writer's database session died mid-push, which takes a fault
//!   on the writer's device or database link, or on the database host, while its push was
//!   running on the server, or a promotion that lost the row clearing a push's `writing`
//!   (the flag is back on the new primary, though the push ended). So a push X refused as a write interruption on repository R is
//!   justified iff some other push P on R (any client, device, outcome or phase), invoked
//!   before X was refused, was hit at a moment `h` no later than X's refusal, and X was
//!   invoked while the freeze P left can still last. P's server-side window is
//!   `[invoked, completed]` for an Ok or refused P and `[invoked, end of history]` for an
//!   unknown one (the client gave up, the server may not have). P is hit by a strike of its
//!   device D or of a database host inside the window (at the strike), or by a partition
//!   between D and a database host, or a hold of that link lasting at least
//!   [`SESSION_EXPIRING_HOLD_MS`], overlapping it (at the later of its start and P's
//!   invocation). A partition between D and another device does not touch its database
//!   session. The freeze lasts, under stormcell (fenced recovery, PROTOCOL.md 6), until
//!   [`WRITE_FREEZE_GRACE_MS`] after D is reachable again and the database is up (the end
//!   of the run of faults on D and on the database hosts that holds `h`); under phabricator
//!   until an operator action on R begins.
//!
//! - (e) Operator actions (PROTOCOL.md 7.1): a promote ends an ambiguous leader, so
//!   operations on the repository invoked after it are judged by the other rules; a demote
//!   may leave a repository without rows, so an ambiguous-leader refusal after a demote of
//!   that repository is justified.
//!
//! Other refusals are not judged here; the notes count refusals by kind.

use std::collections::{BTreeMap, BTreeSet};

use super::timeline::{merge, span_at, Fault, Spans, Timeline};
use super::{describe_outcome, error_name, op_kind_name, secs, CheckerId, Verdict, Violation};
use crate::history::{ErrorKind, FaultKind, History, OpKind, Operation, Outcome};

/// How long after a fault ends a leader-lost refusal is still blamed on it.
pub const LEADER_LOST_GRACE_MS: u64 = 30_000;

/// How long a hold (slow link) on a writer's device must last to expire its database
/// session, and so possibly leave `writing` set behind it.
pub const SESSION_EXPIRING_HOLD_MS: u64 = 25_000;

/// How long after an interrupted writer's device is reachable again (and the database is
/// up) a write interruption may still be seen under stormcell: the writer's lock must be
/// freed by its session expiring, and the next push then runs the fenced recovery.
pub const WRITE_FREEZE_GRACE_MS: u64 = 60_000;

/// Runs the freeze checker.
pub(crate) fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new(CheckerId::Freeze);
    let timeline = Timeline::of(history);
    if timeline.unmatched_ends > 0 {
        verdict.notes.push(format!(
            "{} fault end events match no earlier start (ignored)",
            timeline.unmatched_ends
        ));
    }
    let interrupted = interrupted_pushes(history, &timeline);
    let all_faults = timeline.all_faults();

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
    let mut justified_by: Vec<String> = Vec::new();
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
                let cause = all_faults.iter().find(|f| {
                    f.start_ms <= op.completed_ms
                        && f.end_ms.saturating_add(LEADER_LOST_GRACE_MS) > op.invoked_ms
                        && can_lose_leaders(f, &op.device, history)
                });
                // A leader whose push was interrupted keeps its copy to itself until the
                // write is recorded or recovered: it holds refs its row does not vouch for.
                let interrupted_leader = interrupted.get(op.repo.as_str()).and_then(|kills| {
                    kills.iter().find(|k| {
                        k.device != op.device
                            && k.hit_ms <= op.completed_ms
                            && op.invoked_ms <= k.frozen_until_ms
                    })
                });
                if let Some(cause) = cause {
                    justified_by.push(format!("leader-lost op {} by {}", op.id, cause.describe()));
                } else if let Some(k) = interrupted_leader {
                    justified_by.push(format!(
                        "leader-lost op {} by push op {} on {} hit by {}",
                        op.id, k.op, k.device, k.fault
                    ));
                } else if let Some(lost) = unresolved_disk_loss(history, op) {
                    justified_by.push(format!("leader-lost op {} by {lost}", op.id));
                } else {
                    verdict.violations.push(violation(
                        op,
                        op.completed_ms,
                        format!(
                            "a fault on {} or its links, or a strike of another device or \
                             a cut between it and the database, active during {}..{} or \
                             ended less than {}s before",
                            op.device,
                            secs(op.invoked_ms),
                            secs(op.completed_ms),
                            LEADER_LOST_GRACE_MS / 1000
                        ),
                        describe_outcome(&op.outcome),
                        format!(
                            "{} op {} on {} was refused as leader lost at {}, but no fault \
                             that could keep {} from its leaders was active then or shortly \
                             before: leaders should be fetchable",
                            op_kind_name(op),
                            op.id,
                            op.device,
                            secs(op.completed_ms),
                            op.device
                        ),
                    ));
                }
            }
            // (d)
            Some(ErrorKind::WriteInterruption) => {
                let cause = interrupted.get(op.repo.as_str()).and_then(|kills| {
                    kills.iter().find(|k| {
                        k.op != op.id
                            && k.invoked_ms < op.completed_ms
                            && k.hit_ms <= op.completed_ms
                            && op.invoked_ms <= k.frozen_until_ms
                    })
                });
                if let Some(k) = cause {
                    justified_by.push(format!(
                        "write-interruption op {} by push op {} hit by {}",
                        op.id, k.op, k.fault
                    ));
                } else {
                    verdict.violations.push(violation(
                        op,
                        op.completed_ms,
                        format!(
                            "a push on {} invoked before {} whose device was struck, or cut \
                             or held for at least {}s from the database, while the push was \
                             running and before {}, with the freeze it left still lasting",
                            op.repo,
                            secs(op.completed_ms),
                            SESSION_EXPIRING_HOLD_MS / 1000,
                            secs(op.completed_ms)
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
    if !justified_by.is_empty() {
        let shown: Vec<&str> = justified_by.iter().take(5).map(String::as_str).collect();
        verdict.notes.push(format!(
            "{} refusals justified, first: {}",
            justified_by.len(),
            shown.join("; ")
        ));
    }
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

/// A disk loss that can still keep `op`'s repository from its leaders: a device lost its
/// working copies before `op` completed, and no successful operator action on the
/// repository has run since (the device may have held the only copy of the newest
/// version, which freezes the repository until someone demotes it or brings the disk
/// back).
fn unresolved_disk_loss(history: &History, op: &Operation) -> Option<String> {
    let resolved_since = |at_ms: u64| {
        history.operator.iter().any(|a| {
            a.ok && a.started_ms >= at_ms
                && a.completed_ms <= op.invoked_ms
                && a.command.split_whitespace().any(|w| w == op.repo)
        })
    };
    history
        .faults
        .iter()
        .rfind(|f| {
            f.kind == FaultKind::DiskLost && f.at_ms <= op.completed_ms && !resolved_since(f.at_ms)
        })
        .map(|f| {
            format!(
                "the disk loss of {} at {}",
                f.hosts.join(","),
                secs(f.at_ms)
            )
        })
}

/// Whether fault `f` can keep `device` from fetching from a leader: anything on `device`
/// itself or its links; a leader (another device) down, or cut off from the database (a
/// leader whose own push cannot be recorded refuses to serve it); a slow link elsewhere
/// only when it lasts long enough to expire a leader's database session. A cut between
/// two other devices is no cause: `device` still reaches both.
fn can_lose_leaders(f: &Fault, device: &str, history: &History) -> bool {
    let on_a_device = f
        .hosts
        .iter()
        .any(|h| history.devices.iter().any(|d| d == h));
    match f.kind {
        FaultKind::Strike => f.involves(device) || on_a_device,
        // A cut between two other devices leaves `device` free to fetch from either; a
        // leader cut off from the database cannot have its copy vouched for.
        FaultKind::Partition => {
            let off_devices = f
                .hosts
                .iter()
                .any(|h| !history.devices.iter().any(|d| d == h));
            f.involves(device) || (on_a_device && off_devices)
        }
        // A disk that cannot sync fails the copy on the device, and a leader whose own
        // write was left `writing` there.
        FaultKind::DiskFailing => f.involves(device) || on_a_device,
        FaultKind::Hold => {
            f.involves(device)
                || (on_a_device && f.end_ms.saturating_sub(f.start_ms) >= SESSION_EXPIRING_HOLD_MS)
        }
        _ => false,
    }
}

/// A push whose database session a fault may have killed mid-write (rule (d)).
#[derive(Debug, Clone)]
struct Kill {
    op: u64,
    /// The device the push ran on.
    device: String,
    invoked_ms: u64,
    /// The earliest moment the fault can have killed the session.
    hit_ms: u64,
    /// Until when the freeze it left may be seen.
    frozen_until_ms: u64,
    /// The fault, described.
    fault: String,
}

/// Per repository, every push whose device or database a fault hit while the push could
/// be running on the server (rule (d)), in order of the moment it was hit.
fn interrupted_pushes<'h>(
    history: &'h History,
    timeline: &Timeline,
) -> BTreeMap<&'h str, Vec<Kill>> {
    let end_of_history = timeline.end();
    let stormcell = history.profile == "stormcell";
    let db_hosts = timeline.database_hosts();
    // When each repository's freeze is cleared by hand (phabricator).
    let mut operator_on: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for action in history.operator.iter().filter(|a| a.ok) {
        for rd in action.demoted.iter().chain(&action.promoted) {
            operator_on
                .entry(rd.repo.as_str())
                .or_default()
                .push(action.started_ms);
        }
    }
    // Per device: when it or the database was disturbed, merged; a freeze outlives the
    // run of faults that holds the hit.
    let mut disturbed: BTreeMap<&str, Spans> = BTreeMap::new();
    let mut kills: BTreeMap<&str, Vec<Kill>> = BTreeMap::new();
    for op in &history.ops {
        if !matches!(op.kind, OpKind::Push { .. }) {
            continue;
        }
        let until = match op.outcome {
            Outcome::Unknown { .. } => end_of_history.max(op.invoked_ms),
            Outcome::Ok { .. } | Outcome::Refused { .. } => op.completed_ms.max(op.invoked_ms),
        };
        let from = op.invoked_ms;
        let mut hits: Vec<(u64, String)> = Vec::new();
        let struck = |host: &str| {
            timeline
                .down(host)
                .iter()
                .filter(|&&(s, _)| from <= s && s <= until)
                .map(|&(s, e)| (s, Fault::describe_span(FaultKind::Strike, &[host], s, e)))
                .next()
        };
        hits.extend(struck(&op.device));
        // A push whose working copy cannot be made durable is left `writing`.
        for &(s, e) in timeline.disk_failing(&op.device) {
            if s <= until && from < e {
                hits.push((
                    s.max(from),
                    Fault::describe_span(FaultKind::DiskFailing, &[&op.device], s, e),
                ));
            }
        }
        for db in db_hosts {
            // A struck database host kills every session on it, so it hits every writer.
            hits.extend(struck(db));
            for &(s, e) in timeline.cut(&op.device, db) {
                if s <= until && from < e {
                    hits.push((
                        s.max(from),
                        Fault::describe_span(FaultKind::Partition, &[&op.device, db], s, e),
                    ));
                }
            }
            for f in timeline.faults_of(&op.device) {
                if f.kind == FaultKind::Hold
                    && f.involves(db)
                    && f.end_ms.saturating_sub(f.start_ms) >= SESSION_EXPIRING_HOLD_MS
                    && f.start_ms <= until
                    && from < f.end_ms
                {
                    hits.push((f.start_ms.max(from), f.describe()));
                }
            }
        }
        // A promotion that loses the row clearing this push's `writing` brings the flag
        // back on the new primary, after the push itself completed.
        let cleared = format!("finish_write {}/{}", op.repo, op.device);
        for f in history.faults.iter().filter(|f| {
            f.kind == FaultKind::Promote && f.at_ms >= from && f.detail.contains(&cleared)
        }) {
            hits.push((
                f.at_ms,
                format!(
                    "promotion of {} at {} (its record of the push was lost)",
                    f.hosts.join(","),
                    secs(f.at_ms)
                ),
            ));
        }
        let Some((hit_ms, fault)) = hits.into_iter().min() else {
            continue;
        };
        let frozen_until_ms = if stormcell {
            let spans = disturbed.entry(op.device.as_str()).or_insert_with(|| {
                let mut spans: Spans = timeline
                    .faults_of(&op.device)
                    .iter()
                    .map(|f| (f.start_ms, f.end_ms))
                    .collect();
                for db in db_hosts {
                    spans.extend_from_slice(timeline.down(db));
                }
                merge(spans)
            });
            span_at(spans, hit_ms)
                .map_or(hit_ms, |(_, e)| e)
                .saturating_add(WRITE_FREEZE_GRACE_MS)
        } else {
            operator_on
                .get(op.repo.as_str())
                .and_then(|starts| starts.iter().copied().filter(|&t| t >= hit_ms).min())
                .unwrap_or(u64::MAX)
        };
        kills.entry(op.repo.as_str()).or_default().push(Kill {
            op: op.id,
            device: op.device.clone(),
            invoked_ms: op.invoked_ms,
            hit_ms,
            frozen_until_ms,
            fault,
        });
    }
    for list in kills.values_mut() {
        list.sort_by_key(|k| (k.hit_ms, k.op));
    }
    kills
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
        let v = run(&b);
        assert!(v.passed(), "{v}");
        assert!(v.notes.iter().any(|n| n.contains("strike of R1")), "{v}");
        // Refused before the strike: the strike cannot have caused it.
        let early = interrupted(&mut b, "R2", 1_000, 1_100);
        assert_eq!(blamed(&b), [early]);
    }

    #[test]
    fn strike_after_the_client_gave_up_on_an_unknown_push_justifies() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], unknown());
        b.fault(4_000, FaultKind::Strike, &["R1"]);
        interrupted(&mut b, "R2", 5_000, 5_100);
        let v = run(&b);
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn strike_after_the_refusal_does_not_justify() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], unknown());
        b.fault(60_000, FaultKind::Strike, &["R1"]);
        let x = interrupted(&mut b, "R2", 5_000, 5_100);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn one_interrupted_push_does_not_justify_forever() {
        let mut b = HistoryBuilder::new();
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], ok());
        b.fault(2_000, FaultKind::Strike, &["R1"]);
        b.fault(9_000, FaultKind::Restart, &["R1"]);
        interrupted(&mut b, "R2", 60_000, 60_100);
        // Long after R1 came back, fenced recovery has cleared the freeze.
        let late = interrupted(&mut b, "R2", 200_000, 200_100);
        assert_eq!(blamed(&b), [late]);
        // Without fenced recovery only an operator clears it.
        let mut h = b.build();
        h.profile = "phabricator".to_owned();
        assert!(check(&h).passed());
    }

    #[test]
    fn partition_between_the_writer_and_another_device_does_not_justify() {
        let mut b = HistoryBuilder::new();
        b.fault(500, FaultKind::Partition, &["R1", "R2"]);
        b.fault(4_000, FaultKind::Repair, &["R2", "R1"]);
        b.push("R1", 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], unknown());
        let x = interrupted(&mut b, "R2", 5_000, 5_100);
        assert_eq!(blamed(&b), [x]);
    }

    #[test]
    fn a_push_interrupted_on_a_leader_justifies_leader_lost_elsewhere_while_its_freeze_lasts() {
        // The database dies under a push on R2; R1, behind, cannot copy R2's unrecorded
        // write long after the database fault itself is past its grace.
        let judged = |writer: &str, read_at: u64| {
            let mut b = HistoryBuilder::new();
            b.push(writer, 1_000, 3_000, &[(MAIN, Some("c0"), "c1")], unknown());
            b.fault(1_500, FaultKind::Strike, &["db"]);
            b.fault(2_000, FaultKind::Restart, &["db"]);
            b.read("R1", read_at, read_at + 100, refused(ErrorKind::LeaderLost));
            run(&b)
        };
        let v = judged("R2", 40_000);
        assert!(v.passed(), "{v}");
        assert!(
            v.notes.iter().any(|n| n.contains("by push op 1 on R2")),
            "{v}"
        );
        // The device's own interrupted push does not keep it from a leader.
        assert_eq!(judged("R1", 40_000).violations.len(), 1);
        // Nor does one whose freeze has long ended.
        assert_eq!(judged("R2", 200_000).violations.len(), 1);
    }

    #[test]
    fn a_promotion_that_lost_a_pushs_clearing_row_justifies_the_freeze_it_brings_back() {
        let judged = |lost: &str| {
            let mut b = HistoryBuilder::new();
            b.push("R2", 1_000, 2_000, &[(MAIN, Some("c0"), "c1")], ok());
            let detail = format!("promoted at #9; lost database rows: #8 {lost}");
            b.fault_with(5_000, FaultKind::Promote, &["db-r1"], &detail);
            interrupted(&mut b, "R1", 10_000, 10_100);
            run(&b)
        };
        let v = judged("finish_write repo1/R2 version 1");
        assert!(v.passed(), "{v}");
        assert!(
            v.notes.iter().any(|n| n.contains("promotion of db-r1")),
            "{v}"
        );
        // A lost row of another device's write brings back no flag of this push.
        assert_eq!(
            judged("finish_write repo1/R3 version 1").violations.len(),
            1
        );
    }

    #[test]
    fn leader_lost_needs_a_fault_that_can_cause_it() {
        let mut b = HistoryBuilder::new();
        let mut h = b.build();
        h.devices.push("R3".to_owned());
        b = HistoryBuilder::new();
        // A short slow link between two other hosts.
        b.fault(1_000, FaultKind::Hold, &["R2", "db"]);
        b.fault(1_500, FaultKind::Release, &["R2", "db"]);
        b.read("R1", 1_200, 1_300, refused(ErrorKind::LeaderLost));
        let mut h2 = b.build();
        h2.devices = h.devices.clone();
        let v = check(&h2);
        assert_eq!(v.violations.len(), 1, "{v}");
        // A strike of another device (a leader) is a cause.
        b.fault(1_100, FaultKind::Strike, &["R3"]);
        let mut h3 = b.build();
        h3.devices = h.devices;
        let v = check(&h3);
        assert!(v.passed(), "{v}");
        assert!(v.notes.iter().any(|n| n.contains("strike of R3")), "{v}");
    }

    #[test]
    fn a_partition_between_two_other_devices_does_not_justify_leader_lost() {
        // R1 can still reach both R2 and R3 (and the database) while they cannot reach
        // each other: nothing keeps R1 from its leaders.
        let mut b = HistoryBuilder::new();
        b.history.devices.push("R3".to_owned());
        b.fault(1_000, FaultKind::Partition, &["R2", "R3"]);
        b.fault(1_500, FaultKind::Repair, &["R2", "R3"]);
        let lost = b.read("R1", 1_200, 1_300, refused(ErrorKind::LeaderLost));
        let v = run(&b);
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(lost)], "{v}");
        // A leader cut off from the database (its copy cannot be vouched for) is a cause,
        // and so is a cut between R1 and a leader.
        for (a, c) in [("R3", "db"), ("R1", "R3")] {
            let mut b = HistoryBuilder::new();
            b.history.devices.push("R3".to_owned());
            b.fault(1_000, FaultKind::Partition, &[a, c]);
            b.fault(1_500, FaultKind::Repair, &[a, c]);
            b.read("R1", 1_200, 1_300, refused(ErrorKind::LeaderLost));
            let v = run(&b);
            assert!(v.passed(), "{a}|{c}: {v}");
        }
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
    fn a_disk_loss_justifies_leader_lost_until_an_operator_acts_on_the_repository() {
        fn thaw(at: u64, command: &str, ok: bool) -> crate::history::OperatorAction {
            crate::history::OperatorAction {
                applied_ms: None,
                started_ms: at,
                completed_ms: at + 100,
                command: command.to_owned(),
                ok,
                result: String::new(),
                demoted: Vec::new(),
                promoted: Vec::new(),
                plan: None,
            }
        }
        let mut b = HistoryBuilder::new();
        b.fault(1_000, FaultKind::Strike, &["R1"]);
        b.fault(1_000, FaultKind::DiskLost, &["R1"]);
        b.fault(2_000, FaultKind::Restart, &["R1"]);
        // Long after the restart: the lost copy may have been the only newest one.
        b.read("R2", 90_000, 90_100, refused(ErrorKind::LeaderLost));
        // A thaw of another repository, or one that failed, resolves nothing here.
        let operator = &mut b.history.operator;
        operator.push(thaw(
            95_000,
            "stormcell repository thaw other --demote R1",
            true,
        ));
        operator.push(thaw(
            96_000,
            "stormcell repository thaw repo1 --demote R1",
            false,
        ));
        let still = b.read("R2", 97_000, 97_100, refused(ErrorKind::LeaderLost));
        let v = run(&b);
        assert!(v.passed(), "{v}");
        let operator = &mut b.history.operator;
        operator.push(thaw(
            98_000,
            "stormcell repository thaw repo1 --demote R1",
            true,
        ));
        let after = b.read("R2", 99_000, 99_100, refused(ErrorKind::LeaderLost));
        let v = run(&b);
        let ops: Vec<Option<u64>> = v.violations.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Some(after)], "{v} (op {still} was justified)");
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
