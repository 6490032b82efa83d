-- Push actions (ranvier/storage/push_actions.py, ranvier/services/push.py).
-- Client-Server API, "Push Notifications" and "Receipts" ("Threaded read receipts").
--
-- One row per (local user, event) whose push rules said "notify": what
-- notification_count / highlight_count in /sync count (the rows after the
-- user's latest m.read / m.read.private receipt of the room or thread) and
-- what GET /notifications lists. thread_id is the event's thread root
-- (m.relates_to rel_type m.thread) or 'main'. actions: the rule's actions,
-- JSON, or '' for the commonest list, ["notify"]. The event is the one at
-- stream_ordering (events' primary key): a room of 1,000 members writes
-- 1,000 rows per message, so the row carries no event ID.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    actions TEXT NOT NULL,
    ts BIGINT NOT NULL,
    -- The counts of a /sync read the unread rows of the rooms it shows: a
    -- range of this key per room, from the user's read position on.
    PRIMARY KEY (user_id, room_id, stream_ordering)
) {{WITHOUT_ROWID}};

-- How far push evaluation got: the stream position of the newest event of
-- the last batch that notified anyone, written with that batch's rows, and
-- the events position at a clean shutdown (clean = TRUE). After a crash, the
-- events after it (less a margin: batches may finish slightly out of stream
-- order) are evaluated again at start; rows already there are kept.
CREATE TABLE push_evaluated (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    stream_ordering BIGINT NOT NULL,
    clean BOOLEAN NOT NULL
);

-- GET /notifications pages through a user's rows across rooms, newest first.
CREATE INDEX event_push_actions_user_stream ON event_push_actions (user_id, stream_ordering);

-- The read positions join a user's receipts: find them without scanning every room's.
CREATE INDEX receipts_user_room ON receipts (user_id, room_id);
