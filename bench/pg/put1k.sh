#!/usr/bin/env bash
# PUT of 1 KiB through kvstore on PostgreSQL, one binary against another (before/after a change),
# beside the prepared upsert (upsert.sql) on the same database; pinned as bench/run.sh pins:
# kvstore and the PostgreSQL backends on core 0, wrk / pgbench (64 connections, one thread) on core 1.
#
#   bench/pg/put1k.sh KVSTORE_BINARY...     (release builds)
#
# Makes (and drops) a database of its own (PG* variables, or 127.0.0.1 as postgres) with one store,
# and bench/pg/schema.sql's reference table. Two rounds; in each, every binary in turn (a node
# started for it: 2 s warm-up, then 6 s of PUTs to the 1000 hot keys), then pgbench 6 s with the node
# stopped (their connections together would pass max_connections).
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$DIR/lib.sh"
pg_setup put
psql -X -q "$DB" -f "$DIR/schema.sql" >/dev/null 2>&1
start "$1"
STORE=$(create_store put)
stop
hot_paths "$STORE" >"$PATHS"
BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
for rep in 1 2; do
    for bin in "$@"; do
        start "$bin"
        BENCH_AUTH=$TOKEN taskset -c 1 wrk -t1 -c64 -d2s -s "$DIR/../lua/put.lua" "http://127.0.0.1:$PORT" -- "$PATHS" 1024 >/dev/null
        BENCH_AUTH=$TOKEN taskset -c 1 wrk -t1 -c64 -d6s -s "$DIR/../lua/put.lua" "http://127.0.0.1:$PORT" -- "$PATHS" 1024 \
            >"$PATHS.out" 2>&1 &
        w=$!
        pin
        wait "$w"
        stop
        printf '%-40s PUT 1 KiB %s (non-2xx: %s)\n' "$bin" "$(grep -o 'Requests/sec: *[0-9.]*' "$PATHS.out")" \
            "$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$PATHS.out" || echo 0)"
    done
    taskset -c 1 pgbench -n -M prepared -c 64 -j 1 -T 6 -D body="$BODY" -f "$DIR/upsert.sql" "$DB" >"$PATHS.out" 2>&1 &
    p=$!
    pin
    wait "$p" || true
    printf '%-40s %s\n' "upsert.sql (pgbench)" "$(grep -o 'tps = [0-9.]*' "$PATHS.out" | head -1)"
done
