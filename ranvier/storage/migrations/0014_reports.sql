-- Reports of content (Client-Server API, "Reporting Content"): events, rooms
-- and users reported by local users, kept for the server's administrators
-- (`ranvier reports list`). "Servers are free to handle the reported content
-- however they desire"; Ranvier stores each report once, as received.
--
-- kind is 'event', 'room' or 'user'; room_id is set for event and room
-- reports, event_id for event reports, target_user_id for user reports (and,
-- for event reports, the reported event's sender). score is the deprecated
-- event-report score (removed in v1.18), when a client still sends one.
CREATE TABLE content_reports (
    id {{ID_PK}},
    received_ts BIGINT NOT NULL,
    reporter TEXT NOT NULL,
    kind TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    target_user_id TEXT,
    reason TEXT,
    score BIGINT
);

-- Newest first for the administrators' list; per reporter for abuse checks.
CREATE INDEX content_reports_reporter ON content_reports (reporter, id);
