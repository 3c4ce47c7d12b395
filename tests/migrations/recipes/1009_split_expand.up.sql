-- Split a table: addresses move to their own table. A trigger copies
-- every address the code still writes into recipe_notes.
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

CREATE TABLE recipe_note_addresses (
    note_id bigint PRIMARY KEY,
    address text NOT NULL
);

CREATE FUNCTION recipe_notes_address_sync() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF NEW.address IS NOT NULL THEN
        INSERT INTO recipe_note_addresses (note_id, address)
        VALUES (NEW.id, NEW.address)
        ON CONFLICT (note_id) DO UPDATE SET address = EXCLUDED.address;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER recipe_notes_address_sync
    AFTER INSERT OR UPDATE OF address ON recipe_notes
    FOR EACH ROW EXECUTE FUNCTION recipe_notes_address_sync();
