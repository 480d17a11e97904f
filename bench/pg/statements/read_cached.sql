-- RECORD_READ_CACHED: the record joined to the generation row; see ../statements.sh.
\set i random(0, 999)
SELECT g.value AS generation, r.content_type, r.size, r.body, r.blob_id, r.version
FROM kvstore_generation g
LEFT JOIN records r ON r.store_id = :store AND r.key = 'k' || lpad((:i * 10)::text, 8, '0');
