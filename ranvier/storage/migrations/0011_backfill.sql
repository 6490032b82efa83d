-- Backfill (ranvier/storage/events.py persist_federated_events,
-- ranvier/services/federation/backfill.py). Server-Server API, "Backfilling
-- and retrieving missing events".
--
-- A room's backward extremities: event IDs cited as prev events by events we
-- hold with their state (non-outliers) but which we do not hold as such
-- ourselves. They are where the room's known history stops; /messages asks
-- other servers for what lies before them (GET /backfill?v=...).
CREATE TABLE room_backward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- An outlier met again in backfilled history is re-keyed to a backfilled
-- (negative) ordering, and the state groups naming it follow
-- (persist_federated_events): find those entries without a full scan.
CREATE INDEX state_group_entries_event ON state_group_entries (event_nid);
