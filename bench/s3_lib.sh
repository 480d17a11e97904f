# Shared by bench/s3_*.sh (sourced after `set -euo pipefail`): SeaweedFS on loopback with the bucket
# `bench-bucket`, kvstore nodes on fresh PostgreSQL databases, and the removal of all of it however
# the script ends.
#
# Env:   KVSTORE_BIN   the server binary (default target/release/kvstore, built if missing)
#        PG_URL        an admin URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres)
# Sets:  ROOT, KVSTORE_BIN, PG_URL, W (the weed binary), D (a scratch directory), S3 (the gateway's
#        endpoint), TOKEN (the nodes' admin token), P (a random base port for the nodes).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KVSTORE_BIN=${KVSTORE_BIN:-$ROOT/target/release/kvstore}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
TOKEN=bench-token-0123456789
[[ -x $KVSTORE_BIN ]] || (cd "$ROOT" && cargo build --release --bin kvstore)
W=$("$ROOT/scripts/seaweedfs.sh" 2>/dev/null)
D=$(mktemp -d)
P=$((20000 + RANDOM % 20000))
WP= S3=
S3_LIB_PIDS=()
S3_LIB_DBS=()

s3_lib_cleanup() {
  local pid db
  for pid in "${S3_LIB_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # weed may not exit on SIGTERM: SIGKILL after a short grace.
  if [[ -n $WP ]]; then
    kill "$WP" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$WP" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$WP" 2>/dev/null
  fi
  for db in "${S3_LIB_DBS[@]}"; do
    psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$D"
}
trap s3_lib_cleanup EXIT

read -r WP S3 < <(BUCKET=bench-bucket "$ROOT/scripts/seaweedfs.sh" start "$D/weed" 2>/dev/null) || true
[[ -n $S3 ]] || { echo "SeaweedFS did not start" >&2; exit 1; }

# start_node PORT NAME [SERVE_ARGS...]: `kvstore serve` on 127.0.0.1:PORT over a new database
# kvstore_NAME_<pid> (dropped at the end), logging to $D/NAME.log; returns once it is ready.
start_node() {
  local port=$1 db="kvstore_$2_$$" log="$D/$2.log"
  shift 2
  psql -q "$PG_URL" -c "CREATE DATABASE $db"
  S3_LIB_DBS+=("$db")
  KVSTORE_ADMIN_TOKEN=$TOKEN "$KVSTORE_BIN" serve --listen "127.0.0.1:$port" \
    --database-url "${PG_URL%/*}/$db" "$@" >"$log" 2>&1 &
  S3_LIB_PIDS+=($!)
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "kvstore on port $port did not get ready; its log:" >&2
  cat "$log" >&2
  exit 1
}

# new_store PORT NAME: creates a store NAME on the node at PORT and prints its id.
new_store() {
  curl -sf -X POST -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$1/v2/key-value-stores?name=$2" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["id"])'
}
