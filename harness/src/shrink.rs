//! Shrinking a failing run into a small scenario that still fails the same way.
//!
//! The run's drawn fault schedule is written out as an explicit `schedule` (which replays the
//! same run: the nemesis has its own random stream), the drawn topology is pinned, and then
//! the scenario is made smaller step by step, each candidate kept only when its run still
//! fails the same checker with the same kind of violation:
//!
//! - faults and operator steps are dropped, delta-debugging style (halves first, then
//!   smaller chunks down to single items);
//! - each remaining fault is shortened (halved while the failure holds);
//! - the workload duration, the settle time, the clients, the devices, the repositories and
//!   the refs are reduced (the smallest value is tried first, then a bisection).
//!
//! The rounds repeat until one changes nothing. The workload still comes from the seed, so a
//! smaller scenario is a different run of the same seed; each candidate is validated by
//! writing it as TOML and parsing it back, so the file written at the end parses and replays.
//!
//! Candidates of one step run in parallel batches; the first holding candidate in order wins,
//! so the result does not depend on how many threads ran.

use std::collections::BTreeSet;
use std::fmt;

use crate::checker::{CheckerId, Violation};
use crate::mutants;
use crate::runner::{self, RunResult, RunSpec};
use crate::scenario::{self, Faults, Range, Scenario, ScheduledFault};

/// Why a run cannot be shrunk.
#[derive(Debug, thiserror::Error)]
pub enum ShrinkError {
    /// The run passes: there is nothing to keep failing.
    #[error("{0} passes: there is no failure to shrink")]
    Passes(String),
    /// A candidate could not be written as a scenario file.
    #[error("cannot write the scenario as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
    /// The explicit form of the schedule does not fail any more (a bug of the simulator:
    /// the explicit schedule must replay the drawn run).
    #[error("the run with its drawn schedule written out no longer fails: {0}")]
    ExplicitDiffers(String),
}

/// What "the same failure" means: a violation of `checker` whose kind is in `kinds` (or a
/// simulation error, when the run failed only through one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The checker that must keep failing; `None` for a simulation error.
    pub checker: Option<CheckerId>,
    /// Accepted kinds (see [`violation_kind`]).
    pub kinds: BTreeSet<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.checker {
            None => f.write_str("a simulation error"),
            Some(c) => {
                write!(f, "checker {c}")?;
                if let Some(kind) = self.kinds.iter().next() {
                    write!(f, ", kind \"{kind}\"")?;
                }
                Ok(())
            }
        }
    }
}

/// The kind of a violation: its explanation with the specifics taken out (every word with a
/// digit, every backquoted name, every hexadecimal commit), so two violations of one rule
/// about different operations, devices or commits have the same kind.
pub fn violation_kind(v: &Violation) -> String {
    let mut out = Vec::new();
    let mut quoted = false;
    for word in v.explanation.split_whitespace() {
        let ticks = word.matches('`').count();
        let in_quote = quoted || ticks > 0;
        if ticks % 2 == 1 {
            quoted = !quoted;
        }
        let specific = in_quote
            || word.chars().any(|c| c.is_ascii_digit())
            || (word.len() >= 7 && word.chars().all(|c| c.is_ascii_hexdigit()));
        let keep = if specific { "#" } else { word };
        // Runs of specifics collapse: "refs/heads/b1 at 4f3a..." and "R2" read alike.
        if !(keep == "#" && out.last() == Some(&"#")) {
            out.push(keep);
        }
    }
    out.join(" ")
}

/// The target of a failing run: for a planted bug, the first of its own checkers (from the
/// kill matrix) that failed, else the first failing checker.
pub fn target_of(result: &RunResult) -> Option<Target> {
    let failing = mutants::failing_checkers(result);
    let preferred = result.plant.and_then(|bug| {
        mutants::of(bug)
            .caught_by
            .iter()
            .copied()
            .find(|c| failing.contains(c))
    });
    let first = result
        .verdicts
        .iter()
        .flat_map(|v| &v.violations)
        .map(|v| v.checker)
        .next();
    match preferred.or(first) {
        Some(checker) => Some(Target {
            checker: Some(checker),
            kinds: violations(result)
                .filter(|v| v.checker == checker)
                .map(violation_kind)
                .collect(),
        }),
        None if result.sim_error.is_some() => Some(Target {
            checker: None,
            kinds: BTreeSet::new(),
        }),
        None => None,
    }
}

fn violations(result: &RunResult) -> impl Iterator<Item = &Violation> {
    result.verdicts.iter().flat_map(|v| &v.violations)
}

impl Target {
    /// Whether `result` fails the same way.
    pub fn holds(&self, result: &RunResult) -> bool {
        match self.checker {
            None => result.sim_error.is_some(),
            Some(checker) => violations(result)
                .any(|v| v.checker == checker && self.kinds.contains(&violation_kind(v))),
        }
    }
}

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Scheduled faults.
    pub faults: usize,
    /// Operations in the history (workload and final probes).
    pub operations: usize,
    /// Virtual milliseconds simulated.
    pub virtual_ms: u64,
}

impl Size {
    /// The size of `result`.
    pub fn of(result: &RunResult) -> Size {
        Size {
            faults: result.drawn.schedule.len(),
            operations: result.history.ops.len(),
            virtual_ms: result.virtual_ms,
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} faults, {} operations, {:.1} virtual s",
            self.faults,
            self.operations,
            self.virtual_ms as f64 / 1000.0
        )
    }
}

/// One step of the shrink, as reported while it runs.
#[derive(Debug, Clone)]
pub struct Step {
    /// What was tried, such as "drop faults 3..6 of 12".
    pub what: String,
    /// Whether the failure held (the change was kept).
    pub kept: bool,
    /// The size of the best run so far.
    pub size: Size,
}

/// The outcome of a shrink.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The small scenario (explicit schedule, pinned topology).
    pub scenario: Scenario,
    /// Its TOML text, as written to the output file.
    pub toml: String,
    /// The failure kept.
    pub target: Target,
    /// The size of the original run.
    pub before: Size,
    /// The size of the shrunk run.
    pub after: Size,
    /// The shrunk run.
    pub result: RunResult,
    /// Runs made (the original included).
    pub runs: usize,
}

/// Options of a shrink.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Parallel runs per batch of candidates.
    pub jobs: usize,
    /// Stop trying candidates after this many runs (the best so far is kept).
    pub max_runs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: 1,
            max_runs: 2000,
        }
    }
}

/// The state of a shrink in progress.
struct Shrinker<'a> {
    spec: RunSpec,
    target: Target,
    best: Scenario,
    best_result: RunResult,
    runs: usize,
    options: Options,
    report: &'a mut dyn FnMut(&Step),
}

/// The scenario name a shrunk file gets.
fn shrunk_name(name: &str) -> String {
    let base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if base.ends_with("-shrunk") {
        base
    } else {
        format!("{base}-shrunk")
    }
}

/// Shrinks the failing run `spec` (its `keep_trace` is ignored); `report` sees every step.
pub fn shrink(
    spec: &RunSpec,
    options: Options,
    report: &mut dyn FnMut(&Step),
) -> Result<Shrunk, ShrinkError> {
    let mut spec = spec.clone();
    spec.keep_trace = false;
    let original = runner::run(&spec);
    let Some(target) = target_of(&original) else {
        return Err(ShrinkError::Passes(original.replay_command()));
    };
    let before = Size::of(&original);

    // The drawn schedule, written out; the topology as drawn.
    let mut explicit = spec.scenario.clone();
    explicit.name = shrunk_name(&explicit.name);
    explicit.description = format!(
        "Shrunk from {} seed {}{}: fails {target}.",
        spec.scenario.name,
        spec.seed,
        spec.plant
            .map(|b| format!(" with plant {b}"))
            .unwrap_or_default()
    );
    explicit.schedule = Some(
        original
            .drawn
            .schedule
            .iter()
            .map(ScheduledFault::from_planned)
            .collect(),
    );
    explicit.faults = Faults::default();
    let mut shrinker = Shrinker {
        spec,
        target,
        best: explicit.clone(),
        best_result: original,
        runs: 1,
        options,
        report,
    };
    match shrinker.test(&explicit)? {
        Some(result) => {
            shrinker.best_result = result;
            shrinker.step("write the drawn schedule out explicitly", true);
        }
        None => {
            return Err(ShrinkError::ExplicitDiffers(
                shrinker.spec.scenario.name.clone(),
            ))
        }
    }
    shrinker.pin_topology()?;
    for round in 1..=3 {
        let start = shrinker.best.clone();
        shrinker.schedule_ddmin()?;
        shrinker.operator_ddmin()?;
        shrinker.shorten_faults()?;
        shrinker.reduce_numbers()?;
        if shrinker.best == start || shrinker.exhausted() {
            break;
        }
        (shrinker.report)(&Step {
            what: format!("round {round} done; another round"),
            kept: true,
            size: Size::of(&shrinker.best_result),
        });
    }
    let toml = scenario::to_toml(&shrinker.best)?;
    Ok(Shrunk {
        after: Size::of(&shrinker.best_result),
        scenario: shrinker.best,
        toml,
        target: shrinker.target,
        before,
        result: shrinker.best_result,
        runs: shrinker.runs,
    })
}

impl Shrinker<'_> {
    fn exhausted(&self) -> bool {
        self.runs >= self.options.max_runs
    }

    fn step(&mut self, what: &str, kept: bool) {
        let size = Size::of(&self.best_result);
        (self.report)(&Step {
            what: what.to_owned(),
            kept,
            size,
        });
    }

    /// Runs `candidate` (after a round trip through TOML, so an invalid candidate is never
    /// kept) and returns its result when the failure holds.
    fn test(&mut self, candidate: &Scenario) -> Result<Option<RunResult>, ShrinkError> {
        Ok(self
            .test_all(std::slice::from_ref(candidate))?
            .pop()
            .flatten())
    }

    /// Runs the candidates in batches of `jobs`; returns, for a prefix of them, each one's
    /// result when the failure holds, stopping after the first batch where one holds.
    fn test_all(&mut self, candidates: &[Scenario]) -> Result<Vec<Option<RunResult>>, ShrinkError> {
        let mut out = Vec::new();
        for batch in candidates.chunks(self.options.jobs.max(1)) {
            if self.exhausted() {
                break;
            }
            let mut specs = Vec::new();
            let mut valid = Vec::new();
            for candidate in batch {
                let text = scenario::to_toml(candidate)?;
                match scenario::parse(&candidate.name, &text) {
                    Ok(parsed) => {
                        let mut spec = self.spec.clone();
                        spec.scenario = parsed;
                        valid.push(Some(specs.len()));
                        specs.push(spec);
                    }
                    Err(_) => valid.push(None),
                }
            }
            self.runs += specs.len();
            let mut results = run_parallel(&specs, self.options.jobs);
            let mut any = false;
            for slot in valid {
                let result = slot
                    .and_then(|i| results.get_mut(i).and_then(Option::take))
                    .filter(|r| self.target.holds(r));
                any |= result.is_some();
                out.push(result);
            }
            if any {
                break;
            }
        }
        Ok(out)
    }

    /// Tries the candidates in order; keeps the first that holds. Returns its index.
    fn try_first(
        &mut self,
        candidates: Vec<(String, Scenario)>,
    ) -> Result<Option<usize>, ShrinkError> {
        let scenarios: Vec<Scenario> = candidates.iter().map(|(_, s)| s.clone()).collect();
        let results = self.test_all(&scenarios)?;
        let mut kept = None;
        for (i, result) in results.into_iter().enumerate() {
            let what = &candidates[i].0;
            match result {
                Some(result) if kept.is_none() => {
                    self.best = candidates[i].1.clone();
                    self.best_result = result;
                    self.step(what, true);
                    kept = Some(i);
                }
                _ if kept.is_none() => self.step(what, false),
                _ => {}
            }
        }
        Ok(kept)
    }

    /// Pins devices and repositories to the numbers drawn (kept only when still failing).
    fn pin_topology(&mut self) -> Result<(), ShrinkError> {
        let mut pinned = self.best.clone();
        let devices = self.best_result.drawn.devices.len() as u32;
        let repos = self.best_result.drawn.repositories.len() as u32;
        pinned.topology.devices = Range::exactly(devices);
        pinned.topology.repositories = Range::exactly(repos);
        if pinned != self.best {
            self.try_first(vec![(
                format!("pin the topology as drawn ({devices} devices, {repos} repositories)"),
                pinned,
            )])?;
        }
        Ok(())
    }

    /// Delta debugging over a list: drop chunks (halves, then quarters, ... single items)
    /// while the failure holds.
    fn ddmin<T: Clone>(
        &mut self,
        what: &str,
        get: impl Fn(&Scenario) -> Vec<T>,
        set: impl Fn(&mut Scenario, Vec<T>),
    ) -> Result<(), ShrinkError> {
        let mut chunks = 2usize;
        loop {
            let items = get(&self.best);
            if items.is_empty() || self.exhausted() {
                return Ok(());
            }
            let n = items.len();
            let chunks_now = chunks.min(n);
            let size = n.div_ceil(chunks_now);
            let mut candidates = Vec::new();
            for start in (0..n).step_by(size) {
                let end = (start + size).min(n);
                let mut rest = items[..start].to_vec();
                rest.extend_from_slice(&items[end..]);
                let mut candidate = self.best.clone();
                set(&mut candidate, rest);
                let label = if end - start == 1 {
                    format!("drop {what} {} of {n}", start + 1)
                } else {
                    format!("drop {what} {}..{} of {n}", start + 1, end)
                };
                candidates.push((label, candidate));
            }
            match self.try_first(candidates)? {
                // Something went: retry at a coarser grain over what is left.
                Some(_) => chunks = (chunks_now - 1).max(2),
                None if chunks_now >= n => return Ok(()),
                None => chunks = (chunks_now * 2).min(n),
            }
        }
    }

    fn schedule_ddmin(&mut self) -> Result<(), ShrinkError> {
        self.ddmin(
            "faults",
            |s| s.schedule.clone().unwrap_or_default(),
            |s, v| s.schedule = Some(v),
        )
    }

    fn operator_ddmin(&mut self) -> Result<(), ShrinkError> {
        self.ddmin(
            "operator steps",
            |s| s.operator.steps.clone(),
            |s, v| s.operator.steps = v,
        )
    }

    /// Halves each fault's length while the failure holds (down to a tenth of a second).
    fn shorten_faults(&mut self) -> Result<(), ShrinkError> {
        let n = self.best.schedule.as_ref().map_or(0, Vec::len);
        for i in 0..n {
            loop {
                let mut candidate = self.best.clone();
                let Some(entry) = candidate.schedule.as_mut().and_then(|s| s.get_mut(i)) else {
                    break;
                };
                let Some(length) = entry.fault.length_ms().filter(|l| *l >= 200) else {
                    break;
                };
                entry.fault.set_length_ms(length / 2);
                entry.label = None;
                let what = format!(
                    "shorten fault {} ({}) from {:.1}s to {:.1}s",
                    i + 1,
                    entry.fault.name(),
                    length as f64 / 1000.0,
                    (length / 2) as f64 / 1000.0
                );
                if self.try_first(vec![(what, candidate)])?.is_none() || self.exhausted() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The smallest value of a number that keeps the failure: `lo` first, then a bisection
    /// between `lo` and the current value (to within `step`).
    fn reduce(
        &mut self,
        what: &str,
        lo: u64,
        step: u64,
        get: impl Fn(&Scenario) -> u64,
        set: impl Fn(&mut Scenario, u64),
    ) -> Result<(), ShrinkError> {
        let current = get(&self.best);
        if current <= lo {
            return Ok(());
        }
        let candidate = |value: u64| {
            let mut s = self.best.clone();
            set(&mut s, value);
            (format!("{what} {current} -> {value}"), s)
        };
        let first = candidate(lo);
        if self.try_first(vec![first])?.is_some() {
            return Ok(());
        }
        let (mut bad, mut good) = (lo, current);
        while good - bad > step.max(1) && !self.exhausted() {
            let mid = bad + (good - bad) / 2;
            let mut s = self.best.clone();
            set(&mut s, mid);
            let label = format!("{what} {good} -> {mid}");
            if self.try_first(vec![(label, s)])?.is_some() {
                good = mid;
            } else {
                bad = mid;
            }
        }
        Ok(())
    }

    /// Workload duration, settle time, clients, devices, repositories, refs.
    fn reduce_numbers(&mut self) -> Result<(), ShrinkError> {
        // Faults and operator steps must still fall inside the workload.
        let last_start_s = {
            let faults = self.best.schedule.iter().flatten().map(|f| f.at_ms / 1000);
            let steps = self.best.operator.steps.iter().map(|s| s.at_s);
            faults.chain(steps).max().unwrap_or(0)
        };
        let duration = self.best.workload.duration_s;
        self.reduce(
            "workload duration (s)",
            (last_start_s + 1).min(duration),
            (duration / 20).max(1),
            |s| s.workload.duration_s,
            |s, v| s.workload.duration_s = v,
        )?;
        self.reduce(
            "settle time (s)",
            1,
            2,
            |s| s.workload.settle_s,
            |s, v| s.workload.settle_s = v,
        )?;
        self.reduce(
            "clients",
            1,
            1,
            |s| u64::from(s.workload.clients),
            |s, v| s.workload.clients = v as u32,
        )?;
        if self.best.topology.devices.min == self.best.topology.devices.max {
            self.reduce(
                "devices",
                1,
                1,
                |s| u64::from(s.topology.devices.min),
                |s, v| s.topology.devices = Range::exactly(v as u32),
            )?;
        }
        if self.best.topology.repositories.min == self.best.topology.repositories.max {
            self.reduce(
                "repositories",
                1,
                1,
                |s| u64::from(s.topology.repositories.min),
                |s, v| s.topology.repositories = Range::exactly(v as u32),
            )?;
        }
        self.reduce(
            "refs (branches)",
            1,
            1,
            |s| u64::from(s.workload.branches),
            |s, v| {
                let v = v as u32;
                s.workload.branches = v;
                let r = s.workload.refs_per_push;
                s.workload.refs_per_push = Range::new(r.min.min(v), r.max.min(v));
            },
        )
    }
}

/// Runs `specs` on up to `jobs` threads (whole simulations, each single-threaded and
/// deterministic); results in the order of the specs.
fn run_parallel(specs: &[RunSpec], jobs: usize) -> Vec<Option<RunResult>> {
    if jobs <= 1 || specs.len() <= 1 {
        return specs.iter().map(|s| Some(runner::run(s))).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .iter()
            .map(|spec| scope.spawn(move || runner::run(spec)))
            .collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stormcell_model::config::Profile;
    use stormcell_model::plant::Bug;

    fn spec(scenario: &str, seed: u64, plant: Option<Bug>) -> RunSpec {
        RunSpec {
            scenario: scenario::builtin_named(scenario).expect("built-in scenario"),
            seed,
            profile: Profile::Stormcell,
            plant,
            keep_trace: false,
        }
    }

    /// A seed's drawn schedule written out as `[[schedule]]`, read back and run again gives
    /// the same trace: the explicit form is the same run.
    #[test]
    fn explicit_schedule_replays_the_drawn_run() {
        let cases = [
            ("write-interruption", 3),
            ("db-promote", 1),
            ("disk-loss", 2),
            ("swarm", 4),
            ("thaw-during-sync", 0),
        ];
        for (name, seed) in cases {
            let drawn = spec(name, seed, None);
            let first = runner::run(&drawn);
            assert!(
                !first.drawn.schedule.is_empty(),
                "{name} seed {seed} drew no fault"
            );
            let mut explicit = drawn.scenario.clone();
            explicit.schedule = Some(
                first
                    .drawn
                    .schedule
                    .iter()
                    .map(ScheduledFault::from_planned)
                    .collect(),
            );
            explicit.faults = Faults::default();
            let text = scenario::to_toml(&explicit).expect("serializable");
            assert!(text.contains("[[schedule]]"), "{text}");
            let parsed = scenario::parse("explicit.toml", &text).expect("parses back");
            assert_eq!(parsed.schedule, explicit.schedule);
            let second = runner::run(&RunSpec {
                scenario: parsed,
                ..drawn
            });
            assert_eq!(second.drawn.schedule, first.drawn.schedule, "{name} {seed}");
            assert_eq!(
                second.trace_hash, first.trace_hash,
                "{name} seed {seed}: the explicit schedule ran differently"
            );
        }
    }

    #[test]
    fn violation_kinds_ignore_specifics() {
        let v = |explanation: &str| Violation {
            checker: CheckerId::StaleRead,
            op: None,
            device: None,
            repo: None,
            at_ms: 0,
            expected: String::new(),
            seen: String::new(),
            explanation: explanation.to_owned(),
        };
        let a = v("read op 12 on repo002 started at 3.100s after push op 7 saw `b1` at 4f3a9c0");
        let b = v("read op 40 on repo001 started at 9.000s after push op 31 saw `b2` at 0c0ffee");
        let c = v("push op 40 to R1 was acknowledged at 2.000s but is lost");
        assert_eq!(violation_kind(&a), violation_kind(&b));
        assert_ne!(violation_kind(&a), violation_kind(&c));
    }

    /// The first catching seed of skip-read-sync (seed 0 of `steady`, from the kill matrix)
    /// shrinks to a smaller run that still fails stale-read the same way, and the file
    /// written parses and fails again.
    #[test]
    fn shrinking_a_planted_bug_keeps_its_failure() {
        let bug = Bug::SkipReadSync;
        let row = mutants::of(bug);
        let original = spec(row.scenario, 0, Some(bug));
        let first = runner::run(&original);
        assert!(row.catches(&first), "seed 0 no longer catches {bug}");
        let mut steps = 0;
        let shrunk = shrink(&original, Options::default(), &mut |_| steps += 1).expect("shrinks");
        assert!(steps > 1);
        assert_eq!(shrunk.target, target_of(&first).expect("fails"));
        assert!(shrunk.target.holds(&shrunk.result));
        assert!(shrunk.after.operations < shrunk.before.operations);
        assert!(shrunk.after.virtual_ms < shrunk.before.virtual_ms);
        assert!(shrunk.after.faults <= shrunk.before.faults);
        let parsed = scenario::parse("shrunk.toml", &shrunk.toml).expect("the file parses");
        assert!(parsed.schedule.is_some());
        let again = runner::run(&RunSpec {
            scenario: parsed,
            ..original
        });
        assert!(shrunk.target.holds(&again));
        assert_eq!(again.trace_hash, shrunk.result.trace_hash);
    }
}
