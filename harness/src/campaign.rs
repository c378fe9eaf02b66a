//! Running many seeds: a pool of worker threads, each running whole simulations one after
//! another (a simulation itself is single-threaded and deterministic), with a progress bar
//! on a terminal showing runs, failures and the rare states reached so far. A campaign is
//! a fixed list of runs, or (time-boxed) a stream of runs drawn until the time is up.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::runner::{self, RunResult, RunSpec};
use indicatif::{ProgressBar, ProgressStyle};
use stormcell_model::ports::Coverage;

/// The results of a campaign, in the order of the specs.
pub struct Outcome {
    /// One per spec.
    pub results: Vec<RunResult>,
    /// Wall time per result.
    pub wall: Vec<Duration>,
    /// Wall time of the whole campaign.
    pub total_wall: Duration,
}

/// What the progress line shows as the runs come in.
#[derive(Default)]
struct Tally {
    runs: u64,
    failed: u64,
    reached: BTreeSet<Coverage>,
}

impl Tally {
    /// What one run adds.
    fn of(r: &RunResult) -> Self {
        Tally {
            runs: 1,
            failed: u64::from(!r.passed()),
            reached: r.reached.keys().copied().collect(),
        }
    }

    fn add(&mut self, other: Tally) {
        self.runs += other.runs;
        self.failed += other.failed;
        self.reached.extend(other.reached);
    }

    fn message(&self) -> String {
        format!(
            "{} runs, {} failed, {}/{} rare states reached",
            self.runs,
            self.failed,
            self.reached.len(),
            Coverage::ALL.len()
        )
    }
}

/// The progress bar, on stderr and only when it is a terminal: a count of runs, or for a
/// time-boxed campaign the seconds of its budget.
fn progress(len: Option<usize>, limit: Option<Duration>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match (limit, len) {
        (Some(limit), _) => (
            ProgressBar::new(limit.as_secs().max(1)),
            "{spinner} [{bar:30}] {elapsed} of {len}s: {msg}",
        ),
        (None, len) => (
            ProgressBar::new(len.unwrap_or(0) as u64),
            "{spinner} [{bar:30}] {pos}/{len}, eta {eta}: {msg}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(Tally::default().message());
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Wall-clock time is read through indicatif's own clock: it is only reported (and bounds
/// a time-boxed campaign), never fed into a simulation.
fn stopwatch() -> ProgressBar {
    ProgressBar::hidden()
}

/// What a campaign keeps of each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every result whole.
    Everything,
    /// Failing runs whole; of passing runs only what summaries read (see `slim`), so that
    /// memory hardly grows with the number of seeds.
    FailingRuns,
    /// Of every run only what summaries read, failing ones too: for campaigns that only
    /// tally verdicts, such as the kill matrix, where most runs fail.
    Verdicts,
}

/// Runs every spec on `jobs` threads, keeping every result whole.
pub fn run_all(specs: &[RunSpec], jobs: usize) -> Outcome {
    run_all_keeping(specs, jobs, Keep::Everything)
}

/// Runs every spec on `jobs` threads, keeping of each run what `keep` says.
pub fn run_all_keeping(specs: &[RunSpec], jobs: usize, keep: Keep) -> Outcome {
    run_keeping(
        &|n| usize::try_from(n).ok().and_then(|i| specs.get(i)).cloned(),
        Some(specs.len()),
        None,
        jobs,
        keep,
    )
}

/// Runs `spec_at(0)`, `spec_at(1)`, ... on `jobs` threads until it returns `None` or, with
/// a `limit`, until that much wall time has passed (runs under way then finish). `len`
/// is how many there are, when known (for the progress bar). Keeps failing runs whole and
/// of passing runs what summaries read ([`Keep::FailingRuns`]), so that hours of runs fit
/// in memory.
pub fn run_stream(
    spec_at: &(dyn Fn(u64) -> Option<RunSpec> + Sync),
    len: Option<usize>,
    limit: Option<Duration>,
    jobs: usize,
) -> Outcome {
    run_keeping(spec_at, len, limit, jobs, Keep::FailingRuns)
}

fn run_keeping(
    spec_at: &(dyn Fn(u64) -> Option<RunSpec> + Sync),
    len: Option<usize>,
    limit: Option<Duration>,
    jobs: usize,
    keep: Keep,
) -> Outcome {
    let (done, total_wall) = pool(spec_at, len, limit, jobs, &|spec| {
        let mut result = runner::run(&spec);
        let tally = Tally::of(&result);
        let lean = match keep {
            Keep::Everything => false,
            Keep::FailingRuns => result.passed(),
            Keep::Verdicts => true,
        };
        if lean {
            slim(&mut result);
        }
        (result, tally)
    });
    let (results, wall) = done.into_iter().unzip();
    Outcome {
        results,
        wall,
        total_wall,
    }
}

/// Drops what only a run's own report needs (the history's operations, faults, operator
/// actions and final refs, the status samples, the drawn schedule, the checkers' notes),
/// keeping what summaries, coverage and the kill matrix read: verdicts, counts, reached
/// states, the final outcome and the trace hash.
fn slim(r: &mut RunResult) {
    let h = &mut r.history;
    h.ops = Vec::new();
    h.faults = Vec::new();
    h.operator = Vec::new();
    h.repositories = Vec::new();
    h.database = None;
    h.final_state.refs = Default::default();
    r.status = Vec::new();
    r.drawn.schedule = Vec::new();
    for v in &mut r.verdicts {
        v.notes = Vec::new();
    }
}

/// The worker pool under every campaign: `work` turns each spec into what the campaign
/// keeps of it (and what the progress line counts); the kept values come back in the
/// order of the specs, each with its wall time, and the campaign's wall time.
fn pool<T: Send>(
    spec_at: &(dyn Fn(u64) -> Option<RunSpec> + Sync),
    len: Option<usize>,
    limit: Option<Duration>,
    jobs: usize,
    work: &(dyn Fn(RunSpec) -> (T, Tally) + Sync),
) -> (Vec<(T, Duration)>, Duration) {
    let total = stopwatch();
    let bar = progress(len, limit);
    let next = AtomicU64::new(0);
    let done: Mutex<Vec<(u64, T, Duration)>> = Mutex::new(Vec::new());
    let tally = Mutex::new(Tally::default());
    let threads = match len {
        Some(len) => jobs.min(len.max(1)),
        None => jobs,
    };
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                if limit.is_some_and(|limit| total.elapsed() >= limit) {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(spec) = spec_at(n) else { break };
                let watch = stopwatch();
                let (kept, counted) = work(spec);
                let wall = watch.elapsed();
                {
                    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    t.add(counted);
                    bar.set_message(t.message());
                }
                done.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((n, kept, wall));
                match limit {
                    Some(_) => bar.set_position(total.elapsed().as_secs()),
                    None => bar.inc(1),
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(n, _, _)| *n);
    let kept = done.into_iter().map(|(_, t, w)| (t, w)).collect();
    (kept, total.elapsed())
}

/// A seed whose two runs differed.
pub struct Mismatch {
    /// Scenario.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// The first divergent event.
    pub detail: String,
}

/// Runs every spec twice and compares the traces. Both runs of a seed happen on the same
/// worker, which keeps only a mismatch: memory is bounded by the jobs, not the seeds.
pub fn determinism(specs: &[RunSpec], jobs: usize) -> Vec<Mismatch> {
    let spec_at = |n: u64| usize::try_from(n).ok().and_then(|i| specs.get(i)).cloned();
    let (done, _) = pool(&spec_at, Some(specs.len()), None, jobs, &|spec| {
        let a = runner::run(&spec);
        let b = runner::run(&spec);
        let mut tally = Tally::of(&a);
        tally.add(Tally::of(&b));
        (compare(&a, &b), tally)
    });
    done.into_iter().filter_map(|(m, _)| m).collect()
}

/// The mismatch between two runs of the same spec, if their trace hashes differ.
fn compare(a: &RunResult, b: &RunResult) -> Option<Mismatch> {
    if a.trace_hash == b.trace_hash {
        return None;
    }
    let empty = Vec::new();
    let ta = a.trace.as_ref().unwrap_or(&empty);
    let tb = b.trace.as_ref().unwrap_or(&empty);
    let detail = match ta.iter().zip(tb.iter()).position(|(x, y)| x != y) {
        Some(i) => format!("trace hashes {:016x} and {:016x} differ first at event {i}:\n    first run:  {}\n    second run: {}", a.trace_hash, b.trace_hash, ta[i], tb[i]),
        None => format!("trace hashes {:016x} and {:016x} differ: one trace is a prefix of the other ({} vs {} events)", a.trace_hash, b.trace_hash, ta.len(), tb.len()),
    };
    Some(Mismatch {
        scenario: a.scenario.clone(),
        seed: a.seed,
        detail,
    })
}
