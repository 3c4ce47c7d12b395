-- ds:no-transaction
-- Add a NOT NULL column: a CHECK added NOT VALID (a brief lock, no scan),
-- its validating scan under SHARE UPDATE EXCLUSIVE
-- (reads and writes go on), then SET NOT NULL, which the validated CHECK
-- spares its scan, then the CHECK goes.
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

ALTER TABLE recipe_notes DROP CONSTRAINT IF EXISTS recipe_notes_priority_not_null;

ALTER TABLE recipe_notes ADD CONSTRAINT recipe_notes_priority_not_null
    CHECK (priority IS NOT NULL) NOT VALID;

ALTER TABLE recipe_notes VALIDATE CONSTRAINT recipe_notes_priority_not_null;

ALTER TABLE recipe_notes ALTER COLUMN priority SET NOT NULL;

ALTER TABLE recipe_notes DROP CONSTRAINT IF EXISTS recipe_notes_priority_not_null;
