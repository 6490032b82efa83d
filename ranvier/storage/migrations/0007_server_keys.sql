-- Other servers' signing keys (ranvier/storage/server_keys.py), as fetched from
-- /_matrix/key/v2/server or a notary (Server-Server API, "Retrieving server
-- keys"). One row per (server, key ID). valid_until_ts is the document's
-- published value (the 7-day cap is applied when the key is used, from
-- fetched_ts); expired_ts is set for old_verify_keys. key_json is the whole
-- key document with the server's own signatures, kept so that this server can
-- answer /_matrix/key/v2/query about it as a notary.
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key {{BLOB}} NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
