#!/usr/bin/env bash
# Where should bodies start going to the object store? (`--object-store-min-bytes`.) Times PUTs and
# GETs of one size through two kvstore nodes on PostgreSQL, in one run: one with every body inline in
# the database, one with every body in SeaweedFS's S3 gateway. For each size it prints the median and
# p90 latency of each (one connection, requests one after another, so latency and not the load
# generator is what is compared; the two nodes' requests alternate) and the ratio object ÷ inline: where the object store stops being
# slower, bodies can go there without small records paying for it.
#
# Usage: bench/s3_min_bytes.sh [SIZE...]        (sizes in KiB; default 16 64 128 256 512 1024 4096)
# Env:   KVSTORE_BIN   the server binary (default target/release/kvstore, built if missing)
#        PG_URL        an admin URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres)
#        N             requests per size and kind (default 40, after 5 warm-up requests)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KVSTORE_BIN=${KVSTORE_BIN:-$ROOT/target/release/kvstore}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
N=${N:-40}
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(16 64 128 256 512 1024 4096)
[[ -x $KVSTORE_BIN ]] || (cd "$ROOT" && cargo build --release --bin kvstore)
W=$("$ROOT/scripts/seaweedfs.sh" 2>/dev/null)
D=$(mktemp -d)
P=$((20000 + RANDOM % 20000))
dbs=("kvstore_minb_inline_$$" "kvstore_minb_object_$$")
WP= S3=
read -r WP S3 < <(BUCKET=bench-bucket "$ROOT/scripts/seaweedfs.sh" start "$D/weed" 2>/dev/null) || true
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # weed may not exit on SIGTERM: SIGKILL after a short grace.
  if [[ -n $WP ]]; then
    kill "$WP" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$WP" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$WP" 2>/dev/null
  fi
  for db in "${dbs[@]}"; do
    psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$D"
}
trap cleanup EXIT
[[ -n $S3 ]] || { echo "SeaweedFS did not start" >&2; exit 1; }

# Node 0: everything inline (the threshold above any size here); node 1: everything in the bucket.
for i in 0 1; do
  psql -q "$PG_URL" -c "CREATE DATABASE ${dbs[$i]}"
  min=$((i == 0 ? 1 << 40 : 1))
  KVSTORE_ADMIN_TOKEN=bench-token-0123456789 "$KVSTORE_BIN" serve --listen "127.0.0.1:$((P + i))" \
    --database-url "${PG_URL%/*}/${dbs[$i]}" --object-store "s3://bench-bucket/n$i" \
    --object-store-endpoint "$S3" --object-store-min-bytes "$min" >"$D/kvstore$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 0 1; do
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$((P + i))/readyz" >/dev/null && break
    sleep 0.1
  done
done
echo "binary: $KVSTORE_BIN; SeaweedFS: $("$W" version 2>&1 | head -n 1); $N requests per cell"
python3 - "$P" "$N" "${SIZES[@]}" <<'PY'
import http.client, json, os, statistics, sys, time

port, n, sizes = int(sys.argv[1]), int(sys.argv[2]), [int(s) for s in sys.argv[3:]]
auth = {"Authorization": "Bearer bench-token-0123456789"}

def conn(node):
    return http.client.HTTPConnection("127.0.0.1", port + node)

def call(c, method, path, body=None, headers=None):
    c.request(method, path, body=body, headers={**auth, **(headers or {})})
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return data

def timed(method, paths, body, check):
    """Requests to the two nodes in turn (inline, object, inline, …), so that whatever else the
    machine does falls on both alike; the median and p90 of each node's latencies in ms."""
    samples = ([], [])
    for i in range(5 + n):
        for node in (0, 1):
            t = time.perf_counter()
            data = call(conns[node], method, paths[node], body, {"content-type": "application/octet-stream"})
            dt = time.perf_counter() - t
            if check is not None and data != check:
                raise SystemExit(f"GET {paths[node]}: a different body came back")
            if i >= 5:
                samples[node].append(dt * 1000)
    out = []
    for s in samples:
        s.sort()
        out.append((statistics.median(s), s[int(len(s) * 0.9) - 1]))
    return out

conns = [conn(0), conn(1)]
stores = [json.loads(call(c, "POST", "/v2/key-value-stores?name=minbytes"))["data"]["id"] for c in conns]
print("| size | PUT inline p50 / p90 (ms) | PUT object p50 / p90 | object ÷ inline | GET inline p50 / p90 | GET object p50 / p90 | object ÷ inline |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for kib in sizes:
    body = os.urandom(kib * 1024)
    paths = [f"/v2/key-value-stores/{stores[node]}/records/k{kib}" for node in (0, 1)]
    row = {}
    row[("put", 0)], row[("put", 1)] = timed("PUT", paths, body, None)
    row[("get", 0)], row[("get", 1)] = timed("GET", paths, None, body)
    cells = []
    for op in ("put", "get"):
        (i50, i90), (o50, o90) = row[(op, 0)], row[(op, 1)]
        cells += [f"{i50:.2f} / {i90:.2f}", f"{o50:.2f} / {o90:.2f}", f"{o50 / i50:.2f}×"]
    print(f"| {kib} KiB | " + " | ".join(cells) + " |")
PY
