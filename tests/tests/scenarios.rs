//! Every built-in scenario over a fixed seed range, under the stormcell profile: every
//! checker must pass.

use stormcell_harness::runner::{run, RunSpec};
use stormcell_harness::scenario;
use stormcell_model::config::Profile;

const SEEDS: u64 = 6;

fn all_pass(name: &str) {
    let s = scenario::builtin_named(name).expect("built-in scenario");
    for seed in 0..SEEDS {
        let r = run(&RunSpec {
            scenario: s.clone(),
            seed,
            profile: Profile::Stormcell,
            plant: None,
            keep_trace: false,
        });
        let violations: Vec<String> = r
            .verdicts
            .iter()
            .flat_map(|v| v.violations.iter().map(ToString::to_string))
            .collect();
        assert!(
            r.passed(),
            "{name} seed {seed} failed ({}):\n{}",
            r.replay_command(),
            violations.join("\n")
        );
    }
}

macro_rules! scenario_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { all_pass($name); })*

        #[test]
        fn every_builtin_has_a_test() {
            let tested = [$($name),*];
            for s in scenario::builtin() {
                assert!(tested.contains(&s.name.as_str()), "scenario {} has no cargo test", s.name);
            }
        }
    };
}

scenario_tests! {
    steady => "steady",
    lightning => "lightning",
    write_interruption => "write-interruption",
    loss_of_leaders => "loss-of-leaders",
    ambiguous_leader => "ambiguous-leader",
    partition => "partition",
    db_link_drop => "db-link-drop",
    contention => "contention",
    swarm => "swarm",
    db_flap => "db-flap",
    db_partial_partition => "db-partial-partition",
    db_primary_loss => "db-primary-loss",
    db_promote => "db-promote",
    db_stale_replica => "db-stale-replica",
}

#[test]
fn write_interruption_recovers_under_stormcell_and_stays_frozen_under_phabricator() {
    let s = scenario::builtin_named("write-interruption").expect("built-in scenario");
    let storm = run(&RunSpec {
        scenario: s.clone(),
        seed: 1,
        profile: Profile::Stormcell,
        plant: None,
        keep_trace: false,
    });
    assert_eq!(storm.final_outcome.name(), "converged");
    let phab = run(&RunSpec {
        scenario: s,
        seed: 1,
        profile: Profile::Phabricator,
        plant: None,
        keep_trace: false,
    });
    assert_eq!(phab.final_outcome.name(), "write-frozen");
}
