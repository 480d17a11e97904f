#!/usr/bin/env bash
# Small records with and without an object store: GET and durable PUT of 1 KiB over 64 connections
# (wrk, bench/lua) against two kvstore nodes on PostgreSQL, one plain and one with
# `--object-store` (SeaweedFS) at the default `--object-store-min-bytes`, alternated three times in
# one run. Bodies this small stay in the database either way, so the ratio should be ~1.0×: the
# object store must cost small records nothing.
#
# Usage: bench/s3_small.sh
# Env:   KVSTORE_BIN   the server binary (default target/release/kvstore, built if missing)
#        PG_URL        an admin URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres)
#        DUR           seconds per wrk run (default 5)
set -euo pipefail
DUR=${DUR:-5}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/s3_lib.sh"

start_node "$P" small_plain
start_node $((P + 1)) small_s3 --object-store s3://bench-bucket/small --object-store-endpoint "$S3"
head -c 1024 /dev/urandom >"$D/body"
for i in 0 1; do
  id=$(new_store $((P + i)) small)
  for k in $(seq 1000); do echo "/v2/key-value-stores/$id/records/k$k"; done >"$D/paths$i"
  # The records GET reads: written once before the runs.
  while read -r path; do
    curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $TOKEN" -H 'content-type: application/octet-stream' \
      --data-binary @"$D/body" "http://127.0.0.1:$((P + i))$path"
  done <"$D/paths$i"
done

run() { # NODE SCRIPT ARGS... -> req/s
  BENCH_AUTH=$TOKEN wrk -t1 -c64 -d"${DUR}s" -s "$ROOT/bench/lua/$2" "http://127.0.0.1:$((P + $1))" -- "${@:3}" |
    sed -n 's/^BENCH rps=\([0-9.]*\).*non2xx=\([0-9]*\).*/\1 \2/p' | {
    read -r rps bad
    [[ $bad == 0 ]] || { echo "node $1: $bad answers were not 2xx" >&2; exit 1; }
    echo "$rps"
  }
}
echo "binary: $KVSTORE_BIN; SeaweedFS: $("$W" version 2>&1 | head -n 1); wrk -t1 -c64 -d${DUR}s, 1000 keys"
echo "| run | GET plain (req/s) | GET with object store | ratio | PUT plain | PUT with object store | ratio |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for r in 1 2 3; do
  g0=$(run 0 get.lua "$D/paths0"); g1=$(run 1 get.lua "$D/paths1")
  p0=$(run 0 put.lua "$D/paths0" 1024); p1=$(run 1 put.lua "$D/paths1" 1024)
  awk -v r="$r" -v g0="$g0" -v g1="$g1" -v p0="$p0" -v p1="$p1" 'BEGIN {
    printf "| %d | %.0f | %.0f | %.2f× | %.0f | %.0f | %.2f× |\n", r, g0, g1, g1 / g0, p0, p1, p1 / p0 }'
done
