-- RECORD_READ: token, user, store, share and record (the uncached path); see ../statements.sh.
\set i random(0, 999)
SELECT (SELECT g.value FROM kvstore_generation g WHERE g.id = 1) AS generation, s.id, s.name, s.user_id, s.created_at, s.modified_at, s.accessed_at, s.general_access,
    s.url_signing_secret_key, s.schema, s.title, s.record_count, s.storage_bytes, s.read_count,
    s.write_count, s.delete_count, s.list_count,
    CASE WHEN u.id = s.user_id THEN false
        ELSE (SELECT o.disabled FROM users o WHERE o.id = s.user_id) END AS owner_disabled,
    u.id AS u_id, u.username AS u_username, u.created_at AS u_created_at,
    u.is_admin AS u_is_admin, t.read_only AS t_read_only,
    sh.access AS share_access,
    r.content_type, r.size, r.body, r.blob_id, r.version
FROM (SELECT 1) AS one
LEFT JOIN (tokens t JOIN users u ON u.id = t.user_id AND NOT u.disabled) ON t.hash = decode(:tok, 'hex')
LEFT JOIN stores s ON s.id = :store AND NOT s.deleted
LEFT JOIN store_shares sh ON sh.store_id = s.id AND sh.user_id = u.id
LEFT JOIN records r ON r.store_id = s.id AND r.key = 'k' || lpad((:i * 10)::text, 8, '0');
