use super::super::testkit::*;
use super::*;
use crate::history::{ErrorKind, FaultKind, OperatorAction, PlannedDiscard, RepoDevice};

const MAIN: &str = "refs/heads/main";
const B1: &str = "refs/heads/b1";

fn run(b: &HistoryBuilder) -> Analysis {
    analyse(&b.build(), MAIN_BUDGET)
}

fn assert_passes(b: &HistoryBuilder) {
    let a = run(b);
    let shown: Vec<String> = a.findings.iter().map(|f| f.violation.to_string()).collect();
    assert!(a.findings.is_empty(), "{shown:#?}");
    assert_eq!(a.inconclusive, 0, "{:?}", a.notes);
}

/// The single finding of `b`, which must be `anomaly` about `op`.
fn single(b: &HistoryBuilder, anomaly: Anomaly, op: u64) -> Finding {
    let a = run(b);
    let shown: Vec<String> = a.findings.iter().map(|f| f.violation.to_string()).collect();
    assert_eq!(a.findings.len(), 1, "{shown:#?}");
    let f = a.findings[0].clone();
    assert_eq!(f.anomaly, anomaly, "{}", f.violation);
    assert_eq!(f.violation.op, Some(op), "{}", f.violation);
    assert_eq!(f.violation.checker, CheckerId::Linearizable);
    assert!(
        f.violation
            .explanation
            .starts_with(&format!("{}: ", anomaly.name())),
        "{}",
        f.violation
    );
    f
}

fn thaw(
    started_ms: u64,
    completed_ms: u64,
    demote: &str,
    listed: &[(&str, &str)],
) -> OperatorAction {
    OperatorAction {
        applied_ms: None,
        started_ms,
        completed_ms,
        command: format!("repository thaw repo1 --demote {demote}"),
        ok: true,
        result: "ok".to_owned(),
        demoted: vec![RepoDevice {
            repo: "repo1".to_owned(),
            device: demote.to_owned(),
        }],
        promoted: Vec::new(),
        plan: Some(
            listed
                .iter()
                .map(|(name, commit)| PlannedDiscard {
                    repo: "repo1".to_owned(),
                    device: demote.to_owned(),
                    name: (*name).to_owned(),
                    commit: (*commit).to_owned(),
                    salvageable: false,
                    bundled: false,
                })
                .collect(),
        ),
    }
}

// ---- legal histories ----

#[test]
fn reads_overlapping_a_write_may_see_either_value() {
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 500, &[(MAIN, Some("c0"), "c1")], ok());
    b.read("R2", 150, 200, ok_refs(&[(MAIN, "c1")]));
    // Sees the old value, but it started before the first read ended: it may have taken
    // effect first.
    b.read("R2", 180, 600, ok_refs(&[(MAIN, "c0")]));
    b.read("R1", 400, 450, ok_refs(&[(MAIN, "c1")]));
    b.read("R2", 700, 800, ok_refs(&[(MAIN, "c1")]));
    b.final_refs_all(&[(MAIN, "c1")]);
    assert_passes(&b);
}

#[test]
fn concurrent_compare_and_swaps_in_either_order() {
    let mut b = HistoryBuilder::new();
    // c0 -> c1 -> c2, invoked in the opposite order and overlapping.
    b.push("R2", 100, 900, &[(MAIN, Some("c1"), "c2")], ok());
    b.push("R1", 200, 300, &[(MAIN, Some("c0"), "c1")], ok());
    // A concurrent push from c0 that lost the race is refused.
    b.push(
        "R2",
        150,
        400,
        &[(MAIN, Some("c0"), "x1")],
        refused(ErrorKind::Rejected),
    );
    b.read("R1", 350, 380, ok_refs(&[(MAIN, "c1")]));
    b.read("R1", 1_000, 1_100, ok_refs(&[(MAIN, "c2")]));
    b.final_refs_all(&[(MAIN, "c2")]);
    assert_passes(&b);
}

#[test]
fn unknown_outcomes_may_take_effect_late_or_never() {
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], unknown());
    // Long after the client gave up, c1 is not there yet ...
    b.read("R2", 1_000, 1_100, ok_refs(&[(MAIN, "c0")]));
    // ... and then it is: it took effect late.
    b.read("R2", 5_000, 5_100, ok_refs(&[(MAIN, "c1")]));
    b.push("R1", 6_000, 6_100, &[(MAIN, Some("c1"), "c2")], ok());
    // Never took effect: a write of unknown outcome from c1 that lost to c2.
    b.push("R2", 5_500, 5_600, &[(MAIN, Some("c1"), "y2")], unknown());
    // Creates a ref, with unknown outcome, and is never seen.
    b.push("R2", 7_000, 7_100, &[(B1, None, "b1-1")], unknown());
    b.read("R1", 8_000, 8_100, ok_refs(&[(MAIN, "c2")]));
    b.final_refs_all(&[(MAIN, "c2")]);
    assert_passes(&b);
}

#[test]
fn multi_ref_pushes_are_checked_ref_by_ref() {
    let mut b = HistoryBuilder::new();
    b.push(
        "R1",
        100,
        200,
        &[(MAIN, Some("c0"), "c1"), (B1, None, "b1-1")],
        ok(),
    );
    b.read("R2", 300, 400, ok_refs(&[(MAIN, "c1"), (B1, "b1-1")]));
    b.push("R2", 500, 600, &[(B1, Some("b1-1"), "b1-2")], ok());
    b.read("R1", 700, 800, ok_refs(&[(MAIN, "c1"), (B1, "b1-2")]));
    b.final_refs_all(&[(MAIN, "c1"), (B1, "b1-2")]);
    assert_passes(&b);
}

#[test]
fn an_operator_discard_lets_values_go_while_it_runs_only() {
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
    b.read("R1", 300, 400, ok_refs(&[(MAIN, "c1")]));
    b.read("R2", 6_000, 6_100, ok_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c0")]);
    let mut h = b.build();
    assert!(!analyse(&h, MAIN_BUDGET).findings.is_empty());
    h.operator.push(thaw(5_000, 5_500, "R1", &[(MAIN, "c1")]));
    let a = analyse(&h, MAIN_BUDGET);
    assert!(a.findings.is_empty(), "{:?}", a.findings);
    assert!(
        a.notes.iter().any(|n| n.contains("repository thaw")),
        "{:?}",
        a.notes
    );
    // After the action, reads are judged again.
    b.history = h;
    let back = b.read("R1", 7_000, 7_100, ok_refs(&[(MAIN, "c1")]));
    let f = single(&b, Anomaly::NonMonotonicRead, back);
    assert!(
        f.violation.explanation.contains("6.100s"),
        "{}",
        f.violation
    );
}

#[test]
fn possibly_stale_reads_are_exempt_only_while_read_only() {
    let mut b = HistoryBuilder::new();
    b.with_replica();
    b.fault(50, FaultKind::Partition, &["R2", "db"]);
    b.fault(90_000, FaultKind::Repair, &["R2", "db"]);
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
    b.read("R2", 300, 400, stale_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c1")]);
    assert_passes(&b);
    assert!(run(&b).notes[1].contains("exempted 1"));
    // No database replicas: a device can never be read-only, so the mark excuses nothing.
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
    let stale = b.read("R2", 300, 400, stale_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c1")]);
    single(&b, Anomaly::StaleRead, stale);
}

// ---- anomalies ----

#[test]
fn read_from_the_future() {
    let mut b = HistoryBuilder::new();
    let early = b.read("R2", 100, 200, ok_refs(&[(MAIN, "c1")]));
    b.push("R1", 300, 400, &[(MAIN, Some("c0"), "c1")], ok());
    b.final_refs_all(&[(MAIN, "c1")]);
    let f = single(&b, Anomaly::ReadFromTheFuture, early);
    assert_eq!(f.window_ops, vec![early]);
    assert!(
        f.violation.explanation.contains("0.300s"),
        "{}",
        f.violation
    );
}

#[test]
fn observed_unknown_write_that_vanishes() {
    let mut b = HistoryBuilder::new();
    let p = b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], unknown());
    let saw = b.read("R1", 300, 400, ok_refs(&[(MAIN, "c1")]));
    let gone = b.read("R2", 500, 600, ok_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c0")]);
    let f = single(&b, Anomaly::NonMonotonicRead, gone);
    assert_eq!(f.window_ops, vec![p, saw, gone]);
    assert!(
        f.violation.explanation.contains("unknown outcome"),
        "{}",
        f.violation
    );
    // Without the first read nobody saw it, and it may never have taken effect.
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], unknown());
    b.read("R2", 500, 600, ok_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c0")]);
    assert_passes(&b);
}

#[test]
fn refused_push_whose_commit_is_read() {
    for kind in [
        ErrorKind::LockTimeout,
        ErrorKind::Rejected,
        ErrorKind::WriteInterruption,
    ] {
        let mut b = HistoryBuilder::new();
        b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], refused(kind));
        let read = b.read("R2", 300, 400, ok_refs(&[(MAIN, "c1")]));
        b.final_refs_all(&[(MAIN, "c0")]);
        let f = single(&b, Anomaly::PhantomWrite, read);
        assert!(
            f.violation.explanation.contains("refused"),
            "{}",
            f.violation
        );
    }
    // Left in the final state of a converged run: reported once, on the first device.
    let mut b = HistoryBuilder::new();
    b.push(
        "R1",
        100,
        200,
        &[(MAIN, Some("c0"), "c1")],
        refused(ErrorKind::LockTimeout),
    );
    b.final_refs_all(&[(MAIN, "c1")]);
    let a = run(&b);
    assert_eq!(a.findings.len(), 1, "{:?}", a.findings);
    let f = &a.findings[0];
    assert_eq!(f.anomaly, Anomaly::PhantomWrite);
    assert_eq!(
        (f.violation.op, f.violation.device.as_deref()),
        (None, Some("R1"))
    );
}

#[test]
fn lost_write() {
    // Two acknowledged compare-and-swaps from the same value, one after the other.
    let mut b = HistoryBuilder::new();
    let first = b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
    let second = b.push("R2", 300, 400, &[(MAIN, Some("c0"), "c2")], ok());
    b.final_refs_all(&[(MAIN, "c2")]);
    let f = single(&b, Anomaly::LostWrite, second);
    assert_eq!(f.window_ops, vec![first, second]);
    // Overlapping.
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 300, &[(MAIN, Some("c0"), "c1")], ok());
    let second = b.push("R2", 200, 400, &[(MAIN, Some("c0"), "c2")], ok());
    b.final_refs_all(&[(MAIN, "c2")]);
    single(&b, Anomaly::LostWrite, second);
    // An acknowledged write replaced by one of unknown outcome that did not build on it.
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
    b.push("R2", 150, 250, &[(MAIN, Some("c0"), "c2")], unknown());
    let read = b.read("R2", 300, 400, ok_refs(&[(MAIN, "c2")]));
    b.final_refs_all(&[(MAIN, "c2")]);
    single(&b, Anomaly::LostWrite, read);
}

#[test]
fn stale_read() {
    let mut b = HistoryBuilder::new();
    // Unrelated earlier traffic must stay out of the window.
    b.push("R1", 10, 20, &[(MAIN, Some("c0"), "c1")], ok());
    b.read("R2", 30, 40, ok_refs(&[(MAIN, "c1")]));
    let push = b.push("R1", 11_000, 11_900, &[(MAIN, Some("c1"), "c2")], ok());
    let read = b.read("R2", 12_345, 12_400, ok_refs(&[(MAIN, "c1")]));
    b.final_refs_all(&[(MAIN, "c2")]);
    let f = single(&b, Anomaly::StaleRead, read);
    assert_eq!(f.window_ops, vec![push, read]);
    assert_eq!(f.violation.at_ms, 12_345);
    assert_eq!(f.violation.device.as_deref(), Some("R2"));
    assert!(
        f.violation.explanation.contains(&format!("push op {push}")),
        "{}",
        f.violation
    );
    assert!(
        f.violation.explanation.contains("11.000s-12.400s"),
        "{}",
        f.violation
    );
    // A missing ref after its creation was acknowledged.
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(B1, None, "b1-1")], ok());
    let read = b.read("R2", 300, 400, ok_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c0"), (B1, "b1-1")]);
    let f = single(&b, Anomaly::StaleRead, read);
    assert!(
        f.violation.seen.ends_with("saw no refs/heads/b1"),
        "{}",
        f.violation
    );
}

#[test]
fn non_monotonic_read() {
    let mut b = HistoryBuilder::new();
    // The acknowledgement came late, but a read saw the new value first.
    b.push("R1", 100, 5_000, &[(MAIN, Some("c0"), "c1")], ok());
    let saw = b.read("R1", 300, 400, ok_refs(&[(MAIN, "c1")]));
    let back = b.read("R2", 500, 600, ok_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c1")]);
    let f = single(&b, Anomaly::NonMonotonicRead, back);
    assert!(f.window_ops.contains(&saw), "{:?}", f.window_ops);
    assert!(f.violation.explanation.contains("backwards"));
}

#[test]
fn one_finding_per_failure_and_the_sweep_goes_on() {
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
    let first = b.read("R2", 300, 400, ok_refs(&[(MAIN, "c0")]));
    b.read("R2", 500, 600, ok_refs(&[(MAIN, "c1")]));
    b.push("R1", 700, 800, &[(MAIN, Some("c1"), "c2")], ok());
    let second = b.read("R2", 900, 1_000, ok_refs(&[(MAIN, "c1")]));
    b.final_refs_all(&[(MAIN, "c2")]);
    let a = run(&b);
    let ops: Vec<Option<u64>> = a.findings.iter().map(|f| f.violation.op).collect();
    assert_eq!(ops, vec![Some(first), Some(second)]);
}

#[test]
fn past_the_bound_the_verdict_says_inconclusive() {
    let mut b = HistoryBuilder::new();
    let mut head = "c0".to_owned();
    for i in 1..=50u64 {
        let next = format!("c{i}");
        // Overlapping unknown writes and reads keep several configurations alive.
        b.push(
            "R1",
            i * 10,
            i * 10 + 5,
            &[(MAIN, Some(&head), &next)],
            unknown(),
        );
        b.read("R2", i * 10 + 1, i * 10 + 30, ok_refs(&[(MAIN, &next)]));
        head = next;
    }
    b.final_refs_all(&[(MAIN, &head)]);
    let tiny = Budget { steps: 5, width: 5 };
    let a = analyse(&b.build(), tiny);
    assert!(a.inconclusive > 0);
    assert!(
        a.notes.iter().any(|n| n.starts_with("INCONCLUSIVE")),
        "{:?}",
        a.notes
    );
    // With the normal bound the same history is judged, and passes.
    assert_passes(&b);
}

#[test]
fn verdict_is_registered_and_readable() {
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
    let read = b.read("R2", 300, 400, ok_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c1")]);
    let verdicts = super::super::check_all(&b.build());
    let v = verdicts
        .iter()
        .find(|v| v.checker == CheckerId::Linearizable);
    let Some(v) = v else {
        panic!("no linearizable verdict");
    };
    assert_eq!(v.violations.len(), 1, "{v}");
    let line = v.violations[0].to_string();
    assert!(
        line.starts_with(&format!("[8 linearizable] op {read} on repo1/R2 at 0.300s")),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

/// A long clean history of `n` operations over several refs and clients, with overlapping
/// pushes, unknown outcomes and reads.
fn big_history(n: u64) -> History {
    let mut b = HistoryBuilder::new();
    let names = [
        "refs/heads/main",
        "refs/heads/b1",
        "refs/heads/b2",
        "refs/heads/b3",
    ];
    let mut heads: Vec<Option<String>> = vec![Some("c0".to_owned()), None, None, None];
    let mut t = 0u64;
    let mut made = 0u64;
    let mut k = 0u64;
    while made < n {
        k += 1;
        t += 7;
        let r = (k % names.len() as u64) as usize;
        let next = format!("{}-{k}", names[r]);
        let outcome = if k.is_multiple_of(13) {
            unknown()
        } else {
            ok()
        };
        let unknown_push = k.is_multiple_of(13);
        // Overlaps the previous and next operations.
        b.push(
            if k.is_multiple_of(2) { "R1" } else { "R2" },
            t,
            t + 15,
            &[(names[r], heads[r].as_deref(), &next)],
            outcome,
        );
        made += 1;
        // Unknown pushes take effect (the read after shows it) about half of the time.
        if !unknown_push || k.is_multiple_of(2) {
            heads[r] = Some(next);
        }
        let seen: Vec<(&str, &str)> = names
            .iter()
            .zip(&heads)
            .filter_map(|(n, h)| h.as_deref().map(|h| (*n, h)))
            .collect();
        b.read(
            if k.is_multiple_of(2) { "R2" } else { "R1" },
            t + 16,
            t + 20,
            ok_refs(&seen),
        );
        made += 1;
        t += 13;
    }
    let seen: Vec<(String, String)> = names
        .iter()
        .zip(&heads)
        .filter_map(|(n, h)| h.clone().map(|h| ((*n).to_owned(), h)))
        .collect();
    let seen: Vec<(&str, &str)> = seen.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    b.final_refs_all(&seen);
    b.build()
}

#[test]
fn a_generated_history_passes() {
    let h = big_history(2_000);
    let a = analyse(&h, MAIN_BUDGET);
    assert!(
        a.findings.is_empty(),
        "{:?}",
        a.findings.first().map(|f| &f.violation)
    );
    assert_eq!(a.inconclusive, 0);
}

/// `cargo test --release -p stormcell-harness --lib linearizable::tests::bench -- --ignored
/// --nocapture` prints how long 10^5 operations take.
#[test]
#[ignore]
fn bench_hundred_thousand_operations() {
    let h = big_history(100_000);
    let clock = std::time::Instant::now();
    let a = analyse(&h, MAIN_BUDGET);
    let took = clock.elapsed();
    println!(
        "checked {} operations in {:.2} s: {} findings, notes {:?}",
        h.ops.len(),
        took.as_secs_f64(),
        a.findings.len(),
        a.notes.first()
    );
    assert!(a.findings.is_empty());
}

#[test]
fn a_demote_excuses_only_listed_refs_and_unrecorded_writes() {
    // Acknowledged, not listed by the plan: its loss is judged.
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
    b.history.operator.push(thaw(5_000, 5_500, "R1", &[]));
    let gone = b.read("R2", 6_000, 6_100, ok_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c0")]);
    single(&b, Anomaly::StaleRead, gone);
    // Of unknown outcome and seen only before the demote: it may go with the demoted row.
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], unknown());
    b.read("R1", 300, 400, ok_refs(&[(MAIN, "c1")]));
    b.history.operator.push(thaw(5_000, 5_500, "R1", &[]));
    b.read("R2", 6_000, 6_100, ok_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c0")]);
    assert_passes(&b);
}

#[test]
fn overlapping_reads_that_flip_between_values_are_non_monotonic() {
    let mut b = HistoryBuilder::new();
    b.push("R1", 100, 200, &[(MAIN, Some("c0"), "c1")], ok());
    // All three overlap; no write in their window: c1, then c0, then c1 again cannot be
    // ordered, whichever way the overlaps are taken.
    b.read("R1", 1_000, 1_300, ok_refs(&[(MAIN, "c0")]));
    b.read("R2", 1_050, 1_100, ok_refs(&[(MAIN, "c1")]));
    b.read("R1", 1_200, 1_250, ok_refs(&[(MAIN, "c0")]));
    b.final_refs_all(&[(MAIN, "c1")]);
    let a = run(&b);
    assert!(!a.findings.is_empty());
    assert!(
        a.findings
            .iter()
            .any(|f| matches!(f.anomaly, Anomaly::StaleRead | Anomaly::NonMonotonicRead)),
        "{:?}",
        a.findings
    );
}
