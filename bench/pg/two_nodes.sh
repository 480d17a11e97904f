#!/usr/bin/env bash
# One kvstore node against two over the same PostgreSQL database, when the database is not the
# bottleneck: does a second node add throughput (nodes that share nothing but the database should
# add their own)?
#
#   bench/pg/two_nodes.sh get|list|put [--rounds N] [--quota PCT] KVSTORE_BINARY   (a release build)
#
# This machine has two cores, too few for a node, a second node, the database and the load
# generator each on cores of their own. So each node stands in for a machine of its own that is
# smaller than the database's: it runs in a cgroup of its own whose CPU quota holds it to PCT% of
# one core (default 25; a 10 ms period, so a node is held back for milliseconds, not tenths of a
# second). The PostgreSQL backends have core 0 to themselves; the nodes and the load generator
# share core 1 and together stay under it (two nodes at 25% and wrk). A busy loop at SCHED_IDLE
# (it runs only when nothing else wants the core) keeps core 1 from going idle: without it a lone
# node, whose core idles more often than two nodes' does, paid for its wake-ups from idle and spent
# more CPU per request than each of two (bench/RESULTS.md, 2026-12-07 02:33: 60-80 against 57-65
# µs a GET), which made two nodes look better than twice one.
#
# Each round: (1) one node, two wrk processes of 32 connections each at it; (2) two nodes, one wrk
# of 32 connections at each. The same 64 HTTP connections, the same two load generators and the same
# 64 database connections (the one node 64, each of two 32) either way; only the number of nodes
# changes. 2 s warm-up (the access caches filled), then 6 s measured.
# Prints the total req/s of each, the ratio two ÷ one, each node's CPU (% of a core: at its quota
# means the node is what limits), the nodes' CPU per request (a node held back by its quota spends
# more per request than one running freely: fewer requests share each wake-up) and the database
# backends' CPU (% of core 0: under 100 means the database is not what limits).
#
#   get:  GET 1 KiB of 1000 hot keys (hot1k.sh's).
#   list: GET /keys?limit=1000 from a random start (list_keys.sh's).
#   put:  durable PUT 1 KiB to the 1000 hot keys (hot1k.sh's).
#
# Needs root (cgroup v1's cpu controller at /sys/fs/cgroup/cpu, or cgroup v2 with the cpu
# controller). Makes (and drops) a database of its own (PG* variables, or 127.0.0.1 as postgres).
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=${1:-}
shift || true
ROUNDS=3 QUOTA=25
while [ $# -gt 1 ]; do
    case $1 in
    --rounds) ROUNDS=$2 ;;
    --quota) QUOTA=$2 ;;
    *) break ;;
    esac
    shift 2
done
BIN=${1:-}
case $MODE in
get) SCRIPT=get.lua ARG= ;;
list) SCRIPT=get.lua ARG= ;;
put) SCRIPT=put.lua ARG=1024 ;;
*) MODE= ;;
esac
if [ -z "$MODE" ] || [ ! -x "$BIN" ]; then
    echo "usage: $0 get|list|put [--rounds N] [--quota PCT] KVSTORE_BINARY" >&2
    exit 2
fi
. "$DIR/lib.sh"

pg_setup nodes
PORT_B=$((PORT + 1))
nodes=()
CGROUPS=()
stop_nodes() {
    for p in "${nodes[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${nodes[@]}"; do wait "$p" 2>/dev/null || true; done
    nodes=()
}
spinner=
two_nodes_cleanup() {
    [ -z "$spinner" ] || kill "$spinner" 2>/dev/null || true
    stop_nodes
    pg_cleanup
    for cg in "${CGROUPS[@]}"; do rmdir "$cg" 2>/dev/null || true; done
}
trap two_nodes_cleanup EXIT

# The cgroups: kvstore_bench_<pid>_a and _b, each with QUOTA% of a core.
PERIOD_US=10000
if [ -w /sys/fs/cgroup/cpu/cgroup.procs ]; then
    CG_ROOT=/sys/fs/cgroup/cpu
    cg_limit() { echo "$PERIOD_US" >"$1/cpu.cfs_period_us" && echo $((PERIOD_US * QUOTA / 100)) >"$1/cpu.cfs_quota_us"; }
elif [ -w /sys/fs/cgroup/cgroup.subtree_control ]; then
    CG_ROOT=/sys/fs/cgroup
    echo +cpu >"$CG_ROOT/cgroup.subtree_control"
    cg_limit() { echo "$((PERIOD_US * QUOTA / 100)) $PERIOD_US" >"$1/cpu.max"; }
else
    echo "$0: needs a writable cgroup cpu controller (run as root)" >&2
    exit 2
fi
for n in a b; do
    cg=$CG_ROOT/kvstore_bench_$$_$n
    mkdir -p "$cg"
    CGROUPS+=("$cg")
    cg_limit "$cg"
done

chrt -i 0 taskset -c 1 bash -c 'while :; do :; done' &
spinner=$!

# start_capped CGROUP PORT CONNECTIONS: a node on core 1 in CGROUP with at most CONNECTIONS
# database connections, its pid appended to nodes, once /healthz answers.
start_capped() {
    # shellcheck disable=SC2016
    bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec taskset -c 1 "$@"' _ "$1" \
        "$BIN" serve --listen "127.0.0.1:$2" --database-url "$URL" --db-max-connections "$3" \
        --admin-token "$TOKEN" >/dev/null 2>&1 &
    nodes+=($!)
    await_healthz "$2"
}

start_capped "${CGROUPS[0]}" "$PORT" 64
STORE=$(create_store nodes)
stop_nodes
load_10k_keys "$STORE"
case $MODE in
list) listing_paths "$STORE" ;;
*) hot_paths "$STORE" ;;
esac >"$PATHS"

HZ=$(getconf CLK_TCK)
# db_ticks: the CPU time (clock ticks) of the database's client backends now open, summed.
db_ticks() {
    local pid line sum=0
    for pid in $(backends); do
        { read -r line <"/proc/$pid/stat"; } 2>/dev/null || continue
        # shellcheck disable=SC2086
        set -- $line
        sum=$((sum + ${14} + ${15}))
    done
    echo "$sum"
}
pct() { awk -v t="$1" -v hz="$HZ" -v s="$2" 'BEGIN { printf "%.0f%%", t / hz / s * 100 }'; }

# wrk_at PORT SECONDS: one wrk of 32 connections on core 1 at the node on PORT, the mode's requests.
wrk_at() {
    # shellcheck disable=SC2086
    BENCH_AUTH=$TOKEN taskset -c 1 wrk -t1 -c32 -d"$2"s -s "$DIR/../lua/$SCRIPT" "http://127.0.0.1:$1" -- "$PATHS" $ARG
}

# measure PORT_1 PORT_2: warm-up, then 6 s with one wrk of 32 connections at each port; prints the
# total req/s, each node's CPU and the database's, and the non-2xx count.
measure() {
    local p1=$1 p2=$2 w1 w2 out1=$PATHS.out out2=$PATHS.out2 t0 d0 t1 d1 i
    wrk_at "$p1" 2 >/dev/null &
    w1=$!
    wrk_at "$p2" 2 >/dev/null &
    w2=$!
    wait "$w1" "$w2"
    wrk_at "$p1" 6 >"$out1" 2>&1 &
    w1=$!
    wrk_at "$p2" 6 >"$out2" 2>&1 &
    w2=$!
    pin
    # Seconds 1 to 5 of the six (the pinning took the first).
    t0=() && for i in "${nodes[@]}"; do t0+=("$(ticks "$i")"); done
    d0=$(db_ticks)
    sleep 4
    t1=() && for i in "${nodes[@]}"; do t1+=("$(ticks "$i")"); done
    d1=$(db_ticks)
    wait "$w1" "$w2" || true
    local rps cpu="" all=0
    rps=$(cat "$out1" "$out2" | grep -o 'Requests/sec: *[0-9.]*' | awk '{ s += $2 } END { printf "%.0f", s }')
    for i in "${!nodes[@]}"; do
        cpu+="$(pct $((t1[i] - t0[i])) 4) "
        all=$((all + t1[i] - t0[i]))
    done
    RPS=$rps
    printf '%7s req/s   node CPU %-10s %4s µs/request   database CPU %-5s non-2xx %s\n' "$rps" "$cpu" \
        "$(awk -v t="$all" -v hz="$HZ" -v r="$rps" 'BEGIN { printf "%.0f", t / hz * 1e6 / (r * 4) }')" \
        "$(pct $((d1 - d0)) 4)" \
        "$(cat "$out1" "$out2" | grep -o 'Non-2xx or 3xx responses: [0-9]*' | awk '{ s += $NF } END { print s + 0 }')"
}

echo "# $(date -u '+%F %T') UTC, $MODE, each node held to $QUOTA% of core 1, database on core 0, $ROUNDS rounds, load $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$ROUNDS"); do
    start_capped "${CGROUPS[0]}" "$PORT" 64
    printf 'round %s, one node:  ' "$rep"
    measure "$PORT" "$PORT"
    one=$RPS
    stop_nodes
    start_capped "${CGROUPS[0]}" "$PORT" 32
    start_capped "${CGROUPS[1]}" "$PORT_B" 32
    printf 'round %s, two nodes: ' "$rep"
    measure "$PORT" "$PORT_B"
    stop_nodes
    printf 'round %s, two ÷ one: %.2fx\n' "$rep" "$(awk -v a="$RPS" -v b="$one" 'BEGIN { print a / b }')"
done
