#!/usr/bin/env bash
# 64 MiB PUT and GET straight to SeaweedFS's S3 gateway and through kvstore on PostgreSQL with bodies
# in that gateway, three runs each, in one go (compare only numbers of one run of this script); for GETs
# also the time to the first byte of the body.
#
# Usage: bench/s3_64mib.sh
# Env:   KVSTORE_BIN   the server binary (default target/release/kvstore, built if missing)
#        PG_URL        an admin URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/s3_lib.sh"
head -c $((64 * 1024 * 1024)) /dev/urandom >"$D/body"
curl -sf -o /dev/null -X PUT --data-binary @"$D/body" "$S3/bench-bucket/warm-up"
KVPORT=$((P + 5))
start_node "$KVPORT" s3_bench --object-store s3://bench-bucket/kv --object-store-endpoint "$S3"
H="Authorization: Bearer $TOKEN"
ID=$(new_store "$KVPORT" bench)
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
