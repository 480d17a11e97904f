# Shared by the bench/pg scripts that run kvstore nodes on a database of their own (sourced, after
# `set -euo pipefail` and DIR=bench/pg). Pinned as bench/run.sh pins: the node and the PostgreSQL
# backends on core 0, the load generator on core 1. BENCH_NODE_CORE=1 puts the node on core 1
# instead, beside the load generator, and leaves core 0 to the database alone: the database then
# has the same core to itself when kvstore and when pgbench's client call it, as a database server
# of its own would.
NODE_CORE=${BENCH_NODE_CORE:-0}

# pg_setup NAME: the PG* variables (or 127.0.0.1 as postgres), DB (kvstore_NAME_PID, created now),
# PORT, TOKEN (the node's admin token), URL, PATHS (a temporary file; PATHS.out beside it), and an
# EXIT trap (pg_cleanup) that stops the node, removes those files and drops the database.
pg_setup() {
    export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGPORT=${PGPORT:-5432}
    DB=kvstore_$1_$$ PORT=$((20000 + $$ % 10000))
    TOKEN=kvs_benchmark_token_not_a_secret_0123456789
    URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB"
    createdb "$DB"
    node=
    PATHS=$(mktemp)
    trap pg_cleanup EXIT
}

pg_cleanup() {
    [ -z "$node" ] || kill "$node" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$PATHS" "$PATHS.out" "$PATHS".db*
    dropdb --if-exists "$DB"
}

# pin: moves the database's backends onto core 0, a second after the load began (so that the
# connections it opens are there).
pin() {
    sleep 1
    for pid in $(psql -X -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$DB'" "$DB"); do
        taskset -p -c 0 "$pid" >/dev/null 2>&1 || true
    done
}

# start BIN: a node on core NODE_CORE (64 database connections), its pid in $node, once /healthz
# answers.
start() {
    taskset -c "$NODE_CORE" "$1" serve --listen "127.0.0.1:$PORT" --database-url "$URL" --db-max-connections 64 \
        --admin-token "$TOKEN" >/dev/null 2>&1 &
    node=$!
    await_healthz "$PORT"
}

# await_healthz PORT: waits up to 10 s for the node on PORT to answer /healthz; exits the script if
# it does not.
await_healthz() {
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
    echo "$0: the node on port $1 did not start" >&2
    exit 1
}

# backends: the pids of the database's client backends now, one a line.
backends() {
    psql -X -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$DB' AND backend_type = 'client backend'
        AND pid <> pg_backend_pid()" "$DB"
}

stop() {
    kill "$node"
    wait "$node" || true
    node=
}

# ticks PID: the process's CPU time so far (user + system, clock ticks, `getconf CLK_TCK` a second).
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# create_store NAME: creates a store through the running node; prints its id.
create_store() {
    curl -fs -X POST -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/v2/key-value-stores?name=$1" |
        sed -n 's/.*"id":"\([^"]*\)".*/\1/p'
}

# load_10k_keys STORE: 10 000 keys k00000000 … k00009999 into STORE by SQL (every tenth 1 KiB, the
# rest 64 bytes), with the store's counters to match.
load_10k_keys() {
    psql -X -q -v ON_ERROR_STOP=1 "$DB" -v store="$1" <<'SQL'
INSERT INTO records (store_id, key, content_type, size, body, version)
SELECT :'store', 'k' || lpad(i::text, 8, '0'), 'application/octet-stream',
    CASE WHEN i % 10 = 0 THEN 1024 ELSE 64 END,
    CASE WHEN i % 10 = 0 THEN convert_to(repeat('h', 1024), 'UTF8')
        ELSE convert_to(repeat('v', 64), 'UTF8') END, 1
FROM generate_series(0, 9999) i;
UPDATE stores SET record_count = 10000, storage_bytes = 1000 * 1024 + 9000 * 64 WHERE id = :'store';
VACUUM ANALYZE records;
SQL
}

# hot_paths STORE: the record paths of load_10k_keys' 1000 keys of 1 KiB (every tenth), one a line.
hot_paths() {
    for i in $(seq 0 999); do printf '/v2/key-value-stores/%s/records/k%08d\n' "$1" $((i * 10)); done
}

# listing_paths STORE: 500 key listings of 1000 from random starts in load_10k_keys' keys, one a line.
listing_paths() {
    for _ in $(seq 500); do
        printf '/v2/key-value-stores/%s/keys?limit=1000&exclusiveStartKey=k%08d\n' "$1" $((RANDOM % 9000))
    done
}
