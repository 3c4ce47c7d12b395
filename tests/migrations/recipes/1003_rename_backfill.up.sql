-- ds:no-transaction
-- Rename a column, release N: the rows written before the trigger get
-- their heading in batches, one short transaction each.
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

CREATE OR REPLACE PROCEDURE recipe_backfill_heading()
LANGUAGE plpgsql
AS $fn$
DECLARE
    last_id bigint := 0;
    top     bigint;
BEGIN
    SELECT coalesce(max(id), 0) INTO top FROM recipe_notes;
    WHILE last_id < top LOOP
        UPDATE recipe_notes SET heading = title
         WHERE id > last_id AND id <= last_id + 2000 AND heading IS NULL;
        last_id := last_id + 2000;
        COMMIT;
    END LOOP;
END
$fn$;

CALL recipe_backfill_heading();

DROP PROCEDURE recipe_backfill_heading();
