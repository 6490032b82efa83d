-- The content repository (Client-Server API, "Content repository";
-- ranvier/storage/media.py, ranvier/services/media/).
--
-- One row per mxc:// URI we hold: our own uploads (server_name is ours) and
-- the cache of other servers' media. The bytes live in the media store folder,
-- named by their SHA-256 (sha256), so two uploads of the same bytes share one
-- file. An asynchronous upload (POST /_matrix/media/v1/create) is a row with
-- uploaded_ts NULL until its PUT arrives; expires_ts is its unused_expires_at.
CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    uploaded_ts BIGINT,
    expires_ts BIGINT,
    quarantined BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (server_name, media_id)
);
-- A user's media (CLI listing, disk usage, pending-upload limit).
CREATE INDEX media_user ON media (user_id, created_ts);
-- Whether a file is still used before it is deleted.
CREATE INDEX media_sha256 ON media (sha256);
-- Cleanup of old media.
CREATE INDEX media_created ON media (created_ts);

-- Generated thumbnails, cached: one per media, size, method and animation.
CREATE TABLE media_thumbnails (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    animated BOOLEAN NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (server_name, media_id, width, height, method, animated)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);

-- URL previews (GET /media/preview_url), cached per URL: og is the answer's
-- JSON; an answer serves requests until expires_ts.
CREATE TABLE media_url_previews (
    url TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL,
    og TEXT NOT NULL,
    PRIMARY KEY (url, fetched_ts)
);
