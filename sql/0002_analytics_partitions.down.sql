-- ds:no-transaction
-- Folds every monthly partition back into the default partition, rows
-- included (nothing is lost), and drops the maintenance function, online:
-- readers and writers of analytics_events wait for one short, catalog-only
-- swap, not for the rows to move.
--
--   1. analytics_events_fold, the future default partition, is created
--      with the parent's columns, defaults and CHECKs, and a trigger on
--      analytics_events mirrors into it every row written, changed or
--      deleted from then on;
--   2. the rows already there are copied in batches of 256 pages, one
--      short transaction each (FOR SHARE on the rows being copied, so a
--      concurrent change of one waits for the batch and its mirror comes
--      after the copy);
--   3. its indexes are built CONCURRENTLY;
--   4. one transaction detaches and drops the monthly partitions and the
--      old default partition, gives the new table and its indexes their
--      names and attaches it as the default partition (no other partition
--      is left, so there is nothing to scan).
--
-- Every step can run again: a run that stopped half-way is simply run
-- again. A database without monthly partitions only loses the function.
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

-- ds:when EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'analytics_events'::regclass AND inhrelid::regclass::text ~ '^analytics_events_[0-9]{4}_[0-9]{2}$')
CREATE TABLE IF NOT EXISTS analytics_events_fold
    (LIKE analytics_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);

-- ds:when EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'analytics_events'::regclass AND inhrelid::regclass::text ~ '^analytics_events_[0-9]{4}_[0-9]{2}$')
CREATE UNIQUE INDEX IF NOT EXISTS analytics_events_fold_id
    ON analytics_events_fold (id);

-- ds:when EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'analytics_events'::regclass AND inhrelid::regclass::text ~ '^analytics_events_[0-9]{4}_[0-9]{2}$')
CREATE OR REPLACE FUNCTION ds_analytics_fold_mirror() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM analytics_events_fold WHERE id = OLD.id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO analytics_events_fold (id, user_id, name, properties, occurred_at)
        VALUES (NEW.id, NEW.user_id, NEW.name, NEW.properties, NEW.occurred_at)
        ON CONFLICT (id) DO UPDATE
           SET user_id = EXCLUDED.user_id, name = EXCLUDED.name,
               properties = EXCLUDED.properties,
               occurred_at = EXCLUDED.occurred_at;
    END IF;
    RETURN NULL;
END
$fn$;

-- ds:when EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'analytics_events'::regclass AND inhrelid::regclass::text ~ '^analytics_events_[0-9]{4}_[0-9]{2}$') AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'analytics_events'::regclass AND tgname = 'ds_analytics_fold')
CREATE TRIGGER ds_analytics_fold
    AFTER INSERT OR UPDATE OR DELETE ON analytics_events
    FOR EACH ROW EXECUTE FUNCTION ds_analytics_fold_mirror();

-- ds:when EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'analytics_events'::regclass AND inhrelid::regclass::text ~ '^analytics_events_[0-9]{4}_[0-9]{2}$')
CREATE OR REPLACE PROCEDURE ds_analytics_fold_copy()
LANGUAGE plpgsql
AS $fn$
DECLARE
    src   regclass;
    pages bigint;
    b     bigint;
BEGIN
    FOR src IN
        SELECT c.oid::regclass
          FROM pg_inherits inh JOIN pg_class c ON c.oid = inh.inhrelid
         WHERE inh.inhparent = 'analytics_events'::regclass
           AND (c.relname ~ '^analytics_events_[0-9]{4}_[0-9]{2}$'
                OR c.relname = 'analytics_events_default')
         ORDER BY c.relname
    LOOP
        -- Every row version older than the trigger lies below this page;
        -- newer ones are the trigger's.
        pages := pg_relation_size(src) / current_setting('block_size')::bigint;
        b := 0;
        WHILE b < pages LOOP
            EXECUTE format(
                'INSERT INTO analytics_events_fold (id, user_id, name, properties, occurred_at) '
                'SELECT id, user_id, name, properties, occurred_at FROM '
                '(SELECT * FROM ONLY %s WHERE ctid >= %L::tid AND ctid < %L::tid FOR SHARE) s '
                'ON CONFLICT (id) DO NOTHING',
                src, format('(%s,0)', b), format('(%s,0)', b + 256));
            b := b + 256;
            COMMIT;
        END LOOP;
    END LOOP;
END
$fn$;

-- ds:when EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'analytics_events'::regclass AND inhrelid::regclass::text ~ '^analytics_events_[0-9]{4}_[0-9]{2}$')
CALL ds_analytics_fold_copy();

-- ds:when EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'analytics_events'::regclass AND inhrelid::regclass::text ~ '^analytics_events_[0-9]{4}_[0-9]{2}$')
CREATE INDEX CONCURRENTLY IF NOT EXISTS analytics_events_fold_user_idx
    ON analytics_events_fold (user_id, occurred_at);

-- ds:when EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'analytics_events'::regclass AND inhrelid::regclass::text ~ '^analytics_events_[0-9]{4}_[0-9]{2}$')
CREATE INDEX CONCURRENTLY IF NOT EXISTS analytics_events_fold_brin
    ON analytics_events_fold USING brin (occurred_at);

-- The swap: catalog changes only, under the locks DETACH and ATTACH take.
-- ds:when EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'analytics_events'::regclass AND inhrelid::regclass::text ~ '^analytics_events_[0-9]{4}_[0-9]{2}$')
DO $swap$
DECLARE
    r        record;
    user_idx text;
    brin_idx text;
BEGIN
    DROP TRIGGER ds_analytics_fold ON analytics_events;
    -- the names the default partition's indexes have, which the new
    -- table's take over
    SELECT c.relname INTO user_idx
      FROM pg_inherits inh JOIN pg_class c ON c.oid = inh.inhrelid
      JOIN pg_index x ON x.indexrelid = c.oid
     WHERE inh.inhparent = 'analytics_events_user_idx'::regclass
       AND x.indrelid = 'analytics_events_default'::regclass;
    SELECT c.relname INTO brin_idx
      FROM pg_inherits inh JOIN pg_class c ON c.oid = inh.inhrelid
      JOIN pg_index x ON x.indexrelid = c.oid
     WHERE inh.inhparent = 'analytics_events_occurred_brin'::regclass
       AND x.indrelid = 'analytics_events_default'::regclass;
    FOR r IN
        SELECT c.oid::regclass AS part
          FROM pg_inherits inh JOIN pg_class c ON c.oid = inh.inhrelid
         WHERE inh.inhparent = 'analytics_events'::regclass
           AND (c.relname ~ '^analytics_events_[0-9]{4}_[0-9]{2}$'
                OR c.relname = 'analytics_events_default')
         ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE analytics_events DETACH PARTITION %s', r.part);
        EXECUTE format('DROP TABLE %s', r.part);
    END LOOP;
    DROP INDEX analytics_events_fold_id;
    ALTER TABLE analytics_events_fold RENAME TO analytics_events_default;
    EXECUTE format('ALTER INDEX analytics_events_fold_user_idx RENAME TO %I',
                   coalesce(user_idx, 'analytics_events_default_user_id_occurred_at_idx'));
    EXECUTE format('ALTER INDEX analytics_events_fold_brin RENAME TO %I',
                   coalesce(brin_idx, 'analytics_events_default_occurred_at_idx'));
    ALTER TABLE analytics_events ATTACH PARTITION analytics_events_default DEFAULT;
END
$swap$;

DROP PROCEDURE IF EXISTS ds_analytics_fold_copy();
DROP FUNCTION IF EXISTS ds_analytics_fold_mirror();
DROP FUNCTION IF EXISTS ds_analytics_ensure_partitions(integer, timestamptz);
