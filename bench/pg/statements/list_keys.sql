-- What the database did for GET /keys?limit=1000 on the caches' word before issue 12 (records.rs,
-- keys_list_impl): the cached access check's GENERATION, the store (select_stores: the row and its
-- counter shards), then the range SELECT, as one pgbench transaction; compare with ../range.sql. See
-- ../statements.sh.
\set i random(0, 8999)
SELECT value AS generation FROM kvstore_generation WHERE id = 1;
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
 WHERE id = :store AND NOT deleted;
SELECT key, size, content_type, version FROM records
WHERE store_id = :store AND key > 'k' || lpad(:i::text, 8, '0') ORDER BY key LIMIT 1001;
