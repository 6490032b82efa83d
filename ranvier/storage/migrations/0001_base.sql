-- Base schema: bookkeeping for the migration runner and stream positions.
-- Migrations are applied in order by ranvier/storage/engine.py, each in its
-- own transaction together with its schema_version row. Column types that
-- differ between SQLite and PostgreSQL are written as {{ID_PK}} / {{BLOB}};
-- a migration that needs more can ship NNNN_name.sqlite.sql and
-- NNNN_name.postgres.sql instead of NNNN_name.sql.

-- One row per applied migration; MAX(version) is the schema version.
CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
);

-- The last allocated position of each stream (events, typing, receipts,
-- to_device, device_lists, ...). See next_stream_positions() in engine.py for
-- why positions are allocated by an upsert on this table inside the writing
-- transaction.
CREATE TABLE stream_positions (
    stream_name TEXT NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL CHECK (position > 0)
);
