-- Push actions (ranvier/storage/push_actions.py, ranvier/services/push.py).
-- Client-Server API, "Push Notifications" and "Receipts" ("Threaded read receipts").
--
-- One row per (local user, event) whose push rules said "notify": what
-- notification_count / highlight_count in /sync count (the rows after the
-- user's latest m.read / m.read.private receipt of the room or thread) and
-- what GET /notifications lists. thread_id is the event's thread root
-- (m.relates_to rel_type m.thread) or 'main'. actions: the rule's actions, JSON.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    actions TEXT NOT NULL,
    ts BIGINT NOT NULL,
    -- An event's stream_ordering is unique (events): one key serves the
    -- counts of one user (one query for all their rooms), /notifications
    -- pages and idempotent writes, with one index to maintain per row.
    PRIMARY KEY (user_id, stream_ordering)
);

-- The counts join a user's receipts: find them without scanning every room's.
CREATE INDEX receipts_user_room ON receipts (user_id, room_id);
