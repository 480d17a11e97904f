#!/usr/bin/env bash
# 64 MiB PUT and GET straight to SeaweedFS's S3 gateway and through kvstore on PostgreSQL with bodies
# in that gateway, three runs each, in one go (compare only numbers of one run of this script).
#
# Usage: bench/s3_64mib.sh
# Env:   KVSTORE_BIN   the server binary (default target/release/kvstore, built if missing)
#        PG_URL        an admin URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KVSTORE_BIN=${KVSTORE_BIN:-$ROOT/target/release/kvstore}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
[[ -x $KVSTORE_BIN ]] || (cd "$ROOT" && cargo build --release --bin kvstore)
W=$("$ROOT/scripts/seaweedfs.sh" 2>/dev/null)
D=$(mktemp -d)
P=$((20000 + RANDOM % 20000))
db="kvstore_s3_bench_$$"
"$W" server -dir="$D" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=$P -volume.port=$((P + 1)) -filer \
  -filer.port=$((P + 2)) -s3 -s3.port=$((P + 3)) -s3.port.iceberg=0 -s3.port.lance=0 \
  -volume.max=20 -master.telemetry=false >"$D/weed.log" 2>&1 &
WP=$!
KP=
cleanup() {
  [[ -n $KP ]] && kill "$KP" 2>/dev/null
  # weed may not exit on SIGTERM: SIGKILL after a short grace.
  kill "$WP" 2>/dev/null
  for _ in $(seq 20); do kill -0 "$WP" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$WP" 2>/dev/null
  psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$D"
}
trap cleanup EXIT
S3=http://127.0.0.1:$((P + 3))
for _ in $(seq 600); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' -X PUT "$S3/bench-bucket") == 200 ]] && break
  sleep 0.1
done
head -c $((64 * 1024 * 1024)) /dev/urandom >"$D/body"
curl -sf -o /dev/null -X PUT --data-binary @"$D/body" "$S3/bench-bucket/warm-up"
psql -q "$PG_URL" -c "CREATE DATABASE $db"
KVPORT=$((P + 5))
KVSTORE_ADMIN_TOKEN=bench-token-0123456789 "$KVSTORE_BIN" serve --listen 127.0.0.1:$KVPORT \
  --database-url "${PG_URL%/*}/$db" --object-store s3://bench-bucket/kv --object-store-endpoint "$S3" \
  >"$D/kvstore.log" 2>&1 &
KP=$!
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$KVPORT/readyz" >/dev/null && break
  sleep 0.1
done
H="Authorization: Bearer bench-token-0123456789"
ID=$(curl -sf -X POST -H "$H" "http://127.0.0.1:$KVPORT/v2/key-value-stores?name=bench" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["id"])')
REC="http://127.0.0.1:$KVPORT/v2/key-value-stores/$ID/records/big"
echo "binary: $KVSTORE_BIN; SeaweedFS: $("$W" version 2>&1 | head -n 1)"
for run in 1 2 3; do
  s3put=$(curl -sf -o /dev/null -w '%{time_total}' -X PUT --data-binary @"$D/body" "$S3/bench-bucket/direct")
  s3get=$(curl -sf -o "$D/out1" -w '%{time_total}' "$S3/bench-bucket/direct")
  kvput=$(curl -sf -o /dev/null -w '%{time_total}' -X PUT -H "$H" -H 'content-type: application/octet-stream' \
    --data-binary @"$D/body" "$REC")
  kvget=$(curl -sf -o "$D/out2" -w '%{time_total}' -H "$H" "$REC")
  cmp -s "$D/body" "$D/out1" && cmp -s "$D/body" "$D/out2" || { echo "a body came back different" >&2; exit 1; }
  awk -v r="$run" -v sp="$s3put" -v sg="$s3get" -v kp="$kvput" -v kg="$kvget" 'BEGIN {
    printf "run %d: PUT S3 %.3fs kvstore %.3fs (%.2fx) | GET S3 %.3fs kvstore %.3fs (%.2fx)\n",
      r, sp, kp, sp / kp, sg, kg, sg / kg }'
done
