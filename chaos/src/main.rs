//! `stormcell-chaos SCENARIO --seed N`: one scenario and seed against real processes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use stormcell_chaos::{cleanup, Options, Registry};

/// Runs a stormcell scenario against real processes (PostgreSQL, `stormcell node`, stock
/// git) with the scenario's faults, and checks the history with the simulator's checkers.
/// Exit status: 0 every checker passed, 1 some checker failed, 2 the run could not be
/// carried out.
#[derive(Debug, Parser)]
#[command(name = "stormcell-chaos", version)]
struct Args {
    /// A built-in scenario's name (`stormcell-sim list`) or a scenario file.
    scenario: String,
    /// The seed: it fixes the topology, the fault schedule and the clients' choices.
    #[arg(long)]
    seed: u64,
    /// The daemon to run (default: `stormcell` next to this binary, else on PATH).
    #[arg(long)]
    stormcell_bin: Option<PathBuf>,
    /// Keep the report here (history, verdicts, every log, the data); by default a
    /// temporary directory, kept only when the run fails.
    #[arg(long, visible_alias = "report")]
    keep: Option<PathBuf>,
    /// Run the nodes with a planted bug (a daemon built with `--features plant`).
    #[arg(long)]
    plant: Option<String>,
    /// Multiply every time of the scenario (workload, settle, fault schedule) by this.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Print what the seed draws (devices, schedule, what is skipped) and start nothing.
    #[arg(long)]
    plan: bool,
}

fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("stormcell")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("stormcell"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let registry = Registry::new();
    let opts = Options {
        scenario: args.scenario,
        seed: args.seed,
        stormcell_bin: args.stormcell_bin.unwrap_or_else(default_bin),
        keep: args.keep,
        plant: args.plant,
        time_scale: args.time_scale,
    };
    if args.plan {
        return match stormcell_chaos::run::plan(&opts) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stormcell-chaos: {e}");
                ExitCode::from(2)
            }
        };
    }
    cleanup::stop_on_signal(registry.clone());
    let result = stormcell_chaos::run(&opts, &registry);
    registry.stop_everything();
    match result {
        Ok(report) => {
            for verdict in &report.verdicts {
                println!("{verdict}");
            }
            for s in &report.skipped {
                println!("skipped: {s}");
            }
            let verdict = if report.passed() { "PASSED" } else { "FAILED" };
            println!(
                "{verdict}: {} operations; report {}",
                report.operations,
                if report.kept {
                    report.dir.display().to_string()
                } else {
                    "not kept (use --keep DIR)".to_owned()
                }
            );
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("stormcell-chaos: {e}");
            ExitCode::from(2)
        }
    }
}
