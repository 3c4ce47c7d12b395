-- ds:lint-ignore drop-column: gone since 2.0
ALTER TABLE t DROP COLUMN c;
DO $$ BEGIN EXECUTE 'ALTER TABLE ' || quote_ident('t') || ' ADD CONSTRAINT c CHECK (a > 0)'; END $$;
