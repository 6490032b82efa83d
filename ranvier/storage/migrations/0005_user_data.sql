-- Per-user data a client syncs: filters, account data, receipts, presence.
-- (Typing notifications are ephemeral and live in memory only.)

-- Client-Server API, "Filtering": filters uploaded with POST /user/{userId}/filter.
-- filter_id is numeric per user (never starts with "{", as the spec requires).
CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- Client-Server API, "Client Config": one row per (user, room, type); room_id
-- is '' for global account data. stream_id is the "account_data" stream
-- position of the last write, so /sync finds what changed since a token.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);

-- Receipts ("Receipts" module): the latest receipt per (room, type, user,
-- thread); thread_id is '' for an unthreaded receipt. data is the receipt's
-- JSON ({"ts": ..., "thread_id": ...}). stream_id: the "receipts" stream.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    data TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_id);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);

-- Presence ("Presence" module): the current state of each local user.
-- stream_id: the "presence" stream position of the last change.
CREATE TABLE presence (
    user_id TEXT NOT NULL PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);
