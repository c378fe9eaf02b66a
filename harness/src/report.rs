//! The campaign summary: a table per scenario, and JSON reports.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::runner::RunResult;
use crate::scenario::Scenario;
use serde::Serialize;

use crate::campaign::Outcome;

/// One row of the summary table.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Rows, in scenario order.
    pub rows: Vec<Row>,
    /// Wall seconds of the campaign.
    pub total_wall_s: f64,
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

/// Writes one JSON per failing run and `summary.json`.
pub fn write_reports(dir: &Path, summary: &Summary, outcome: &Outcome) -> anyhow::Result<()> {
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
        history: &'a crate::history::History,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        status: &'a [crate::status_sampler::StatusSample],
    }
    #[derive(Serialize)]
    struct SummaryReport<'a> {
        summary: &'a Summary,
        runs: Vec<RunLine<'a>>,
    }
    #[derive(Serialize)]
    struct RunLine<'a> {
        scenario: &'a str,
        seed: u64,
        passed: bool,
        final_outcome: &'a str,
        trace_hash: String,
        wall_s: f64,
    }
    for r in outcome.results.iter().filter(|r| !r.passed()) {
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
            history: &r.history,
            status: &r.status,
        };
        let path = dir.join(format!(
            "{}-seed{}-{}{}.json",
            r.scenario,
            r.seed,
            r.profile,
            r.plant.map(|b| format!("-{b}")).unwrap_or_default()
        ));
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let html = path.with_extension("html");
        crate::timeline_html::write(&html, r)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", html.display()))?;
    }
    let runs = outcome
        .results
        .iter()
        .zip(&outcome.wall)
        .map(|(r, w): (&RunResult, &Duration)| RunLine {
            scenario: &r.scenario,
            seed: r.seed,
            passed: r.passed(),
            final_outcome: r.final_outcome.name(),
            trace_hash: format!("{:016x}", r.trace_hash),
            wall_s: w.as_secs_f64(),
        })
        .collect();
    let path = dir.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&SummaryReport { summary, runs })?,
    )
    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
