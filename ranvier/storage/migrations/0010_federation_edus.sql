-- EDUs over federation (ranvier/storage/federation_edus.py,
-- services/federation/edus.py): other servers' device lists as we cached them,
-- what we last announced of our own users' devices, and the to-device
-- message IDs already received (Server-Server API, "Device Management",
-- "Send-to-device messaging").

-- A remote user's device list: the stream_id of the last update applied, and
-- whether it is stale (an update could not be applied: resync with
-- GET /user/devices). A user without a row has no cached list.
CREATE TABLE remote_device_lists (
    user_id TEXT NOT NULL PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    stale BOOLEAN NOT NULL
);

-- A remote user's devices: the signed device_keys object (JSON) if any.
CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    key_json TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- A remote user's cross-signing keys (master, self_signing), JSON as received.
CREATE TABLE remote_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- What other servers were last told of a local user's devices: per device
-- (item = device ID) or cross-signing keys (item = ''), a hash of what was
-- announced and the stream_id of that m.device_list_update, so the next
-- update names it as prev_id and GET /user/devices reports the latest.
CREATE TABLE device_list_announced (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    item TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    PRIMARY KEY (user_id, kind, item)
);

-- m.direct_to_device message IDs received per origin (de-duplication of a
-- transaction retried by the sender).
CREATE TABLE federation_inbound_to_device (
    origin TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, message_id)
);
