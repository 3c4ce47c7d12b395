-- Change a type: one short transaction swaps the names (catalog only).
-- From this release on the code reads score as bigint; the old column
-- stays, unused, until the contract step.
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

DROP TRIGGER recipe_notes_score_sync ON recipe_notes;
DROP FUNCTION recipe_notes_score_sync();
-- ds:lint-ignore rename-column: the code of this release reads score as bigint through the new column; old code reads it too
ALTER TABLE recipe_notes RENAME COLUMN score TO score_old;
-- ds:lint-ignore rename-column: the new column takes the old name in the same transaction
ALTER TABLE recipe_notes RENAME COLUMN score_new TO score;
ALTER TABLE recipe_notes ALTER COLUMN score_old DROP NOT NULL;
ALTER TABLE recipe_notes ALTER COLUMN score_old DROP DEFAULT;
ALTER TABLE recipe_notes ALTER COLUMN score SET DEFAULT 0;
-- ds:lint-ignore set-not-null: recipe_notes_score_new_not_null, validated in 1007, is this column's CHECK (renamed from score_new)
ALTER TABLE recipe_notes ALTER COLUMN score SET NOT NULL;
ALTER TABLE recipe_notes DROP CONSTRAINT recipe_notes_score_new_not_null;
