-- Outbound federation (ranvier/storage/federation.py, services/federation/sender.py).
--
-- Room events need no copy per destination: the events table is the queue.
-- Each destination remembers the stream position up to which it has
-- acknowledged our events (Synapse's catch-up design, #8096): after a
-- restart or an outage, what it still lacks is every event of ours after
-- that position in the rooms it shares with us.
CREATE TABLE federation_destinations (
    destination TEXT NOT NULL PRIMARY KEY,
    -- Events stream position of the last of our events it acknowledged.
    last_sent_position BIGINT NOT NULL,
    -- Backoff after failures: when the last attempt failed and how long to wait.
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval_ms BIGINT NOT NULL DEFAULT 0
);

-- EDUs that must survive a restart until the destination acknowledges them
-- (to-device messages, device-list updates); typing, presence and receipts
-- are not worth keeping and are sent from memory.
CREATE TABLE federation_outbox (
    id {{ID_PK}},
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, id);
