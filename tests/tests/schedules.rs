//! Property tests over fault schedules: whatever faults hit a small cluster, every checker
//! passes on correct code.
//!
//! - `any_schedule_keeps_every_guarantee`: strikes, partitions and write strikes on a two-
//!   or three-device cluster without database replicas.
//! - `overlapping_schedules_of_every_fault_kind_raise_no_alarm`: every fault kind the
//!   scenarios know, device and database alike, each drawn or not, with counts, lengths
//!   and start times that make them overlap (a flap during a strike of the primary, a
//!   partition during a hang, a lost disk during a failing one). This is the false-alarm
//!   test of the checkers' fault timeline: whatever overlaps, correct code yields no
//!   violation. CI runs [`DEFAULT_CASES`] cases; `cargo test -p stormcell-tests --test
//!   schedules -- --ignored` runs 500 (`SCHEDULE_CASES` to change).
//!
//! A failure shrinks to a smaller schedule (fewer kinds, fewer and shorter faults), and
//! proptest records it under `tests/proptest-regressions/`, which is committed.

use proptest::prelude::*;
use stormcell_harness::runner::{run, RunSpec};
use stormcell_harness::scenario;
use stormcell_model::config::Profile;

/// Cases of the every-kind test in an ordinary `cargo test` (about 15 s on two busy
/// cores; 500 take about 35 s).
const DEFAULT_CASES: u32 = 200;

/// The seed of the cases the every-kind property test draws.
const EVERY_KIND_RNG_SEED: u64 = 20261207;

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
        let violations = r.violation_lines();
        prop_assert!(r.passed(), "{}", violations.join("\n"));
    }
}

/// One drawn fault kind: how many, and the length of each (seconds, or milliseconds for
/// slow links), as its TOML section.
#[derive(Debug, Clone)]
struct Kind {
    /// The `[faults.NAME]` section.
    name: &'static str,
    count: u32,
    length: u64,
    /// A second parameter where the kind has one (a flap's up time, a lag's delay, a lost
    /// disk's backup age; 0 otherwise), and a switch (one-way partitions, cuts of every
    /// device). A primary lost for good and promoted is an operator's procedure, not a
    /// fault: the promotion scenarios cover it.
    extra: u64,
    switch: bool,
}

impl Kind {
    fn toml(&self) -> String {
        let (count, len, extra) = (self.count, self.length, self.extra);
        let body = match self.name {
            "strikes" | "db_replica_strikes" => format!("down_s = {len}\n"),
            "write_strikes" => format!(
                "points = [\"after-writing-set\", \"after-refs-written\", \
                 \"after-version-bump\", \"after-ack\"]\ndown_s = {len}\n"
            ),
            "partitions" => format!("duration_s = {len}\none_way = {}\n", self.switch),
            "db_link_drops" | "fsync_failures" | "db_primary_hangs" => {
                format!("duration_s = {len}\n")
            }
            "db_primary_cuts" => format!("duration_s = {len}\nall_devices = {}\n", self.switch),
            "slow_links" => format!("hold_ms = {}\n", len * 250),
            "db_primary_strikes" => format!("down_s = {len}\n"),
            "db_replica_lag" => format!("delay_s = {extra}\nduration_s = {len}\n"),
            // Two cycles of at most 20 s end within the workload and settle time, so the
            // final probes find the primary up (as every scenario's faults do).
            "db_flaps" => format!("cycles = 2\ndown_s = {}\nup_s = {extra}\n", len.min(10)),
            "disk_losses" => format!("down_s = {len}\nbackup_age_s = {}\n", extra * 4),
            _ => String::new(),
        };
        // The operator's procedure demotes one device whose lost disk held the only
        // newest push; two such losses at once can lose a push for good, by design.
        let count = if self.name == "disk_losses" { 1 } else { count };
        format!("[faults.{}]\ncount = {count}\n{body}", self.name)
    }
}

/// Every fault kind a scenario's `[faults]` can name, device kinds first.
const KINDS: [&str; 13] = [
    "strikes",
    "write_strikes",
    "partitions",
    "db_link_drops",
    "slow_links",
    "disk_losses",
    "fsync_failures",
    "db_primary_strikes",
    "db_primary_cuts",
    "db_primary_hangs",
    "db_replica_lag",
    "db_replica_strikes",
    "db_flaps",
];

/// Each kind drawn with probability about one half; counts of one or two, lengths of 1 to
/// 20 s, all starting within the same 15 s window so that they overlap.
fn kinds() -> impl Strategy<Value = Vec<Kind>> {
    let one = |name: &'static str| {
        proptest::option::weighted(
            0.5,
            (1u32..=2, 1u64..=20, 1u64..=10, any::<bool>()).prop_map(
                move |(count, length, extra, switch)| Kind {
                    name,
                    count,
                    length,
                    extra,
                    switch,
                },
            ),
        )
    };
    KINDS
        .iter()
        .map(|&name| one(name))
        .collect::<Vec<_>>()
        .prop_map(|drawn| drawn.into_iter().flatten().collect())
}

fn every_kind_text(devices: u32, kinds: &[Kind]) -> String {
    let mut t = format!(
        "name = \"prop-every-kind\"\ndescription = \"generated\"\n\
         [topology]\ndevices = {devices}\nrepositories = 1\n\
         [database]\nreplicas = 1\nreplica_delay_ms = {{ min = 50, max = 2000 }}\n\
         [workload]\nduration_s = 30\nsettle_s = 45\nrefs_per_push = {{ min = 1, max = 2 }}\n\
         [faults]\nwindow_s = {{ min = 2, max = 15 }}\n"
    );
    for k in kinds {
        t.push_str(&k.toml());
    }
    if kinds.iter().any(|k| k.name == "disk_losses") {
        // A lost disk may have held the only newest push: the documented procedure is to
        // demote that device (as the swarm scenario's operator does).
        t.push_str(
            "[operator]\nconfirm_s = 2\n[[operator.steps]]\nwhen = { not_intact = \"@any\" }\n\
             action = { thaw = { demote = \"@not-intact\", repos = [\"@not-intact\"] } }\n",
        );
    }
    t
}

fn every_kind_case(devices: u32, kinds: &[Kind], seed: u64) -> Result<(), TestCaseError> {
    let text = every_kind_text(devices, kinds);
    let s = scenario::parse("generated.toml", &text)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    let r = run(&RunSpec {
        scenario: s,
        seed,
        profile: Profile::Stormcell,
        plant: None,
        keep_trace: false,
    });
    let violations = r.violation_lines();
    prop_assert!(
        r.passed(),
        "{}\nseed {seed} of\n{text}",
        violations.join("\n")
    );
    Ok(())
}

fn every_kind_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // The same cases on every run, so CI is reproducible; `PROPTEST_RNG_SEED=N` draws
        // others (seed 84683 of scenarios/regressions/leader-moved-during-fetch.toml came from a
        // random draw).
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(EVERY_KIND_RNG_SEED),
        ),
        // Shrinking reruns whole simulations: keep it bounded.
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(every_kind_config(DEFAULT_CASES))]

    #[test]
    fn overlapping_schedules_of_every_fault_kind_raise_no_alarm(
        devices in 2u32..=3,
        kinds in kinds(),
        seed in 0u64..100_000,
    ) {
        every_kind_case(devices, &kinds, seed)?;
    }
}

/// The long variant: as many cases as `SCHEDULE_CASES` says (500 by default).
#[test]
#[ignore = "long: 500 simulated runs; run with --ignored"]
fn overlapping_schedules_of_every_fault_kind_raise_no_alarm_500() {
    let cases = std::env::var("SCHEDULE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut runner = proptest::test_runner::TestRunner::new(every_kind_config(cases));
    let strategy = (2u32..=3, kinds(), 0u64..100_000);
    let result = runner.run(&strategy, |(devices, kinds, seed)| {
        every_kind_case(devices, &kinds, seed)
    });
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn every_fault_kind_is_drawn_and_parses() {
    // Each kind's section as the property test writes it is a valid scenario, alone and
    // all together, so no kind silently drops out of the schedules.
    let all: Vec<Kind> = KINDS
        .iter()
        .map(|&name| Kind {
            name,
            count: 2,
            length: 20,
            extra: 10,
            switch: true,
        })
        .collect();
    for k in &all {
        let text = every_kind_text(3, std::slice::from_ref(k));
        let s = scenario::parse("generated.toml", &text);
        assert!(s.is_ok(), "{}: {:?}\n{text}", k.name, s.err());
        let kinds = s.map(|s| s.faults.kinds()).unwrap_or_default();
        assert!(kinds.contains(&k.name), "{}: {kinds:?}", k.name);
    }
    let s = scenario::parse("generated.toml", &every_kind_text(3, &all));
    let kinds = s.map(|s| s.faults.kinds()).unwrap_or_default();
    assert_eq!(kinds.len(), KINDS.len(), "{kinds:?}");
}
