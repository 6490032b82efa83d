-- Server-side search and the user directory (ranvier/storage/search.py,
-- ranvier/storage/user_directory.py). Client-Server API, "Server Side Search",
-- "User directory". The SQLite variant (0012_search.sqlite.sql) explains the
-- tables; here the words are a tsvector of the 'simple' configuration (no
-- stemming, no stop words: the same word matching as SQLite's FTS5) under a
-- GIN index.
CREATE TABLE event_search (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    key TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_room ON event_search (room_id, stream_ordering);
CREATE INDEX event_search_fts ON event_search USING GIN (vector);

CREATE TABLE user_directory (
    user_id TEXT NOT NULL PRIMARY KEY,
    display_name TEXT,
    avatar_url TEXT,
    is_local BOOLEAN NOT NULL,
    words TEXT NOT NULL
);

CREATE TABLE user_directory_rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    join_rule TEXT,
    history_visibility TEXT
);

-- History persisted before this migration, indexed once here (later events
-- are indexed as they are persisted). Python's word splitting is done in SQL:
-- runs of letters and digits, lowercase, everything else a space. Edits
-- already in that history are not applied to their originals.
INSERT INTO event_search (event_id, room_id, sender, key, stream_ordering, vector)
SELECT event_id, room_id, sender, key, stream_ordering,
       to_tsvector('simple', regexp_replace(lower(value #>> '{}'), '[^[:alnum:]]+', ' ', 'g'))
FROM (
    SELECT event_id, room_id, sender, stream_ordering,
           CASE type WHEN 'm.room.message' THEN 'content.body'
                     WHEN 'm.room.name' THEN 'content.name' ELSE 'content.topic' END AS key,
           CASE type WHEN 'm.room.message' THEN pdu -> 'content' -> 'body'
                     WHEN 'm.room.name' THEN pdu -> 'content' -> 'name'
                     ELSE pdu -> 'content' -> 'topic' END AS value,
           pdu -> 'content' -> 'm.relates_to' ->> 'rel_type' AS rel_type
    FROM (
        SELECT event_id, room_id, sender, stream_ordering, type, json::jsonb AS pdu
        FROM events
        WHERE rejected = FALSE AND redacted_by IS NULL
          AND (type = 'm.room.message'
               OR (type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
    ) AS searchable_events
) AS texts
WHERE jsonb_typeof(value) = 'string' AND COALESCE(rel_type, '') != 'm.replace';
