-- The range SELECT of list_keys.sql alone, on kvstore's records table; see ../statements.sh.
\set i random(0, 8999)
SELECT key, size, content_type, version FROM records
WHERE store_id = :store AND key > 'k' || lpad(:i::text, 8, '0') ORDER BY key LIMIT 1001;
