"""Media administration for the ``ranvier media`` command: list a user's media,
quarantine, delete old media no event references, disk usage per user.

References are computed when asked, by one paged scan of the events table
(``MediaStore.event_json_page``, a keyset scan of bounded pages) plus profile
avatars, collecting the ``mxc://`` URIs in an event's ``content.url``,
``content.info.thumbnail_url``, ``content.avatar_url`` and the ``url`` of
``content.file`` / ``content.info.thumbnail_file`` (encrypted attachments sent
unencrypted). This is an offline administrator's command, so nothing is added
to the hot path of sending events. Media referenced only from inside
*encrypted* events cannot be seen by the server: the command says so.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ranvier.errors import MatrixError
from ranvier.services.media.files import MediaFiles
from ranvier.storage import Database
from ranvier.storage.media import MediaRecord, MediaStore

_PAGE = 1000
_DAY_MS = 86_400_000
_BEFORE_ALL = -(2**62)  # backfilled events have negative orderings


@dataclass(frozen=True, slots=True)
class DeletionReport:
    deleted: list[str]  # mxc:// URIs
    kept_referenced: int
    freed_files: int


def parse_mxc(uri: str) -> tuple[str, str]:
    if not uri.startswith("mxc://") or "/" not in uri[len("mxc://") :]:
        raise MatrixError(400, "M_INVALID_PARAM", f"Not an mxc:// URI: {uri!r}")
    server_name, _, media_id = uri[len("mxc://") :].partition("/")
    return server_name, media_id


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


def _uris_in(content: Any) -> Iterator[str]:
    info = _field(content, "info")
    candidates = (
        _field(content, "url"),
        _field(content, "avatar_url"),
        _field(info, "thumbnail_url"),
        _field(_field(content, "file"), "url"),
        _field(_field(info, "thumbnail_file"), "url"),
    )
    for value in candidates:
        if isinstance(value, str) and value.startswith("mxc://"):
            yield value


class MediaAdmin:
    def __init__(self, database: Database, store_path: Path, clock_ms: Callable[[], int]) -> None:
        self.store = MediaStore(database)
        self.files = MediaFiles(store_path)
        self.clock_ms = clock_ms

    async def list_user_media(self, user_id: str) -> list[MediaRecord]:
        return await self.store.list_for_user(user_id)

    async def quarantine(self, uri: str, quarantined: bool = True) -> bool:
        """Quarantined media answer 404 to everyone (clients and servers)."""
        server_name, media_id = parse_mxc(uri)
        found = await self.store.set_quarantined(server_name, media_id, quarantined)
        if found:
            # Running servers cache media rows: make them read this one again.
            await asyncio.to_thread(self.files.announce_change)
        return found

    async def usage(self) -> list[tuple[str, int, int]]:
        return await self.store.usage_per_user()

    async def referenced_uris(self) -> set[str]:
        referenced: set[str] = set()
        for raw_value in await self.store.profile_avatar_urls():  # JSON values
            try:
                value = orjson.loads(raw_value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, str):
                referenced.add(value)
        after = _BEFORE_ALL
        while page := await self.store.event_json_page(after, _PAGE):
            for ordering, raw in page:
                after = ordering
                try:
                    event = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                referenced.update(_uris_in(event.get("content")))
        return referenced

    async def delete_old_unreferenced(self, days: int, *, dry_run: bool) -> DeletionReport:
        """Local media created more than ``days`` ago that no event or profile
        references, and cached remote media older than that (fetchable again)."""
        before = self.clock_ms() - days * _DAY_MS
        referenced = await self.referenced_uris()
        deleted: list[str] = []
        kept = freed = 0
        cursor = ("", "")
        while page := await self.store.created_before(before, cursor, _PAGE):
            cursor = (page[-1].server_name, page[-1].media_id)
            for record in page:
                uri = f"mxc://{record.server_name}/{record.media_id}"
                if record.user_id is not None and uri in referenced:
                    kept += 1
                    continue
                deleted.append(uri)
                if not dry_run:
                    unused = await self.store.delete(record.server_name, record.media_id)
                    # Before the files go: a server must not serve a cached row
                    # whose file is missing (it would answer 404 anyway).
                    await asyncio.to_thread(self.files.announce_change)
                    for sha in unused:
                        await self.files.delete(sha)
                        freed += 1
        return DeletionReport(deleted, kept, freed)


def format_ts(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
