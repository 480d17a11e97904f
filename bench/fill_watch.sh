#!/usr/bin/env bash
# A random-order fill through HTTP watched from outside (issue 15): the server's memory and the
# engine's journals every 15 s while examples/bench_fill PUTs N records of 1 KiB in random key
# order (64 connections), then the start-up after kill -9 in the middle of more writes, and after
# a clean stop. The server runs on core 0, the filler on core 1, as bench/run.sh pins them.
#
#   bench/fill_watch.sh BIN_DIR N      # BIN_DIR: kvstore and examples/bench_fill (release)
#
# Env: DATA (default /tmp/kvstore-fill-watch, removed first), KILL_AFTER (seconds of writes
# before the kill, default 20), PORT (default 18480).
set -euo pipefail
BIN=$1 N=$2
DATA=${DATA:-/tmp/kvstore-fill-watch} PORT=${PORT:-18480} KILL_AFTER=${KILL_AFTER:-20}
TOKEN=fill-watch-$$-token-0123456789
URL=http://127.0.0.1:$PORT
rm -rf "$DATA"
SERVER=
cleanup() { [ -z "$SERVER" ] || kill -9 "$SERVER" 2>/dev/null || true; }
trap cleanup EXIT

start() {
    local t0
    t0=$(date +%s.%N)
    KVSTORE_LOG=warn taskset -c 0 "$BIN/kvstore" serve --listen "127.0.0.1:$PORT" --admin-token "$TOKEN" \
        --data-dir "$DATA" >>"$DATA.log" 2>&1 &
    SERVER=$!
    until curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$URL/v2/key-value-stores?limit=1"; do
        kill -0 "$SERVER" || { echo "the server died (see $DATA.log)"; exit 1; }
        sleep 0.01
    done
    echo "startup_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
}
status() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER/status"; }
journals() { find "$DATA" -name '*.jnl' -printf '%s\n' | awk '{ s += $1; n++ } END { printf "%d journals, %d MB", n, s / 1e6 }'; }
watch() {
    while kill -0 "$SERVER" 2>/dev/null; do
        echo "$(date -u +%T) rss_kib=$(status VmRSS) hwm_kib=$(status VmHWM) $(journals) disk_mb=$(du -sm "$DATA" | cut -f1)"
        sleep 15
    done
}

start
watch &
WATCH=$!
taskset -c 1 "$BIN/examples/bench_fill" --url "$URL" --token "$TOKEN" --keys "$N" --conns 64 --lists 200
echo "after the fill: rss_kib=$(status VmRSS) hwm_kib=$(status VmHWM) disk_bytes=$(du -sb "$DATA" | cut -f1)"
kill "$WATCH" 2>/dev/null || true
taskset -c 1 "$BIN/examples/bench_fill" --url "$URL" --token "$TOKEN" --keys 2000000 --conns 64 --name kill9 >/dev/null 2>&1 &
FILLER=$!
sleep "$KILL_AFTER"
echo "kill -9 after ${KILL_AFTER} s of writes: $(journals)"
kill -9 "$SERVER"
kill "$FILLER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true
start
echo "after the start: rss_kib=$(status VmRSS)"
kill "$SERVER"
wait "$SERVER" 2>/dev/null || true
start
echo "(after a clean stop)"
