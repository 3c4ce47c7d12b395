SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');
ALTER TABLE recipe_notes ADD COLUMN title text, ADD COLUMN score_old integer, ADD COLUMN address text;
