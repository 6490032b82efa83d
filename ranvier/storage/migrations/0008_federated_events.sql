-- Events received over federation (ranvier/storage/events.py,
-- persist_federated_events). Server-Server API, "Soft failure": an event
-- that passes authorization against its auth events and the state before it,
-- but not against the room's current state, is stored and stays part of the
-- DAG (later events may cite it), but is never shown to clients, never
-- becomes a forward extremity and does not change the current state.
ALTER TABLE events ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT FALSE;
