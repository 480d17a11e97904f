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
dir=$(mktemp -d /tmp/kvstore-overwrites.XXXXXX)
taskset -c "$SERVER_CPU" "$BIN" serve --listen 127.0.0.1:0 --data-dir "$dir/data" "$@" >"$dir/out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 300); do
    grep -q 'listening on' "$dir/out" && break
    sleep 0.1
done
url=$(grep -o 'listening on http://[0-9.:]*' "$dir/out" | cut -d' ' -f3)
token=$(grep -oE '^kvs_[A-Za-z0-9_-]+' "$dir/out" | head -1)
store=$(curl -sf -XPOST -H "Authorization: Bearer $token" "$url/v2/key-value-stores?name=overwritten" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["id"])')
for i in $(seq 0 999); do echo "/v2/key-value-stores/$store/records/k$i"; done >"$dir/paths"
sed "s|^|url = \"$url|; s|\$|\"|" "$dir/paths" >"$dir/puts"
head -c 1024 /dev/zero | tr '\0' x >"$dir/body"
curl -sfS -Z --parallel-max 32 -XPUT -H "Authorization: Bearer $token" -H 'content-type: text/plain' \
    --data-binary @"$dir/body" -K "$dir/puts" -o /dev/null >/dev/null 2>&1

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
