-- ds:no-transaction
-- Change a type: the older rows in batches, then a validated CHECK so
-- that the new column can become NOT NULL without a scan.
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

CREATE OR REPLACE PROCEDURE recipe_backfill_score()
LANGUAGE plpgsql
AS $fn$
DECLARE
    last_id bigint := 0;
    top     bigint;
BEGIN
    SELECT coalesce(max(id), 0) INTO top FROM recipe_notes;
    WHILE last_id < top LOOP
        UPDATE recipe_notes SET score_new = score
         WHERE id > last_id AND id <= last_id + 2000 AND score_new IS NULL;
        last_id := last_id + 2000;
        COMMIT;
    END LOOP;
END
$fn$;

CALL recipe_backfill_score();

DROP PROCEDURE recipe_backfill_score();

ALTER TABLE recipe_notes ADD CONSTRAINT recipe_notes_score_new_not_null
    CHECK (score_new IS NOT NULL) NOT VALID;

ALTER TABLE recipe_notes VALIDATE CONSTRAINT recipe_notes_score_new_not_null;
