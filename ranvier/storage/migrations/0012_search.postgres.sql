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
