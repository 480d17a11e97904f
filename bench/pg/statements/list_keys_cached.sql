-- What the database does for GET /keys?limit=1000 on the caches' word since issue 12
-- (src/storage/postgres/sql.rs, KEYS_AFTER_CACHED): the range SELECT joined to the generation row, one
-- statement; compare with list_keys.sql (the three statements before), list_keys_range_only.sql and
-- ../range.sql. See ../statements.sh.
\set i random(0, 8999)
SELECT g.value AS generation, r.key, r.size, r.content_type, r.version
FROM kvstore_generation g LEFT JOIN LATERAL (SELECT key, size, content_type, version FROM records
    WHERE store_id = :store AND key > 'k' || lpad(:i::text, 8, '0') ORDER BY key LIMIT 1001) r ON true
WHERE g.id = 1;
