-- PUT_RECORD as src/storage/postgres/sql.rs has it: the access generation the caches were filled under (:gen) checked in the statement; a PUT on the caches' word is this one statement; see ../statements.sh.
\set i random(0, 999)
\set version random(1, 1000000000)
WITH g AS (SELECT (:gen::bigint IS NULL OR :gen = (SELECT value FROM kvstore_generation WHERE id = 1)) AS current),
s AS (SELECT id FROM stores WHERE id = :store AND NOT deleted AND (SELECT current FROM g) FOR SHARE),
up AS (
    INSERT INTO records AS r (store_id, key, content_type, size, body, blob_id, version,
        prev_size, prev_blob_id)
    SELECT :store, 'k' || lpad((:i * 10)::text, 8, '0'), 'application/octet-stream', 1024, :body::bytea, NULL, :version, NULL, NULL FROM s
    ON CONFLICT (store_id, key) DO UPDATE SET content_type = EXCLUDED.content_type,
        size = EXCLUDED.size, body = EXCLUDED.body, blob_id = EXCLUDED.blob_id,
        version = EXCLUDED.version, prev_size = r.size, prev_blob_id = r.blob_id
    RETURNING prev_size, prev_blob_id),
gone AS (DELETE FROM record_chunks
    WHERE blob_id IN (SELECT prev_blob_id FROM up WHERE prev_blob_id IS NOT NULL)
    RETURNING 1),
counted AS (
    INSERT INTO store_counters AS c (store_id, shard, record_count, storage_bytes, write_count,
        modified_at)
    SELECT :store, (pg_backend_pid() % 1024)::smallint, CASE WHEN prev_size IS NULL THEN 1 ELSE 0 END, 1024 - coalesce(prev_size, 0),
        1, 1 FROM up
    ON CONFLICT (store_id, shard) DO UPDATE SET
        record_count = c.record_count + EXCLUDED.record_count,
        storage_bytes = c.storage_bytes + EXCLUDED.storage_bytes,
        write_count = c.write_count + 1,
        modified_at = greatest(c.modified_at, EXCLUDED.modified_at))
SELECT count(*) AS written, max(prev_blob_id) AS prev_blob_id, max(prev_size) AS prev_size,
    (SELECT count(*) FROM gone) AS freed, (SELECT current FROM g) AS current
FROM up;
