-- Server-side search and the user directory (ranvier/storage/search.py,
-- ranvier/storage/user_directory.py). Client-Server API, "Server Side Search",
-- "User directory". The PostgreSQL variant is 0017_search.postgres.sql; the
-- tables are the same but for how the words are indexed.
--
-- One row per searchable event (m.room.message body, m.room.name name,
-- m.room.topic topic): ``words`` is the text already split into lowercase
-- words by Python (ranvier/storage/search.py words_of), so that both engines
-- index exactly the same words. An edit (m.replace) rewrites its original's
-- words; a redaction deletes the row; encrypted events have no row.
CREATE TABLE event_search (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    key TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    words TEXT NOT NULL
);
CREATE INDEX event_search_room ON event_search (room_id, stream_ordering);

-- FTS5 over event_search.words (external content: the words are stored once).
-- remove_diacritics 0: PostgreSQL's 'simple' configuration keeps them too.
CREATE VIRTUAL TABLE event_search_fts USING fts5(
    words, content='event_search', content_rowid='rowid',
    tokenize='unicode61 remove_diacritics 0'
);
CREATE TRIGGER event_search_ai AFTER INSERT ON event_search BEGIN
    INSERT INTO event_search_fts (rowid, words) VALUES (new.rowid, new.words);
END;
CREATE TRIGGER event_search_ad AFTER DELETE ON event_search BEGIN
    INSERT INTO event_search_fts (event_search_fts, rowid, words)
        VALUES ('delete', old.rowid, old.words);
END;
CREATE TRIGGER event_search_au AFTER UPDATE ON event_search BEGIN
    INSERT INTO event_search_fts (event_search_fts, rowid, words)
        VALUES ('delete', old.rowid, old.words);
    INSERT INTO event_search_fts (rowid, words) VALUES (new.rowid, new.words);
END;

-- The user directory: every user met in a room (from their member events) or
-- registered here (from their profile). ``words``: ' ' + the lowercase words
-- of the display name and the user ID, space separated, so that
-- ``words LIKE '% term%'`` is a word-prefix match on both engines.
CREATE TABLE user_directory (
    user_id TEXT NOT NULL PRIMARY KEY,
    display_name TEXT,
    avatar_url TEXT,
    is_local BOOLEAN NOT NULL,
    words TEXT NOT NULL
);

-- Rooms whose members everybody may find: join rule public or history
-- world_readable (users.yaml, searchUserDirectory). Kept from the state events.
CREATE TABLE user_directory_rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    join_rule TEXT,
    history_visibility TEXT
);

-- History persisted before this migration, indexed once here (later events
-- are indexed as they are persisted). SQL cannot run Python's word
-- splitting, so these rows hold the text itself: FTS5's unicode61 tokenizer
-- splits it at the same places (letters and digits are word characters,
-- everything else separates, case folded). Edits already in that history are
-- not applied to their originals.
INSERT INTO event_search (event_id, room_id, sender, key, stream_ordering, words)
SELECT event_id, room_id, sender,
       CASE type WHEN 'm.room.message' THEN 'content.body'
                 WHEN 'm.room.name' THEN 'content.name' ELSE 'content.topic' END,
       stream_ordering,
       json_extract(json, CASE type WHEN 'm.room.message' THEN '$.content.body'
                                    WHEN 'm.room.name' THEN '$.content.name'
                                    ELSE '$.content.topic' END)
FROM events
WHERE rejected = FALSE AND redacted_by IS NULL
  AND (type = 'm.room.message'
       OR (type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
  AND json_type(json, CASE type WHEN 'm.room.message' THEN '$.content.body'
                                WHEN 'm.room.name' THEN '$.content.name'
                                ELSE '$.content.topic' END) = 'text'
  AND COALESCE(json_extract(json, '$.content."m.relates_to".rel_type'), '') != 'm.replace';

-- The user directory from what was stored before this migration: each
-- room's join rule and history visibility, each joined member's display name
-- and avatar (local users: their profile). SQLite cannot run Python's word
-- splitting: these rows' words split the name and ID at spaces and the usual
-- punctuation (later profile and member changes rewrite them exactly).
INSERT INTO user_directory_rooms (room_id, join_rule, history_visibility)
SELECT r.room_id,
       (SELECT json_extract(e.json, '$.content.join_rule') FROM current_state c
        JOIN events e ON e.event_id = c.event_id
        WHERE c.room_id = r.room_id AND c.type = 'm.room.join_rules' AND c.state_key = ''),
       (SELECT json_extract(e.json, '$.content.history_visibility') FROM current_state c
        JOIN events e ON e.event_id = c.event_id
        WHERE c.room_id = r.room_id AND c.type = 'm.room.history_visibility' AND c.state_key = '')
FROM rooms r;

INSERT INTO user_directory (user_id, display_name, avatar_url, is_local, words)
SELECT m.user_id, json_extract(e.json, '$.content.displayname'),
       json_extract(e.json, '$.content.avatar_url'), FALSE, ''
FROM room_memberships m JOIN events e ON e.event_id = m.event_id
WHERE m.membership = 'join'
  AND m.stream_ordering = (SELECT MAX(stream_ordering) FROM room_memberships
                           WHERE user_id = m.user_id AND membership = 'join')
ON CONFLICT (user_id) DO NOTHING;

INSERT INTO user_directory (user_id, display_name, avatar_url, is_local, words)
SELECT u.user_id,
       CASE WHEN p.value IS NULL THEN substr(u.user_id, 2, instr(u.user_id, ':') - 2)
            ELSE json_extract(p.value, '$') END,
       json_extract(a.value, '$'), TRUE, ''
FROM users u
LEFT JOIN profiles p ON p.user_id = u.user_id AND p.field = 'displayname'
LEFT JOIN profiles a ON a.user_id = u.user_id AND a.field = 'avatar_url'
WHERE u.is_guest = FALSE
ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name,
    avatar_url = excluded.avatar_url, is_local = TRUE;

UPDATE user_directory SET words = ' ' || trim(replace(replace(replace(replace(replace(replace(
    lower(COALESCE(display_name, '') || ' ' || user_id),
    '@', ' '), ':', ' '), '.', ' '), '-', ' '), '_', ' '), '  ', ' '));
