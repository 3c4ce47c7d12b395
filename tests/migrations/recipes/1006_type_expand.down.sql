SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');
DROP TRIGGER recipe_notes_score_sync ON recipe_notes;
DROP FUNCTION recipe_notes_score_sync();
ALTER TABLE recipe_notes DROP COLUMN score_new;
