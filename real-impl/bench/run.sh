#!/usr/bin/env bash
# Benchmark: push and clone a repository with thousands of commits through one stormcell
# device and through plain `git http-backend`, and the time for a push to reach every
# device. Prints medians and ratios. Then five concurrent pushes to one repository (the
# write lock's hand-off), and hangs the primary database (SIGSTOP) with a
# streaming replica configured, and reports how long git requests took meanwhile and how
# soon pushes were refused as read-only.
#
#   cargo build --release -p stormcell-node      # the script builds nothing itself
#   bash real-impl/bench/run.sh [COMMITS] [RUNS]
#
# BIG_MB sets the size of the large push whose memory cost is measured last (default 320,
# incompressible; 0 skips it).
#
# STORMCELL_BIN names the binary to time (default target/release/stormcell). Needs the
# PostgreSQL server binaries, git and python3; run as root it starts PostgreSQL as the
# postgres user.
set -euo pipefail
cd "$(dirname "$0")/../.."
COMMITS=${1:-3000}
RUNS=${2:-5}
HERE=$PWD

PG_BIN=${STORMCELL_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL server binaries not found" >&2; exit 2; }

S=${STORMCELL_BIN:-$HERE/target/release/stormcell}
[ -x "$S" ] || { echo "no stormcell binary at $S: build it first (cargo build --release -p stormcell-node) or set STORMCELL_BIN" >&2; exit 2; }
HANG_S=${HANG_S:-20}

WORK=$(mktemp -d /tmp/stormcell-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
STOPPED=()
cleanup() {
    # A primary stopped by the hang section is continued first, so it can be shut down.
    for p in "${STOPPED[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    as_pg "$PG_BIN/pg_ctl" stop -m immediate -D "$WORK/pg" >/dev/null 2>&1 || true
    as_pg "$PG_BIN/pg_ctl" stop -m immediate -D "$WORK/pg2" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "== PostgreSQL"
mkdir "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/pg"
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -A trust -U postgres --no-sync >/dev/null
PGPORT=$(free_port)
as_pg "$PG_BIN/pg_ctl" start -w -D "$WORK/pg" -l "$WORK/pg/log" \
    -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $WORK/pg" >/dev/null
"$PG_BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE stormcell"
export STORMCELL_DATABASE="host=127.0.0.1 port=$PGPORT user=postgres dbname=stormcell"
$S db migrate >/dev/null
$S service create S1 >/dev/null

echo "== three devices"
declare -A HTTP
for i in 1 2 3; do
    d=repo00$i; P=$(free_port); H=$(free_port); HTTP[$i]=$H
    mkdir -p "$WORK/$d"
    $S device add $d --address 127.0.0.1:$P --http-url http://127.0.0.1:$H --credential "bench-credential-$i" >/dev/null
    $S service bind S1 $d >/dev/null
    cat > "$WORK/$d/node.toml" <<TOML
device = "$d"
data_dir = "$WORK/$d/data"
listen_peer = "127.0.0.1:$P"
listen_http = "127.0.0.1:$H"
http_url = "http://127.0.0.1:$H"
credential = "bench-credential-$i"
[[database.hosts]]
name = "db1"
address = "$STORMCELL_DATABASE"
role = "primary"
[log]
level = "warn"
[[users]]
name = "bench"
token = "bench-token"
write = ["*"]
TOML
    $S node --config "$WORK/$d/node.toml" 2>"$WORK/$d/log" & PIDS+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do
        (echo >/dev/tcp/127.0.0.1/${HTTP[$i]}) 2>/dev/null && break
        sleep 0.1
    done
    (echo >/dev/tcp/127.0.0.1/${HTTP[$i]}) 2>/dev/null || { cat "$WORK/repo00$i/log" >&2; exit 1; }
done

echo "== plain git http-backend"
mkdir -p "$WORK/plain"
CGI_PORT=$(free_port)
python3 "$HERE/real-impl/bench/cgi_server.py" "$CGI_PORT" "$WORK/plain" & PIDS+=($!)
sleep 1

echo "== a repository with $COMMITS commits"
SRC=$WORK/src
git init -q -b main "$SRC"
python3 - "$COMMITS" <<'PY' | git -C "$SRC" fast-import --quiet
import sys
n = int(sys.argv[1])
for i in range(1, n + 1):
    body = "".join(f"line {j} of file {i % 50} rev {i}\n" for j in range(40)).encode()
    print("commit refs/heads/main")
    print(f"committer bench <bench@example.com> {1700000000 + i} +0000")
    msg = f"commit {i}".encode()
    print(f"data {len(msg)}"); sys.stdout.flush(); sys.stdout.buffer.write(msg + b"\n")
    print(f"M 644 inline src/file{i % 50}.txt")
    print(f"data {len(body)}"); sys.stdout.flush(); sys.stdout.buffer.write(body + b"\n")
    sys.stdout.flush()
PY
echo "   $(git -C "$SRC" rev-list --count main) commits, $(du -sh "$SRC/.git" | cut -f1)"

GIT="git -c credential.helper= -c http.postBuffer=524288000"
SC_URL() { echo "http://bench:bench-token@127.0.0.1:${HTTP[1]}/$1.git"; }
PL_URL() { echo "http://127.0.0.1:$CGI_PORT/$1.git"; }

# Waits until devices 2 and 3 hold commit $2 of repository $1 on disk; prints the ms since $3.
on_every_device() {
    for i in 2 3; do
        until [ "$(git -C "$WORK/repo00$i/data/repos/$1.git" rev-parse -q --verify main 2>/dev/null)" = "$2" ]; do
            [ $(( $(now_ms) - $3 )) -lt 120000 ] || { echo "repo00$i never got $2" >&2; exit 1; }
            sleep 0.005
        done
    done
    echo $(( $(now_ms) - $3 ))
}
# Runs "$@" and prints "<ms> <MB>": how long it took, and how far the resident memory of
# process $RSS_PID rose above its idle size meanwhile (the peak of VmRSS sampled every
# 20 ms and, where the kernel lets clear_refs reset it, VmHWM, which misses nothing).
rss_above_idle() {
    local idle peak hwm t0 t1 sampler reset=no
    idle=$(awk '/^VmRSS/ {print $2}' "/proc/$RSS_PID/status")
    { echo 5 > "/proc/$RSS_PID/clear_refs"; } 2>/dev/null && reset=yes
    : > "$WORK/rss_samples"
    ( while :; do awk '/^VmRSS/ {print $2}' "/proc/$RSS_PID/status" >> "$WORK/rss_samples" 2>/dev/null || exit 0; sleep 0.02; done ) &
    sampler=$!
    t0=$(now_ms)
    "$@" 2>"$WORK/rss_err" || { kill "$sampler" 2>/dev/null || true; cat "$WORK/rss_err" >&2; echo "failed: $*" >&2; exit 1; }
    t1=$(now_ms)
    kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
    peak=$(sort -n "$WORK/rss_samples" | tail -1)
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$RSS_PID/status")
    if [ "$reset" = yes ] && [ "$hwm" -gt "$peak" ]; then peak=$hwm; fi
    echo "$(( t1 - t0 )) $(( (peak - idle) / 1024 ))"
}

# Pushes $1 MB of incompressible blobs in one push to device 1 (process $2), then clones
# it back, and prints how far the node's resident memory rose above idle meanwhile. Only
# the node's own memory counts: git receive-pack, index-pack and upload-pack are its
# children. The push runs twice: as Git sends a push that fits its post buffer
# (gzip-compressed, with a length) and as it sends a larger one (chunked, after an
# authentication probe).
big_push_memory() {
    local mb=$1 RSS_PID=$2
    [ "$mb" -gt 0 ] || return 0
    echo
    echo "== a ${mb} MB push of incompressible blobs to device 1: the node's memory"
    local big=$WORK/big
    git init -q -b main "$big"
    local files=$(( (mb + 7) / 8 )) left=$mb f n
    for f in $(seq 1 "$files"); do
        n=$(( left < 8 ? left : 8 )); left=$(( left - n ))
        head -c $(( n * 1048576 )) /dev/urandom > "$big/blob$f"
    done
    git -C "$big" add -A
    git -C "$big" -c user.name=bench -c user.email=bench@example.com commit -q -m "big"
    local mode post r
    for mode in one-buffer chunked; do
        if [ "$mode" = one-buffer ]; then post=$(( (mb + 64) * 1048576 )); else post=1048576; fi
        $S repository create "Big-$mode" --service S1 >/dev/null
        sleep 2   # idle: the repository's creation has settled
        r=$(rss_above_idle git -C "$big" -c credential.helper= -c http.postBuffer=$post push -q "$(SC_URL "Big-$mode")" main)
        printf "%-44s %8s ms\n" "${mb} MB push ($mode)" "${r% *}"
        printf "%-44s %8s MB  (target <= 100 MB)\n" "${mb} MB push ($mode): peak RSS above idle" "${r#* }"
    done
    on_every_device Big-chunked "$(git -C "$big" rev-parse main)" "$(now_ms)" >/dev/null
    sleep 2
    r=$(rss_above_idle $GIT clone -q --bare "$(SC_URL Big-chunked)" "$WORK/big-clone")
    printf "%-44s %8s ms\n" "${mb} MB clone" "${r% *}"
    printf "%-44s %8s MB  (target <= 100 MB)\n" "${mb} MB clone: peak RSS above idle" "${r#* }"
    rm -rf "$big" "$WORK/big-clone"
}
timed_clone() { rm -rf "$WORK/clone"; local t0; t0=$(now_ms); $GIT clone -q --bare "$1" "$WORK/clone"; echo $(( $(now_ms) - t0 )); }

for f in push_sc push_pl clone_sc clone_pl busy_sc spread; do : > "$WORK/$f"; done
for r in $(seq 1 "$RUNS"); do
    $S repository create B$r --service S1 >/dev/null 2>&1
    $S repository create C$r --service S1 >/dev/null 2>&1
    git init -q --bare "$WORK/plain/B$r.git"
    head=$(git -C "$SRC" rev-parse main)
    # Alternate which goes first, so neither always runs on a warmer cache.
    if [ $((r % 2)) = 1 ]; then order="sc pl"; else order="pl sc"; fi
    for target in $order; do
        if [ "$target" = sc ]; then url=$(SC_URL B$r); else url=$(PL_URL B$r); fi
        t0=$(now_ms); $GIT -C "$SRC" push -q "$url" main 2>/dev/null; t1=$(now_ms)
        echo $((t1 - t0)) >> "$WORK/push_$target"
        # The clone is measured once the cluster is settled: a whole history just pushed is
        # still being copied to the other devices, which competes for the same cores.
        [ "$target" = sc ] && on_every_device B$r "$head" "$t0" >/dev/null
        timed_clone "$url" >> "$WORK/clone_$target"
    done
    # The same clone while the other devices are still copying a whole history just pushed.
    $GIT -C "$SRC" push -q "$(SC_URL C$r)" main 2>/dev/null
    timed_clone "$(SC_URL C$r)" >> "$WORK/busy_sc"
    on_every_device C$r "$head" "$(now_ms)" >/dev/null
    # A new commit pushed to device 1: how long until every device holds it on disk.
    git -C "$SRC" commit -q --allow-empty -m "spread $r"
    new=$(git -C "$SRC" rev-parse HEAD)
    t0=$(now_ms)
    $GIT -C "$SRC" push -q "$(SC_URL B$r)" main 2>/dev/null
    on_every_device B$r "$new" "$t0" >> "$WORK/spread"
    echo "   run $r: push $(tail -1 "$WORK/push_sc")/$(tail -1 "$WORK/push_pl") ms, clone $(tail -1 "$WORK/clone_sc")/$(tail -1 "$WORK/clone_pl") ms (stormcell/plain), clone while copying $(tail -1 "$WORK/busy_sc") ms, on every device after $(tail -1 "$WORK/spread") ms"
done

ps=$(median < "$WORK/push_sc"); pp=$(median < "$WORK/push_pl")
cs=$(median < "$WORK/clone_sc"); cp=$(median < "$WORK/clone_pl")
sp=$(median < "$WORK/spread"); cb=$(median < "$WORK/busy_sc")
echo
echo "== medians over $RUNS runs, $COMMITS commits"
printf "%-28s %10s %10s %8s\n" "" "stormcell" "plain" "ratio"
printf "%-28s %8s ms %8s ms %8.2f\n" "push (whole history)" "$ps" "$pp" "$(awk "BEGIN{print $ps/$pp}")"
printf "%-28s %8s ms %8s ms %8.2f\n" "clone" "$cs" "$cp" "$(awk "BEGIN{print $cs/$cp}")"
printf "%-28s %8s ms %8s ms %8.2f\n" "clone while copying a push" "$cb" "$cp" "$(awk "BEGIN{print $cb/$cp}")"
printf "%-28s %8s ms\n" "push on every device" "$sp"

echo
echo "== five concurrent pushes to different branches of one repository, one per device in turn"
AT_URL() { echo "http://bench:bench-token@127.0.0.1:${HTTP[$1]}/$2.git"; }
$S repository create L --service S1 >/dev/null
$GIT -C "$SRC" push -q "$(SC_URL L)" main 2>/dev/null
on_every_device L "$(git -C "$SRC" rev-parse main)" "$(now_ms)" >/dev/null
tree=$(git -C "$SRC" rev-parse "main^{tree}")
: > "$WORK/alone"; : > "$WORK/together"
for r in $(seq 1 "$RUNS"); do
    # One push on its own, for comparison.
    c=$(git -C "$SRC" commit-tree -p main -m "alone $r" "$tree")
    t0=$(now_ms); $GIT -C "$SRC" push -q "$(AT_URL 1 L)" "$c:refs/heads/alone$r" 2>/dev/null
    echo $(( $(now_ms) - t0 )) >> "$WORK/alone"
    # Five at once: the time until the last one is acknowledged.
    for b in 1 2 3 4 5; do
        git -C "$SRC" commit-tree -p main -m "together $r $b" "$tree" > "$WORK/commit$b"
    done
    t0=$(now_ms)
    pushes=()
    for b in 1 2 3 4 5; do
        ( $GIT -C "$SRC" push -q "$(AT_URL $(( b % 3 + 1 )) L)" "$(cat "$WORK/commit$b"):refs/heads/b$r-$b" 2>/dev/null \
            || echo "push $b of run $r failed" >&2 ) &
        pushes+=($!)
    done
    # Only the pushes: a bare `wait` would wait for the nodes too.
    wait "${pushes[@]}"
    echo $(( $(now_ms) - t0 )) >> "$WORK/together"
done
printf "%-44s %8s ms\n" "one push on its own" "$(median < "$WORK/alone")"
printf "%-44s %8s ms  (target <= 1500)\n" "five concurrent pushes: the last acknowledged" "$(median < "$WORK/together")"

echo
echo "== the primary hangs (SIGSTOP) for ${HANG_S}s, with a streaming replica"
mkdir "$WORK/pg2"; chmod 700 "$WORK/pg2"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/pg2"
as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U postgres -X stream -R --no-sync -c fast -D "$WORK/pg2" >/dev/null
PG2PORT=$(free_port)
as_pg "$PG_BIN/pg_ctl" start -w -D "$WORK/pg2" -l "$WORK/pg2/log" \
    -o "-p $PG2PORT -c listen_addresses=127.0.0.1 -k $WORK/pg2 -c hot_standby=on" >/dev/null
# The nodes re-read their [database] section when the file changes.
for i in 1 2 3; do
    cat >> "$WORK/repo00$i/node.toml" <<TOML
[[database.hosts]]
name = "db2"
address = "host=127.0.0.1 port=$PG2PORT user=postgres dbname=stormcell"
role = "replica"
TOML
done
$S repository create H --service S1 >/dev/null
git -C "$SRC" commit -q --allow-empty -m "before the hang"
before=$(git -C "$SRC" rev-parse HEAD)
$GIT -C "$SRC" push -q "$(SC_URL H)" HEAD:main 2>/dev/null
on_every_device H "$before" "$(now_ms)" >/dev/null
sleep 5   # the replica has the push; every node has had health checks of both hosts
git -C "$SRC" commit -q --allow-empty -m "during the hang"

# Lists refs from every device in turn, across the whole hang: "ms ok|fail" per request.
: > "$WORK/hang_reads"
(
    i=0
    while [ ! -e "$WORK/hang_over" ]; do
        i=$(( i % 3 + 1 ))
        t0=$(now_ms)
        if $GIT ls-remote "http://bench:bench-token@127.0.0.1:${HTTP[$i]}/H.git" >/dev/null 2>&1; then r=ok; else r=fail; fi
        echo "$(( $(now_ms) - t0 )) $r" >> "$WORK/hang_reads"
        sleep 0.1
    done
) & PIDS+=($!)
sleep 1

PG_PIDS=$(as_pg head -1 "$WORK/pg/postmaster.pid"); PG_PIDS="$PG_PIDS $(pgrep -P "$PG_PIDS" | tr '\n' ' ')"
for p in $PG_PIDS; do STOPPED+=("$p"); kill -STOP "$p"; done
t_stop=$(now_ms)
: > "$WORK/hang_pushes"; refused_after=""
while [ $(( $(now_ms) - t_stop )) -lt $(( HANG_S * 1000 )) ]; do
    t0=$(now_ms)
    out=$($GIT -C "$SRC" push "$(SC_URL H)" HEAD:main 2>&1 || true)
    t1=$(now_ms)
    echo $(( t1 - t0 )) >> "$WORK/hang_pushes"
    if [ -z "$refused_after" ] && grep -q "read-only mode" <<<"$out"; then refused_after=$(( t1 - t_stop )); fi
    sleep 0.5
done
for p in "${STOPPED[@]}"; do kill -CONT "$p"; done
STOPPED=()
t_cont=$(now_ms)
touch "$WORK/hang_over"
until $GIT -C "$SRC" push -q "$(SC_URL H)" HEAD:main 2>/dev/null; do
    [ $(( $(now_ms) - t_cont )) -lt 120000 ] || { echo "writes never came back" >&2; exit 1; }
    sleep 0.5
done
back_after=$(( $(now_ms) - t_cont ))
sleep 1
longest_read=$(awk '{print $1}' "$WORK/hang_reads" | sort -n | tail -1)
longest_push=$(sort -n "$WORK/hang_pushes" | tail -1)
reads_ok=$(grep -c " ok" "$WORK/hang_reads" || true)
reads_all=$(wc -l < "$WORK/hang_reads")
printf "%-44s %8s ms  (target <= 5000)\n" "hung primary: longest git request" "$(( longest_read > longest_push ? longest_read : longest_push ))"
printf "%-44s %8s ms  (target <= 5000)\n" "hung primary: pushes refused read-only after" "${refused_after:-never}"
printf "%-44s %8s\n" "hung primary: reads served" "$reads_ok/$reads_all"
printf "%-44s %8s ms\n" "writes back after SIGCONT" "$back_after"

big_push_memory "${BIG_MB:-320}" "${PIDS[0]}"
