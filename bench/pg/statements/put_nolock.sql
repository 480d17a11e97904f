-- the upsert of PUT_RECORD alone: no store check, no chunks, no counters; see ../statements.sh.
\set i random(0, 999)
\set shard random(0, 15)
\set version random(1, 1000000000)
INSERT INTO records AS r (store_id, key, content_type, size, body, blob_id, version, prev_size, prev_blob_id)
VALUES (:store, 'k' || lpad((:i * 10)::text, 8, '0'), 'application/octet-stream', 1024, :body::bytea, NULL, :version, NULL, NULL)
ON CONFLICT (store_id, key) DO UPDATE SET content_type = EXCLUDED.content_type,
    size = EXCLUDED.size, body = EXCLUDED.body, blob_id = EXCLUDED.blob_id,
    version = EXCLUDED.version, prev_size = r.size, prev_blob_id = r.blob_id;
