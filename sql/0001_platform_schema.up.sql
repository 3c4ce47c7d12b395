-- The platform schema: one table group per component. Ids are bigint
-- identities (int64_t in C), every timestamp is timestamptz, enumerations
-- and lengths are CHECKed here as a backstop to the library's own
-- validation, and every foreign key says what a delete does.

-- Users and profiles -------------------------------------------------------
CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL
                CHECK (length(email) BETWEEN 3 AND 320 AND position('@' IN email) > 1),
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'pending', 'suspended')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
-- Unique case-insensitively (the library also stores emails lower-cased).
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
-- Retention purge of soft-deleted users.
CREATE INDEX users_deleted_at_idx ON users (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE profiles (
    user_id       bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    display_name  text NOT NULL DEFAULT '' CHECK (length(display_name) <= 200),
    locale        text NOT NULL DEFAULT 'en' CHECK (length(locale) BETWEEN 2 AND 35),
    timezone      text NOT NULL DEFAULT 'UTC' CHECK (length(timezone) BETWEEN 1 AND 64),
    preferences   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(preferences) = 'object'),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Auth sessions: only a keyed hash of the session token is stored ----------
CREATE TABLE auth_sessions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    bytea NOT NULL CHECK (length(token_hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    user_agent    text CHECK (length(user_agent) <= 512),
    ip            inet,
    revoked       boolean NOT NULL DEFAULT false,
    revoked_at    timestamptz,
    CONSTRAINT auth_sessions_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id);
CREATE INDEX auth_sessions_expires_idx ON auth_sessions (expires_at);

-- Conversations and messages ------------------------------------------------
CREATE TABLE conversations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       text NOT NULL DEFAULT '' CHECK (length(title) <= 500),
    archived    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- A user's conversations by recent activity (keyset on updated_at, id).
CREATE INDEX conversations_owner_activity_idx
    ON conversations (owner_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id  bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role             text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content          text NOT NULL CHECK (length(content) <= 1000000),
    metadata         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- A retried append with the same key finds the original row.
    CONSTRAINT messages_idempotency_key UNIQUE (conversation_id, idempotency_key)
);
-- Keyset paging newest-first or oldest-first within a conversation.
CREATE INDEX messages_conversation_id_idx ON messages (conversation_id, id);

-- Service connections with encrypted OAuth tokens -------------------------------
CREATE TABLE service_connections (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id              bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider             text NOT NULL CHECK (provider ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    external_account_id  text NOT NULL CHECK (length(external_account_id) BETWEEN 1 AND 255),
    scopes               text NOT NULL DEFAULT '' CHECK (length(scopes) <= 4000),
    -- AEAD envelopes (never plaintext); NULL when the provider issued none.
    access_token_enc     bytea,
    refresh_token_enc    bytea,
    token_expires_at     timestamptz,
    status               text NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'expired', 'revoked', 'error')),
    -- Key id of the envelopes, so rotation finds rows not yet re-encrypted.
    key_id               text NOT NULL CHECK (length(key_id) BETWEEN 1 AND 32),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT service_connections_account_key UNIQUE (user_id, provider, external_account_id)
);
CREATE INDEX service_connections_key_id_idx ON service_connections (key_id, id);

-- AI team configurations -------------------------------------------------------
CREATE TABLE ai_teams (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Member agents: an array of objects (name, role, model, ...).
    members     jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(members) = 'array'),
    config      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    -- Optimistic concurrency: every update bumps it; a stale one is refused.
    version     bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ai_teams_owner_name_key UNIQUE (owner_id, name)
);

-- App settings: global (user_id NULL) and per user ---------------------------
CREATE TABLE app_settings (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint REFERENCES users (id) ON DELETE CASCADE,
    key         text NOT NULL CHECK (key ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    value       jsonb NOT NULL,
    version     bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Two partial indexes rather than NULLS NOT DISTINCT, which needs 15+.
CREATE UNIQUE INDEX app_settings_global_key ON app_settings (key) WHERE user_id IS NULL;
CREATE UNIQUE INDEX app_settings_user_key ON app_settings (user_id, key) WHERE user_id IS NOT NULL;

-- Memory facts (the embedding column belongs to the vector migration) --------
CREATE TABLE memory_facts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind              text NOT NULL DEFAULT 'fact' CHECK (kind ~ '^[a-z0-9_]{1,64}$'),
    content           text NOT NULL CHECK (length(content) BETWEEN 1 AND 100000),
    metadata          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    importance        real NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    last_accessed_at  timestamptz
);
CREATE INDEX memory_facts_user_kind_idx ON memory_facts (user_id, kind, id);

-- Analytics events: range-partitioned by month for high insert volume --------
-- No foreign key to users: a key lookup per row would cap COPY throughput;
-- ds_user_erase() deletes a user's events explicitly.
CREATE TABLE analytics_events (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    user_id      bigint,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    properties   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    occurred_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (occurred_at);
-- Rows outside every monthly partition land here, so no insert ever fails.
CREATE TABLE analytics_events_default PARTITION OF analytics_events DEFAULT;
CREATE INDEX analytics_events_user_idx ON analytics_events (user_id, occurred_at);
CREATE INDEX analytics_events_occurred_brin ON analytics_events USING brin (occurred_at);
