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
