-- Change a type (score integer to bigint): a new column the trigger keeps
-- in step with every write, whatever the code writes.
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

ALTER TABLE recipe_notes ADD COLUMN score_new bigint;

CREATE FUNCTION recipe_notes_score_sync() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    NEW.score_new := NEW.score;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER recipe_notes_score_sync
    BEFORE INSERT OR UPDATE ON recipe_notes
    FOR EACH ROW EXECUTE FUNCTION recipe_notes_score_sync();
