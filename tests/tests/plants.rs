//! Every planted bug is caught within a fixed seed range of the scenario that exposes it,
//! and replaying the failing seed gives the same trace hash.

use stormcell_harness::mutants;
use stormcell_harness::runner::{run, RunSpec};
use stormcell_harness::scenario;
use stormcell_model::config::Profile;
use stormcell_model::plant::Bug;

/// The plant's row of the kill matrix must catch it: some seed within the row's budget
/// fails with a violation from one of the row's checkers. A plant may show first as
/// another failure (a freeze that never resolves, say); every failing seed on the way must
/// still replay exactly.
fn caught(bug: Bug) {
    let row = mutants::of(bug);
    let mut other_failures = Vec::new();
    for spec in row.specs(None).expect("built-in scenario") {
        let first = run(&spec);
        if first.passed() {
            continue;
        }
        let again = run(&spec);
        assert!(
            !again.passed(),
            "{bug}: replay of seed {} passed",
            spec.seed
        );
        assert_eq!(
            first.trace_hash, again.trace_hash,
            "{bug}: replay of seed {} diverged",
            spec.seed
        );
        if row.catches(&first) {
            return;
        }
        other_failures.push((spec.seed, mutants::failing_checkers(&first)));
    }
    panic!(
        "planted bug {bug} was not caught as {:?} in {} seeds of {}; other failures: \
         {other_failures:?}",
        row.caught_by, row.seeds, row.scenario
    );
}

// One test per plant, so a plant that escapes is named by the test that fails.

#[test]
fn skip_read_sync_is_caught() {
    caught(Bug::SkipReadSync);
}

#[test]
fn ack_before_version_bump_is_caught() {
    // Caught as what it is, a read that misses an acknowledged push: the plant no longer
    // also acknowledges pushes the store rejected.
    caught(Bug::AckBeforeVersionBump);
}

#[test]
fn ack_before_durable_is_caught() {
    // A push acknowledged although its sync failed: the failed sync dropped it, so it is
    // gone from the device that took it.
    caught(Bug::AckBeforeDurable);
}

#[test]
fn release_lock_before_clear_writing_is_caught() {
    caught(Bug::ReleaseLockBeforeClearWriting);
}

#[test]
fn ignore_writing_flag_is_caught() {
    caught(Bug::IgnoreWritingFlag);
}

#[test]
fn skip_fsync_is_caught() {
    caught(Bug::SkipFsync);
}

#[test]
fn promote_with_rows_is_caught() {
    caught(Bug::PromoteWithRows);
}

#[test]
fn demote_without_lock_is_caught() {
    // Acting on the plan the operator read, unlocked, deletes the rows of pushes
    // acknowledged meanwhile (lost, unlisted) or of a write still running (a freeze no
    // fault explains).
    caught(Bug::DemoteWithoutLock);
}

#[test]
fn status_ignores_inactive_is_caught() {
    caught(Bug::StatusIgnoresInactive);
}

#[test]
fn trust_replica_versions_is_caught() {
    caught(Bug::TrustReplicaVersions);
}

#[test]
fn never_recover_is_caught() {
    caught(Bug::NeverRecover);
}

#[test]
fn write_on_replica_is_caught() {
    caught(Bug::WriteOnReplica);
}

#[test]
fn epoch_in_memory_is_caught() {
    // The restarted device serves reads without the push the old primary acknowledged,
    // then writes over it. Earlier seeds (48) show it first as a freeze that never
    // resolves: an unacknowledged write it trusted the promoted rows for stays fenced.
    caught(Bug::EpochInMemory);
}

#[test]
fn trust_empty_working_copy_is_caught() {
    // The wiped device serves its empty copy, and its next push prunes the others.
    caught(Bug::TrustEmptyWorkingCopy);
}

#[test]
fn ignore_row_count_is_caught() {
    // The demoted writer's push is acknowledged, then overwritten.
    caught(Bug::IgnoreRowCount);
}

#[test]
fn unconditional_sync_update_is_caught() {
    // A copy from the demoted device recorded after the demote brings back what the
    // thaw's plan discarded.
    caught(Bug::UnconditionalSyncUpdate);
}

#[test]
fn skip_write_sync_is_caught() {
    // A device behind the leaders takes a push on its old copy and records it as the
    // newest version: the pushes it never copied are gone once the others copy from it.
    caught(Bug::SkipWriteSync);
}

#[test]
fn unmarked_stale_read_is_caught() {
    // Read-only, with a peer that did not answer, a read misses the push the lost primary
    // acknowledged and says nothing of it.
    caught(Bug::UnmarkedStaleRead);
}

#[test]
fn discard_without_salvage_is_caught() {
    // The demoted writer's copy held what the plan listed; nothing keeps it.
    caught(Bug::DiscardWithoutSalvage);
}

#[test]
fn unconditional_demote_is_caught() {
    // A copy recorded between the plan and the demote keeps under another device's row
    // what the plan said it discarded.
    caught(Bug::UnconditionalDemote);
}

/// A stormcell run of `name` at `seed`, with or without its trace.
fn spec(name: &str, seed: u64, keep_trace: bool) -> RunSpec {
    RunSpec {
        scenario: scenario::builtin_named(name).expect("built-in scenario"),
        seed,
        profile: Profile::Stormcell,
        plant: None,
        keep_trace,
    }
}

/// Runs `name` at `seed` twice and requires the same trace.
fn replays_exactly(name: &str, seed: u64) {
    let spec = spec(name, seed, true);
    let (a, b) = (run(&spec), run(&spec));
    assert_eq!(a.trace_hash, b.trace_hash, "{name} seed {seed}");
    assert_eq!(a.trace, b.trace, "{name} seed {seed}");
}

#[test]
fn determinism_of_database_scenarios() {
    for name in [
        "db-primary-loss",
        "db-promote",
        "db-flap",
        "db-partial-partition",
        "db-stale-replica",
    ] {
        replays_exactly(name, 3);
    }
}

/// Starts and finishes `n` tasks on a throwaway runtime: tokio numbers tasks from one
/// process-wide counter, so this changes the numbers the next run's tasks get.
fn advance_task_ids(n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        for _ in 0..n {
            let _ = tokio::spawn(async {}).await;
        }
    });
}

#[test]
fn determinism_does_not_depend_on_earlier_runs_in_the_process() {
    // The same seed after a different history of the process must replay exactly. Crashes
    // of the database host drop many sessions at once; if their order followed tokio's
    // task numbers, it would change with what ran before.
    for seed in 0..24 {
        let hash = || run(&spec("db-flap", seed, false)).trace_hash;
        let first = hash();
        for shift in 1..4 {
            advance_task_ids(shift);
            assert_eq!(
                hash(),
                first,
                "seed {seed} after shifting task ids by {shift}"
            );
        }
    }
}

#[test]
fn determinism_of_operator_scenarios() {
    for name in [
        "demote-during-write",
        "maintenance-lock",
        "demote-all-promote",
    ] {
        replays_exactly(name, 1);
    }
}

#[test]
fn determinism_same_seed_same_trace() {
    for seed in 0..3 {
        replays_exactly("swarm", seed);
    }
}
