#!/usr/bin/env bash
# Shrinks each planted bug's first catching seed and prints a table: plant, faults and
# operations before and after, wall seconds of the shrink. Target (issue 15): at most 3
# faults, a history at least 5 times shorter, under 2 minutes on 2 cores.
#
#   bash harness/bench/shrink-plants.sh [PLANT...]
#
# Uses a release build; the first catching seeds come from `stormcell-sim mutants`.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p stormcell-harness --bin stormcell-sim
target="${CARGO_TARGET_DIR:-target}"
sim="$target/release/stormcell-sim"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# Each plant's first catching seed, from growing seed budgets (cheap for plants caught
# early); `mutants` prints "first kill of PLANT: stormcell-sim replay SCENARIO --seed N ...".
plants=("$@")
if [ ${#plants[@]} -eq 0 ]; then
    mapfile -t plants < <("$sim" mutants --seeds 1 --jobs 2 | awk 'NR>1 && $1 !~ /^[0-9]/ && $3 ~ /^[0-9]+$/ {print $1}')
fi
: >"$out/first.txt"
for plant in "${plants[@]}"; do
    for budget in 10 40 150 300; do
        line=$("$sim" mutants "$plant" --seeds "$budget" --jobs 2 | grep '  first kill of ' || true)
        if [ -n "$line" ]; then echo "$line" >>"$out/first.txt"; break; fi
    done
done
printf '%-34s %-24s %5s %7s %6s %6s %8s %8s %8s %5s\n' plant scenario seed faults- faults+ ops- ops+ ratio seconds runs
while read -r _ _ _ plant _ _ scenario _ seed _ _; do
    plant="${plant%:}"
    start=$(date +%s.%N)
    "$sim" shrink "$scenario" --seed "$seed" --plant "$plant" --jobs 2 \
        --out "$out/$plant.toml" >"$out/$plant.log" 2>&1 || { echo "$plant: shrink failed"; tail -3 "$out/$plant.log"; continue; }
    end=$(date +%s.%N)
    before=$(grep '^before:' "$out/$plant.log")
    after=$(grep '^after:' "$out/$plant.log")
    runs=$(grep -o '^[0-9]* runs' "$out/$plant.log" | cut -d' ' -f1)
    fb=$(echo "$before" | awk '{print $2}'); ob=$(echo "$before" | awk '{print $4}')
    fa=$(echo "$after" | awk '{print $2}'); oa=$(echo "$after" | awk '{print $4}')
    printf '%-34s %-24s %5s %7s %6s %6s %8s %8.1f %8.1f %5s\n' "$plant" "$scenario" "$seed" \
        "$fb" "$fa" "$ob" "$oa" "$(echo "$ob / $oa" | bc -l)" "$(echo "$end - $start" | bc -l)" "$runs"
    # The written file must replay to a failure.
    if "$sim" replay "$out/$plant.toml" --seed "$seed" --plant "$plant" >/dev/null; then
        echo "  $plant: the shrunk file passes on replay!"
    fi
done <"$out/first.txt"
