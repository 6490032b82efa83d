"""The media store's cache of media and thumbnail rows, on both engines: every
writer of this store is seen at once by its next read, two stores on one
database (two processes) see each other's writes once ``forget_all`` runs,
and rows that may still change (pending uploads, unknown IDs) are not kept."""

from __future__ import annotations

from dataclasses import replace

from ranvier.storage import Database
from ranvier.storage.media import MediaRecord, MediaStore, ThumbnailRecord

SERVER = "localhost"
SHA = "a" * 64
THUMB_SHA = "b" * 64


def _record(media_id: str = "m1", *, sha256: str | None = SHA) -> MediaRecord:
    return MediaRecord(
        SERVER,
        media_id,
        "@alice:localhost",
        "image/png",
        "cat.png",
        None if sha256 is None else 10,
        sha256,
        1_000,
        None if sha256 is None else 1_000,
        None if sha256 is not None else 9_000,
        False,
    )


def _thumb(width: int, height: int, sha256: str = THUMB_SHA) -> ThumbnailRecord:
    return ThumbnailRecord(width, height, "scale", False, "image/jpeg", 5, sha256)


async def test_quarantine_and_its_undo_are_read_at_once(database: Database) -> None:
    store = MediaStore(database)
    await store.insert(_record())
    assert await store.get(SERVER, "m1") == _record()  # cached from here on
    assert await store.set_quarantined(SERVER, "m1", True)
    assert await store.get(SERVER, "m1") == replace(_record(), quarantined=True)
    assert await store.set_quarantined(SERVER, "m1", False)
    assert await store.get(SERVER, "m1") == _record()


async def test_delete_forgets_the_media_and_its_thumbnails(database: Database) -> None:
    store = MediaStore(database)
    await store.insert(_record())
    await store.add_thumbnail(SERVER, "m1", _thumb(32, 32))
    assert await store.get(SERVER, "m1") is not None
    assert await store.thumbnails(SERVER, "m1") == (_thumb(32, 32),)
    assert sorted(await store.delete(SERVER, "m1")) == [SHA, THUMB_SHA]
    assert await store.get(SERVER, "m1") is None
    assert await store.thumbnails(SERVER, "m1") == ()


async def test_new_thumbnails_join_the_cached_list_in_size_order(database: Database) -> None:
    store = MediaStore(database)
    other = MediaStore(database)  # reads the database, never this store's cache
    await store.insert(_record())
    assert await store.thumbnails(SERVER, "m1") == ()
    await store.add_thumbnail(SERVER, "m1", _thumb(320, 240))
    await store.add_thumbnail(SERVER, "m1", _thumb(96, 96, "c" * 64))
    expected = (_thumb(96, 96, "c" * 64), _thumb(320, 240))
    assert await store.thumbnails(SERVER, "m1") == expected
    assert await other.thumbnails(SERVER, "m1") == expected
    # The same size again (another writer was first): the row stored stays, and so
    # does what the cache says.
    await store.add_thumbnail(SERVER, "m1", _thumb(320, 240, "d" * 64))
    assert await store.thumbnails(SERVER, "m1") == expected


async def test_a_thumbnail_added_elsewhere_shows_after_forget_all(database: Database) -> None:
    server_a, server_b = MediaStore(database), MediaStore(database)
    await server_a.insert(_record())
    assert await server_a.thumbnails(SERVER, "m1") == ()
    await server_b.add_thumbnail(SERVER, "m1", _thumb(32, 32))
    assert await server_a.thumbnails(SERVER, "m1") == ()  # cached: not seen yet
    server_a.forget_all()
    assert await server_a.thumbnails(SERVER, "m1") == (_thumb(32, 32),)


async def test_a_quarantine_elsewhere_shows_after_forget_all(database: Database) -> None:
    server, command = MediaStore(database), MediaStore(database)
    await server.insert(_record())
    assert await server.get(SERVER, "m1") == _record()
    assert await command.set_quarantined(SERVER, "m1", True)
    assert (await server.get(SERVER, "m1") or _record()).quarantined is False  # cached
    server.forget_all()
    assert await server.get(SERVER, "m1") == replace(_record(), quarantined=True)


async def test_pending_uploads_and_unknown_ids_are_not_kept(database: Database) -> None:
    store, other = MediaStore(database), MediaStore(database)
    assert await store.get(SERVER, "later") is None
    await other.insert(_record("later"))
    assert await store.get(SERVER, "later") == _record("later")  # None was not kept

    pending = _record("p1", sha256=None)
    await store.insert(pending)
    assert await store.get(SERVER, "p1") == pending
    completed = await other.complete_pending(
        SERVER,
        "p1",
        content_type="text/plain",
        upload_name=None,
        size=3,
        sha256=SHA,
        uploaded_ts=2_000,
    )
    assert completed
    record = await store.get(SERVER, "p1")
    assert record is not None and (record.sha256, record.size, record.pending) == (SHA, 3, False)


async def test_completing_a_pending_upload_here_is_read_at_once(database: Database) -> None:
    store = MediaStore(database)
    await store.insert(_record("p2", sha256=None))
    assert await store.complete_pending(
        SERVER, "p2", content_type=None, upload_name="x", size=4, sha256=SHA, uploaded_ts=3_000
    )
    record = await store.get(SERVER, "p2")
    assert record is not None and (record.sha256, record.upload_name) == (SHA, "x")


async def test_re_caching_remote_media_replaces_the_cached_row(database: Database) -> None:
    store = MediaStore(database)
    remote = replace(_record("r1"), server_name="remote.example", user_id=None)
    await store.upsert_remote(remote)
    assert await store.get("remote.example", "r1") == remote
    fresher = replace(remote, content_type="image/webp", uploaded_ts=5_000)
    await store.upsert_remote(fresher)
    assert await store.get("remote.example", "r1") == fresher


async def test_the_cache_is_bounded(database: Database) -> None:
    store, other = MediaStore(database, cache_size=2), MediaStore(database)
    for media_id in ("a", "b", "c"):
        await store.insert(_record(media_id))
    # "a" was dropped (least recently used): a change elsewhere is read for it.
    assert await other.set_quarantined(SERVER, "a", True)
    record = await store.get(SERVER, "a")
    assert record is not None and record.quarantined
