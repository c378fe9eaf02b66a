//! The campaign summary: a table per scenario, and JSON reports (`summary.json`, which
//! `merge` reads back, and one JSON per failing run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::coverage::{self, CoverageTable};
use crate::runner::RunResult;
use crate::scenario::Scenario;
use crate::shard::Shard;
use serde::{Deserialize, Serialize};
use stormcell_model::ports::Coverage;

use crate::campaign::Outcome;

/// One row of the summary table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// Scenario.
    pub scenario: String,
    /// Seeds run.
    pub seeds: u64,
    /// Passed.
    pub passed: u64,
    /// Failed.
    pub failed: u64,
    /// Virtual seconds simulated, summed.
    pub virtual_s: f64,
    /// Wall seconds, summed over runs.
    pub wall_s: f64,
    /// Faults by kind, summed.
    pub faults: BTreeMap<String, u64>,
    /// Refusals seen by clients, by kind, summed.
    pub freezes: BTreeMap<String, u64>,
    /// How the runs ended: final outcome to count.
    pub endings: BTreeMap<String, u64>,
    /// Device-seconds spent read-only, by reason, summed.
    pub read_only_s: BTreeMap<String, f64>,
}

/// The summary of a campaign.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Rows, in scenario order.
    pub rows: Vec<Row>,
    /// Wall seconds of the campaign.
    pub total_wall_s: f64,
}

impl Row {
    /// Adds the counts of `other` (the same scenario, other seeds) to this row.
    pub fn add(&mut self, other: &Row) {
        self.seeds += other.seeds;
        self.passed += other.passed;
        self.failed += other.failed;
        self.virtual_s += other.virtual_s;
        self.wall_s += other.wall_s;
        for (k, v) in &other.faults {
            *self.faults.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.freezes {
            *self.freezes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.endings {
            *self.endings.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.read_only_s {
            *self.read_only_s.entry(k.clone()).or_default() += v;
        }
    }
}

fn join_counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_seconds(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Summary {
    /// Builds the summary of a campaign.
    pub fn of(scenarios: &[Scenario], outcome: &Outcome) -> Self {
        let rows = scenarios
            .iter()
            .map(|s| {
                let mut row = Row {
                    scenario: s.name.clone(),
                    seeds: 0,
                    passed: 0,
                    failed: 0,
                    virtual_s: 0.0,
                    wall_s: 0.0,
                    faults: BTreeMap::new(),
                    freezes: BTreeMap::new(),
                    endings: BTreeMap::new(),
                    read_only_s: BTreeMap::new(),
                };
                for (r, w) in outcome
                    .results
                    .iter()
                    .zip(&outcome.wall)
                    .filter(|(r, _)| r.scenario == s.name)
                {
                    row.seeds += 1;
                    if r.passed() {
                        row.passed += 1
                    } else {
                        row.failed += 1
                    }
                    row.virtual_s += r.virtual_ms as f64 / 1000.0;
                    row.wall_s += w.as_secs_f64();
                    for (k, v) in &r.faults {
                        *row.faults.entry(k.clone()).or_default() += v;
                    }
                    for (k, v) in &r.freezes {
                        *row.freezes.entry(k.clone()).or_default() += v;
                    }
                    *row.endings
                        .entry(r.final_outcome.name().to_owned())
                        .or_default() += 1;
                    for reasons in r.read_only_ms.values() {
                        for (reason, ms) in reasons {
                            *row.read_only_s.entry(reason.clone()).or_default() +=
                                *ms as f64 / 1000.0;
                        }
                    }
                }
                row
            })
            .collect();
        Summary {
            rows,
            total_wall_s: outcome.total_wall.as_secs_f64(),
        }
    }

    /// The summary as a readable table.
    pub fn render(&self) -> String {
        self.render_with(true)
    }

    /// The table; without `wall`, the wall-time columns are left out (for snapshots,
    /// which must not depend on the machine).
    pub fn render_with(&self, wall: bool) -> String {
        let mut lines = vec![if wall {
            format!(
                "{:<20} {:>6} {:>6} {:>6} {:>10} {:>8} {:>9}  {:<40} {:<40} {}",
                "scenario",
                "seeds",
                "passed",
                "failed",
                "virtual s",
                "wall s",
                "speedup",
                "faults",
                "refusals seen",
                "ended"
            )
        } else {
            format!(
                "{:<20} {:>6} {:>6} {:>6} {:>10}  {:<40} {:<40} {}",
                "scenario",
                "seeds",
                "passed",
                "failed",
                "virtual s",
                "faults",
                "refusals seen",
                "ended"
            )
        }];
        for r in &self.rows {
            if wall {
                let speedup = if r.wall_s > 0.0 {
                    r.virtual_s / r.wall_s
                } else {
                    0.0
                };
                lines.push(format!(
                    "{:<20} {:>6} {:>6} {:>6} {:>10.1} {:>8.2} {:>8.0}x  {:<40} {:<40} {}",
                    r.scenario,
                    r.seeds,
                    r.passed,
                    r.failed,
                    r.virtual_s,
                    r.wall_s,
                    speedup,
                    join_counts(&r.faults),
                    join_counts(&r.freezes),
                    join_counts(&r.endings)
                ));
                if !r.read_only_s.is_empty() {
                    lines.push(format!(
                        "{:<20} read-only device-seconds: {}",
                        "",
                        join_seconds(&r.read_only_s)
                    ));
                }
            } else {
                lines.push(format!(
                    "{:<20} {:>6} {:>6} {:>6} {:>10.1}  {:<40} {:<40} {}",
                    r.scenario,
                    r.seeds,
                    r.passed,
                    r.failed,
                    r.virtual_s,
                    join_counts(&r.faults),
                    join_counts(&r.freezes),
                    join_counts(&r.endings)
                ));
                if !r.read_only_s.is_empty() {
                    lines.push(format!(
                        "{:<20} read-only device-seconds: {}",
                        "",
                        join_seconds(&r.read_only_s)
                    ));
                }
            }
        }
        let seeds: u64 = self.rows.iter().map(|r| r.seeds).sum();
        let failed: u64 = self.rows.iter().map(|r| r.failed).sum();
        if wall {
            lines.push(format!(
                "{seeds} runs, {failed} failed, {:.1} s wall ({:.1} runs/s)",
                self.total_wall_s,
                if self.total_wall_s > 0.0 {
                    seeds as f64 / self.total_wall_s
                } else {
                    0.0
                }
            ));
        } else {
            lines.push(format!("{seeds} runs, {failed} failed"));
        }
        lines.join("\n")
    }
}

/// The first thing that went wrong in a run, in one line.
pub fn first_violation(r: &RunResult) -> String {
    if let Some(e) = &r.sim_error {
        return format!("simulation error: {e}");
    }
    r.verdicts
        .iter()
        .flat_map(|v| v.violations.iter())
        .next()
        .map_or_else(|| "failed".to_owned(), ToString::to_string)
}

/// One run, as `summary.json` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunLine {
    /// Scenario.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Profile.
    pub profile: String,
    /// Planted bug, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plant: Option<String>,
    /// Whether every checker passed.
    pub passed: bool,
    /// How the cluster ended.
    pub final_outcome: String,
    /// The trace hash, 16 hex digits.
    pub trace_hash: String,
    /// Virtual seconds simulated.
    pub virtual_s: f64,
    /// Wall seconds.
    pub wall_s: f64,
    /// The rare states the run reached.
    #[serde(default)]
    pub reached: Vec<Coverage>,
    /// The first violation, for a failing run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
    /// The command that replays the run.
    pub replay: String,
}

impl RunLine {
    /// The line of `r`, which took `wall` seconds.
    pub fn of(r: &RunResult, wall: f64) -> Self {
        RunLine {
            scenario: r.scenario.clone(),
            seed: r.seed,
            profile: r.profile.to_string(),
            plant: r.plant.map(|b| b.to_string()),
            passed: r.passed(),
            final_outcome: r.final_outcome.name().to_owned(),
            trace_hash: format!("{:016x}", r.trace_hash),
            virtual_s: r.virtual_ms as f64 / 1000.0,
            wall_s: wall,
            reached: r.reached.keys().copied().collect(),
            violation: (!r.passed()).then(|| first_violation(r)),
            replay: r.replay_command(),
        }
    }
}

/// The whole of `summary.json`: what `merge` reads back from each shard and writes again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SummaryFile {
    /// The table per scenario.
    pub summary: Summary,
    /// How many runs reached each rare state.
    pub coverage: CoverageTable,
    /// The states each scenario declares it must reach (`reach = [...]`).
    #[serde(default)]
    pub reach: BTreeMap<String, Vec<Coverage>>,
    /// Declared states no run of their scenario reached (judged only on a whole campaign,
    /// so empty in a shard's file and filled in by `merge`, and only on runs under the
    /// stormcell profile without a planted bug).
    #[serde(default)]
    pub unreached: Vec<String>,
    /// The slice of the campaign this file covers, when it is one shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Every run, by scenario (in table order) then seed.
    pub runs: Vec<RunLine>,
}

/// Why `summary.json` files could not be read or merged.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a summary.
    #[error("{path}: not a campaign summary: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        message: String,
    },
    /// Two inputs hold the same run.
    #[error("{first} and {second} both hold {scenario} seed {seed} ({profile}): merge takes disjoint shards")]
    Overlap {
        /// The first file holding it.
        first: PathBuf,
        /// The second.
        second: PathBuf,
        /// Scenario.
        scenario: String,
        /// Seed.
        seed: u64,
        /// Profile and plant.
        profile: String,
    },
    /// Nothing to merge.
    #[error("nothing to merge: give at least one directory holding a summary.json")]
    Empty,
}

impl SummaryFile {
    /// The summary of a campaign (or of one shard of it: `shard`).
    pub fn of(
        scenarios: &[Scenario],
        outcome: &Outcome,
        summary: &Summary,
        shard: Option<Shard>,
    ) -> Self {
        let mut runs: Vec<RunLine> = outcome
            .results
            .iter()
            .zip(&outcome.wall)
            .map(|(r, w)| RunLine::of(r, w.as_secs_f64()))
            .collect();
        let order: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
        sort_runs(&mut runs, &order);
        let reach = scenarios
            .iter()
            .filter(|s| !s.reach.is_empty())
            .map(|s| (s.name.clone(), s.reach.clone()))
            .collect();
        let mut file = SummaryFile {
            summary: summary.clone(),
            coverage: CoverageTable::of([]),
            reach,
            unreached: Vec::new(),
            shard,
            runs,
        };
        file.judge();
        file
    }

    /// Recomputes the coverage table and, for a whole campaign, the unreached states.
    fn judge(&mut self) {
        self.coverage = CoverageTable::of(
            self.runs
                .iter()
                .map(|r| (r.scenario.as_str(), r.seed, r.reached.as_slice())),
        );
        self.unreached = if self.shard.is_some() {
            Vec::new()
        } else {
            // Judged on the protocol as shipped: the phabricator profile lacks the
            // recoveries, and a planted bug changes what the protocol reaches.
            coverage::unreached(
                &self.reach,
                self.runs
                    .iter()
                    .filter(|r| r.profile == "stormcell" && r.plant.is_none())
                    .map(|r| (r.scenario.as_str(), r.reached.as_slice())),
            )
            .iter()
            .map(ToString::to_string)
            .collect()
        };
    }

    /// How many runs failed.
    pub fn failed(&self) -> usize {
        self.runs.iter().filter(|r| !r.passed).count()
    }

    /// Reads `DIR/summary.json`.
    pub fn read(dir: &Path) -> Result<Self, SummaryError> {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path).map_err(|source| SummaryError::Read {
            path: path.clone(),
            source,
        })?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| SummaryError::Parse {
            message: format!(
                "line {} column {}: field {}: {}",
                e.inner().line(),
                e.inner().column(),
                e.path(),
                e.inner()
            ),
            path,
        })
    }

    /// Writes `DIR/summary.json`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("summary.json");
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }

    /// Joins the summaries of disjoint shards (given with the directory each came from)
    /// into the summary of the whole campaign: runs, table rows, coverage and the reach
    /// verdict. The wall time is the longest shard's (they ran side by side).
    pub fn merge(parts: Vec<(PathBuf, SummaryFile)>) -> Result<Self, SummaryError> {
        let mut order: Vec<String> = Vec::new();
        let mut rows: BTreeMap<String, Row> = BTreeMap::new();
        let mut reach: BTreeMap<String, Vec<Coverage>> = BTreeMap::new();
        let mut owners: BTreeMap<(String, u64, String, Option<String>), PathBuf> = BTreeMap::new();
        let mut runs = Vec::new();
        let mut wall: f64 = 0.0;
        if parts.is_empty() {
            return Err(SummaryError::Empty);
        }
        for (path, part) in parts {
            wall = wall.max(part.summary.total_wall_s);
            for row in &part.summary.rows {
                match rows.get_mut(&row.scenario) {
                    Some(mine) => mine.add(row),
                    None => {
                        order.push(row.scenario.clone());
                        rows.insert(row.scenario.clone(), row.clone());
                    }
                }
            }
            for (scenario, points) in part.reach {
                let mine = reach.entry(scenario).or_default();
                for p in points {
                    if !mine.contains(&p) {
                        mine.push(p);
                    }
                }
            }
            for run in part.runs {
                let key = (
                    run.scenario.clone(),
                    run.seed,
                    run.profile.clone(),
                    run.plant.clone(),
                );
                if let Some(first) = owners.get(&key) {
                    return Err(SummaryError::Overlap {
                        first: first.clone(),
                        second: path,
                        scenario: run.scenario,
                        seed: run.seed,
                        profile: match run.plant {
                            Some(p) => format!("{} plant {p}", run.profile),
                            None => run.profile,
                        },
                    });
                }
                owners.insert(key, path.clone());
                runs.push(run);
            }
        }
        sort_runs(&mut runs, &order);
        let mut file = SummaryFile {
            summary: Summary {
                rows: order.iter().filter_map(|s| rows.remove(s)).collect(),
                total_wall_s: wall,
            },
            coverage: CoverageTable::of([]),
            reach,
            unreached: Vec::new(),
            shard: None,
            runs,
        };
        file.judge();
        Ok(file)
    }
}

/// Sorts runs by scenario (in `order`) then seed, then profile and plant.
fn sort_runs(runs: &mut [RunLine], order: &[String]) {
    let rank = |s: &str| order.iter().position(|o| o == s).unwrap_or(order.len());
    runs.sort_by(|a, b| {
        (rank(&a.scenario), a.seed, &a.profile, &a.plant).cmp(&(
            rank(&b.scenario),
            b.seed,
            &b.profile,
            &b.plant,
        ))
    });
}

/// The file name of a failing run's report.
pub fn run_report_name(r: &RunResult) -> String {
    format!(
        "{}-seed{}-{}{}.json",
        r.scenario,
        r.seed,
        r.profile,
        r.plant.map(|b| format!("-{b}")).unwrap_or_default()
    )
}

/// Writes one run's full report (`SCENARIO-seedN-PROFILE[-PLANT].json` in `dir`: the
/// verdicts, every option the seed drew, the reached states and the history) and returns
/// its path.
pub fn write_run_report(dir: &Path, r: &RunResult) -> anyhow::Result<PathBuf> {
    #[derive(Serialize)]
    struct RunReport<'a> {
        scenario: &'a str,
        seed: u64,
        profile: String,
        plant: Option<String>,
        replay: String,
        final_outcome: &'a str,
        trace_hash: String,
        verdicts: &'a [crate::checker::Verdict],
        drawn: &'a crate::runner::Drawn,
        reached: Vec<Coverage>,
        history: &'a crate::history::History,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        status: &'a [crate::status_sampler::StatusSample],
    }
    let report = RunReport {
        scenario: &r.scenario,
        seed: r.seed,
        profile: r.profile.to_string(),
        plant: r.plant.map(|b| b.to_string()),
        replay: r.replay_command(),
        final_outcome: r.final_outcome.name(),
        trace_hash: format!("{:016x}", r.trace_hash),
        verdicts: &r.verdicts,
        drawn: &r.drawn,
        reached: r.reached.keys().copied().collect(),
        history: &r.history,
        status: &r.status,
    };
    let path = dir.join(run_report_name(r));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Writes one JSON per failing run and `summary.json` (`file`).
pub fn write_reports(dir: &Path, file: &SummaryFile, outcome: &Outcome) -> anyhow::Result<()> {
    for r in outcome.results.iter().filter(|r| !r.passed()) {
        let path = write_run_report(dir, r)?;
        let html = path.with_extension("html");
        crate::timeline_html::write(&html, r)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", html.display()))?;
    }
    file.write(dir)
}
