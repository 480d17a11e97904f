#!/usr/bin/env bash
# kvstore's hot PostgreSQL statements under pgbench, pinned as bench/run.sh pins (the backends on
# core 0, pgbench with 64 clients on core 1), beside the references select.sql and upsert.sql: what
# each statement costs the database alone, without kvstore. Variants of PUT_RECORD take one part
# away each, to show what the write pays for.
#
#   bench/pg/statements.sh DB STORE_ID TOKEN_HASH_HEX [SCRIPT...]
#
# DB: a database loaded by bench_load (--keys 10000) into which bench/pg/schema.sql was also run;
# STORE_ID: its store (bench_load prints it); TOKEN_HASH_HEX: encode(hash, 'hex') of its token.
# Each script runs twice, 6 s each; prints tps per script.
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DB=$1 STORE=$2 TOK=$3
shift 3
# The access generation, for the statements that check it (a PUT on the caches' word).
GEN=$(psql -X -Atc "SELECT value FROM kvstore_generation WHERE id = 1" "$DB")
SCRIPTS=("$@")
[ ${#SCRIPTS[@]} -gt 0 ] || SCRIPTS=("$DIR/select.sql" "$DIR"/statements/read_*.sql "$DIR/statements/generation.sql"
    "$DIR/upsert.sql" "$DIR"/statements/put_*.sql)
BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
OUT=$(mktemp -d)
for rep in 1 2; do
    for f in "${SCRIPTS[@]}"; do
        taskset -c 1 pgbench -n -M prepared -c 64 -j 1 -T 6 -D store="$STORE" -D tok="$TOK" -D gen="$GEN" \
            -D body="$BODY" -f "$f" "$DB" >"$OUT/out" 2>&1 &
        pg=$!
        sleep 1
        for pid in $(psql -X -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$DB'" "$DB"); do
            taskset -p -c 0 "$pid" >/dev/null 2>&1 || true
        done
        wait "$pg" || true
        printf '%-28s %s\n' "$(basename "$f")" "$(grep -o 'tps = [0-9.]*' "$OUT/out" | head -1)"
    done
done
rm -rf "$OUT"
