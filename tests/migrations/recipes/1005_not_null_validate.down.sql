SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');
ALTER TABLE recipe_notes ALTER COLUMN priority DROP NOT NULL;
