-- pgbench -M prepared: the single-row read a GET of a 1 KiB record needs (one of the 1000 hot keys).
\set i random(0, 999)
SELECT content_type, body FROM bench_kv WHERE key = 'k' || lpad((:i * 10)::text, 8, '0');
