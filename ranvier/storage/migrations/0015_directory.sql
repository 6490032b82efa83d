-- Room directory and OpenID (ranvier/storage/directory.py).
--
-- The published room directory reads its rooms through this index instead of
-- scanning every room (Client-Server API, "Published room directory").
-- The directory's chunks are built from current_state and room_memberships
-- (both indexed by room), for published rooms only.
CREATE INDEX rooms_public ON rooms (is_public);

-- OpenID tokens handed to clients (Client-Server API, "OpenID"; POST
-- /user/{userId}/openid/request_token) and checked when a third party asks
-- GET /_matrix/federation/v1/openid/userinfo. Expired rows are deleted when
-- new tokens are made.
CREATE TABLE openid_tokens (
    token TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
