DROP TABLE recipe_notes;
