#!/usr/bin/env bash
# 64 MiB PUT and GET straight to SeaweedFS's S3 gateway and through kvstore on PostgreSQL with bodies
# in that gateway, three runs each, in one go (compare only numbers of one run of this script); for GETs
# also the time to the first byte of the body.
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
WP= S3=
read -r WP S3 < <(BUCKET=bench-bucket "$ROOT/scripts/seaweedfs.sh" start "$D/weed" 2>/dev/null) || true
KP=
cleanup() {
  [[ -n $KP ]] && kill "$KP" 2>/dev/null
  # weed may not exit on SIGTERM: SIGKILL after a short grace.
  if [[ -n $WP ]]; then
    kill "$WP" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$WP" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$WP" 2>/dev/null
  fi
  psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$D"
}
trap cleanup EXIT
[[ -n $S3 ]] || { echo "SeaweedFS did not start" >&2; exit 1; }
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
  read -r s3get s3first < <(curl -sf -o "$D/out1" -w '%{time_total} %{time_starttransfer}\n' \
    "$S3/bench-bucket/direct")
  kvput=$(curl -sf -o /dev/null -w '%{time_total}' -X PUT -H "$H" -H 'content-type: application/octet-stream' \
    --data-binary @"$D/body" "$REC")
  read -r kvget kvfirst < <(curl -sf -o "$D/out2" -w '%{time_total} %{time_starttransfer}\n' -H "$H" "$REC")
  cmp -s "$D/body" "$D/out1" && cmp -s "$D/body" "$D/out2" || { echo "a body came back different" >&2; exit 1; }
  awk -v r="$run" -v sp="$s3put" -v sg="$s3get" -v kp="$kvput" -v kg="$kvget" -v sf="$s3first" \
    -v kf="$kvfirst" 'BEGIN {
    printf "run %d: PUT S3 %.3fs kvstore %.3fs (%.2fx) | GET S3 %.3fs kvstore %.3fs (%.2fx)", r, sp, kp,
      sp / kp, sg, kg, sg / kg
    printf " | GET first byte S3 %.3fs kvstore %.3fs\n", sf, kf }'
done
