-- ds:no-transaction
-- Indexes for plan findings of the plan tests (tests/check_plans.c; see
-- docs/repositories.md "Plan tests").
--
-- session.list_user reads a user's live sessions (expires_at > now()).
-- Through (user_id) alone it read every expired session of the user too,
-- until the purge removed them; (user_id, expires_at) starts the scan at
-- the first live one. It serves every lookup by user_id as well (the
-- ON DELETE CASCADE from users, revoke-all), so (user_id) goes.
CREATE INDEX CONCURRENTLY IF NOT EXISTS auth_sessions_user_expires_idx
    ON auth_sessions (user_id, expires_at);

DROP INDEX CONCURRENTLY IF EXISTS auth_sessions_user_idx;
