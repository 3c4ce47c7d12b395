SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');
DROP TRIGGER recipe_notes_address_sync ON recipe_notes;
DROP FUNCTION recipe_notes_address_sync();
DROP TABLE recipe_note_addresses;
