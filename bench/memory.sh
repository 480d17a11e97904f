#!/usr/bin/env bash
# Threads, RSS and throughput of the embedded engine's listings under 64 concurrent connections,
# one kvstore build after another (before/after a change), each in a fresh process and data
# directory: the server pinned to core 0, wrk (one thread, 64 connections) to core 1, as in
# bench/run.sh.
#
#   bench/listings_memory.sh [--seconds N] KVSTORE_BINARY...     (release builds)
#
# For each binary: a store of 1000 one-byte records (PUT through HTTP), then N seconds (15) of
# `GET …/keys?limit=1000` (one page of all 1000 keys), then N seconds of `GET /v2/key-value-stores`
# (the admin's one store). After each phase: req/s, the server's threads and RSS (VmRSS) and peak
# RSS (VmHWM); at the end, the server's threads by name.
set -euo pipefail
SECONDS_EACH=15
if [ "${1:-}" = --seconds ]; then
    SECONDS_EACH=$2
    shift 2
fi
[ $# -ge 1 ] || {
    echo "usage: $0 [--seconds N] KVSTORE_BINARY..." >&2
    exit 2
}
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}

status() { # PID → "threads T, RSS R MiB, peak P MiB"
    awk '/^Threads/ {t = $2} /^VmRSS/ {r = int($2 / 1024)} /^VmHWM/ {h = int($2 / 1024)}
         END {printf "threads %d, RSS %d MiB, peak %d MiB", t, r, h}' "/proc/$1/status"
}

load() { # URL TOKEN → req/s
    taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${SECONDS_EACH}s" -H "Authorization: Bearer $2" "$1" |
        awk '/Non-2xx/ {print "non-2xx answers: " $0 > "/dev/stderr"; exit 1} /Requests\/sec/ {print $2}'
}

echo "# $(date -u '+%F %T') UTC, ${SECONDS_EACH} s per phase, load $(cut -d' ' -f1-3 /proc/loadavg)"
for bin in "$@"; do
    dir=$(mktemp -d /tmp/kvstore-listings.XXXXXX)
    taskset -c "$SERVER_CPU" "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/out" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
    for _ in $(seq 300); do
        grep -q 'listening on' "$dir/out" && break
        sleep 0.1
    done
    url=$(grep -o 'listening on http://[0-9.:]*' "$dir/out" | cut -d' ' -f3)
    token=$(grep -oE '^kvs_[A-Za-z0-9_-]+' "$dir/out" | head -1)
    store=$(curl -sf -XPOST -H "Authorization: Bearer $token" "$url/v2/key-value-stores?name=listed" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["id"])')
    for i in $(seq 0 999); do echo "url = \"$url/v2/key-value-stores/$store/records/k$i\""; done >"$dir/puts"
    curl -sfS -Z --parallel-max 32 -XPUT -H "Authorization: Bearer $token" -H 'content-type: text/plain' \
        --data x -K "$dir/puts" -o /dev/null >/dev/null 2>&1
    echo "## $bin"
    echo "start:                         $(status $pid)"
    keys=$(load "$url/v2/key-value-stores/$store/keys?limit=1000" "$token")
    echo "keys (1000 a page) $keys req/s: $(status $pid)"
    stores=$(load "$url/v2/key-value-stores" "$token")
    echo "store listing $stores req/s:   $(status $pid)"
    echo "threads: $(for t in /proc/$pid/task/*; do cat "$t/comm"; done | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')"
    kill $pid
    wait $pid 2>/dev/null || true
    rm -rf "$dir"
    trap - EXIT
done
