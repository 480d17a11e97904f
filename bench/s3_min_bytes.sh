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
N=${N:-40}
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(16 64 128 256 512 1024 4096)
source "$(dirname "${BASH_SOURCE[0]}")/s3_lib.sh"

# Node 0: everything inline (the threshold above any size here); node 1: everything in the bucket.
start_node "$P" minb_inline --object-store s3://bench-bucket/n0 --object-store-endpoint "$S3" \
  --object-store-min-bytes $((1 << 40))
start_node $((P + 1)) minb_object --object-store s3://bench-bucket/n1 --object-store-endpoint "$S3" \
  --object-store-min-bytes 1
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
