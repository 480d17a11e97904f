#!/usr/bin/env bash
# What the embedded server's memory does under load: threads, RSS and throughput, one kvstore build
# after another (before/after a change), each in a fresh process and data directory; the server
# pinned to core 0, wrk (one thread, 64 connections) to core 1, as in bench/run.sh.
#
#   bench/memory.sh [--seconds N] KVSTORE_BINARY...     (release builds)
#
# For each binary: a store of 1000 records of 1 KiB (PUT through HTTP), then N seconds (15) of each
# phase in turn: `get` (GET of the 1000 records, at random), `put` (PUT of 1 KiB to them, at random),
# `keys` (`GET …/keys?limit=1000`: one page of all 1000 keys) and `stores` (`GET
# /v2/key-value-stores`: the admin's one store). After each phase: req/s, the server's threads, RSS
# (VmRSS) and peak RSS (VmHWM); at the end, its threads by name. Nothing scrapes `/metrics`.
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
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
. "$DIR/embedded_lib.sh"

status() { # PID → "threads T, RSS R MiB, peak P MiB"
    awk '/^Threads/ {t = $2} /^VmRSS/ {r = int($2 / 1024)} /^VmHWM/ {h = int($2 / 1024)}
         END {printf "threads %d, RSS %d MiB, peak %d MiB", t, r, h}' "/proc/$1/status"
}

load() { # URL TOKEN [SCRIPT ARGS...] → req/s
    local url=$1 token=$2
    shift 2
    local script=()
    [ $# -eq 0 ] || script=(-s "$1" "$url" -- "${@:2}")
    [ ${#script[@]} -gt 0 ] || script=("$url")
    BENCH_AUTH=$token taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${SECONDS_EACH}s" -H "Authorization: Bearer $token" "${script[@]}" |
        awk '/Non-2xx/ {print "non-2xx answers: " $0 > "/dev/stderr"; exit 1} /Requests\/sec/ {print $2}'
}

echo "# $(date -u '+%F %T') UTC, ${SECONDS_EACH} s per phase, load $(cut -d' ' -f1-3 /proc/loadavg)"
for bin in "$@"; do
    serve_1000_records "$bin" memory
    echo "## $bin"
    echo "start:                        $(status $pid)"
    rps=$(load "$url" "$token" "$DIR/lua/get.lua" "$dir/paths")
    echo "get 1 KiB $rps req/s:       $(status $pid)"
    rps=$(load "$url" "$token" "$DIR/lua/put.lua" "$dir/paths" 1024)
    echo "put 1 KiB $rps req/s:       $(status $pid)"
    rps=$(load "$url/v2/key-value-stores/$store/keys?limit=1000" "$token")
    echo "keys (1000 a page) $rps req/s: $(status $pid)"
    rps=$(load "$url/v2/key-value-stores" "$token")
    echo "store listing $rps req/s:   $(status $pid)"
    echo "threads: $(for t in /proc/$pid/task/*; do cat "$t/comm"; done | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')"
    stop_served
done
