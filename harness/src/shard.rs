//! Shards: a campaign's runs split into N disjoint slices, one per machine (a CI matrix
//! job, a pod of a Kubernetes Indexed Job), joined again by `stormcell-sim merge`.
//!
//! A campaign's runs are the pairs (seed, scenario): seeds from `--from` on, each scenario
//! in the order given. Shard `K/N` takes the runs whose seed offset (seed minus `--from`)
//! plus scenario position is `K - 1` modulo `N`: every run belongs to exactly one shard
//! whatever the seed budget, and each shard gets every scenario in turn (slicing a plain
//! run number instead would hand a whole scenario to one shard when `N` divides the
//! number of scenarios). A time-boxed campaign keeps drawing a shard's runs in the same
//! order, so its shards stay disjoint too.

use serde::{Deserialize, Serialize};

/// The environment variable Kubernetes sets in each pod of an Indexed Job (0-based).
pub const INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

/// The `K`-th of `N` shards (`1 <= K <= N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which slice, from 1.
    pub index: u32,
    /// How many slices.
    pub count: u32,
}

impl Shard {
    /// Whether the run of the scenario at `scenario` (its position) and seed `from +
    /// offset` belongs to this shard.
    pub fn contains(self, offset: u64, scenario: u64) -> bool {
        (offset + scenario) % u64::from(self.count) == u64::from(self.index - 1)
    }

    /// The `n`-th run of this shard among `scenarios` scenarios, as (seed offset, scenario
    /// position), in seed order: each window of `N` seeds holds one seed of every scenario.
    pub fn nth(self, n: u64, scenarios: u64) -> (u64, u64) {
        let scenarios = scenarios.max(1);
        let count = u64::from(self.count);
        let scenario = n % scenarios;
        let window = n / scenarios;
        let k = u64::from(self.index - 1);
        // The seed of the window with (seed + scenario) % N == k.
        let within = (k + count - scenario % count) % count;
        (window * count + within, scenario)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `--shard` as given: a fixed `K/N`, or `auto/N` taking `K` from [`INDEX_VAR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    /// `K/N`.
    Fixed(Shard),
    /// `auto/N`: `K` is the Indexed Job's completion index plus one.
    FromEnv {
        /// How many slices.
        count: u32,
    },
}

impl std::str::FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not K/N (1 <= K <= N, e.g. 2/4) nor auto/N");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(bad());
        }
        if k.trim() == "auto" {
            return Ok(ShardArg::FromEnv { count });
        }
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(ShardArg::Fixed(Shard { index, count }))
    }
}

impl ShardArg {
    /// The shard, given the value of [`INDEX_VAR`] (if set) for `auto/N`.
    pub fn resolve(self, index_var: Option<&str>) -> Result<Shard, String> {
        match self {
            ShardArg::Fixed(shard) => Ok(shard),
            ShardArg::FromEnv { count } => {
                let raw = index_var.ok_or_else(|| {
                    format!(
                        "--shard auto/{count}: {INDEX_VAR} is not set (Kubernetes sets it in \
                         each pod of an Indexed Job; elsewhere give --shard K/{count})"
                    )
                })?;
                let index: u32 = raw.trim().parse().map_err(|_| {
                    format!("--shard auto/{count}: {INDEX_VAR}={raw:?} is not a number")
                })?;
                if index >= count {
                    return Err(format!(
                        "--shard auto/{count}: {INDEX_VAR}={index} is not below {count} \
                         (the Job's completions and the shard count must agree)"
                    ));
                }
                Ok(Shard {
                    index: index + 1,
                    count,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover_every_run() {
        let shards: Vec<Shard> = (1..=3).map(|index| Shard { index, count: 3 }).collect();
        for offset in 0..30u64 {
            for scenario in 0..6u64 {
                let owners = shards
                    .iter()
                    .filter(|s| s.contains(offset, scenario))
                    .count();
                assert_eq!(owners, 1, "seed offset {offset} scenario {scenario}");
            }
        }
    }

    #[test]
    fn the_nth_run_of_a_shard_is_its_runs_in_seed_order() {
        for count in 1..=4u32 {
            for index in 1..=count {
                let shard = Shard { index, count };
                for scenarios in 1..=5u64 {
                    let mut listed = Vec::new();
                    for offset in 0..(u64::from(count) * 4) {
                        for scenario in 0..scenarios {
                            if shard.contains(offset, scenario) {
                                listed.push((offset, scenario));
                            }
                        }
                    }
                    let drawn: Vec<(u64, u64)> = (0..listed.len() as u64)
                        .map(|n| shard.nth(n, scenarios))
                        .collect();
                    let mut sorted = drawn.clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, listed, "shard {shard} of {scenarios} scenarios");
                    assert!(drawn.iter().all(|&(o, s)| shard.contains(o, s)));
                }
            }
        }
    }

    #[test]
    fn parses_fixed_and_auto_and_refuses_nonsense() {
        assert_eq!(
            "2/4".parse::<ShardArg>(),
            Ok(ShardArg::Fixed(Shard { index: 2, count: 4 }))
        );
        assert_eq!(
            "auto/4".parse::<ShardArg>(),
            Ok(ShardArg::FromEnv { count: 4 })
        );
        for bad in ["0/4", "5/4", "4", "a/b", "1/0", "auto/0"] {
            assert!(bad.parse::<ShardArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_takes_the_completion_index_from_zero() {
        let auto = ShardArg::FromEnv { count: 4 };
        assert_eq!(auto.resolve(Some("0")), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(auto.resolve(Some("3")), Ok(Shard { index: 4, count: 4 }));
        assert!(auto
            .resolve(Some("4"))
            .is_err_and(|e| e.contains("not below 4")));
        assert!(auto
            .resolve(None)
            .is_err_and(|e| e.contains("JOB_COMPLETION_INDEX is not set")));
    }
}
