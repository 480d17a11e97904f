-- RECORD_READ_CACHED as first written: the generation as a scalar subquery; see ../statements.sh.
\set i random(0, 999)
SELECT (SELECT g.value FROM kvstore_generation g WHERE g.id = 1) AS generation,
    r.content_type, r.size, r.body, r.blob_id, r.version
FROM (SELECT 1) AS one
LEFT JOIN records r ON r.store_id = :store AND r.key = 'k' || lpad((:i * 10)::text, 8, '0');
