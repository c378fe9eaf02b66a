//! One chaos run: the scenario and seed drawn exactly as the simulator draws them
//! (topology, fault mix and schedule from the same random streams), then carried out
//! against real processes on the wall clock, and the history checked with the
//! simulator's checkers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stormcell_harness::checker::{self, Verdict};
use stormcell_harness::db::cluster::replica_name;
use stormcell_harness::env::stream_rng;
use stormcell_harness::history::{
    DatabaseHosts, FinalState, History, Outcome, Phase, RefUpdate, RepositoryStart,
};
use stormcell_harness::nemesis::{self, Action, Planned, DB_HOST};
use stormcell_harness::runner::streams;
use stormcell_harness::scenario::{self, Scenario};

use crate::cleanup::Registry;
use crate::cluster::{Cluster, ClusterSpec};
use crate::driver::{self, Driver};
use crate::error::{io, ChaosError, Result};
use crate::workload::{self, ClientPlan, Recorder, Target};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// A built-in scenario's name or a scenario file's path.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The `stormcell` binary.
    pub stormcell_bin: PathBuf,
    /// Where to keep the report (history, logs, data); a temporary directory otherwise,
    /// kept only when the run fails.
    pub keep: Option<PathBuf>,
    /// A planted bug the nodes run with (`STORMCELL_PLANT`; a daemon built with the
    /// `plant` feature).
    pub plant: Option<String>,
    /// Every time of the scenario (workload, settle, schedule) is multiplied by this.
    pub time_scale: f64,
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// Where the history, the logs and the data are (gone when the run passed without
    /// `--keep`).
    pub dir: PathBuf,
    /// Whether `dir` is still there.
    pub kept: bool,
    /// The checkers' verdicts.
    pub verdicts: Vec<Verdict>,
    /// The scheduled actions skipped as unsupported, with why.
    pub skipped: Vec<String>,
    /// How many operations the history holds.
    pub operations: usize,
    /// How many fault events the history holds (starts and ends).
    pub faults: usize,
}

impl Report {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(Verdict::passed)
    }
}

/// Reads a built-in scenario by name or a scenario file by path.
pub fn load_scenario(name: &str) -> Result<Scenario> {
    let path = Path::new(name);
    if path.exists() {
        Ok(scenario::load_file(path)?)
    } else {
        Ok(scenario::builtin_named(name)?)
    }
}

/// What the seed draws: devices, repositories, branches, replicas and the schedule.
#[derive(Debug, Clone)]
pub struct Drawn {
    /// Device names.
    pub devices: Vec<String>,
    /// Repository names.
    pub repos: Vec<String>,
    /// Branch names.
    pub branches: Vec<String>,
    /// Replica host names.
    pub replicas: Vec<String>,
    /// The schedule, with times scaled.
    pub schedule: Vec<Planned>,
}

fn scale(ms: u64, by: f64) -> u64 {
    (ms as f64 * by).round() as u64
}

/// Draws what the simulator draws for `scenario` and `seed` (same streams, same order),
/// with every time multiplied by `time_scale`.
pub fn draw(scenario: &Scenario, seed: u64, time_scale: f64) -> Drawn {
    let mut topo = stream_rng(seed, streams::TOPOLOGY);
    let n_devices = scenario.topology.devices.draw(&mut topo);
    let n_repos = scenario.topology.repositories.draw(&mut topo);
    // The simulator names them so (`runner::device_name`, repositories `R1`...).
    let devices: Vec<String> = (1..=n_devices).map(|i| format!("repo{i:03}")).collect();
    let repos: Vec<String> = (1..=n_repos).map(|i| format!("R{i}")).collect();
    let branches = (0..scenario.workload.branches)
        .map(|i| format!("refs/heads/b{i}"))
        .collect();
    let replicas: Vec<String> = (0..scenario.database.replicas).map(replica_name).collect();
    let mut rng = stream_rng(seed, streams::NEMESIS);
    let faults = scenario.faults.apply_mix(&mut rng);
    let mut schedule = nemesis::plan(&faults, &devices, &replicas, &mut rng);
    for p in &mut schedule {
        p.at_ms = scale(p.at_ms, time_scale);
        match &mut p.action {
            Action::Strike { down_ms, .. } | Action::DiskLoss { down_ms, .. } => {
                *down_ms = scale(*down_ms, time_scale)
            }
            Action::Partition { duration_ms, .. }
            | Action::Hold { duration_ms, .. }
            | Action::Hang { duration_ms, .. }
            | Action::Lag { duration_ms, .. }
            | Action::FsyncFailure { duration_ms, .. } => {
                *duration_ms = scale(*duration_ms, time_scale)
            }
            Action::Arm(arm) => {
                if let stormcell_harness::env::ArmedAction::Strike { down: Some(d) }
                | stormcell_harness::env::ArmedAction::StrikePrimary { down: Some(d) } =
                    &mut arm.action
                {
                    *d = d.mul_f64(time_scale);
                }
            }
            Action::Lose { .. } | Action::Promote | Action::Backup { .. } => {}
        }
    }
    Drawn {
        devices,
        repos,
        branches,
        replicas,
        schedule,
    }
}

/// What of `scenario` and its drawn schedule this runner skips, one line each.
pub fn skipped(scenario: &Scenario, drawn: &Drawn) -> Vec<String> {
    let mut out: Vec<String> = drawn
        .schedule
        .iter()
        .filter_map(|p| driver::unsupported(&p.action).map(|why| format!("{} ({why})", p.label)))
        .collect();
    out.extend(scenario.operator.steps.iter().filter_map(|step| {
        crate::operator::unsupported(step).map(|why| format!("an operator step ({why})"))
    }));
    if scenario.topology.spare_devices > 0 {
        out.push("spare devices (topology.spare_devices)".to_owned());
    }
    if !scenario.topology.clustered {
        out.push(
            "unclustered repositories (topology.clustered = false): they start on the service"
                .to_owned(),
        );
    }
    out
}

/// Reads the scenario, draws what `opts.seed` draws, and prints it with what will be
/// skipped (on standard error). Starts nothing.
pub fn plan(opts: &Options) -> Result<(Scenario, Drawn, Vec<String>)> {
    let scenario = load_scenario(&opts.scenario)?;
    if !opts.time_scale.is_finite() || opts.time_scale <= 0.0 {
        return Err(ChaosError::Setup(format!(
            "--time-scale must be above 0, not {}",
            opts.time_scale
        )));
    }
    let drawn = draw(&scenario, opts.seed, opts.time_scale);
    let skipped = skipped(&scenario, &drawn);
    eprintln!(
        "{} seed {}: devices {}, repositories {}, replicas {}",
        scenario.name,
        opts.seed,
        drawn.devices.join(","),
        drawn.repos.join(","),
        if drawn.replicas.is_empty() {
            "none".to_owned()
        } else {
            drawn.replicas.join(",")
        }
    );
    if opts.time_scale != 1.0 && !drawn.schedule.is_empty() {
        eprintln!(
            "  (times scaled by {}; the labels keep the scenario's own durations)",
            opts.time_scale
        );
    }
    for p in &drawn.schedule {
        let mark = if driver::unsupported(&p.action).is_some() {
            "SKIP"
        } else {
            "    "
        };
        eprintln!("  {mark} {:>7.1}s {}", p.at_ms as f64 / 1000.0, p.label);
    }
    for s in &skipped {
        eprintln!("skipped as unsupported against real processes: {s}");
    }

    Ok((scenario, drawn, skipped))
}

/// Runs `opts.scenario` with `opts.seed` against real processes.
pub fn run(opts: &Options, registry: &Arc<Registry>) -> Result<Report> {
    let pg_bin = crate::postgres::find_bin_dir().ok_or_else(|| {
        ChaosError::Setup(crate::postgres::missing_prerequisite().unwrap_or_default())
    })?;
    let (scenario, drawn, skipped) = plan(opts)?;
    let (dir, temp) = match &opts.keep {
        Some(dir) => {
            let empty = std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true);
            if !empty {
                return Err(ChaosError::Setup(format!(
                    "{} is not empty: give a new or empty directory to keep the report in",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
            (dir, None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("stormcell-chaos-")
                .tempdir()
                .map_err(io(std::env::temp_dir()))?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    let schedule_path = dir.join("schedule.json");
    std::fs::write(
        &schedule_path,
        serde_json::to_string_pretty(&drawn.schedule)?,
    )
    .map_err(io(&schedule_path))?;

    let spec = ClusterSpec {
        dir: dir.clone(),
        bin: opts.stormcell_bin.clone(),
        pg_bin,
        devices: drawn.devices.clone(),
        repos: drawn.repos.clone(),
        primary: DB_HOST.to_owned(),
        replicas: drawn.replicas.clone(),
        plant: opts.plant.clone(),
        failpoints: drawn
            .schedule
            .iter()
            .any(|p| matches!(p.action, Action::Arm(_))),
    };
    eprintln!(
        "starting PostgreSQL and {} node(s) in {}",
        spec.devices.len(),
        dir.display()
    );
    let carried_out = (|| {
        let mut cluster = Cluster::start(&spec, registry)?;
        let outcome = campaign(&scenario, opts, &drawn, &mut cluster, &dir);
        let stopped = cluster.stop();
        drop(cluster);
        let history = outcome?;
        stopped?;
        Ok(history)
    })();
    let history = match carried_out {
        Ok(history) => history,
        Err(e) => {
            // What the run left (its logs above all) is what explains the error.
            if let Some(temp) = temp {
                eprintln!("the run's directory is kept: {}", temp.keep().display());
            }
            return Err(e);
        }
    };

    let history_path = dir.join("history.json");
    std::fs::write(&history_path, serde_json::to_string_pretty(&history)?)
        .map_err(io(&history_path))?;
    let verdicts = checker::check_all(&history);
    let text: String = verdicts.iter().map(|v| format!("{v}\n")).collect();
    let verdicts_path = dir.join("verdicts.txt");
    std::fs::write(&verdicts_path, &text).map_err(io(&verdicts_path))?;
    let passed = verdicts.iter().all(Verdict::passed);
    let kept = match temp {
        Some(temp) if !passed => {
            let _ = temp.keep();
            true
        }
        Some(_) => false,
        None => true,
    };
    Ok(Report {
        dir,
        kept,
        verdicts,
        skipped,
        operations: history.ops.len(),
        faults: history.faults.len(),
    })
}

/// Runs the workload and the schedule, heals, settles, probes and reads the final state.
fn campaign(
    scenario: &Scenario,
    opts: &Options,
    drawn: &Drawn,
    cluster: &mut Cluster,
    dir: &Path,
) -> Result<History> {
    let recorder = Recorder::new(&dir.join("clients"))?;
    let w = &scenario.workload;
    let workload_ms = scale(w.duration_s * 1000, opts.time_scale);
    let settle = Duration::from_millis(scale(w.settle_s * 1000, opts.time_scale));
    let timeout = Duration::from_secs(w.client_timeout_s);
    let targets = cluster.targets();
    let push_to: Vec<Target> = targets
        .iter()
        .filter(|t| w.push_to.contains(&t.device))
        .cloned()
        .collect();
    let plans: Vec<ClientPlan> = (0..w.clients)
        .map(|c| ClientPlan {
            name: format!("client{}", c + 1),
            targets: targets.clone(),
            push_to: push_to.clone(),
            repos: drawn.repos.clone(),
            branches: drawn.branches.clone(),
            refs_per_push: (w.refs_per_push.min, w.refs_per_push.max),
            weights: (w.push_weight, w.read_weight),
            think_ms: (w.think_ms.min, w.think_ms.max),
            timeout,
            until_ms: workload_ms,
        })
        .collect();
    eprintln!(
        "workload: {} client(s) for {:.1}s",
        plans.len(),
        workload_ms as f64 / 1000.0
    );
    let desk = crate::operator::Desk {
        targets: targets.clone(),
        configs: cluster
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.config_path().display().to_string()))
            .collect(),
        bin: cluster.bin.clone(),
        repos: drawn.repos.clone(),
        time_scale: opts.time_scale,
    };
    let stop = AtomicBool::new(false);
    let operator_stop = AtomicBool::new(false);
    let driven = std::thread::scope(|s| {
        let operator = {
            let (desk, recorder, stop) = (&desk, &recorder, &operator_stop);
            let steps = &scenario.operator.steps;
            s.spawn(move || crate::operator::run(steps, desk, recorder, stop))
        };
        let clients: Vec<_> = plans
            .iter()
            .enumerate()
            .map(|(c, plan)| {
                let rng = stream_rng(opts.seed, streams::CLIENTS + c as u64);
                let (recorder, stop) = (&recorder, &stop);
                s.spawn(move || workload::run_client(plan, rng, recorder, stop))
            })
            .collect();
        let driven = Driver::new(cluster, &recorder).run(&drawn.schedule, workload_ms, &stop);
        if driven.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let mut result = driven;
        for client in clients {
            let joined = client
                .join()
                .unwrap_or_else(|_| Err(ChaosError::Setup("a client thread panicked".to_owned())));
            if result.is_ok() {
                result = joined;
            }
        }
        if result.is_ok() {
            // The operator may still act while the cluster settles.
            eprintln!("healed; settling for {:.1}s", settle.as_secs_f64());
            std::thread::sleep(settle);
        }
        operator_stop.store(true, Ordering::Relaxed);
        if operator.join().is_err() {
            result = Err(ChaosError::Setup("the operator thread panicked".to_owned()));
        }
        result
    });
    driven?;

    eprintln!("final probes");
    let mut failed = Vec::new();
    for target in &targets {
        for repo in &drawn.repos {
            let update = RefUpdate {
                name: format!("refs/heads/final-{}", target.device),
                old: None,
                new: recorder.commit(None)?,
            };
            let o = recorder.push("final", target, repo, &[update], Phase::Final, timeout);
            if !o.is_ok() {
                failed.push(format!("final push to {repo} on {}: {o:?}", target.device));
            }
        }
    }
    for target in &targets {
        for repo in &drawn.repos {
            let o = recorder.read("final", target, repo, false, Phase::Final, timeout);
            if let Outcome::Ok { .. } = o {
            } else {
                failed.push(format!("final read of {repo} on {}: {o:?}", target.device));
            }
        }
    }
    for f in &failed {
        eprintln!("  {f}");
    }
    let final_state = FinalState {
        active_devices: drawn.devices.clone(),
        refs: cluster
            .nodes
            .iter()
            .map(|n| {
                let repos = drawn
                    .repos
                    .iter()
                    .map(|r| {
                        let path = n.data_dir().join("repos").join(format!("{r}.git"));
                        (r.clone(), crate::node::refs_at(&path))
                    })
                    .collect();
                (n.name.clone(), repos)
            })
            .collect(),
    };
    let (ops, faults, operator) = recorder.take();
    Ok(History {
        scenario: scenario.name.clone(),
        seed: opts.seed,
        profile: "stormcell".to_owned(),
        devices: drawn.devices.clone(),
        repositories: drawn
            .repos
            .iter()
            .map(|r| RepositoryStart {
                name: r.clone(),
                initial_refs: Default::default(),
                has_rows: true,
            })
            .collect(),
        ops,
        faults,
        database: (!drawn.replicas.is_empty()).then(|| DatabaseHosts {
            primary: DB_HOST.to_owned(),
            replicas: drawn.replicas.clone(),
            health_flips: Vec::new(),
        }),
        expect: scenario.expect.stormcell,
        availability: scenario.expect.availability.clone(),
        final_state,
        operator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stormcell_harness::runner::{self, RunSpec};

    /// The runner must strike where and when the simulator would for the same seed: the
    /// topology and the schedule come from the simulator's streams, unscaled at 1.0.
    #[test]
    fn a_seed_draws_what_the_simulator_draws() {
        for (name, seed) in [("lightning", 3), ("partition", 5), ("db-promote", 2)] {
            let scenario = match load_scenario(name) {
                Ok(s) => s,
                Err(e) => panic!("{name}: {e}"),
            };
            let simulated = runner::run(&RunSpec {
                scenario: scenario.clone(),
                seed,
                profile: stormcell_model::config::Profile::Stormcell,
                plant: None,
                keep_trace: false,
            });
            let drawn = draw(&scenario, seed, 1.0);
            assert_eq!(drawn.devices, simulated.drawn.devices, "{name}");
            assert_eq!(drawn.repos, simulated.drawn.repositories, "{name}");
            assert_eq!(drawn.schedule, simulated.drawn.schedule, "{name}");
            let halved = draw(&scenario, seed, 0.5);
            let times = |d: &Drawn| d.schedule.iter().map(|p| p.at_ms).collect::<Vec<_>>();
            let expected: Vec<u64> = times(&drawn).iter().map(|t| scale(*t, 0.5)).collect();
            assert_eq!(times(&halved), expected, "{name}: times are scaled");
        }
    }

    #[test]
    fn skipped_kinds_are_named() {
        let scenario = match load_scenario("fsync-failure") {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let drawn = draw(&scenario, 1, 1.0);
        let skipped = skipped(&scenario, &drawn);
        assert!(
            skipped.iter().any(|s| s.contains("fsync_failures")),
            "{skipped:?}"
        );
        let lightning = match load_scenario("lightning") {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert!(skipped_empty(&lightning));
    }

    fn skipped_empty(scenario: &Scenario) -> bool {
        skipped(scenario, &draw(scenario, 1, 1.0)).is_empty()
    }
}
