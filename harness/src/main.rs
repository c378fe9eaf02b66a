//! `stormcell-sim`: run simulation campaigns, replay seeds, check determinism and
//! histories.

mod cli;

fn main() {
    let code = cli::main();
    std::process::exit(code);
}
