//! The command line of `stormcell-sim`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use stormcell_harness::history::History;
use stormcell_harness::report as summary;
use stormcell_harness::runner::{self, RunSpec};
use stormcell_harness::scenario::{self, Scenario};
use stormcell_harness::shard::{self, ShardArg};
use stormcell_harness::{bench, campaign, checker, junit, mutants};
use stormcell_model::config::Profile;
use stormcell_model::plant::Bug;

/// Exit code: every run passed.
pub const EXIT_PASS: i32 = 0;
/// Exit code: some run failed a check.
pub const EXIT_FAIL: i32 = 1;
/// Exit code: bad input; nothing was run.
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "stormcell-sim",
    version,
    about = "Deterministic simulation and chaos testing of a stormcell cluster",
    long_about = "Runs the stormcell protocol as a whole simulated cluster, strikes it with faults drawn from a seed, checks every run (no acknowledged push lost, no stale read, no invented state, correct freezes, convergence) and replays any seed exactly."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the built-in scenarios.
    List,
    /// Run seeds × scenarios and print a summary (exit 1 if any run failed).
    Run(RunArgs),
    /// Run one seed again and print its verdict and trace hash.
    Replay(ReplayArgs),
    /// Run each seed twice and compare trace hashes (exit 1 on a mismatch).
    Determinism(DeterminismArgs),
    /// Run the checkers on a history file (JSON; see reports/README.md).
    Check(CheckArgs),
    /// Run every planted bug on the scenario made to show it and print the share of seeds
    /// its own checkers catch (exit 1 if some plant is never caught).
    Mutants(MutantsArgs),
    /// Shrink a failing seed into a small scenario file that still fails the same checker
    /// with the same kind of violation (explicit fault schedule, fewer and shorter faults,
    /// fewer clients, devices, repositories and refs, a shorter run).
    Shrink(ShrinkArgs),
    /// Join the report directories of a campaign's shards (`run --shard K/N --report DIR`)
    /// into one: summary.json, JUnit XML, coverage and the failing runs' reports (exit 1 if
    /// any run failed or a declared state was never reached).
    Merge(MergeArgs),
    /// Measure the simulator's speed and memory (median of several repetitions), beside an
    /// earlier build's figures when given its `--out` file.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Repetitions of each figure (the median is printed).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Parallel runs (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Seeds of `steady` per repetition.
    #[arg(long, default_value_t = 10)]
    steady_seeds: u64,
    /// Seeds of each built-in scenario per repetition.
    #[arg(long, default_value_t = 1)]
    builtin_seeds: u64,
    /// Seeds of the every-fault cluster (harness/bench/every-fault.toml) per repetition.
    #[arg(long, default_value_t = 4)]
    every_fault_seeds: u64,
    /// Write the figures here as JSON (for a later `--baseline`).
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Print an earlier build's figures (its `--out` file) beside these, with the ratios.
    #[arg(long, value_name = "FILE.json")]
    baseline: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ShrinkArgs {
    /// The scenario (a built-in name or a path to a scenario file).
    scenario: String,
    /// The failing seed.
    #[arg(long)]
    seed: u64,
    #[command(flatten)]
    common: Common,
    /// Where to write the shrunk scenario file.
    #[arg(long, value_name = "FILE.toml")]
    out: PathBuf,
    /// Parallel runs (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Give up trying smaller candidates after this many runs (the best so far is written).
    #[arg(long, default_value_t = 2000)]
    max_runs: usize,
}

#[derive(Debug, Args)]
struct Common {
    /// Protocol profile.
    #[arg(long, default_value = "stormcell", value_parser = parse_profile)]
    profile: Profile,
    /// Switch on a planted bug (the checkers must catch it).
    #[arg(long, value_parser = parse_bug)]
    plant: Option<Bug>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Built-in scenarios to run (all when none is named and no file is given).
    scenarios: Vec<String>,
    /// Scenario files to run as well.
    #[arg(long = "scenario-file", value_name = "PATH")]
    scenario_files: Vec<PathBuf>,
    /// How many seeds per scenario.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    #[command(flatten)]
    common: Common,
    /// Parallel runs (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Write one JSON per failing run and a summary JSON here.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Write JUnit XML here: one test case per scenario and seed range.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Run only the K-th of N disjoint slices of the seeds × scenarios (1 <= K <= N);
    /// `auto/N` takes K from JOB_COMPLETION_INDEX (0-based, as a Kubernetes Indexed Job
    /// sets it). Declared `reach` states are judged when the shards are merged.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<ShardArg>,
    /// Keep drawing seeds (from --from on, every scenario in turn) until this much wall
    /// time has passed, e.g. 30m, 90s, 2h; replaces --seeds.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_for, conflicts_with = "seeds")]
    for_time: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Report directories of the shards (each holding a summary.json).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where the merged summary.json, junit.xml and failing runs' reports go.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// The scenario (a built-in name or a path to a scenario file).
    scenario: String,
    /// The seed.
    #[arg(long)]
    seed: u64,
    #[command(flatten)]
    common: Common,
    /// Print the timeline of the run.
    #[arg(long)]
    trace: bool,
    /// Print only trace entries about these repositories (and those about none); implies
    /// --trace.
    #[arg(long, value_delimiter = ',', value_name = "REPO")]
    repo: Vec<String>,
    /// Print only trace entries on or naming these hosts; implies --trace.
    #[arg(long, value_delimiter = ',', value_name = "HOST")]
    host: Vec<String>,
    /// Print only trace entries of these kinds: op, fault, operator, event (every protocol
    /// event) or an event name such as write-recorded (lock: both lock events); implies
    /// --trace.
    #[arg(long, value_delimiter = ',', value_name = "KIND")]
    kinds: Vec<String>,
    /// Write the run's timeline as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DeterminismArgs {
    /// Built-in scenarios (all when none is named).
    scenarios: Vec<String>,
    /// How many seeds per scenario.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    #[command(flatten)]
    common: Common,
    /// Parallel runs (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
}

#[derive(Debug, Args)]
struct MutantsArgs {
    /// Planted bugs to run (all when none is named).
    #[arg(value_parser = parse_bug)]
    plants: Vec<Bug>,
    /// Seeds per plant (default: each plant's own budget, from the matrix).
    #[arg(long)]
    seeds: Option<u64>,
    /// Parallel runs (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The history file.
    history: PathBuf,
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    s.parse()
}

fn parse_bug(s: &str) -> Result<Bug, String> {
    s.parse()
}

fn parse_shard(s: &str) -> Result<ShardArg, String> {
    s.parse()
}

fn parse_for(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the duration must be more than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{s:?} is not a duration such as 30m, 90s or 2h: {e}"
        )),
    }
}

/// Parses arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_PASS
            };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::List => list(),
        Command::Run(args) => run(args),
        Command::Replay(args) => replay(args),
        Command::Determinism(args) => determinism(args),
        Command::Check(args) => check(args),
        Command::Mutants(args) => mutants(args),
        Command::Shrink(args) => shrink(args),
        Command::Merge(args) => merge(args),
        Command::Bench(args) => bench(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_USAGE
        }
    }
}

fn list() -> anyhow::Result<i32> {
    let all = scenario::builtin();
    let width = all.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in all {
        println!("{:<width$}  {}", s.name, s.description);
    }
    Ok(EXIT_PASS)
}

/// Resolves scenario names and files; any error means nothing runs.
fn resolve(names: &[String], files: &[PathBuf]) -> anyhow::Result<Vec<Scenario>> {
    let mut out = Vec::new();
    for n in names {
        out.push(load_named_or_file(n)?);
    }
    for f in files {
        out.push(scenario::load_file(f)?);
    }
    if names.is_empty() && files.is_empty() {
        out = scenario::builtin();
    }
    Ok(out)
}

fn load_named_or_file(name: &str) -> anyhow::Result<Scenario> {
    let path = std::path::Path::new(name);
    if name.ends_with(".toml") || path.exists() && path.is_file() {
        return Ok(scenario::load_file(path)?);
    }
    Ok(scenario::builtin_named(name)?)
}

fn jobs(j: Option<usize>) -> usize {
    j.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

fn run(args: RunArgs) -> anyhow::Result<i32> {
    let scenarios = resolve(&args.scenarios, &args.scenario_files)?;
    if args.seeds == 0 {
        anyhow::bail!("--seeds must be at least 1");
    }
    if scenarios.is_empty() {
        anyhow::bail!("no scenario to run");
    }
    let shard = match args.shard {
        Some(arg) => Some(
            arg.resolve(std::env::var(shard::INDEX_VAR).ok().as_deref())
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create report directory {}: {e}", dir.display())
        })?;
    }
    // The campaign's runs, seed by seed, every scenario in turn (see `shard` for how a
    // shard slices them): the same order for a fixed seed budget and a time-boxed stream.
    let count = scenarios.len() as u64;
    let spec_of = |offset: u64, position: u64| RunSpec {
        scenario: scenarios[position as usize].clone(),
        seed: args.from + offset,
        profile: args.common.profile,
        plant: args.common.plant,
        keep_trace: false,
    };
    let whole = shard::Shard { index: 1, count: 1 };
    let outcome = match args.for_time {
        Some(limit) => campaign::run_stream(
            &|n| {
                let (offset, position) = shard.unwrap_or(whole).nth(n, count);
                Some(spec_of(offset, position))
            },
            None,
            Some(limit),
            jobs(args.jobs),
        ),
        None => {
            let specs: Vec<RunSpec> = (0..args.seeds)
                .flat_map(|offset| (0..count).map(move |position| (offset, position)))
                .filter(|&(offset, position)| shard.is_none_or(|s| s.contains(offset, position)))
                .map(|(offset, position)| spec_of(offset, position))
                .collect();
            campaign::run_all_keeping(&specs, jobs(args.jobs), campaign::Keep::FailingRuns)
        }
    };
    let table = summary::Summary::of(&scenarios, &outcome);
    let file = summary::SummaryFile::of(&scenarios, &outcome, &table, shard);
    println!("{}", table.render());
    println!("{}", file.coverage.render());
    if let Some(shard) = shard {
        println!(
            "shard {shard}: {} runs; the states scenarios declare they reach are judged by `stormcell-sim merge`",
            file.runs.len()
        );
    }
    let code = report_verdict(&file);
    if let Some(dir) = &args.report {
        summary::write_reports(dir, &file, &outcome)?;
        println!("reports written to {}", dir.display());
    }
    if let Some(path) = &args.junit {
        junit::write(path, &file)?;
        println!("JUnit XML written to {}", path.display());
    }
    Ok(code)
}

/// Prints the failing runs and unreached states of a campaign and returns its exit code.
fn report_verdict(file: &summary::SummaryFile) -> i32 {
    let failing: Vec<&summary::RunLine> = file.runs.iter().filter(|r| !r.passed).collect();
    for r in failing.iter().take(20) {
        println!(
            "FAILED {} seed {}: {}",
            r.scenario,
            r.seed,
            r.violation.as_deref().unwrap_or("failed")
        );
        println!("  replay: {}", r.replay);
    }
    if failing.len() > 20 {
        println!("... and {} more failing runs", failing.len() - 20);
    }
    for u in &file.unreached {
        println!("UNREACHED {u}");
    }
    if failing.is_empty() && file.unreached.is_empty() {
        EXIT_PASS
    } else {
        EXIT_FAIL
    }
}

fn merge(args: MergeArgs) -> anyhow::Result<i32> {
    let mut parts = Vec::new();
    for dir in &args.dirs {
        parts.push((dir.clone(), summary::SummaryFile::read(dir)?));
    }
    let file = summary::SummaryFile::merge(parts)?;
    std::fs::create_dir_all(&args.out).map_err(|e| {
        anyhow::anyhow!("cannot create output directory {}: {e}", args.out.display())
    })?;
    // The failing runs' own reports come along, so the merged folder is complete.
    for dir in &args.dirs {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let to = args.out.join(name);
            let same = std::fs::canonicalize(&path).ok() == std::fs::canonicalize(&to).ok();
            if name.ends_with(".json") && name != "summary.json" && !same {
                std::fs::copy(&path, &to).map_err(|e| {
                    anyhow::anyhow!("cannot copy {} to {}: {e}", path.display(), to.display())
                })?;
            }
        }
    }
    file.write(&args.out)?;
    let junit_path = args.out.join("junit.xml");
    junit::write(&junit_path, &file)?;
    println!("{}", file.summary.render());
    println!("{}", file.coverage.render());
    let code = report_verdict(&file);
    println!(
        "{} shard(s) merged into {} ({} runs; summary.json, junit.xml)",
        args.dirs.len(),
        args.out.display(),
        file.runs.len()
    );
    Ok(code)
}

fn replay(args: ReplayArgs) -> anyhow::Result<i32> {
    let scenario = load_named_or_file(&args.scenario)?;
    let filter = stormcell_harness::trace_filter::Filter {
        repos: args.repo,
        hosts: args.host,
        kinds: args.kinds,
    };
    let trace = args.trace || !filter.is_empty();
    let spec = RunSpec {
        scenario,
        seed: args.seed,
        profile: args.common.profile,
        plant: args.common.plant,
        keep_trace: trace,
    };
    let result = runner::run(&spec);
    if trace {
        let repos = &result.drawn.repositories;
        for e in result.trace.iter().flatten() {
            if filter.keeps(e, repos) {
                println!(
                    "{}",
                    stormcell_harness::trace_filter::render(e, &result.history.ops)
                );
            }
        }
        println!();
    }
    if let Some(path) = &args.html {
        stormcell_harness::timeline_html::write(path, &result)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!("timeline written to {}", path.display());
    }
    print_verdict(&result);
    Ok(if result.passed() {
        EXIT_PASS
    } else {
        EXIT_FAIL
    })
}

fn print_verdict(r: &runner::RunResult) {
    println!(
        "scenario {} seed {} profile {}{}",
        r.scenario,
        r.seed,
        r.profile,
        r.plant.map(|b| format!(" plant {b}")).unwrap_or_default()
    );
    for a in &r.history.operator {
        println!(
            "operator at {}: {}: {}",
            checker::secs(a.started_ms),
            a.command,
            a.result
        );
        for d in a.plan.iter().flatten() {
            println!(
                "    plan listed {} {} at {} on {}{}",
                d.repo,
                d.name,
                d.commit,
                d.device,
                if d.salvageable { " (salvaged)" } else { "" }
            );
        }
    }
    if !r.status.is_empty() {
        println!("service status over time:");
        print!("{}", stormcell_harness::status_sampler::render(&r.status));
    }
    println!("final state: {}", r.final_outcome.name());
    if !r.reached.is_empty() {
        let reached: Vec<&str> = r.reached.keys().map(|p| p.name()).collect();
        println!("rare states reached: {}", reached.join(", "));
    }
    for (device, reasons) in &r.read_only_ms {
        let spent: Vec<String> = reasons
            .iter()
            .map(|(reason, ms)| format!("{reason} {:.1}s", *ms as f64 / 1000.0))
            .collect();
        println!("read-only on {device}: {}", spent.join(", "));
    }
    for v in &r.verdicts {
        let status = if v.passed() { "pass" } else { "FAIL" };
        println!(
            "  [{status}] {}{}",
            v.checker,
            if v.notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", v.notes.join("; "))
            }
        );
        for violation in v.violations.iter().take(10) {
            println!("      {violation}");
        }
        if v.violations.len() > 10 {
            println!("      ... {} more", v.violations.len() - 10);
        }
    }
    if let Some(e) = &r.sim_error {
        println!("  [FAIL] simulation error: {e}");
    }
    if !r.passed() {
        println!(
            "drawn options: {}",
            serde_json::to_string(&r.drawn).unwrap_or_default()
        );
    }
    println!("verdict: {}", if r.passed() { "PASS" } else { "FAIL" });
    println!("trace hash: {:016x}", r.trace_hash);
}

fn determinism(args: DeterminismArgs) -> anyhow::Result<i32> {
    let scenarios = resolve(&args.scenarios, &[])?;
    let specs: Vec<RunSpec> = scenarios
        .iter()
        .flat_map(|s| {
            (args.from..args.from + args.seeds).map(move |seed| RunSpec {
                scenario: s.clone(),
                seed,
                profile: args.common.profile,
                plant: args.common.plant,
                keep_trace: true,
            })
        })
        .collect();
    let mismatches = campaign::determinism(&specs, jobs(args.jobs));
    let total = specs.len();
    for m in &mismatches {
        println!("MISMATCH {} seed {}: {}", m.scenario, m.seed, m.detail);
    }
    println!("{total} seeds run twice, {} mismatches", mismatches.len());
    Ok(if mismatches.is_empty() {
        EXIT_PASS
    } else {
        EXIT_FAIL
    })
}

fn mutants(args: MutantsArgs) -> anyhow::Result<i32> {
    if args.seeds == Some(0) {
        anyhow::bail!("--seeds must be at least 1");
    }
    let rows: Vec<&mutants::Mutant> = if args.plants.is_empty() {
        mutants::MATRIX.iter().collect()
    } else {
        args.plants.iter().map(|b| mutants::of(*b)).collect()
    };
    let mut specs = Vec::new();
    let mut spans = Vec::new();
    for row in &rows {
        let mine = row.specs(args.seeds)?;
        spans.push(specs.len()..specs.len() + mine.len());
        specs.extend(mine);
    }
    let outcome = campaign::run_all_keeping(&specs, jobs(args.jobs), campaign::Keep::Verdicts);
    let kills: Vec<mutants::Kills> = rows
        .iter()
        .zip(spans)
        .map(|(row, span)| mutants::Kills::tally(**row, &outcome.results[span]))
        .collect();
    print!("{}", mutants::render(&kills));
    let never = kills.iter().filter(|k| k.caught == 0).count();
    println!(
        "{} plants, {} runs, {} never caught, {:.1} s wall",
        kills.len(),
        specs.len(),
        never,
        outcome.total_wall.as_secs_f64()
    );
    for k in kills.iter().filter_map(|k| k.first.map(|seed| (k, seed))) {
        println!(
            "  first kill of {}: stormcell-sim replay {} --seed {} --plant {}",
            k.0.mutant.bug, k.0.mutant.scenario, k.1, k.0.mutant.bug
        );
    }
    Ok(if never == 0 { EXIT_PASS } else { EXIT_FAIL })
}

fn shrink(args: ShrinkArgs) -> anyhow::Result<i32> {
    use stormcell_harness::shrink;
    let scenario = load_named_or_file(&args.scenario)?;
    let spec = RunSpec {
        scenario,
        seed: args.seed,
        profile: args.common.profile,
        plant: args.common.plant,
        keep_trace: false,
    };
    let options = shrink::Options {
        jobs: jobs(args.jobs),
        max_runs: args.max_runs.max(1),
    };
    let mut tried = 0usize;
    let shrunk = shrink::shrink(&spec, options, &mut |step| {
        tried += 1;
        println!(
            "{:>4} {} {}  [{}]",
            tried,
            if step.kept { "kept " } else { "     " },
            step.what,
            step.size
        );
    })?;
    std::fs::write(&args.out, &shrunk.toml)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.out.display()))?;
    println!("failure kept: {}", shrunk.target);
    println!("before: {}", shrunk.before);
    println!("after:  {}", shrunk.after);
    println!("{} runs; written to {}", shrunk.runs, args.out.display());
    let mut replay = format!(
        "stormcell-sim replay {} --seed {}",
        args.out.display(),
        args.seed
    );
    if args.common.profile != Profile::Stormcell {
        replay.push_str(&format!(" --profile {}", args.common.profile));
    }
    if let Some(bug) = args.common.plant {
        replay.push_str(&format!(" --plant {bug}"));
    }
    println!("replay: {replay}");
    Ok(EXIT_PASS)
}

fn bench(args: BenchArgs) -> anyhow::Result<i32> {
    // Read the baseline first: a bad file is reported before minutes of measuring.
    let baseline = match &args.baseline {
        Some(path) => Some(bench::BenchReport::load(path)?),
        None => None,
    };
    if args.reps == 0
        || args.steady_seeds == 0
        || args.builtin_seeds == 0
        || args.every_fault_seeds == 0
    {
        anyhow::bail!("--reps and every --*-seeds must be at least 1");
    }
    let cfg = bench::BenchConfig {
        reps: args.reps,
        jobs: jobs(args.jobs),
        steady_seeds: args.steady_seeds,
        builtin_seeds: args.builtin_seeds,
        every_fault_seeds: args.every_fault_seeds,
    };
    let report = bench::measure(&cfg, &|name| eprintln!("measuring {name} ..."))?;
    print!("{}", report.render(baseline.as_ref()));
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(EXIT_PASS)
}

fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.history)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.history.display()))?;
    let history = History::from_json(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: not a history: field {}: {}",
            args.history.display(),
            e.line,
            e.column,
            e.path,
            e.message
        )
    })?;
    let verdicts = checker::check_all(&history);
    let mut ok = true;
    for v in &verdicts {
        ok &= v.passed();
        println!(
            "[{}] {}",
            if v.passed() { "pass" } else { "FAIL" },
            v.checker
        );
        for violation in &v.violations {
            println!("    {violation}");
        }
    }
    println!(
        "{} operations checked: {}",
        history.ops.len(),
        if ok { "PASS" } else { "FAIL" }
    );
    Ok(if ok { EXIT_PASS } else { EXIT_FAIL })
}
