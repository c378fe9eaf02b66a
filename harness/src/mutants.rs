//! The kill matrix: every planted bug, the built-in scenario made to show it, and the
//! checkers that must catch it there. `stormcell-sim mutants` runs the matrix and the plant
//! tests take their scenario, seed budget and checkers from it, so the two never disagree.
//!
//! A seed counts as a kill only when one of the plant's own checkers fails; a seed that
//! fails for another reason is counted apart, so a plant caught only by accident shows up.

use std::collections::BTreeSet;

use crate::checker::CheckerId;
use crate::runner::{RunResult, RunSpec};
use crate::scenario::{self, ScenarioError};
use stormcell_model::config::Profile;
use stormcell_model::plant::Bug;

/// One row of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Mutant {
    /// The planted bug.
    pub bug: Bug,
    /// The built-in scenario that shows it.
    pub scenario: &'static str,
    /// Seeds (from 0) within which some seed must catch it.
    pub seeds: u64,
    /// The checkers whose violations count as catching it: the rules it breaks.
    pub caught_by: &'static [CheckerId],
}

use CheckerId::{Availability, Convergence, Durability, Freeze, Linearizable, ReadOnly, StaleRead};

/// Every planted bug, in [`Bug::ALL`] order.
pub const MATRIX: [Mutant; Bug::ALL.len()] = [
    Mutant {
        bug: Bug::SkipReadSync,
        scenario: "steady",
        seeds: 10,
        caught_by: &[StaleRead, Linearizable],
    },
    Mutant {
        bug: Bug::AckBeforeVersionBump,
        scenario: "steady",
        seeds: 10,
        caught_by: &[StaleRead],
    },
    Mutant {
        bug: Bug::ReleaseLockBeforeClearWriting,
        scenario: "contention",
        seeds: 40,
        caught_by: &[Freeze, Durability, StaleRead],
    },
    Mutant {
        bug: Bug::IgnoreWritingFlag,
        scenario: "db-link-drop",
        seeds: 40,
        caught_by: &[Durability, StaleRead, Freeze],
    },
    Mutant {
        bug: Bug::SkipFsync,
        scenario: "loss-of-leaders",
        seeds: 20,
        caught_by: &[Durability, StaleRead],
    },
    Mutant {
        bug: Bug::TrustReplicaVersions,
        scenario: "db-stale-replica",
        seeds: 300,
        caught_by: &[StaleRead, Linearizable],
    },
    Mutant {
        bug: Bug::NeverRecover,
        scenario: "db-primary-loss",
        seeds: 300,
        caught_by: &[ReadOnly, Availability, Convergence],
    },
    Mutant {
        bug: Bug::WriteOnReplica,
        scenario: "db-primary-loss",
        seeds: 300,
        caught_by: &[ReadOnly],
    },
    Mutant {
        bug: Bug::PromoteWithRows,
        scenario: "thaw-loss-of-leaders",
        seeds: 300,
        caught_by: &[Durability, Freeze],
    },
    Mutant {
        bug: Bug::DemoteWithoutLock,
        scenario: "demote-under-load",
        seeds: 60,
        caught_by: &[Durability, Freeze],
    },
    Mutant {
        bug: Bug::StatusIgnoresInactive,
        scenario: "contract",
        seeds: 300,
        caught_by: &[Durability, Convergence],
    },
    Mutant {
        bug: Bug::EpochInMemory,
        scenario: "db-promote-cold-restart",
        seeds: 300,
        caught_by: &[StaleRead, Durability],
    },
    Mutant {
        bug: Bug::TrustEmptyWorkingCopy,
        scenario: "disk-loss",
        seeds: 100,
        caught_by: &[StaleRead, Durability],
    },
    Mutant {
        bug: Bug::IgnoreRowCount,
        scenario: "demote-during-write",
        seeds: 40,
        caught_by: &[Durability],
    },
    Mutant {
        bug: Bug::UnconditionalSyncUpdate,
        scenario: "thaw-during-sync",
        seeds: 100,
        caught_by: &[Durability],
    },
    Mutant {
        bug: Bug::AckBeforeDurable,
        scenario: "fsync-failure",
        seeds: 300,
        caught_by: &[Durability, StaleRead],
    },
    Mutant {
        bug: Bug::SkipWriteSync,
        scenario: "steady",
        seeds: 20,
        caught_by: &[Durability, Linearizable],
    },
    Mutant {
        bug: Bug::UnmarkedStaleRead,
        scenario: "db-stale-writer-down",
        seeds: 20,
        caught_by: &[StaleRead, Linearizable],
    },
    Mutant {
        bug: Bug::DiscardWithoutSalvage,
        scenario: "thaw-during-sync",
        seeds: 40,
        caught_by: &[Durability],
    },
    Mutant {
        bug: Bug::UnconditionalDemote,
        scenario: "thaw-during-sync",
        seeds: 100,
        caught_by: &[Durability],
    },
    Mutant {
        bug: Bug::ClaimsSurviveDemote,
        scenario: "demote-then-promote",
        seeds: 100,
        caught_by: &[Durability, StaleRead, Linearizable],
    },
];

/// The matrix row of `bug`.
pub fn of(bug: Bug) -> &'static Mutant {
    // MATRIX is in Bug::ALL order; the unit test below keeps it so.
    let i = Bug::ALL.iter().position(|b| *b == bug).unwrap_or(0);
    &MATRIX[i]
}

impl Mutant {
    /// The runs of this row: `seeds` seeds (the row's own budget when `None`) from 0.
    pub fn specs(&self, seeds: Option<u64>) -> Result<Vec<RunSpec>, ScenarioError> {
        let s = scenario::builtin_named(self.scenario)?;
        Ok((0..seeds.unwrap_or(self.seeds))
            .map(|seed| RunSpec {
                scenario: s.clone(),
                seed,
                profile: Profile::Stormcell,
                plant: Some(self.bug),
                keep_trace: false,
            })
            .collect())
    }

    /// Whether `result` catches this plant: one of its own checkers failed.
    pub fn catches(&self, result: &RunResult) -> bool {
        failing_checkers(result)
            .iter()
            .any(|c| self.caught_by.contains(c))
    }
}

/// The checkers with violations in `result`.
pub fn failing_checkers(result: &RunResult) -> BTreeSet<CheckerId> {
    result
        .verdicts
        .iter()
        .flat_map(|v| v.violations.iter().map(|x| x.checker))
        .collect()
}

/// What one row's runs showed.
#[derive(Debug, Clone)]
pub struct Kills {
    /// The row.
    pub mutant: Mutant,
    /// Seeds run.
    pub seeds: u64,
    /// Seeds caught by one of the plant's own checkers.
    pub caught: u64,
    /// The first such seed.
    pub first: Option<u64>,
    /// Seeds that failed, but only through other checkers (or a simulation error).
    pub other: u64,
    /// Those other checkers.
    pub other_checkers: BTreeSet<CheckerId>,
}

impl Kills {
    /// Tallies the results of one row's runs.
    pub fn tally(mutant: Mutant, results: &[RunResult]) -> Self {
        let mut kills = Kills {
            mutant,
            seeds: results.len() as u64,
            caught: 0,
            first: None,
            other: 0,
            other_checkers: BTreeSet::new(),
        };
        for r in results.iter().filter(|r| !r.passed()) {
            if mutant.catches(r) {
                kills.caught += 1;
                kills.first = Some(kills.first.map_or(r.seed, |f| f.min(r.seed)));
            } else {
                kills.other += 1;
                kills.other_checkers.extend(failing_checkers(r));
            }
        }
        kills
    }

    /// The share of seeds caught, in percent.
    pub fn share(&self) -> f64 {
        if self.seeds == 0 {
            0.0
        } else {
            100.0 * self.caught as f64 / self.seeds as f64
        }
    }
}

/// The matrix as a table, one line per plant.
pub fn render(rows: &[Kills]) -> String {
    let bug_w = rows
        .iter()
        .map(|k| k.mutant.bug.name().len())
        .max()
        .unwrap_or(0)
        .max(5);
    let scen_w = rows
        .iter()
        .map(|k| k.mutant.scenario.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = format!(
        "{:<bug_w$}  {:<scen_w$}  {:>6}  {:>7}  {:>6}  {:>5}  caught by\n",
        "plant", "scenario", "seeds", "caught", "first", "other"
    );
    for k in rows {
        let names = |set: &mut dyn Iterator<Item = &CheckerId>| {
            set.map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
        };
        let mut line = format!(
            "{:<bug_w$}  {:<scen_w$}  {:>6}  {:>6.1}%  {:>6}  {:>5}  {}",
            k.mutant.bug.name(),
            k.mutant.scenario,
            k.seeds,
            k.share(),
            k.first.map_or("-".to_owned(), |f| f.to_string()),
            k.other,
            names(&mut k.mutant.caught_by.iter()),
        );
        if !k.other_checkers.is_empty() {
            line.push_str(&format!(
                " (other failures: {})",
                names(&mut k.other_checkers.iter())
            ));
        }
        if k.caught == 0 {
            line.push_str("  NEVER CAUGHT");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_has_every_plant_in_order_on_a_builtin_scenario() {
        for (bug, row) in Bug::ALL.iter().zip(MATRIX.iter()) {
            assert_eq!(*bug, row.bug);
            assert!(!row.caught_by.is_empty(), "{bug}");
            assert!(row.seeds > 0, "{bug}");
            assert!(
                scenario::builtin_named(row.scenario).is_ok(),
                "{bug}: {}",
                row.scenario
            );
            assert_eq!(of(*bug).bug, *bug);
        }
    }
}
