-- ds:no-transaction
DROP INDEX CONCURRENTLY IF EXISTS recipe_notes_owner_idx;
