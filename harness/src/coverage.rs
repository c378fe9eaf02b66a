//! Coverage of rare protocol states ("sometimes" assertions, as FoundationDB's `TEST()`
//! and Antithesis' `sometimes`): the protocol reports each state it reaches through its
//! event port ([`stormcell_model::ports::Events::reached`]); a run keeps the states it
//! reached, a campaign counts the runs that reached each, and a scenario's `reach = [...]`
//! names states some seed of every campaign of it must reach.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use stormcell_model::ports::Coverage;

use crate::history::{FaultEvent, FaultKind};

/// What one run reached so far. Shared by every host of the run and the driver.
#[derive(Debug, Default)]
pub struct Reached {
    /// Each state with the virtual millisecond it was first reached.
    points: BTreeMap<Coverage, u64>,
    /// (device, repository) whose unsynced multi-ref update a crash tore.
    torn: BTreeSet<(String, String)>,
}

/// Where one run's reached states are collected.
pub type ReachedLog = Arc<Mutex<Reached>>;

fn lock(log: &ReachedLog) -> std::sync::MutexGuard<'_, Reached> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// Notes that `point` was reached at `at_ms` (only the first time counts).
pub fn note(log: &ReachedLog, point: Coverage, at_ms: u64) {
    lock(log).points.entry(point).or_insert(at_ms);
}

/// Notes that a crash of `device` tore a multi-ref update of `repo` (seen by the
/// simulated disk only).
pub fn torn(log: &ReachedLog, device: &str, repo: &str) {
    lock(log).torn.insert((device.to_owned(), repo.to_owned()));
}

/// Notes that fenced recovery adopted the interrupted write of `device` on `repo`; after a
/// torn crash there, that is a torn multi-ref write adopted.
pub fn adopted(log: &ReachedLog, device: &str, repo: &str, at_ms: u64) {
    let mut reached = lock(log);
    if reached.torn.contains(&(device.to_owned(), repo.to_owned())) {
        reached
            .points
            .entry(Coverage::TornWriteAdopted)
            .or_insert(at_ms);
    }
}

/// The states a run reached: those its hosts reported, and the ones only the harness
/// sees (a torn write adopted, a replica promoted by the simulated operator).
pub fn collect(log: &ReachedLog, faults: &[FaultEvent]) -> BTreeMap<Coverage, u64> {
    let mut reached = lock(log).points.clone();
    if let Some(f) = faults.iter().find(|f| f.kind == FaultKind::Promote) {
        reached.entry(Coverage::ReplicaPromoted).or_insert(f.at_ms);
    }
    reached
}

/// A run, as the coverage table names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunId {
    /// The seed (first, so the lowest seed sorts first).
    pub seed: u64,
    /// The scenario.
    pub scenario: String,
}

/// One state of the coverage table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointRow {
    /// The state.
    pub point: Coverage,
    /// How many runs reached it.
    pub runs: u64,
    /// The run with the lowest seed (then scenario name) that reached it.
    pub first: Option<RunId>,
}

/// The coverage of a campaign: every known state, reached or not, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageTable {
    /// One row per state, in [`Coverage::ALL`] order.
    pub points: Vec<PointRow>,
}

impl CoverageTable {
    /// The table of runs, each given as its scenario, seed and reached states.
    pub fn of<'a>(runs: impl IntoIterator<Item = (&'a str, u64, &'a [Coverage])>) -> Self {
        let mut points: Vec<PointRow> = Coverage::ALL
            .iter()
            .map(|&point| PointRow {
                point,
                runs: 0,
                first: None,
            })
            .collect();
        for (scenario, seed, reached) in runs {
            for p in reached {
                let Some(row) = points.iter_mut().find(|r| r.point == *p) else {
                    continue;
                };
                row.runs += 1;
                let id = RunId {
                    seed,
                    scenario: scenario.to_owned(),
                };
                if row.first.as_ref().is_none_or(|f| id < *f) {
                    row.first = Some(id);
                }
            }
        }
        CoverageTable { points }
    }

    /// How many states some run reached.
    pub fn reached(&self) -> usize {
        self.points.iter().filter(|r| r.runs > 0).count()
    }

    /// The table as text: state, runs that reached it, first seed.
    pub fn render(&self) -> String {
        let mut lines = vec![format!(
            "{:<28} {:>6}  {}",
            "coverage: state", "runs", "first seed"
        )];
        for r in &self.points {
            lines.push(format!(
                "{:<28} {:>6}  {}",
                r.point.name(),
                r.runs,
                r.first.as_ref().map_or_else(
                    || "-".to_owned(),
                    |f| format!("{} --seed {}", f.scenario, f.seed)
                )
            ));
        }
        lines.push(format!(
            "{} of {} states reached",
            self.reached(),
            self.points.len()
        ));
        lines.join("\n")
    }
}

/// A state a scenario declares (`reach = [...]`) that none of its runs reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreached {
    /// The scenario.
    pub scenario: String,
    /// The state.
    pub point: Coverage,
    /// How many runs of the scenario there were.
    pub runs: u64,
}

impl std::fmt::Display for Unreached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scenario {} declares reach = [\"{}\"], but none of its {} run(s) reached it",
            self.scenario, self.point, self.runs
        )
    }
}

/// The declared states never reached: `declared` maps each scenario to its `reach` list,
/// `runs` gives each run's scenario and reached states. A scenario with no runs here (none
/// of its seeds in this shard) is not judged.
pub fn unreached<'a>(
    declared: &BTreeMap<String, Vec<Coverage>>,
    runs: impl IntoIterator<Item = (&'a str, &'a [Coverage])>,
) -> Vec<Unreached> {
    let mut count: BTreeMap<&str, u64> = BTreeMap::new();
    let mut seen: BTreeMap<&str, Vec<Coverage>> = BTreeMap::new();
    for (scenario, reached) in runs {
        *count.entry(scenario).or_default() += 1;
        seen.entry(scenario).or_default().extend_from_slice(reached);
    }
    let mut out = Vec::new();
    for (scenario, points) in declared {
        let Some(&n) = count.get(scenario.as_str()) else {
            continue;
        };
        let seen = seen.get(scenario.as_str()).map_or(&[][..], Vec::as_slice);
        for p in points {
            if !seen.contains(p) {
                out.push(Unreached {
                    scenario: scenario.clone(),
                    point: *p,
                    runs: n,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_counts_runs_and_names_the_lowest_seed() {
        let a = [Coverage::RecoveryAdopted, Coverage::ThawDemoted];
        let b = [Coverage::RecoveryAdopted];
        let t = CoverageTable::of([("x", 7, &a[..]), ("w", 3, &b[..]), ("x", 9, &[][..])]);
        let row = |p| t.points.iter().find(|r| r.point == p).cloned();
        let adopted = row(Coverage::RecoveryAdopted).map(|r| (r.runs, r.first));
        assert_eq!(
            adopted,
            Some((
                2,
                Some(RunId {
                    seed: 3,
                    scenario: "w".into()
                })
            ))
        );
        assert_eq!(row(Coverage::ThawDemoted).map(|r| r.runs), Some(1));
        assert_eq!(row(Coverage::SalvageWritten).map(|r| r.runs), Some(0));
        assert_eq!(t.reached(), 2);
        assert!(t.render().contains("w --seed 3"));
    }

    #[test]
    fn unreached_names_the_scenario_and_skips_scenarios_without_runs() {
        let declared: BTreeMap<String, Vec<Coverage>> = [
            (
                "a".to_owned(),
                vec![Coverage::RecoveryAdopted, Coverage::ThawDemoted],
            ),
            ("b".to_owned(), vec![Coverage::SalvageWritten]),
        ]
        .into_iter()
        .collect();
        let reached = [Coverage::RecoveryAdopted];
        let missing = unreached(&declared, [("a", &reached[..]), ("a", &[][..])]);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].point, Coverage::ThawDemoted);
        assert_eq!(missing[0].runs, 2);
        assert!(missing[0].to_string().contains("scenario a declares"));
    }
}
