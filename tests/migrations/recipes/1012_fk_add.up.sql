-- Add a foreign key: NOT VALID, a brief lock on both tables, no scan.
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

ALTER TABLE recipe_notes ADD CONSTRAINT recipe_notes_owner_fk
    FOREIGN KEY (owner_id) REFERENCES users (id) NOT VALID;
