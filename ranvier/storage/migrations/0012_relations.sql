-- Event relationships (ranvier/storage/relations.py). Client-Server API,
-- "Forming relationships between events", "Threading", "Aggregations of
-- child events".
--
-- One row per shown event (not rejected, not an outlier, not soft-failed)
-- whose content has a well-formed m.relates_to: written in the transaction
-- that writes its events row (local and federated alike), deleted when the
-- event is redacted. Never filled by scanning the events table.
CREATE TABLE event_relations (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    -- The parent (m.relates_to.event_id); NULL for a plain rich reply.
    relates_to_id TEXT,
    -- m.relates_to.rel_type; NULL for a plain rich reply.
    rel_type TEXT,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- For m.thread: the thread root (= relates_to_id); else NULL.
    thread_id TEXT,
    -- m.relates_to.m.in_reply_to.event_id (rich replies, thread fallbacks).
    in_reply_to TEXT,
    -- The key of an m.annotation (duplicate annotations are refused).
    aggregation_key TEXT
);
-- /relations pages, bundled aggregations (edits, references, thread counts).
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, rel_type, stream_ordering);

-- One row per thread (Synapse's ``threads`` table): its latest reply, so
-- /threads pages by latest activity with an index range scan.
CREATE TABLE threads (
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, thread_id)
);
CREATE INDEX threads_room_latest ON threads (room_id, latest_stream_ordering);
