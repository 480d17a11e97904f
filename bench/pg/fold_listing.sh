#!/usr/bin/env bash
# The cost of a page of 101 stores (select_stores in src/storage/postgres/sql.rs, as GET
# /v2/key-value-stores runs it) whose counters are spread over 1024 shard rows each (the bound:
# one per backend pid % 1024), before and after a node folds them into the store rows.
#
#   bench/pg/fold_listing.sh KVSTORE_BINARY
#
# Makes (and drops) a database of its own on the local PostgreSQL (psql's defaults, PG* vars);
# prints each EXPLAIN ANALYZE's execution time, three before and three after the fold.
set -euo pipefail
BIN=$1
DB=kvstore_fold_$$
createdb "$DB"
trap 'dropdb --if-exists "$DB"' EXIT
URL="postgres://${PGUSER:-postgres}@${PGHOST:-127.0.0.1}:${PGPORT:-5432}/$DB"
"$BIN" users create bench --database-url "$URL" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 "$DB" <<'SQL'
INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at, general_access,
    url_signing_secret_key)
SELECT 'store' || lpad(i::text, 12, '0'), 's' || i, (SELECT id FROM users), i, i, i, 'RESTRICTED', 'x'
FROM generate_series(1, 101) i;
INSERT INTO store_counters (store_id, shard, record_count, storage_bytes, write_count, modified_at)
SELECT s.id, sh, 1, 1024, 1, 1000 FROM stores s, generate_series(0, 1023) sh;
VACUUM ANALYZE stores;
VACUUM ANALYZE store_counters;
SQL
page() {
    for _ in 1 2 3; do
        psql -X -At "$DB" -c "EXPLAIN ANALYZE
SELECT s.id, s.name, s.user_id, s.created_at,
     greatest(s.modified_at, coalesce(c.modified_at, 0)) AS modified_at,
     greatest(s.accessed_at, coalesce(c.modified_at, 0)) AS accessed_at,
     s.general_access, s.url_signing_secret_key, s.schema, s.title,
     s.record_count + coalesce(c.record_count, 0) AS record_count,
     s.storage_bytes + coalesce(c.storage_bytes, 0) AS storage_bytes, s.read_count,
     s.write_count + coalesce(c.write_count, 0) AS write_count,
     s.delete_count + coalesce(c.delete_count, 0) AS delete_count, s.list_count,
     (SELECT o.disabled FROM users o WHERE o.id = s.user_id) AS owner_disabled
 FROM stores s LEFT JOIN LATERAL (
     SELECT sum(record_count)::bigint AS record_count, sum(storage_bytes)::bigint AS storage_bytes,
         sum(write_count)::bigint AS write_count, sum(delete_count)::bigint AS delete_count,
         max(modified_at) AS modified_at
     FROM store_counters WHERE store_id = s.id) c ON true
 WHERE user_id = (SELECT id FROM users) AND NOT deleted AND (true OR name IS NOT NULL)
 ORDER BY created_at ASC, id ASC OFFSET 0 LIMIT 101" | grep 'Execution Time'
    done
    psql -X -At "$DB" -c "SELECT 'shard rows: ' || count(*) || ', records counted: ' ||
        (SELECT sum(record_count) FROM stores) FROM store_counters"
}
echo "before the fold:"
page
# A node folds every 2 s (PgOptions::counter_fold_interval); give it two rounds.
"$BIN" serve --listen 127.0.0.1:0 --database-url "$URL" >/dev/null 2>&1 &
node=$!
sleep 5
kill "$node"
wait "$node" || true
psql -X -q "$DB" -c "VACUUM ANALYZE store_counters" -c "VACUUM ANALYZE stores"
echo "after the fold:"
page
