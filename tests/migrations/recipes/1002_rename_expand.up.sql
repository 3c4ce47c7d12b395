-- Rename a column, release N: add recipe_notes.heading next to title and
-- keep the two in step whichever one the code writes (old code writes
-- title, new code heading).
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

ALTER TABLE recipe_notes ADD COLUMN heading text;

CREATE FUNCTION recipe_notes_heading_sync() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.heading := coalesce(NEW.heading, NEW.title);
        NEW.title := coalesce(NEW.title, NEW.heading);
    ELSIF NEW.heading IS DISTINCT FROM OLD.heading THEN
        NEW.title := NEW.heading;
    ELSIF NEW.title IS DISTINCT FROM OLD.title THEN
        NEW.heading := NEW.title;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER recipe_notes_heading_sync
    BEFORE INSERT OR UPDATE ON recipe_notes
    FOR EACH ROW EXECUTE FUNCTION recipe_notes_heading_sync();
