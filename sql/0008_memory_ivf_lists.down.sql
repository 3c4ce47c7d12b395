-- ds:no-transaction
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');
DROP INDEX CONCURRENTLY IF EXISTS memory_facts_ivf_idx;
ALTER TABLE memory_facts DROP COLUMN IF EXISTS list_id;
DROP TABLE IF EXISTS memory_ivf_lists;
