-- Add a foreign key: the validating scan takes SHARE UPDATE EXCLUSIVE on
-- recipe_notes and ROW SHARE on users: reads and writes go on.
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

ALTER TABLE recipe_notes VALIDATE CONSTRAINT recipe_notes_owner_fk;
