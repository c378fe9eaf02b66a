//! Snapshots of the summary report for fixed seeds (without wall-clock columns).

use stormcell_harness::campaign::run_all;
use stormcell_harness::report::Summary;
use stormcell_harness::runner::RunSpec;
use stormcell_harness::scenario;
use stormcell_model::config::Profile;

fn summary(names: &[&str], profile: Profile, seeds: u64) -> String {
    let scenarios: Vec<_> = names
        .iter()
        .map(|n| scenario::builtin_named(n).expect("built-in scenario"))
        .collect();
    let specs: Vec<RunSpec> = scenarios
        .iter()
        .flat_map(|s| {
            (0..seeds).map(move |seed| RunSpec {
                scenario: s.clone(),
                seed,
                profile,
                plant: None,
                keep_trace: false,
            })
        })
        .collect();
    let outcome = run_all(&specs, 2);
    Summary::of(&scenarios, &outcome).render_with(false)
}

#[test]
fn summary_of_steady_and_lightning() {
    insta::assert_snapshot!(summary(&["steady", "lightning"], Profile::Stormcell, 3));
}

#[test]
fn summary_of_write_interruption_under_phabricator() {
    insta::assert_snapshot!(summary(&["write-interruption"], Profile::Phabricator, 3));
}
