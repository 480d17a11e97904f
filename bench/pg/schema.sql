-- The PostgreSQL reference: one table shaped like kvstore's `records` rows (key, content type,
-- body), with the same 10 000 keys as the 10k store of bench_load: k00000000 … k00009999, every
-- tenth one (the "hot" keys the GET/PUT workloads use) with a 1 KiB body, the others 64 bytes.
DROP TABLE IF EXISTS bench_kv;
CREATE TABLE bench_kv (
    key text COLLATE "C" PRIMARY KEY,
    content_type text NOT NULL,
    body bytea NOT NULL
);
INSERT INTO bench_kv
SELECT 'k' || lpad(i::text, 8, '0'),
       'application/octet-stream',
       CASE WHEN i % 10 = 0 THEN convert_to(repeat('h', 1024), 'UTF8')
            ELSE convert_to(repeat('v', 64), 'UTF8') END
FROM generate_series(0, 9999) AS i;
VACUUM ANALYZE bench_kv;
