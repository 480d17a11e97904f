#!/usr/bin/env bash
# Key listings of the embedded engine right after a burst of overwrites, against the same listings
# before it: the LSM tree keeps every version of a key until compaction drops it, and a range scan
# steps over them. Server pinned to core 0, wrk (one thread) to core 1, as in bench/run.sh.
#
#   bench/listing_after_overwrites.sh KVSTORE_BINARY [SERVE_ARGS...]     (a release build)
#
# A fresh process and data directory: 1000 records of 1 KiB (PUT through HTTP); 5 s of
# `GET …/keys?limit=1000` at 1 and at 64 connections; then 15 s of 1 KiB PUTs to those 1000 keys at
# 64 connections; then the same listings again, twice (right after, and 10 s later).
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$1
shift
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
. "$DIR/embedded_lib.sh"
serve_1000_records "$BIN" overwritten "$@"

listings() { # LABEL: req/s of key listings at 1 and at 64 connections, 5 s each
    local c out=()
    for c in 1 64; do
        out+=("$(taskset -c "$CLIENT_CPU" wrk -t1 -c$c -d5s -H "Authorization: Bearer $token" \
            "$url/v2/key-value-stores/$store/keys?limit=1000" | awk '/Requests\/sec/ {print $2}') req/s at $c")
    done
    echo "$1: list 1000 keys ${out[0]}, ${out[1]} connections"
}

echo "# $(date -u '+%F %T') UTC, $BIN $*, load $(cut -d' ' -f1-3 /proc/loadavg)"
listings "before the overwrites"
puts=$(BENCH_AUTH=$token taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d15s -s "$DIR/lua/put.lua" "$url" -- "$dir/paths" 1024 |
    awk '/Requests\/sec/ {print $2}')
echo "15 s of PUTs to the 1000 keys: $puts req/s"
listings "right after"
sleep 10
listings "10 s later"
