//! Checker 5, read-only mode (PROTOCOL.md section 9): while the primary database is
//! unreachable from a device, that device refuses pushes promptly with the read-only reason
//! and keeps serving reads; once the primary is back, its pushes succeed again.
//!
//! "Unreachable from D at t" means the host that is primary at `t` (the history's primary,
//! then whichever host a `promote` event names) is struck at `t`, or partitioned from D.
//!
//! - (a) A push on D that runs entirely while the primary is unreachable from D, invoked at
//!   least [`SEVER_MS`] after the outage began (the health record has flipped by then), must
//!   be refused as read-only within [`PROMPT_MS`]: never wait out a lock budget, never fail
//!   some other way (a write sent to a replica fails with a database error).
//! - (b) A read on D in the same situation, while some replica is reachable from D, must
//!   not be refused for want of a database (read-only, database unavailable).
//! - (c) A push on D invoked at least [`RECOVER_MS`] after the primary last became
//!   reachable from D, with no outage since, must not be refused as read-only. The
//!   phabricator profile recovers only when the device restarts, so there the bound counts
//!   from D's restart after the outage.
//!
//! Histories without database hosts (no replicas) are skipped.

use std::collections::BTreeMap;

use super::freeze::{fault_intervals, FaultInterval};
use super::{describe_outcome, secs, CheckerId, Verdict, Violation};
use crate::history::{ErrorKind, FaultKind, History, OpKind, Operation, Outcome};

/// How long after an outage starts a device must have noticed it: five failed checks three
/// seconds apart, each taking up to its 2 s connect timeout, plus one interval of slack.
pub const SEVER_MS: u64 = 25_000;
/// How quickly a severed device refuses a push.
pub const PROMPT_MS: u64 = 5_000;
/// How long after the primary is back a device must take writes again: five good checks
/// three seconds apart, plus slack for checks and in-flight requests.
pub const RECOVER_MS: u64 = 30_000;

/// Time intervals `[start, end)` during which something held.
type Spans = Vec<(u64, u64)>;

fn covers(spans: &Spans, from: u64, until: u64) -> bool {
    spans.iter().any(|&(s, e)| s <= from && until < e)
}

fn overlaps(spans: &Spans, from: u64, until: u64) -> bool {
    spans.iter().any(|&(s, e)| s <= until && from < e)
}

/// Where a span that covers `t` started, if one does.
fn started_at(spans: &Spans, t: u64) -> Option<u64> {
    spans
        .iter()
        .filter(|&&(s, e)| s <= t && t < e)
        .map(|&(s, _)| s)
        .min()
}

/// The primary over time: `(from_ms, host)`, in order.
fn primaries(history: &History, first: &str) -> Vec<(u64, String)> {
    let mut out = vec![(0, first.to_owned())];
    for f in &history.faults {
        if f.kind == FaultKind::Promote {
            if let Some(h) = f.hosts.first() {
                out.push((f.at_ms, h.clone()));
            }
        }
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

/// When `host` could not be reached from `device`: struck, or partitioned from it.
fn unreachable_spans(intervals: &[FaultInterval], host: &str, device: &str, end: u64) -> Spans {
    intervals
        .iter()
        .filter(|i| match i.kind {
            FaultKind::Strike => i.hosts.iter().any(|h| h == host),
            FaultKind::Partition => {
                i.hosts.iter().any(|h| h == host) && i.hosts.iter().any(|h| h == device)
            }
            _ => false,
        })
        .map(|i| (i.start_ms, i.end_ms.unwrap_or(end).max(i.start_ms + 1)))
        .collect()
}

/// When the primary (whichever host it was) could not be reached from `device`.
fn primary_outages(
    intervals: &[FaultInterval],
    primaries: &[(u64, String)],
    device: &str,
    end: u64,
) -> Spans {
    let mut out = Vec::new();
    for (i, (from, host)) in primaries.iter().enumerate() {
        let until = primaries.get(i + 1).map_or(end, |(t, _)| *t);
        for (s, e) in unreachable_spans(intervals, host, device, end) {
            let (s, e) = (s.max(*from), e.min(until));
            if s < e {
                out.push((s, e));
            }
        }
    }
    out.sort_unstable();
    // Merge overlapping spans so "where did this outage start" has one answer.
    let mut merged: Spans = Vec::new();
    for (s, e) in out {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

fn refused_as(op: &Operation, kinds: &[ErrorKind]) -> bool {
    matches!(&op.outcome, Outcome::Refused { error, .. } if kinds.contains(error))
}

/// Runs checker 5.
pub(crate) fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new(CheckerId::ReadOnly);
    let Some(db) = &history.database else {
        verdict
            .notes
            .push("skipped: the run had no database replicas".to_owned());
        return verdict;
    };
    let end = history
        .ops
        .iter()
        .map(|o| o.completed_ms)
        .chain(history.faults.iter().map(|f| f.at_ms))
        .max()
        .unwrap_or(0)
        + 1;
    let (intervals, _) = fault_intervals(history);
    let primaries = primaries(history, &db.primary);
    let stormcell = history.profile == "stormcell";
    let mut outages: BTreeMap<&str, Spans> = BTreeMap::new();
    let mut counted = (0usize, 0usize, 0usize);
    for device in &history.devices {
        outages.insert(device, primary_outages(&intervals, &primaries, device, end));
    }
    for op in &history.ops {
        let Some(out) = outages.get(op.device.as_str()) else {
            continue;
        };
        let (from, until) = (op.invoked_ms, op.completed_ms);
        let is_push = matches!(op.kind, OpKind::Push { .. });
        let severed =
            covers(out, from, until) && started_at(out, from).is_some_and(|s| from >= s + SEVER_MS);
        if severed && is_push {
            counted.0 += 1;
            let prompt = until - from <= PROMPT_MS;
            if !(refused_as(op, &[ErrorKind::ReadOnly]) && prompt) {
                verdict.violations.push(Violation::of_op(
                    CheckerId::ReadOnly,
                    op,
                    op.invoked_ms,
                    format!("refused as read-only within {}", secs(PROMPT_MS)),
                    format!(
                        "{} after {}",
                        describe_outcome(&op.outcome),
                        secs(until - from)
                    ),
                    format!(
                        "push op {} on {} ran while the primary database had been unreachable \
                         from it for over {}: the device should refuse at once with the \
                         read-only reason",
                        op.id,
                        op.device,
                        secs(SEVER_MS)
                    ),
                ));
            }
            continue;
        }
        if severed && !is_push {
            let replica_reachable = db.replicas.iter().any(|r| {
                !overlaps(
                    &unreachable_spans(&intervals, r, &op.device, end),
                    from,
                    until,
                )
            });
            counted.1 += 1;
            if replica_reachable
                && refused_as(op, &[ErrorKind::ReadOnly, ErrorKind::DatabaseUnavailable])
            {
                verdict.violations.push(Violation::of_op(
                    CheckerId::ReadOnly,
                    op,
                    op.invoked_ms,
                    "served (a replica was reachable)".to_owned(),
                    describe_outcome(&op.outcome),
                    format!(
                        "read op {} on {} ran while the primary was unreachable but a replica \
                         was not: reads must go on in read-only mode",
                        op.id, op.device
                    ),
                ));
            }
            continue;
        }
        if !is_push || overlaps(out, from.saturating_sub(RECOVER_MS), until) {
            continue;
        }
        // The last outage before this push, and when recovery may be demanded.
        let Some(back) = out
            .iter()
            .filter(|(_, e)| *e <= from)
            .map(|(_, e)| *e)
            .max()
        else {
            continue;
        };
        let due = if stormcell {
            Some(back)
        } else {
            // The seed design recovers only in a new process.
            history
                .faults
                .iter()
                .filter(|f| {
                    f.kind == FaultKind::Restart && f.hosts.contains(&op.device) && f.at_ms >= back
                })
                .map(|f| f.at_ms)
                .min()
        };
        let Some(due) = due else { continue };
        if from < due + RECOVER_MS {
            continue;
        }
        counted.2 += 1;
        if refused_as(op, &[ErrorKind::ReadOnly]) {
            verdict.violations.push(Violation::of_op(
                CheckerId::ReadOnly,
                op,
                op.invoked_ms,
                "not refused as read-only".to_owned(),
                describe_outcome(&op.outcome),
                format!(
                    "push op {} on {} started {} after the primary database was reachable \
                     again (at {}): the device should be back to read/write within {}",
                    op.id,
                    op.device,
                    secs(from - due),
                    secs(back),
                    secs(RECOVER_MS)
                ),
            ));
        }
    }
    verdict.notes.push(format!(
        "checked {} pushes and {} reads during outages, {} pushes after recovery",
        counted.0, counted.1, counted.2
    ));
    verdict
}
