-- Server-side search and the user directory (ranvier/storage/search.py,
-- ranvier/storage/user_directory.py). Client-Server API, "Server Side Search",
-- "User directory". The SQLite variant (0017_search.sqlite.sql) explains the
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

-- The user directory from what was stored before this migration (see the
-- SQLite variant); here the words are split as Python splits them.
INSERT INTO user_directory_rooms (room_id, join_rule, history_visibility)
SELECT r.room_id,
       (SELECT e.json::jsonb -> 'content' ->> 'join_rule' FROM current_state c
        JOIN events e ON e.event_id = c.event_id
        WHERE c.room_id = r.room_id AND c.type = 'm.room.join_rules' AND c.state_key = ''),
       (SELECT e.json::jsonb -> 'content' ->> 'history_visibility' FROM current_state c
        JOIN events e ON e.event_id = c.event_id
        WHERE c.room_id = r.room_id AND c.type = 'm.room.history_visibility' AND c.state_key = '')
FROM rooms r;

INSERT INTO user_directory (user_id, display_name, avatar_url, is_local, words)
SELECT DISTINCT ON (m.user_id) m.user_id, e.json::jsonb -> 'content' ->> 'displayname',
       e.json::jsonb -> 'content' ->> 'avatar_url', FALSE, ''
FROM room_memberships m JOIN events e ON e.event_id = m.event_id
WHERE m.membership = 'join'
ORDER BY m.user_id, m.stream_ordering DESC;

INSERT INTO user_directory (user_id, display_name, avatar_url, is_local, words)
SELECT u.user_id,
       CASE WHEN p.value IS NULL THEN substr(u.user_id, 2, strpos(u.user_id, ':') - 2)
            ELSE p.value::jsonb #>> '{}' END,
       a.value::jsonb #>> '{}', TRUE, ''
FROM users u
LEFT JOIN profiles p ON p.user_id = u.user_id AND p.field = 'displayname'
LEFT JOIN profiles a ON a.user_id = u.user_id AND a.field = 'avatar_url'
WHERE u.is_guest = FALSE
ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name,
    avatar_url = excluded.avatar_url, is_local = TRUE;

UPDATE user_directory SET words = ' ' || trim(regexp_replace(
    lower(COALESCE(display_name, '') || ' ' || user_id), '[^[:alnum:]]+', ' ', 'g'));
