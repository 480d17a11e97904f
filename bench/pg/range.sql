-- pgbench -M prepared: the range SELECT a listing of 1000 keys needs (the keys after a random start,
-- one more than asked for to know whether more follow), on the reference table of schema.sql.
\set i random(0, 8999)
SELECT key, content_type, octet_length(body) AS size FROM bench_kv
WHERE key > 'k' || lpad(:i::text, 8, '0') ORDER BY key LIMIT 1001;
