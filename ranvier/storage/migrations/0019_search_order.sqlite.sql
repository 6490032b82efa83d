-- Search in the order asked without ranking or sorting every match
-- (ranvier/storage/search.py; issue 13: scenario 12's /search over 100,000
-- messages). The PostgreSQL variant is 0019_search_order.postgres.sql.
--
-- ``words_count``: how many words ``words`` holds, the relevance of
-- ``order_by: rank`` on both engines (shorter texts holding the search's
-- words rank first). Rows indexed before this migration count the spaces of
-- their words (0017 may have stored the raw text of older history there).
ALTER TABLE event_search ADD COLUMN words_count INTEGER NOT NULL DEFAULT 0;
UPDATE event_search SET words_count =
    CASE WHEN trim(words) = '' THEN 0
         ELSE length(trim(words)) - length(replace(trim(words), ' ', '')) + 1 END;

-- The full-text index is keyed by the event's stream ordering (events'
-- primary key), so that FTS5 hands the matches out newest first and stops at
-- the page's end (``order_by: recent``), and a cursor is a rowid bound. It
-- stores no content (content=''): the words are in event_search and the
-- triggers hand the old words to the 'delete' command; nor the length of
-- each text (columnsize=0: only bm25 read it; words_count is the length).
DROP TRIGGER event_search_ai;
DROP TRIGGER event_search_ad;
DROP TRIGGER event_search_au;
DROP TABLE event_search_fts;
-- Only the query plan 0017 ran used it: rows are found through the FTS index.
DROP INDEX event_search_room;

CREATE VIRTUAL TABLE event_search_fts USING fts5(
    words, content='', columnsize=0, tokenize='unicode61 remove_diacritics 0'
);

-- What a search filters and orders each match by, in a table narrow enough
-- that a lookup per match stays cheap (one row per event_search row, same
-- stream ordering): the room as a small number (event_search_rooms), the key
-- (0 content.body, 1 content.name, 2 content.topic) and words_count.
CREATE TABLE event_search_rooms (
    room_nid INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE
);
CREATE TABLE event_search_order (
    stream_ordering INTEGER PRIMARY KEY,
    room_nid INTEGER NOT NULL,
    key_nid INTEGER NOT NULL,
    words_count INTEGER NOT NULL
);

CREATE TRIGGER event_search_ai AFTER INSERT ON event_search BEGIN
    INSERT OR IGNORE INTO event_search_rooms (room_id) VALUES (new.room_id);
    INSERT INTO event_search_order (stream_ordering, room_nid, key_nid, words_count)
        VALUES (new.stream_ordering,
                (SELECT room_nid FROM event_search_rooms WHERE room_id = new.room_id),
                CASE new.key WHEN 'content.body' THEN 0 WHEN 'content.name' THEN 1 ELSE 2 END,
                new.words_count);
    INSERT INTO event_search_fts (rowid, words) VALUES (new.stream_ordering, new.words);
END;
CREATE TRIGGER event_search_ad AFTER DELETE ON event_search BEGIN
    DELETE FROM event_search_order WHERE stream_ordering = old.stream_ordering;
    INSERT INTO event_search_fts (event_search_fts, rowid, words)
        VALUES ('delete', old.stream_ordering, old.words);
END;
CREATE TRIGGER event_search_au AFTER UPDATE ON event_search BEGIN
    DELETE FROM event_search_order WHERE stream_ordering = old.stream_ordering;
    INSERT INTO event_search_order (stream_ordering, room_nid, key_nid, words_count)
        VALUES (new.stream_ordering,
                (SELECT room_nid FROM event_search_rooms WHERE room_id = new.room_id),
                CASE new.key WHEN 'content.body' THEN 0 WHEN 'content.name' THEN 1 ELSE 2 END,
                new.words_count);
    INSERT INTO event_search_fts (event_search_fts, rowid, words)
        VALUES ('delete', old.stream_ordering, old.words);
    INSERT INTO event_search_fts (rowid, words) VALUES (new.stream_ordering, new.words);
END;

-- The history indexed so far.
INSERT INTO event_search_rooms (room_id) SELECT DISTINCT room_id FROM event_search ORDER BY room_id;
INSERT INTO event_search_order (stream_ordering, room_nid, key_nid, words_count)
SELECT s.stream_ordering, r.room_nid,
       CASE s.key WHEN 'content.body' THEN 0 WHEN 'content.name' THEN 1 ELSE 2 END,
       s.words_count
FROM event_search s JOIN event_search_rooms r ON r.room_id = s.room_id;
INSERT INTO event_search_fts (rowid, words) SELECT stream_ordering, words FROM event_search;
