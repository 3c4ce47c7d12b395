-- The table the expand/contract recipes of docs/online-migrations.md
-- change while probes read and write it (the test fills it first).
CREATE TABLE recipe_notes (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id bigint NOT NULL,
    title    text NOT NULL,
    score    integer NOT NULL DEFAULT 0,
    address  text
);
