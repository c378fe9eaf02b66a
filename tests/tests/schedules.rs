//! Property test over fault schedules on a small cluster: whatever strikes and partitions
//! hit a two- or three-device cluster, every checker passes. A failure shrinks to a
//! minimal schedule (fewer, shorter faults), and proptest records it under
//! `tests/proptest-regressions/`, which is committed.

use proptest::prelude::*;
use stormcell_harness::runner::{run, RunSpec};
use stormcell_harness::scenario;
use stormcell_model::config::Profile;

fn scenario_text(
    devices: u32,
    strikes: u32,
    down_s: u64,
    partitions: u32,
    part_s: u64,
    write_strikes: u32,
) -> String {
    let mut t = format!(
        "name = \"prop\"\ndescription = \"generated\"\n[topology]\ndevices = {devices}\nrepositories = 1\n[workload]\nduration_s = 30\nsettle_s = 30\n[faults]\nwindow_s = {{ min = 2, max = 20 }}\n"
    );
    if strikes > 0 {
        t.push_str(&format!(
            "[faults.strikes]\ncount = {strikes}\ndown_s = {down_s}\n"
        ));
    }
    if partitions > 0 {
        t.push_str(&format!(
            "[faults.partitions]\ncount = {partitions}\nduration_s = {part_s}\n"
        ));
    }
    if write_strikes > 0 {
        t.push_str(&format!("[faults.write_strikes]\ncount = {write_strikes}\npoints = [\"after-writing-set\", \"after-refs-written\", \"after-version-bump\", \"after-ack\"]\ndown_s = {down_s}\n"));
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn any_schedule_keeps_every_guarantee(
        devices in 2u32..=3,
        strikes in 0u32..=2,
        down_s in 1u64..=15,
        partitions in 0u32..=2,
        part_s in 1u64..=15,
        write_strikes in 0u32..=1,
        seed in 0u64..1000,
    ) {
        let text = scenario_text(devices, strikes, down_s, partitions, part_s, write_strikes);
        let s = scenario::parse("generated.toml", &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let r = run(&RunSpec { scenario: s, seed, profile: Profile::Stormcell, plant: None, keep_trace: false });
        let violations: Vec<String> = r.verdicts.iter().flat_map(|v| v.violations.iter().map(ToString::to_string)).collect();
        prop_assert!(r.passed(), "{}", violations.join("\n"));
    }
}
