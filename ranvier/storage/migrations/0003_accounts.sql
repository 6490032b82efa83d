-- Accounts (ranvier/storage/accounts.py): users, their devices, access and
-- refresh tokens, registration tokens and User-Interactive Authentication
-- sessions (Client-Server API, "Client Authentication").

CREATE TABLE users (
    user_id TEXT NOT NULL PRIMARY KEY,
    -- argon2id ($argon2id$...) or, imported from Synapse, bcrypt ($2b$...);
    -- NULL: no password login (guests).
    password_hash TEXT,
    created_ts BIGINT NOT NULL,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated BOOLEAN NOT NULL DEFAULT FALSE
);
-- Login looks users up case-insensitively (as Synapse does) when the exact ID is unknown.
CREATE INDEX users_lower_user_id ON users (lower(user_id));

-- One row per device; other areas (end-to-end keys) key their rows on
-- (user_id, device_id) and may add tables of their own next to this one.
CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Client-Server API, "Refreshing access tokens". When a refresh token is
-- used, next_token_id points at the refresh token issued in its place; the
-- old one is deleted as soon as the new access token or new refresh token
-- is used.
CREATE TABLE refresh_tokens (
    id {{ID_PK}},
    token TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    next_token_id BIGINT
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_next ON refresh_tokens (next_token_id);

CREATE TABLE access_tokens (
    id {{ID_PK}},
    -- Opaque, random, looked up by this unique index on every request.
    token TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    device_id TEXT,
    -- NULL: never expires (clients that do not support refresh tokens).
    valid_until_ms BIGINT,
    -- The refresh token issued with this access token, if any.
    refresh_token_id BIGINT,
    -- Whether the token has been used once (the first use revokes the refresh
    -- token it replaced).
    used BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_token_id);

-- Client-Server API, "Token-authenticated registration". pending counts
-- registrations in progress (the stage is complete, the account not yet
-- created); pending + completed may not exceed uses_allowed.
CREATE TABLE registration_tokens (
    token TEXT NOT NULL PRIMARY KEY,
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    -- Milliseconds since the epoch; NULL: never expires.
    expiry_time BIGINT
);

-- Client-Server API, "User-Interactive Authentication API": one session per
-- protected operation in progress. clientdict is the JSON request body (minus
-- "auth") of the request that started it, so later requests need only send
-- "auth"; uri and method pin the operation.
CREATE TABLE ui_auth_sessions (
    session_id TEXT NOT NULL PRIMARY KEY,
    created_ts BIGINT NOT NULL,
    uri TEXT NOT NULL,
    method TEXT NOT NULL,
    clientdict TEXT NOT NULL,
    -- The authenticated user a session belongs to (password change,
    -- deactivation); NULL for registration.
    user_id TEXT
);
CREATE INDEX ui_auth_sessions_created ON ui_auth_sessions (created_ts);

-- The stages of a session that are complete, with what each proved (JSON).
CREATE TABLE ui_auth_session_stages (
    session_id TEXT NOT NULL,
    stage_type TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (session_id, stage_type)
);
