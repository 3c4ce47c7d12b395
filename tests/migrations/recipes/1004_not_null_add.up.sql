-- Add a NOT NULL column: with a constant default (metadata only, no
-- rewrite); 1005 makes it NOT NULL.
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

ALTER TABLE recipe_notes ADD COLUMN priority integer DEFAULT 0;
