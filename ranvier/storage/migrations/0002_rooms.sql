-- Rooms, events and room state (ranvier/storage/{rooms,events,state}.py).
--
-- Every event is stored once: its PDU as canonical JSON plus indexed columns.
-- Its short integer ID is its position in the "events" stream (stream_ordering).
--
-- Room state is kept as state groups over short IDs: a state key
-- (type, state_key) is interned to a short ID in state_keys; a state group is
-- a parent group plus delta rows (state_group_entries), or a full snapshot
-- when it has no parent. Chains are bounded (see storage/state.py), so a
-- message copies no state at all and a state event adds one delta row.

CREATE TABLE rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    -- Published in the server's room directory (createRoom visibility=public).
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    -- The state group after the room's latest event (the room's current state).
    current_state_group BIGINT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE events (
    stream_ordering BIGINT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    depth BIGINT NOT NULL,
    -- The PDU, canonical JSON.
    json TEXT NOT NULL,
    -- The state group before the event and after it (equal for non-state events).
    state_group_before BIGINT,
    state_group BIGINT,
    -- For state events: the event this one replaced in the room state.
    replaces_state TEXT,
    -- The m.room.redaction that redacted this event; the PDU is redacted when served.
    redacted_by TEXT,
    rejected BOOLEAN NOT NULL DEFAULT FALSE,
    outlier BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_type_state_key ON events (room_id, type, state_key);

-- Transaction IDs of locally sent events: sends are idempotent per device,
-- endpoint and txn id, and unsigned.transaction_id is shown to that device only.
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
CREATE INDEX event_txn_ids_event ON event_txn_ids (event_id);

-- Redactions by the event they redact, also when that event is not (yet) known.
CREATE TABLE redactions (
    redacts TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (redacts, event_id)
);

CREATE TABLE room_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- Interned state keys: (type, state_key) -> short id.
CREATE TABLE state_keys (
    id {{ID_PK}},
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    UNIQUE (type, state_key)
);

CREATE TABLE state_groups (
    id {{ID_PK}},
    room_id TEXT NOT NULL,
    -- NULL: a full snapshot; else the group this one is a delta against.
    parent_group BIGINT,
    -- Number of delta groups between this one and its snapshot (0 for a snapshot).
    chain_length INTEGER NOT NULL
);

-- Rows of a state group: for a snapshot the whole state, for a delta what
-- changed against the parent. event_nid is the event's stream_ordering.
CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    state_key_id BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (state_group, state_key_id)
);

-- The room's current state, denormalised for fast reads.
CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

-- Current membership of every user in every room.
CREATE TABLE room_memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    forgotten BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, membership);
CREATE INDEX room_memberships_room ON room_memberships (room_id, membership);

-- Every membership change, for "membership changes of user U between A and B"
-- and history visibility.
CREATE TABLE membership_history (
    stream_ordering BIGINT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL
);
CREATE INDEX membership_history_user ON membership_history (user_id, stream_ordering);
CREATE INDEX membership_history_room_user ON membership_history (room_id, user_id, stream_ordering);

CREATE TABLE room_aliases (
    room_alias TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Profile fields of local users (displayname, avatar_url, custom fields);
-- value is JSON. An absent displayname row means "the localpart"; a row
-- holding JSON null means the user removed it.
CREATE TABLE profiles (
    user_id TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);
