-- Release N+1, the contract steps: no running code reads title, the old
-- score or recipe_notes.address any more.
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

DROP TRIGGER recipe_notes_heading_sync ON recipe_notes;
DROP FUNCTION recipe_notes_heading_sync();
DROP TRIGGER recipe_notes_address_sync ON recipe_notes;
DROP FUNCTION recipe_notes_address_sync();
-- ds:lint-ignore drop-column: release N+1 reads and writes heading only
ALTER TABLE recipe_notes DROP COLUMN title;
-- ds:lint-ignore drop-column: score is the bigint column since 1008; nothing reads score_old
ALTER TABLE recipe_notes DROP COLUMN score_old;
-- ds:lint-ignore drop-column: release N+1 reads and writes recipe_note_addresses
ALTER TABLE recipe_notes DROP COLUMN address;
