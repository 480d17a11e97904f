#!/usr/bin/env bash
# GET or PUT of a 1 KiB record through kvstore on PostgreSQL, one binary against another
# (before/after a change), beside the prepared SELECT / upsert (select.sql / upsert.sql) on the same
# database; pinned as bench/run.sh pins: kvstore and the PostgreSQL backends on core 0, wrk /
# pgbench (64 connections, one thread) on core 1 (BENCH_NODE_CORE=1: the node on core 1 beside wrk,
# the database alone on core 0; see lib.sh).
#
#   bench/pg/hot1k.sh get|put [--rounds N] KVSTORE_BINARY...     (release builds)
#
# Makes (and drops) a database of its own (PG* variables, or 127.0.0.1 as postgres) with one store of
# 10 000 keys (every tenth, the 1000 hot keys, 1 KiB; loaded by SQL) and bench/pg/schema.sql's
# reference table. Each round runs every binary in turn (a node started for it: 2 s warm-up that
# also fills the access caches, then 6 s of requests to random hot keys), then pgbench 6 s with the
# node stopped (their connections together would pass max_connections). Prints req/s, the ratio to
# that round's pgbench, and the node's own CPU per request (utime + stime from /proc over the 6 s:
# what the node costs the core it shares with the database; the database's CPU is not in it).
# With KVSTORE_PERF_DIR set, `perf record -g` samples each node's 6 s into that folder; with
# KVSTORE_SYSCALLS_DIR set instead, `perf stat` counts the node's send/receive system calls and
# context switches over them (one file per node and round in that folder).
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=$1
shift
ROUNDS=2
if [ "${1:-}" = --rounds ]; then
    ROUNDS=$2
    shift 2
fi
case $MODE in
get) SCRIPT=get.lua REF=select.sql ;;
put) SCRIPT=put.lua REF=upsert.sql ;;
*)
    echo "usage: $0 get|put [--rounds N] KVSTORE_BINARY..." >&2
    exit 2
    ;;
esac
. "$DIR/lib.sh"
pg_setup hot
psql -X -q "$DB" -f "$DIR/schema.sql" >/dev/null 2>&1
start "$1"
STORE=$(create_store hot)
stop
load_10k_keys "$STORE"
hot_paths "$STORE" >"$PATHS"
BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
HZ=$(getconf CLK_TCK)
echo "# $(date -u '+%F %T') UTC, $MODE 1 KiB, $ROUNDS rounds, load $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$ROUNDS"); do
    rps_all=()
    for bin in "$@"; do
        start "$bin"
        BENCH_AUTH=$TOKEN taskset -c 1 wrk -t1 -c64 -d2s -s "$DIR/../lua/$SCRIPT" "http://127.0.0.1:$PORT" -- "$PATHS" 1024 >/dev/null
        BENCH_AUTH=$TOKEN taskset -c 1 wrk -t1 -c64 -d6s -s "$DIR/../lua/$SCRIPT" "http://127.0.0.1:$PORT" -- "$PATHS" 1024 \
            >"$PATHS.out" 2>&1 &
        w=$!
        pin
        # From the second second to the end of wrk's six (the pinning took the first).
        t0=$(ticks "$node")
        perf=
        if [ -n "${KVSTORE_PERF_DIR:-}" ]; then
            mkdir -p "$KVSTORE_PERF_DIR"
            perf record -e cpu-clock -F 2000 -g -p "$node" -o "$KVSTORE_PERF_DIR/$MODE-$rep-$(basename "$(dirname "$bin")")-$(basename "$bin").data" \
                >/dev/null 2>&1 &
            perf=$!
        elif [ -n "${KVSTORE_SYSCALLS_DIR:-}" ]; then
            mkdir -p "$KVSTORE_SYSCALLS_DIR"
            perf stat -e syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,context-switches \
                -p "$node" -o "$KVSTORE_SYSCALLS_DIR/$MODE-$rep-$(basename "$(dirname "$bin")")-$(basename "$bin").txt" &
            perf=$!
        fi
        wait "$w"
        t1=$(ticks "$node")
        [ -z "$perf" ] || { kill -INT "$perf"; wait "$perf" || true; }
        stop
        rps=$(grep -o 'Requests/sec: *[0-9.]*' "$PATHS.out" | grep -o '[0-9.]*$')
        # Requests in the measured 5 s: the rate times 5 (wrk's own count covers 6).
        cpu=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v r="$rps" 'BEGIN { printf "%.1f", t / hz * 1e6 / (r * 5) }')
        rps_all+=("$rps")
        printf '%-44s %s %7.0f req/s  %6s µs CPU/request (non-2xx: %s)\n' "$bin" "${MODE^^}" "$rps" "$cpu" \
            "$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$PATHS.out" | grep -o '[0-9]*$' || echo 0)"
    done
    taskset -c 1 pgbench -n -M prepared -c 64 -j 1 -T 6 -D body="$BODY" -f "$DIR/$REF" "$DB" >"$PATHS.out" 2>&1 &
    p=$!
    pin
    wait "$p" || true
    tps=$(grep -o 'tps = [0-9.]*' "$PATHS.out" | head -1 | grep -o '[0-9.]*$')
    printf '%-44s %7.0f tps;' "$REF (pgbench)" "$tps"
    for r in "${rps_all[@]}"; do printf ' %.2fx' "$(awk -v a="$r" -v b="$tps" 'BEGIN { print a / b }')"; done
    echo
done
