-- ds:no-transaction
-- Back to the earlier indexes on auth_sessions.
CREATE INDEX CONCURRENTLY IF NOT EXISTS auth_sessions_user_idx
    ON auth_sessions (user_id);

DROP INDEX CONCURRENTLY IF EXISTS auth_sessions_user_expires_idx;
