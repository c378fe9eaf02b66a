#!/usr/bin/env bash
# Runs every test of the workspace. Installs what is missing first (when run as root on a
# Debian-like system); prints what it needs otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

install_packages() {
    if [ "$(id -u)" = 0 ] && need apt-get; then
        echo "installing: $*"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        echo "missing: $* (install them, or run this script as root)" >&2
        exit 1
    fi
}

need cargo || { echo "missing: a Rust toolchain (cargo); see https://rustup.rs" >&2; exit 1; }
need git || install_packages git

# The end-to-end tests start their own PostgreSQL server from the system's binaries.
have_postgres() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
        || { need pg_config && [ -x "$(pg_config --bindir)/initdb" ]; }
}
have_postgres || install_packages postgresql
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "missing: the postgres system user (the server refuses to run as root)" >&2
    exit 1
fi

echo "== format"
cargo fmt --all -- --check
# The daemon under test is built with its `plant` feature, so the end-to-end tests can
# also run it with a planted bug and show the checkers catch the loss against real
# processes (nothing switches a bug on unless a test sets STORMCELL_PLANT).
echo "== lints"
cargo clippy --workspace --all-targets --features stormcell-node/plant --quiet -- -D warnings
echo "== tests"
cargo test --workspace --features stormcell-node/plant
# A short campaign over every built-in scenario (6 seeds each, about 200 runs): every run
# must pass and every state a scenario declares with `reach` must be reached. Its JUnit
# report is what CI publishes (see .ci/run); the reports of failing runs land beside it.
echo "== campaign"
rm -rf target/campaign
cargo run --release --quiet -p stormcell-harness --bin stormcell-sim -- \
    run --seeds 6 --report target/campaign --junit target/campaign/junit.xml
# The kill matrix: every planted bug must be caught by its own checkers on the scenario
# made to show it (each plant's seed budget, from harness/src/mutants.rs).
echo "== kill matrix"
cargo run --release --quiet -p stormcell-harness --bin stormcell-sim -- mutants
