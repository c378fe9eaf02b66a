//! `stormcell-sim bench`: the simulator's speed and memory figures, each the median of a
//! few repetitions, optionally beside an earlier build's figures (its `--out` file).
//!
//! The figures are the targets of the performance work: virtual seconds per CPU-second on
//! the `steady` cluster and on a large cluster struck by every fault kind
//! (`harness/bench/every-fault.toml`), runs per wall-second over the built-in set, and the
//! process's peak resident memory. CPU time is the whole process's (every worker thread),
//! so a figure per CPU-second does not depend on the number of jobs.

use std::path::Path;

use serde::{Deserialize, Serialize};
use stormcell_model::config::Profile;

use crate::campaign;
use crate::runner::RunSpec;
use crate::scenario::{self, Scenario};

/// The large cluster of the benchmark: 6 devices, 3 repositories, 10 clients, every fault kind.
pub const EVERY_FAULT: &str = include_str!("../bench/every-fault.toml");

/// What to measure and how often.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Repetitions of each figure; the median is reported.
    pub reps: usize,
    /// Worker threads.
    pub jobs: usize,
    /// Seeds of `steady` per repetition.
    pub steady_seeds: u64,
    /// Seeds of each built-in scenario per repetition.
    pub builtin_seeds: u64,
    /// Seeds of the every-fault cluster per repetition.
    pub every_fault_seeds: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            reps: 5,
            jobs: 2,
            steady_seeds: 10,
            builtin_seeds: 1,
            every_fault_seeds: 4,
        }
    }
}

/// One figure: its samples and their median.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Figure {
    /// Stable key (what `--baseline` matches on).
    pub key: String,
    /// What it measures, with its unit.
    pub label: String,
    /// The median of the samples.
    pub median: f64,
    /// Every repetition's value, in order.
    pub samples: Vec<f64>,
    /// Whether more is better (speed) or less (memory).
    pub higher_is_better: bool,
}

/// Everything `bench` measured; written by `--out`, read by `--baseline`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchReport {
    /// Worker threads used.
    pub jobs: usize,
    /// Repetitions per figure.
    pub reps: usize,
    /// The figures.
    pub figures: Vec<Figure>,
}

/// Errors reading a baseline.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The file could not be read.
    #[error("cannot read baseline {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a bench report.
    #[error("baseline {path} is not a `stormcell-sim bench --out` file")]
    Parse {
        /// The file.
        path: String,
        /// Where and why.
        source: serde_path_to_error::Error<serde_json::Error>,
    },
}

impl BenchReport {
    /// Reads a report written by `--out`.
    pub fn load(path: &Path) -> Result<Self, BaselineError> {
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|source| BaselineError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// The table, with the baseline's medians and the ratio (this over baseline) when given.
    pub fn render(&self, baseline: Option<&BenchReport>) -> String {
        let mut out = format!(
            "{:<44} {:>12} {:>12} {:>8}  samples\n",
            "figure (median)", "this build", "baseline", "ratio"
        );
        for f in &self.figures {
            let base = baseline.and_then(|b| b.figures.iter().find(|g| g.key == f.key));
            let (base_s, ratio_s) = match base {
                Some(b) if b.median > 0.0 => (
                    format!("{:.1}", b.median),
                    format!("{:.2}x", f.median / b.median),
                ),
                Some(b) => (format!("{:.1}", b.median), "-".to_owned()),
                None => ("-".to_owned(), "-".to_owned()),
            };
            let samples: Vec<String> = f.samples.iter().map(|s| format!("{s:.1}")).collect();
            out.push_str(&format!(
                "{:<44} {:>12.1} {:>12} {:>8}  {}\n",
                f.label,
                f.median,
                base_s,
                ratio_s,
                samples.join(" ")
            ));
        }
        out.push_str(&format!(
            "{} jobs, median of {} repetitions; a ratio above 1 is better for speed, below 1 for memory\n",
            self.jobs, self.reps
        ));
        out
    }
}

/// The median of `samples` (the mean of the middle two for an even count); 0 when empty.
pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn specs(scenarios: &[Scenario], seeds: u64) -> Vec<RunSpec> {
    (0..seeds)
        .flat_map(|seed| {
            scenarios.iter().map(move |s| RunSpec {
                scenario: s.clone(),
                seed,
                profile: Profile::Stormcell,
                plant: None,
                keep_trace: false,
            })
        })
        .collect()
}

/// One campaign's figures: virtual seconds per CPU-second and runs per wall-second.
struct Sample {
    virtual_per_cpu_s: f64,
    runs_per_wall_s: f64,
}

fn sample(specs: &[RunSpec], jobs: usize) -> Sample {
    let cpu_before = process_cpu_s();
    let outcome = campaign::run_all_keeping(specs, jobs, campaign::Keep::FailingRuns);
    let cpu = (process_cpu_s() - cpu_before).max(1e-9);
    let virtual_s: f64 = outcome
        .results
        .iter()
        .map(|r| r.virtual_ms as f64 / 1000.0)
        .sum();
    Sample {
        virtual_per_cpu_s: virtual_s / cpu,
        runs_per_wall_s: outcome.results.len() as f64 / outcome.total_wall.as_secs_f64().max(1e-9),
    }
}

/// Measures every figure; `progress` is called with each figure's name before it starts.
pub fn measure(
    cfg: &BenchConfig,
    progress: &dyn Fn(&str),
) -> Result<BenchReport, scenario::ScenarioError> {
    let steady = specs(&[scenario::builtin_named("steady")?], cfg.steady_seeds);
    let builtin = specs(&scenario::builtin(), cfg.builtin_seeds);
    let every_fault = specs(
        &[scenario::parse(
            "harness/bench/every-fault.toml",
            EVERY_FAULT,
        )?],
        cfg.every_fault_seeds,
    );
    let reps = cfg.reps.max(1);
    let mut figures = Vec::new();
    let mut figure = |key: &str, label: String, samples: Vec<f64>, higher_is_better: bool| {
        figures.push(Figure {
            key: key.to_owned(),
            label,
            median: median(&samples),
            samples,
            higher_is_better,
        });
    };

    progress("steady");
    let s: Vec<f64> = (0..reps)
        .map(|_| sample(&steady, cfg.jobs).virtual_per_cpu_s)
        .collect();
    figure(
        "steady-virtual-per-cpu",
        format!("steady: virtual s per CPU-s ({} seeds)", cfg.steady_seeds),
        s,
        true,
    );

    progress("built-in set");
    let s: Vec<f64> = (0..reps)
        .map(|_| sample(&builtin, cfg.jobs).runs_per_wall_s)
        .collect();
    figure(
        "builtin-runs-per-wall",
        format!("built-in set: runs per wall-s ({} runs)", builtin.len()),
        s,
        true,
    );

    progress("every-fault cluster");
    let s: Vec<f64> = (0..reps)
        .map(|_| sample(&every_fault, cfg.jobs).virtual_per_cpu_s)
        .collect();
    figure(
        "every-fault-virtual-per-cpu",
        format!(
            "every fault, 6 dev 3 repo 10 clients: virt s/CPU-s ({} seeds)",
            cfg.every_fault_seeds
        ),
        s,
        true,
    );

    let rss = peak_rss_mib();
    figure(
        "peak-rss-mib",
        "peak resident memory of the bench, MiB".to_owned(),
        vec![rss],
        false,
    );
    Ok(BenchReport {
        jobs: cfg.jobs,
        reps,
        figures,
    })
}

/// CPU seconds (user and system) of the whole process so far.
#[cfg(unix)]
fn process_cpu_s() -> f64 {
    let usage = rusage();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Peak resident memory of the process, MiB.
#[cfg(unix)]
pub fn peak_rss_mib() -> f64 {
    // Linux reports kibibytes.
    rusage().ru_maxrss as f64 / 1024.0
}

#[cfg(unix)]
fn rusage() -> libc::rusage {
    // SAFETY: getrusage writes a whole `rusage` into the zeroed value it is given and
    // reads nothing else.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

#[cfg(not(unix))]
fn process_cpu_s() -> f64 {
    0.0
}

/// Peak resident memory is not measured on this platform.
#[cfg(not(unix))]
pub fn peak_rss_mib() -> f64 {
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn every_fault_cluster_parses_with_every_kind() {
        let s = scenario::parse("every-fault.toml", EVERY_FAULT).expect("parses");
        assert_eq!(
            s.topology.devices.draw(&mut crate::env::stream_rng(0, 1)),
            6
        );
        assert_eq!(s.workload.clients, 10);
    }

    #[test]
    fn report_round_trips_and_compares_with_a_baseline() {
        let report = |m: f64| BenchReport {
            jobs: 2,
            reps: 1,
            figures: vec![Figure {
                key: "steady-virtual-per-cpu".to_owned(),
                label: "steady".to_owned(),
                median: m,
                samples: vec![m],
                higher_is_better: true,
            }],
        };
        let dir = std::env::temp_dir().join(format!("stormcell-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("base.json");
        std::fs::write(&path, serde_json::to_string(&report(1000.0)).expect("json"))
            .expect("write");
        let base = BenchReport::load(&path).expect("loads");
        assert_eq!(base, report(1000.0));
        let table = report(2500.0).render(Some(&base));
        assert!(table.contains("2.50x"), "{table}");
        std::fs::write(&path, "{\"jobs\": 2, \"reps\": \"five\"}").expect("write");
        let err = BenchReport::load(&path).expect_err("bad file");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(err.to_string().contains("base.json"), "{err}");
        assert!(
            source.as_deref().is_some_and(|s| s.contains("reps")),
            "{source:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
