SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');
ALTER TABLE recipe_notes RENAME COLUMN score TO score_new;
ALTER TABLE recipe_notes RENAME COLUMN score_old TO score;
ALTER TABLE recipe_notes ALTER COLUMN score_new DROP NOT NULL;
