-- the access generation alone (GENERATION: a write's access check answered by the caches); see ../statements.sh.
SELECT value AS generation FROM kvstore_generation WHERE id = 1;
