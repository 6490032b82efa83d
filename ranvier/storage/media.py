"""Store of media metadata (Client-Server API, "Content repository").

Rows only: the bytes are files in the media store folder, named by SHA-256
(``ranvier/services/media/files.py``). See migration ``*_media.sql``.

Every download and thumbnail request reads a media row and, for thumbnails,
the media's thumbnail rows: both are cached here (bounded LRU). A stored
media is immutable once uploaded; what changes it is a quarantine, a
deletion, the completion of a pending upload, the re-caching of a remote
file and a new thumbnail, and each of those writers invalidates (or updates)
the entries it touches. Writers in *another* process (the ``ranvier media``
command, another server on the same database) cannot reach this cache: the
media service drops all of it when such a writer announces a change
(``MediaFiles.change_mark`` in ``services/media/files.py``). Rows of pending
uploads and unknown IDs are never cached (they change, and unknown IDs would
let anyone flush the cache).
"""

from __future__ import annotations

from dataclasses import dataclass

from ranvier.storage.cache import ReadCache
from ranvier.storage.engine import Database, Row

_MEDIA_COLUMNS = (
    "server_name, media_id, user_id, content_type, upload_name, size, sha256, "
    "created_ts, uploaded_ts, expires_ts, quarantined"
)
_THUMB_COLUMNS = "width, height, method, animated, content_type, size, sha256"
#: Media (and their thumbnail lists) whose rows stay cached, least recently used
#: dropped beyond: ~0.5 KiB each, so at most a few MiB.
CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class MediaRecord:
    server_name: str
    media_id: str
    user_id: str | None
    content_type: str | None
    upload_name: str | None
    size: int | None
    sha256: str | None  # None while an asynchronous upload is pending
    created_ts: int
    uploaded_ts: int | None
    expires_ts: int | None
    quarantined: bool

    @property
    def pending(self) -> bool:
        return self.sha256 is None


@dataclass(frozen=True, slots=True)
class ThumbnailRecord:
    width: int
    height: int
    method: str
    animated: bool
    content_type: str
    size: int
    sha256: str


def _media(row: Row) -> MediaRecord:
    return MediaRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        None if row[5] is None else int(row[5]),
        row[6],
        int(row[7]),
        None if row[8] is None else int(row[8]),
        None if row[9] is None else int(row[9]),
        bool(row[10]),
    )


def _thumbnail(row: Row) -> ThumbnailRecord:
    return ThumbnailRecord(
        int(row[0]), int(row[1]), row[2], bool(row[3]), row[4], int(row[5]), row[6]
    )


def _stored(record: MediaRecord | None) -> bool:
    return record is not None and not record.pending


class MediaStore:
    def __init__(self, database: Database, cache_size: int = CACHE_SIZE) -> None:
        self.database = database
        self._records: ReadCache[tuple[str, str], MediaRecord | None] = ReadCache(cache_size)
        self._thumbnails: ReadCache[tuple[str, str], tuple[ThumbnailRecord, ...]] = ReadCache(
            cache_size
        )

    def forget_all(self) -> None:
        """Drop every cached row (another process changed media rows)."""
        self._records.clear()
        self._thumbnails.clear()

    def _forget(self, server_name: str, media_id: str) -> None:
        key = (server_name, media_id)
        self._records.invalidate((key,))
        self._thumbnails.invalidate((key,))

    async def get(self, server_name: str, media_id: str) -> MediaRecord | None:
        """The media row (cached once the upload is complete)."""
        return await self._records.get(
            (server_name, media_id), lambda: self._read(server_name, media_id), _stored
        )

    async def _read(self, server_name: str, media_id: str) -> MediaRecord | None:
        row = await self.database.fetch_one(
            f"SELECT {_MEDIA_COLUMNS} FROM media WHERE server_name = ? AND media_id = ?",
            server_name,
            media_id,
        )
        return None if row is None else _media(row)

    async def insert(self, record: MediaRecord) -> None:
        """A new row (an upload, a created ID or a cached remote file)."""
        await self.database.execute(
            f"INSERT INTO media ({_MEDIA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            record.server_name,
            record.media_id,
            record.user_id,
            record.content_type,
            record.upload_name,
            record.size,
            record.sha256,
            record.created_ts,
            record.uploaded_ts,
            record.expires_ts,
            record.quarantined,
        )
        if _stored(record):
            # A new media: its row as written, and no thumbnail yet.
            key = (record.server_name, record.media_id)
            self._records.set(key, record)
            self._thumbnails.set(key, ())

    async def upsert_remote(self, record: MediaRecord) -> None:
        """Cache (or re-cache) a remote file's metadata."""
        self._forget(record.server_name, record.media_id)
        async with self.database.transaction() as txn:
            await txn.execute(
                "DELETE FROM media WHERE server_name = ? AND media_id = ?",
                record.server_name,
                record.media_id,
            )
            await txn.execute(
                f"INSERT INTO media ({_MEDIA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                record.server_name,
                record.media_id,
                record.user_id,
                record.content_type,
                record.upload_name,
                record.size,
                record.sha256,
                record.created_ts,
                record.uploaded_ts,
                record.expires_ts,
                record.quarantined,
            )
        self._forget(record.server_name, record.media_id)

    async def complete_pending(
        self,
        server_name: str,
        media_id: str,
        *,
        content_type: str | None,
        upload_name: str | None,
        size: int,
        sha256: str,
        uploaded_ts: int,
    ) -> bool:
        """Fill a pending row; False if it was no longer pending (someone won the race)."""
        count = await self.database.execute(
            "UPDATE media SET content_type = ?, upload_name = ?, size = ?, sha256 = ?, "
            "uploaded_ts = ?, expires_ts = NULL "
            "WHERE server_name = ? AND media_id = ? AND sha256 IS NULL",
            content_type,
            upload_name,
            size,
            sha256,
            uploaded_ts,
            server_name,
            media_id,
        )
        self._forget(server_name, media_id)
        return count == 1

    async def count_pending(self, user_id: str, now_ms: int) -> int:
        """Created IDs of ``user_id`` not yet uploaded and not expired."""
        value = await self.database.fetch_val(
            "SELECT COUNT(*) FROM media WHERE user_id = ? AND sha256 IS NULL AND expires_ts > ?",
            user_id,
            now_ms,
        )
        return int(value or 0)

    async def delete_expired_pending(self, user_id: str, now_ms: int) -> None:
        await self.database.execute(
            "DELETE FROM media WHERE user_id = ? AND sha256 IS NULL AND expires_ts <= ?",
            user_id,
            now_ms,
        )

    async def set_quarantined(self, server_name: str, media_id: str, quarantined: bool) -> bool:
        count = await self.database.execute(
            "UPDATE media SET quarantined = ? WHERE server_name = ? AND media_id = ?",
            quarantined,
            server_name,
            media_id,
        )
        self._forget(server_name, media_id)
        return count == 1

    async def list_for_user(self, user_id: str) -> list[MediaRecord]:
        rows = await self.database.fetch_all(
            f"SELECT {_MEDIA_COLUMNS} FROM media WHERE user_id = ? ORDER BY created_ts, media_id",
            user_id,
        )
        return [_media(row) for row in rows]

    async def usage_per_user(self) -> list[tuple[str, int, int]]:
        """(user_id, number of files, total bytes) of every local uploader."""
        rows = await self.database.fetch_all(
            "SELECT user_id, COUNT(*), COALESCE(SUM(size), 0) FROM media "
            "WHERE user_id IS NOT NULL GROUP BY user_id ORDER BY user_id"
        )
        return [(row[0], int(row[1]), int(row[2])) for row in rows]

    async def created_before(
        self, before_ts: int, after: tuple[str, str], limit: int
    ) -> list[MediaRecord]:
        """Media created before ``before_ts``, in key order after ``after`` (a page)."""
        rows = await self.database.fetch_all(
            f"SELECT {_MEDIA_COLUMNS} FROM media WHERE created_ts < ? "
            "AND (server_name > ? OR (server_name = ? AND media_id > ?)) "
            "ORDER BY server_name, media_id LIMIT ?",
            before_ts,
            after[0],
            after[0],
            after[1],
            limit,
        )
        return [_media(row) for row in rows]

    async def delete(self, server_name: str, media_id: str) -> list[str]:
        """Delete a media and its thumbnails; the SHA-256s no row uses any more."""
        self._forget(server_name, media_id)
        try:
            return await self._delete(server_name, media_id)
        finally:
            self._forget(server_name, media_id)

    async def _delete(self, server_name: str, media_id: str) -> list[str]:
        async with self.database.transaction() as txn:
            hashes = {
                str(row[0])
                for row in await txn.fetch_all(
                    "SELECT sha256 FROM media WHERE server_name = ? AND media_id = ? "
                    "AND sha256 IS NOT NULL UNION SELECT sha256 FROM media_thumbnails "
                    "WHERE server_name = ? AND media_id = ?",
                    server_name,
                    media_id,
                    server_name,
                    media_id,
                )
            }
            await txn.execute(
                "DELETE FROM media_thumbnails WHERE server_name = ? AND media_id = ?",
                server_name,
                media_id,
            )
            await txn.execute(
                "DELETE FROM media WHERE server_name = ? AND media_id = ?", server_name, media_id
            )
            unused = []
            for sha in sorted(hashes):
                used = await txn.fetch_val(
                    "SELECT 1 FROM media WHERE sha256 = ? UNION ALL "
                    "SELECT 1 FROM media_thumbnails WHERE sha256 = ? LIMIT 1",
                    sha,
                    sha,
                )
                if used is None:
                    unused.append(sha)
            return unused

    async def sha256_in_use(self, sha256: str) -> bool:
        used = await self.database.fetch_val(
            "SELECT 1 FROM media WHERE sha256 = ? UNION ALL "
            "SELECT 1 FROM media_thumbnails WHERE sha256 = ? LIMIT 1",
            sha256,
            sha256,
        )
        return used is not None

    # --- thumbnails ------------------------------------------------------------------

    async def thumbnails(self, server_name: str, media_id: str) -> tuple[ThumbnailRecord, ...]:
        """The thumbnails made of a media, smallest first (cached)."""
        return await self._thumbnails.get(
            (server_name, media_id), lambda: self._read_thumbnails(server_name, media_id)
        )

    async def _read_thumbnails(
        self, server_name: str, media_id: str
    ) -> tuple[ThumbnailRecord, ...]:
        rows = await self.database.fetch_all(
            f"SELECT {_THUMB_COLUMNS} FROM media_thumbnails "
            "WHERE server_name = ? AND media_id = ? ORDER BY width, height",
            server_name,
            media_id,
        )
        return tuple(_thumbnail(row) for row in rows)

    async def add_thumbnail(self, server_name: str, media_id: str, thumb: ThumbnailRecord) -> None:
        key = (server_name, media_id)
        known = self._thumbnails.peek(key)
        self._thumbnails.invalidate((key,))
        inserted = await self.database.execute(
            f"INSERT INTO media_thumbnails (server_name, media_id, {_THUMB_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (server_name, media_id, width, height, method, animated) DO NOTHING",
            server_name,
            media_id,
            thumb.width,
            thumb.height,
            thumb.method,
            thumb.animated,
            thumb.content_type,
            thumb.size,
            thumb.sha256,
        )
        if inserted == 1 and known is not None and key not in self._thumbnails:
            # The list as it was plus this row, in the order of the query.
            rows = sorted((*known, thumb), key=lambda t: (t.width, t.height))
            self._thumbnails.set(key, tuple(rows))
        else:  # another writer's row won, or the list was never read: read it next time
            self._thumbnails.invalidate((key,))

    # --- references (for deleting old media; an offline, paged scan) ----------------

    async def event_json_page(self, after: int, limit: int) -> list[tuple[int, str]]:
        """(stream_ordering, PDU JSON) of events after ``after``, in order: one page
        of a full scan that never holds more than ``limit`` events."""
        rows = await self.database.fetch_all(
            "SELECT stream_ordering, json FROM events WHERE stream_ordering > ? "
            "AND redacted_by IS NULL ORDER BY stream_ordering LIMIT ?",
            after,
            limit,
        )
        return [(int(row[0]), str(row[1])) for row in rows]

    async def profile_avatar_urls(self) -> list[str]:
        rows = await self.database.fetch_all(
            "SELECT value FROM profiles WHERE field = 'avatar_url'"
        )
        return [str(row[0]) for row in rows]

    # --- URL preview cache -----------------------------------------------------------

    async def cached_preview(self, url: str, at_ts: int, now_ms: int) -> str | None:
        """The newest answer for ``url`` fetched at or before ``at_ts`` and unexpired."""
        value = await self.database.fetch_val(
            "SELECT og FROM media_url_previews WHERE url = ? AND fetched_ts <= ? "
            "AND expires_ts > ? ORDER BY fetched_ts DESC LIMIT 1",
            url,
            at_ts,
            now_ms,
        )
        return None if value is None else str(value)

    async def cache_preview(self, url: str, fetched_ts: int, expires_ts: int, og: str) -> None:
        await self.database.execute(
            "INSERT INTO media_url_previews (url, fetched_ts, expires_ts, og) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (url, fetched_ts) DO NOTHING",
            url,
            fetched_ts,
            expires_ts,
            og,
        )
