-- ds:no-transaction
-- Split a table: the older addresses in batches.
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

CREATE OR REPLACE PROCEDURE recipe_backfill_addresses()
LANGUAGE plpgsql
AS $fn$
DECLARE
    last_id bigint := 0;
    top     bigint;
BEGIN
    SELECT coalesce(max(id), 0) INTO top FROM recipe_notes;
    WHILE last_id < top LOOP
        INSERT INTO recipe_note_addresses (note_id, address)
        SELECT id, address FROM recipe_notes
         WHERE id > last_id AND id <= last_id + 2000 AND address IS NOT NULL
        ON CONFLICT (note_id) DO NOTHING;
        last_id := last_id + 2000;
        COMMIT;
    END LOOP;
END
$fn$;

CALL recipe_backfill_addresses();

DROP PROCEDURE recipe_backfill_addresses();
