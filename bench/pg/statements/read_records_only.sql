-- the record alone, as kvstore's records table holds it; see ../statements.sh.
\set i random(0, 999)
SELECT r.content_type, r.size, r.body, r.blob_id, r.version FROM records r WHERE r.store_id = :store AND r.key = 'k' || lpad((:i * 10)::text, 8, '0');
