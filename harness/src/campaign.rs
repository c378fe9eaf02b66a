//! Running many seeds: a pool of worker threads, each running whole simulations one after
//! another (a simulation itself is single-threaded and deterministic), with a progress bar
//! on a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::runner::{self, RunResult, RunSpec};
use indicatif::{ProgressBar, ProgressStyle};

/// The results of a campaign, in the order of the specs.
pub struct Outcome {
    /// One per spec.
    pub results: Vec<RunResult>,
    /// Wall time per result.
    pub wall: Vec<Duration>,
    /// Wall time of the whole campaign.
    pub total_wall: Duration,
}

fn progress(len: usize, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:40}] {pos}/{len} runs, {elapsed} elapsed, eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// Wall-clock time is read through indicatif's own clock: it is only reported, never fed
/// into a simulation.
fn stopwatch() -> ProgressBar {
    ProgressBar::hidden()
}

/// Runs every spec on `jobs` threads.
pub fn run_all(specs: &[RunSpec], jobs: usize) -> Outcome {
    let total = stopwatch();
    let bar = progress(specs.len(), "simulating");
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<(RunResult, Duration)>>> =
        specs.iter().map(|_| Mutex::new(None)).collect();
    let failed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(specs.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(spec) = specs.get(i) else { break };
                let watch = stopwatch();
                let result = runner::run(spec);
                let wall = watch.elapsed();
                if !result.passed() {
                    let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                    bar.set_message(format!("simulating ({n} failed)"));
                }
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some((result, wall));
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let mut results = Vec::with_capacity(specs.len());
    let mut wall = Vec::with_capacity(specs.len());
    for slot in slots {
        if let Some((r, w)) = slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
            results.push(r);
            wall.push(w);
        }
    }
    Outcome {
        results,
        wall,
        total_wall: total.elapsed(),
    }
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

/// Runs every spec twice and compares the traces.
pub fn determinism(specs: &[RunSpec], jobs: usize) -> Vec<Mismatch> {
    let doubled: Vec<RunSpec> = specs.iter().flat_map(|s| [s.clone(), s.clone()]).collect();
    let outcome = run_all(&doubled, jobs);
    let mut out = Vec::new();
    for pair in outcome.results.chunks(2) {
        let [a, b] = pair else { continue };
        if a.trace_hash == b.trace_hash {
            continue;
        }
        let ta = a.trace.clone().unwrap_or_default();
        let tb = b.trace.clone().unwrap_or_default();
        let detail = match ta.iter().zip(tb.iter()).position(|(x, y)| x != y) {
            Some(i) => format!("trace hashes {:016x} and {:016x} differ first at event {i}:\n    first run:  {}\n    second run: {}", a.trace_hash, b.trace_hash, ta[i], tb[i]),
            None => format!("trace hashes {:016x} and {:016x} differ: one trace is a prefix of the other ({} vs {} events)", a.trace_hash, b.trace_hash, ta.len(), tb.len()),
        };
        out.push(Mismatch {
            scenario: a.scenario.clone(),
            seed: a.seed,
            detail,
        });
    }
    out
}
