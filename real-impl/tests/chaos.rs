//! Short campaigns of the chaos runner (`stormcell-chaos`) against this crate's daemon:
//! a built-in scenario drawn from a seed, run against real processes with its times
//! scaled down, and the history judged by the simulator's checkers. With the `plant`
//! feature, the same runner must catch a daemon with a fix taken out again.

use std::path::PathBuf;

use stormcell_chaos::{run, Options, Registry, Report};

/// Runs `scenario` with `seed` at `time_scale`, or says why it was skipped.
fn campaign(test: &str, scenario: &str, seed: u64, plant: Option<&str>) -> Option<Report> {
    if let Some(why) = stormcell_chaos::postgres::missing_prerequisite() {
        eprintln!("SKIPPED {test}: {why}; `bash tests/run-all.sh` as root installs them");
        return None;
    }
    let registry = Registry::new();
    let opts = Options {
        scenario: scenario.to_owned(),
        seed,
        stormcell_bin: PathBuf::from(env!("CARGO_BIN_EXE_stormcell")),
        keep: None,
        plant: plant.map(str::to_owned),
        time_scale: 0.3,
    };
    let report = run(&opts, &registry);
    registry.stop_everything();
    let report = match report {
        Ok(report) => report,
        Err(e) => panic!("{test}: the run could not be carried out: {e}"),
    };
    for verdict in &report.verdicts {
        eprintln!("{verdict}");
    }
    if report.kept {
        eprintln!("{test}: report kept in {}", report.dir.display());
    }
    Some(report)
}

#[test]
fn a_short_lightning_campaign_against_real_processes_passes_every_checker() {
    let Some(report) = campaign("chaos_lightning", "lightning", 1, None) else {
        return;
    };
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(report.faults > 0, "the schedule's strikes were carried out");
    assert!(
        report.operations > 20,
        "the workload ran: {}",
        report.operations
    );
    let failed: Vec<String> = report
        .verdicts
        .iter()
        .filter(|v| !v.passed())
        .map(ToString::to_string)
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A disk loss the plant shows at once: one device loses its disk mid-workload and
/// restarts at once on an empty data directory, while it is still a leader of the newest
/// version, under a read-mostly workload that reads it soon after.
#[cfg(feature = "plant")]
const QUICK_DISK_LOSS: &str = r#"
name = "quick-disk-loss"
description = "One device loses its disk and restarts at once on an empty data directory, under a read-mostly workload."

[topology]
devices = 3
repositories = 1

[workload]
clients = 2
duration_s = 60
think_ms = { min = 200, max = 600 }
push_weight = 1
read_weight = 3

[faults]
window_s = { min = 10, max = 20 }

[faults.disk_losses]
count = 1
down_s = { min = 0, max = 0 }
"#;

/// Runs the scenario `text` (named `name`) against today's daemon, where every checker
/// must pass, then against the daemon with `plant`, where one of `catchers` must fail.
/// Returns the run without the plant, for what the caller checks of it, or `None` when
/// PostgreSQL is missing.
#[cfg(feature = "plant")]
fn passes_then_catches(name: &str, text: &str, plant: &str, catchers: &[&str]) -> Option<Report> {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("no temporary directory");
    };
    let scenario = dir.path().join(format!("{name}.toml"));
    if let Err(e) = std::fs::write(&scenario, text) {
        panic!("{}: {e}", scenario.display());
    }
    let scenario = scenario.display().to_string();
    let fixed = campaign(&format!("chaos_{name}"), &scenario, 1, None)?;
    let failed: Vec<String> = fixed
        .verdicts
        .iter()
        .filter(|v| !v.passed())
        .map(ToString::to_string)
        .collect();
    assert!(
        failed.is_empty(),
        "without the plant: {}",
        failed.join("\n")
    );
    let planted = campaign(&format!("chaos_{name}_plant"), &scenario, 1, Some(plant))?;
    let caught: Vec<String> = planted
        .verdicts
        .iter()
        .filter(|v| !v.passed())
        .map(|v| v.checker.name().to_owned())
        .collect();
    if planted.kept {
        // Kept because it failed, as it must: nobody needs it after this test.
        let _ = std::fs::remove_dir_all(&planted.dir);
    }
    assert!(
        caught.iter().any(|c| catchers.contains(&c.as_str())),
        "the checkers missed {plant}; failing checkers: {caught:?}"
    );
    Some(fixed)
}

/// The second loss once seen by hand (a device restarted on an empty `data_dir` trusted
/// its empty copy), restored by the plant `trust-empty-working-copy`: the same short
/// disk-loss campaign passes against today's daemon and is caught (a stale read, or an
/// acknowledged push lost) against the daemon with the fix taken out.
#[cfg(feature = "plant")]
#[test]
fn a_short_disk_loss_campaign_catches_the_daemon_trusting_an_empty_working_copy() {
    let Some(fixed) = passes_then_catches(
        "disk_loss",
        QUICK_DISK_LOSS,
        "trust-empty-working-copy",
        &["durability", "stale-read"],
    ) else {
        return;
    };
    assert!(fixed.faults > 0, "the disk loss was carried out");
}

/// The first loss once seen by hand (a lagging replica promoted, then devices restarted),
/// shortened: the replica stops receiving before the primary is lost for good, and every
/// device goes down with it and comes back after the promotion.
#[cfg(feature = "plant")]
const QUICK_COLD_RESTART: &str = r#"
name = "quick-cold-restart"
description = "The replica stops receiving, the primary is lost for good, every device restarts after the promotion."

[topology]
devices = 3
repositories = 1

[database]
replicas = 1
replica_delay_ms = { min = 50, max = 500 }

[workload]
clients = 3
duration_s = 40
settle_s = 30
client_timeout_s = 60

[faults]
window_s = { min = 12, max = 14 }

[faults.db_primary_strikes]
count = 1
down_s = 1
restart = false
promote_after_s = { min = 4, max = 6 }
replicas_behind_s = { min = 6, max = 8 }
device_restarts = { count = 3, after_s = { min = 0, max = 1 }, down_s = { min = 9, max = 11 }, every_device = true }
"#;

/// The first loss restored by the plant `epoch-in-memory` (a process that did not see the
/// promotion trusts the promoted rows): the short cold-restart campaign passes against
/// today's daemon and is caught against the daemon with the fix taken out (an
/// acknowledged push lost or frozen out of reach, or a stale read).
#[cfg(feature = "plant")]
#[test]
fn a_short_cold_restart_campaign_catches_the_daemon_keeping_the_promotion_in_memory() {
    let Some(fixed) = passes_then_catches(
        "cold_restart",
        QUICK_COLD_RESTART,
        "epoch-in-memory",
        &["durability", "stale-read", "convergence"],
    ) else {
        return;
    };
    assert!(fixed.skipped.is_empty(), "{:?}", fixed.skipped);
    assert!(
        fixed.faults >= 5,
        "the loss, the promotion and the restarts were carried out"
    );
}
