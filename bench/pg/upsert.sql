-- pgbench -M prepared -D body=<1024 bytes>: the single-row durable write a PUT of a 1 KiB record
-- needs (overwriting one of the 1000 hot keys; synchronous_commit as the server has it).
\set i random(0, 999)
INSERT INTO bench_kv (key, content_type, body)
VALUES ('k' || lpad((:i * 10)::text, 8, '0'), 'application/octet-stream', :body)
ON CONFLICT (key) DO UPDATE SET content_type = EXCLUDED.content_type, body = EXCLUDED.body;
