-- Pushers (Client-Server API, "Push Notifications", POST /pushers/set;
-- ranvier/storage/pushers.py). One row per (user, app_id, pushkey): setting
-- the same pair again updates the row.
-- device_id: the device whose access token set the pusher; logging that device
-- out or deleting it removes the pusher (as Synapse ties pushers to tokens).
-- pushkey_ts: when the pushkey was last set, in ms (sent to the gateway in s).
-- data: the pusher's JSON ``data`` object, ``url`` included.
CREATE TABLE pushers (
    id {{ID_PK}},
    user_id TEXT NOT NULL,
    device_id TEXT,
    kind TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    pushkey_ts BIGINT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (user_id, app_id, pushkey)
);
-- "append": false removes the other users' pushers with the same app_id and pushkey.
CREATE INDEX pushers_app_pushkey ON pushers (app_id, pushkey);
CREATE INDEX pushers_device ON pushers (user_id, device_id);
