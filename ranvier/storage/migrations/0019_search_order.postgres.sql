-- Relevance the same on both engines (ranvier/storage/search.py; the SQLite
-- variant 0019_search_order.sqlite.sql explains): ``words_count``, how many
-- words the indexed text holds; shorter texts holding the search's words rank
-- first. Rows indexed before this migration count their tsvector's positions.
ALTER TABLE event_search ADD COLUMN words_count INTEGER NOT NULL DEFAULT 0;
UPDATE event_search SET words_count = COALESCE(
    (SELECT SUM(COALESCE(array_length(u.positions, 1), 1)) FROM unnest(vector) AS u), 0);
