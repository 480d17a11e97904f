#!/usr/bin/env bash
# Instructions per GET /keys?limit=1000 through kvstore on PostgreSQL, counted by valgrind's
# callgrind: a figure other processes on a busy machine cannot move (list_keys.sh's req/s can).
# The store and its 10 000 keys are list_keys.sh's; the admin token lists, so every one of the
# 1000 record URLs is signed. Each binary in turn runs under callgrind on the same database; a
# Python client sends 50 listings as warm-up (the access caches filled), the counters are zeroed,
# then N listings (default 200) one after another on one keep-alive connection, each from a start
# drawn with a fixed seed (the same starts for every binary).
#
#   bench/pg/list_keys_callgrind.sh KVSTORE_BINARY [OTHER_KVSTORE_BINARY...]
#
# Prints instructions per listing for each binary (and the ratio to the first), and leaves each
# callgrind file in $KEEP if set (callgrind_annotate FILE shows where they went). Valgrind hides
# SHA-NI from the program, so sha2 runs its software SHA-256 here: the 2000 compressions of the
# record URL signatures weigh several times what they do natively; the line also gives the
# count without them (sha2's compress256 and what it inlines).
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { echo "usage: bench/pg/list_keys_callgrind.sh KVSTORE_BINARY [OTHER...]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
N=${N:-200}
. "$DIR/lib.sh"
pg_setup listcg
WORK=$(mktemp -d)
stop_node() {
    [ -z "$node" ] || { kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; }
    node=
}
trap 'pg_cleanup; rm -rf "$WORK"' EXIT

start_callgrind() { # BIN NAME
    # 16 connections (the default): enough for one pipelined read connection (pipeline.rs).
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$2.out" "$1" serve \
        --listen "127.0.0.1:$PORT" --database-url "$URL" --db-max-connections 16 \
        --admin-token "$TOKEN" >"$WORK/$2.log" 2>&1 &
    node=$!
    for _ in $(seq 240); do
        curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "$1 did not start" >&2
    cat "$WORK/$2.log" >&2
    exit 1
}

cat >"$WORK/client.py" <<'PY'
import http.client, random, sys
port, n, store, token, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
rng = random.Random(seed)
c = http.client.HTTPConnection('127.0.0.1', port)
for _ in range(n):
    c.request('GET', '/v2/key-value-stores/%s/keys?limit=1000&exclusiveStartKey=k%08d' % (store, rng.randrange(9000)),
              headers={'Authorization': 'Bearer ' + token})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200 and b'?signature=' in body, (r.status, body[:200])
PY

first=
STORE=
i=0
for bin in "$@"; do
    i=$((i + 1))
    name=$i-$(basename "$bin")
    start_callgrind "$bin" "$name"
    if [ -z "$STORE" ]; then
        STORE=$(create_store list)
        load_10k_keys "$STORE"
    fi
    python3 "$WORK/client.py" "$PORT" 50 "$STORE" "$TOKEN" 1
    callgrind_control -z "$node" >/dev/null 2>&1
    python3 "$WORK/client.py" "$PORT" "$N" "$STORE" "$TOKEN" 2
    callgrind_control -d "$node" >/dev/null 2>&1
    sleep 1
    # The dump just asked for (numbered), not the one written at exit.
    f=$(ls -t "$WORK/$name.out."* | head -1)
    stop_node
    total=$(grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}')
    per=$((total / N))
    sha=$(callgrind_annotate --auto=no --threshold=100 "$f" 2>/dev/null |
        awk '/compress256/ { gsub(",", "", $1); s += $1 } END { printf "%d", s }')
    rest=$(((total - sha) / N))
    [ -n "$first" ] || { first=$per; first_rest=$rest; }
    awk -v b="$bin" -v p="$per" -v f="$first" -v r="$rest" -v fr="$first_rest" 'BEGIN {
        printf "%-40s %10d instructions/listing  %.3f×   without SHA-256: %10d  %.3f×\n", b, p, p / f, r, r / fr }'
    [ -z "${KEEP:-}" ] || { mkdir -p "$KEEP"; cp "$f" "$KEEP/$name.callgrind"; }
done
echo "(valgrind --tool=callgrind; $N listings of 1000 keys after 50 warm-up, one keep-alive connection; user-space instructions of the node only)"
