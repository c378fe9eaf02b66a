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
//! - (d) A device's health record of a host never flips twice within one health window
//!   (a window of results, a check interval apart), unless the device restarted between:
//!   a flapping primary must not make devices flap with it.
//!
//! Histories without database hosts (no replicas) are skipped.

use std::collections::BTreeMap;

use super::timeline::{covers, merge, overlaps, span_at, Spans, Timeline};
use super::{describe_outcome, secs, CheckerId, Verdict, Violation};
use crate::history::{ErrorKind, FaultKind, HealthFlip, History, OpKind, Operation, Outcome};
use stormcell_model::failover::FailoverTiming;

/// How long after an outage starts a device must have noticed it: five failed checks three
/// seconds apart, each taking up to its 2 s connect timeout, plus one interval of slack.
pub const SEVER_MS: u64 = 25_000;
/// How quickly a severed device refuses a push.
pub const PROMPT_MS: u64 = 5_000;
/// How long after the primary is back a device must take writes again: five good checks
/// three seconds apart, plus slack for checks and in-flight requests.
pub const RECOVER_MS: u64 = 30_000;

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

/// When the primary (whichever host it was) could not be reached from `device`: struck,
/// cut or held from it, following the timeline's up and down state whatever overlaps.
fn primary_outages(timeline: &Timeline, primaries: &[(u64, String)], device: &str) -> Spans {
    let mut out = Vec::new();
    for (i, (from, host)) in primaries.iter().enumerate() {
        let until = primaries.get(i + 1).map_or(timeline.end(), |(t, _)| *t);
        let mut spans: Spans = timeline.down(host).to_vec();
        spans.extend_from_slice(timeline.cut(host, device));
        // A hung primary (its link holding every message) is as lost as a struck one.
        spans.extend_from_slice(timeline.held(host, device));
        for (s, e) in spans {
            let (s, e) = (s.max(*from), e.min(until));
            if s < e {
                out.push((s, e));
            }
        }
    }
    merge(out)
}

/// Per device, when the history shows it could be read-only (and so serve reads marked
/// possibly stale): from the moment the primary became unreachable from it until
/// [`RECOVER_MS`] after it was back (under phabricator, until the device restarts after
/// that), and after a promotion while some peer device could not be asked (plus the same
/// bound). `None` when the run had no database replicas (no database section, or one
/// that lists none): with nothing to read from, no device can be read-only then.
pub(crate) fn possibly_read_only(
    history: &History,
    timeline: &Timeline,
) -> Option<BTreeMap<String, Spans>> {
    let db = history
        .database
        .as_ref()
        .filter(|db| !db.replicas.is_empty())?;
    let primaries = primaries(history, &db.primary);
    let stormcell = history.profile == "stormcell";
    let promotions: Vec<u64> = primaries.iter().skip(1).map(|(t, _)| *t).collect();
    let mut out = BTreeMap::new();
    for device in &history.devices {
        let mut spans: Spans = Vec::new();
        for (s, e) in primary_outages(timeline, &primaries, device) {
            let until = if stormcell {
                e.saturating_add(RECOVER_MS)
            } else {
                // The seed design leaves read-only mode only in a new process.
                timeline
                    .down(device)
                    .iter()
                    .map(|&(_, up)| up)
                    .filter(|&up| up >= e)
                    .min()
                    .unwrap_or(timeline.end())
            };
            spans.push((s, until));
        }
        if let Some(&first) = promotions.first() {
            // After a promotion every peer is asked for its versions; one that cannot be
            // asked leaves reads possibly stale.
            spans.push((first, first.saturating_add(RECOVER_MS)));
            for peer in history.devices.iter().filter(|p| *p != device) {
                for (s, e) in timeline.unreachable(device, peer) {
                    if e > first {
                        spans.push((s.max(first), e.saturating_add(RECOVER_MS)));
                    }
                }
            }
        }
        out.insert(device.clone(), merge(spans));
    }
    Some(out)
}

/// When `device` last came up at or before `t` (0 when it never went down).
fn up_since(timeline: &Timeline, device: &str, t: u64) -> u64 {
    timeline
        .down(device)
        .iter()
        .map(|&(_, up)| up)
        .filter(|&up| up <= t)
        .max()
        .unwrap_or(0)
}

fn refused_as(op: &Operation, kinds: &[ErrorKind]) -> bool {
    matches!(&op.outcome, Outcome::Refused { error, .. } if kinds.contains(error))
}

/// Runs checker 5.
pub(crate) fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new(CheckerId::ReadOnly);
    let Some(db) = history
        .database
        .as_ref()
        .filter(|db| !db.replicas.is_empty())
    else {
        verdict
            .notes
            .push("skipped: the run had no database replicas".to_owned());
        return verdict;
    };
    let timeline = Timeline::of(history);
    let primaries = primaries(history, &db.primary);
    let stormcell = history.profile == "stormcell";
    let mut outages: BTreeMap<&str, Spans> = BTreeMap::new();
    let mut counted = (0usize, 0usize, 0usize);
    let mut device_down = 0usize;
    for device in &history.devices {
        outages.insert(device, primary_outages(&timeline, &primaries, device));
    }
    for op in &history.ops {
        let Some(out) = outages.get(op.device.as_str()) else {
            continue;
        };
        let (from, until) = (op.invoked_ms, op.completed_ms.max(op.invoked_ms));
        let is_push = matches!(op.kind, OpKind::Push { .. });
        // A device that was itself down cannot answer at all, read-only or not.
        if overlaps(timeline.down(&op.device), from, until) {
            device_down += 1;
            continue;
        }
        // A device that restarted during the outage starts with fresh health records and
        // needs as long again to notice it.
        let severed = covers(out, from, until)
            && span_at(out, from).is_some_and(|(s, _)| {
                from >= s
                    .max(up_since(&timeline, &op.device, from))
                    .saturating_add(SEVER_MS)
            });
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
            let replica_reachable = db
                .replicas
                .iter()
                .any(|r| !overlaps(&timeline.unreachable(r, &op.device), from, until));
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
        if from < due.saturating_add(RECOVER_MS) {
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
    let flips = check_health_flips(history, &db.health_flips, &mut verdict);
    verdict.notes.push(format!(
        "checked {} pushes and {} reads during outages, {} pushes after recovery, {} health \
         flips; {device_down} operations ran while their own device was down",
        counted.0, counted.1, counted.2, flips
    ));
    verdict
}

/// The shortest time between two flips of one health record: a whole window of results,
/// each at least a check interval after the last.
fn health_window_ms() -> u64 {
    let t = FailoverTiming::default();
    (t.check_interval * t.window as u32).as_millis() as u64
}

/// Rule (d). Returns how many flips were checked.
fn check_health_flips(history: &History, flips: &[HealthFlip], verdict: &mut Verdict) -> usize {
    let window = health_window_ms();
    let mut last: BTreeMap<(&str, &str), &HealthFlip> = BTreeMap::new();
    for flip in flips {
        let key = (flip.device.as_str(), flip.host.as_str());
        if let Some(prev) = last.insert(key, flip) {
            // A struck device starts with fresh records.
            let restarted = history.faults.iter().any(|f| {
                f.kind == FaultKind::Strike
                    && f.hosts.contains(&flip.device)
                    && prev.at_ms <= f.at_ms
                    && f.at_ms <= flip.at_ms
            });
            let gap = flip.at_ms.saturating_sub(prev.at_ms);
            if !restarted && gap < window {
                verdict.violations.push(Violation {
                    checker: CheckerId::ReadOnly,
                    op: None,
                    device: Some(flip.device.clone()),
                    repo: None,
                    at_ms: flip.at_ms,
                    expected: format!("no flip within {} of the last", secs(window)),
                    seen: format!(
                        "{} at {}, {} at {}",
                        health_word(prev.healthy),
                        secs(prev.at_ms),
                        health_word(flip.healthy),
                        secs(flip.at_ms)
                    ),
                    explanation: format!(
                        "{}'s health record of {} flipped twice {} apart: a state may change \
                         only after a whole window of agreeing checks",
                        flip.device,
                        flip.host,
                        secs(gap)
                    ),
                });
            }
        }
    }
    flips.len()
}

fn health_word(healthy: bool) -> &'static str {
    if healthy {
        "healthy"
    } else {
        "unhealthy"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::{ok, ok_refs, push_kind, refused, HistoryBuilder};

    fn violations(b: &HistoryBuilder) -> Vec<Violation> {
        check(&b.build()).violations
    }

    /// The primary struck at 10 s, back at 70 s.
    fn outage() -> HistoryBuilder {
        let mut b = HistoryBuilder::new();
        b.with_replica();
        b.fault(10_000, FaultKind::Strike, &["db"]);
        b.fault(70_000, FaultKind::Restart, &["db"]);
        b
    }

    #[test]
    fn read_only_a_severed_push_must_be_refused_promptly_as_read_only() {
        let mut b = outage();
        let prompt = b.push(
            "R1",
            40_000,
            40_300,
            &[("refs/heads/main", Some("c0"), "c1")],
            refused(ErrorKind::ReadOnly),
        );
        assert!(violations(&b).is_empty(), "{:?}", violations(&b));
        // Waiting out a lock budget, or failing some other way, is not the rule.
        let slow = b.push(
            "R2",
            41_000,
            61_000,
            &[("refs/heads/main", Some("c0"), "c1")],
            refused(ErrorKind::ReadOnly),
        );
        let other = b.push(
            "R2",
            42_000,
            42_100,
            &[("refs/heads/main", Some("c0"), "c1")],
            refused(ErrorKind::DatabaseUnavailable),
        );
        let found: Vec<Option<u64>> = violations(&b).iter().map(|v| v.op).collect();
        assert_eq!(
            found,
            vec![Some(slow), Some(other)],
            "prompt op {prompt} passes"
        );
    }

    #[test]
    fn read_only_reads_go_on_while_a_replica_is_reachable() {
        let mut b = outage();
        b.read("R1", 40_000, 40_200, ok_refs(&[("refs/heads/main", "c0")]));
        let refused_read = b.read("R2", 41_000, 41_200, refused(ErrorKind::ReadOnly));
        let v = violations(&b);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].op, Some(refused_read));
        // With the replica struck too, a refusal is allowed.
        let mut b = outage();
        b.fault(30_000, FaultKind::Strike, &["db-r1"]);
        b.read(
            "R2",
            41_000,
            41_200,
            refused(ErrorKind::DatabaseUnavailable),
        );
        assert!(violations(&b).is_empty());
    }

    #[test]
    fn read_only_writes_resume_after_the_primary_returns() {
        let mut b = outage();
        // Within the recovery bound a read-only refusal is allowed; after it, not.
        b.push(
            "R1",
            80_000,
            80_100,
            &[("refs/heads/main", Some("c0"), "c1")],
            refused(ErrorKind::ReadOnly),
        );
        b.push(
            "R1",
            90_000,
            90_300,
            &[("refs/heads/main", Some("c0"), "c1")],
            ok(),
        );
        assert!(violations(&b).is_empty());
        let late = b.op_on(
            "repo1",
            "R2",
            100_001,
            100_100,
            push_kind(&[("refs/heads/main", Some("c1"), "c2")]),
            refused(ErrorKind::ReadOnly),
        );
        let v = violations(&b);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].op, Some(late));
        assert!(v[0].explanation.contains("back to read/write"), "{}", v[0]);
        // The phabricator profile counts from the device's restart.
        let mut phab = b.build();
        phab.profile = "phabricator".to_owned();
        assert!(check(&phab).violations.is_empty());
    }

    #[test]
    fn read_only_health_never_flips_twice_within_a_window() {
        let mut b = outage();
        b.health_flip(25_000, "R1", "db", false)
            .health_flip(85_000, "R1", "db", true)
            .health_flip(25_000, "R2", "db", false);
        assert!(violations(&b).is_empty());
        // A flap followed within 15 s.
        b.health_flip(95_000, "R1", "db", false);
        let v = violations(&b);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].device.as_deref(), Some("R1"));
        assert!(
            v[0].explanation.contains("flipped twice 10.000s apart"),
            "{}",
            v[0]
        );
        // A restart in between starts a fresh record.
        let mut b = outage();
        b.health_flip(25_000, "R2", "db", false)
            .fault(26_000, FaultKind::Strike, &["R2"])
            .health_flip(30_000, "R2", "db", false);
        assert!(violations(&b).is_empty());
    }

    #[test]
    fn read_only_a_flap_overlapping_a_strike_of_the_primary_ends_at_its_restart() {
        // Struck for a minute; a flap strikes it again while it is down; one restart.
        let mut b = HistoryBuilder::new();
        b.with_replica();
        b.fault(10_000, FaultKind::Strike, &["db"])
            .fault(20_000, FaultKind::Strike, &["db"])
            .fault(70_000, FaultKind::Restart, &["db"]);
        b.push(
            "R1",
            200_000,
            200_300,
            &[("refs/heads/main", Some("c0"), "c1")],
            ok(),
        );
        assert!(violations(&b).is_empty(), "{:?}", violations(&b));
    }

    #[test]
    fn read_only_a_device_that_is_itself_down_is_not_asked_to_refuse() {
        let mut b = outage();
        b.fault(30_000, FaultKind::Strike, &["R1"])
            .fault(50_000, FaultKind::Restart, &["R1"]);
        b.push(
            "R1",
            40_000,
            40_100,
            &[("refs/heads/main", Some("c0"), "c1")],
            refused(ErrorKind::Unreachable),
        );
        // Restarted at 50 s with fresh health records: 25 s later it must know again.
        b.push(
            "R1",
            60_000,
            60_100,
            &[("refs/heads/main", Some("c0"), "c1")],
            refused(ErrorKind::DatabaseUnavailable),
        );
        assert!(violations(&b).is_empty(), "{:?}", violations(&b));
    }
}
