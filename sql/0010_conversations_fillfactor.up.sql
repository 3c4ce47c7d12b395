-- Room on every page of conversations for its rows' next versions (see
-- docs/repositories.md, "Between two vacuums", for the measurements). An
-- append moves its conversation's updated_at at most once
-- per repo_activity_interval_ms; updated_at is indexed, so that update is
-- never HOT. With pages packed full, a row's new version had no room on
-- its own page and went to the end of the table, which grew until vacuum
-- ran. With 30% of each page kept free, the new version stays on its page,
-- and page pruning (run whenever a statement reads a page short of free
-- space, with no vacuum) reclaims the old version's space for the next.
-- Its 4-byte line pointer still waits for vacuum (291 per page at most),
-- so vacuum still bounds the table when bumps outrun it.
--
-- Online: SET (fillfactor) takes SHARE UPDATE EXCLUSIVE, which blocks
-- neither reads nor writes (only DDL, VACUUM and ANALYZE wait), changes
-- only the catalog, and applies to pages filled from now on: existing
-- full pages gain the room as vacuum frees them and inserts stop at 70%.
-- Rewriting the table to apply it at once (VACUUM FULL, pg_repack) is left
-- to the operator. Wait at most lock_timeout (the runner's value or 5 s).
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

ALTER TABLE conversations SET (fillfactor = 70);
