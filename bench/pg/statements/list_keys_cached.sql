-- What the database does for GET /keys?limit=1000 on the caches' word since issue 12
-- (src/storage/postgres/sql.rs, KEYS_AFTER_CACHED): the range SELECT of the keys and their sizes,
-- then the generation's row, one statement; compare with list_keys.sql (the three statements
-- before), list_keys_range_only.sql and ../range.sql. See ../statements.sh.
\set i random(0, 8999)
(SELECT key, size, NULL::bigint AS generation FROM records
    WHERE store_id = :store AND key > 'k' || lpad(:i::text, 8, '0') ORDER BY key LIMIT 1001)
UNION ALL SELECT NULL, NULL, value FROM kvstore_generation WHERE id = 1;
