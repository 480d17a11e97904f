#!/usr/bin/env bash
# GET /keys?limit=1000 through kvstore on PostgreSQL against the prepared range SELECT of 1000 keys
# (range.sql) on the same database, pinned as bench/run.sh pins: kvstore and the PostgreSQL backends on
# core 0, wrk / pgbench (64 connections, one thread) on core 1. kvstore twice, 6 s each, then (the node
# stopped) pgbench twice (BENCH_NODE_CORE=1: the node on core 1 beside wrk, the database alone on
# core 0; see lib.sh). Besides the rates: the node's and the database backends' CPU time per
# request (pgbench's: over 4 s of its run, per transaction), figures a busy machine moves less.
#
#   bench/pg/list_keys.sh KVSTORE_BINARY     (a release build: cargo build --release --bin kvstore)
#
# BENCH_PERF=FILE: `perf record` of the node (call graphs by DWARF unwinding, 499 Hz) during the
# first measured run, written to FILE (`perf report -i FILE --no-children`).
#
# Makes (and drops) a database of its own on the local PostgreSQL (PG* variables, or 127.0.0.1 as
# postgres): one store of 10 000 keys k00000000 … k00009999 (every tenth 1 KiB, the rest 64 bytes),
# loaded by SQL, and bench/pg/schema.sql's reference table with the same keys.
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$1
. "$DIR/lib.sh"
pg_setup list
start "$BIN"
STORE=$(create_store list)
load_10k_keys "$STORE"
psql -X -q "$DB" -f "$DIR/schema.sql" >/dev/null 2>&1
listing_paths "$STORE" >"$PATHS"
# Warm-up (and the access caches filled).
BENCH_AUTH=$TOKEN taskset -c 1 wrk -t1 -c64 -d2s -s "$DIR/../lua/get.lua" "http://127.0.0.1:$PORT" -- "$PATHS" >/dev/null
# The node's CPU time per request is a figure other processes on a busy machine move much less
# than req/s; so is the database's (its backends' CPU time, those open when the run starts).
HZ=$(getconf CLK_TCK)
# snap FILE: the CPU time so far of the backends in $pids (lib.sh's `backends`), to FILE; since
# FILE: the CPU time they spent since (those gone meanwhile left out).
# (Read without a process per backend: the script must not take the CPU it measures.)
snap() {
    local pid line
    for pid in $pids; do
        { read -r line <"/proc/$pid/stat"; } 2>/dev/null || continue
        # shellcheck disable=SC2086
        set -- $line
        echo "$pid $((${14} + ${15}))"
    done >"$1"
}
since() { snap "$1.now"; delta "$1" "$1.now"; }
delta() { awk 'NR == FNR { a[$1] = $2; next } $1 in a { s += $2 - a[$1] } END { print s + 0 }' "$1" "$2"; }
for rep in 1 2; do
    pids=$(backends)
    snap "$PATHS.db"
    t0=$(ticks "$node")
    BENCH_AUTH=$TOKEN taskset -c 1 wrk -t1 -c64 -d6s -s "$DIR/../lua/get.lua" "http://127.0.0.1:$PORT" -- "$PATHS" \
        >"$PATHS.out" 2>&1 &
    w=$!
    prof=
    if [ "$rep" = 1 ] && [ -n "${BENCH_PERF:-}" ]; then
        perf record -q -F 499 --call-graph dwarf,16384 -o "$BENCH_PERF" -p "$node" -- sleep 5 \
            >/dev/null 2>&1 &
        prof=$!
    fi
    pin
    wait "$w"
    [ -z "$prof" ] || wait "$prof" || true
    n=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$PATHS.out")
    per() { awk -v t="$1" -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.0f", n ? t / hz * 1e6 / n : 0 }'; }
    printf 'kvstore GET /keys?limit=1000   %s (non-2xx: %s; node CPU %s us/request, database CPU %s us/request)\n' \
        "$(grep -o 'Requests/sec: *[0-9.]*' "$PATHS.out")" \
        "$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$PATHS.out" || echo 0)" \
        "$(per $(($(ticks "$node") - t0)))" "$(per "$(since "$PATHS.db")")"
done
# The node's 64 connections and pgbench's would pass max_connections: the node goes first.
stop
for rep in 1 2; do
    taskset -c 1 pgbench -n -M prepared -c 64 -j 1 -T 6 -f "$DIR/range.sql" "$DB" >"$PATHS.out" 2>&1 &
    p=$!
    pin
    # Its backends' CPU time from now until the last look at them all (every 0.2 s) before they
    # end with the run, per transaction at the run's rate.
    pids=$(backends)
    snap "$PATHS.db"
    s0=$(date +%s.%N) s1=$s0 d=0
    while kill -0 "$p" 2>/dev/null; do
        sleep 0.2
        t=$(date +%s.%N)
        snap "$PATHS.db.all"
        if [ "$(wc -l <"$PATHS.db.all")" = "$(wc -l <"$PATHS.db")" ]; then
            d=$(delta "$PATHS.db" "$PATHS.db.all") s1=$t
        fi
    done
    wait "$p" || true
    tps=$(grep -o 'tps = [0-9.]*' "$PATHS.out" | head -1)
    printf 'range.sql (pgbench)            %s (database CPU %s us/transaction)\n' "$tps" \
        "$(awk -v t="$d" -v s0="$s0" -v s1="$s1" -v tps="${tps#tps = }" -v hz="$HZ" 'BEGIN {
            w = s1 - s0; if (tps > 0 && w > 0) printf "%.0f", t / hz / w * 1e6 / tps; else printf "?" }')"
done
