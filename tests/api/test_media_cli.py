"""`ranvier media list|quarantine|delete-old|usage` against a database and media
store filled through the real HTTP API, on both engines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

from click.testing import CliRunner, Result

from ranvier.cli import cli
from ranvier.services.media.files import CHANGES_FILE
from tests.api.accounts_support import AccountsClient
from tests.api.media_support import (
    DOWNLOAD,
    LEGACY_DOWNLOAD,
    THUMBNAIL,
    image_bytes,
    split_mxc,
    upload,
    user_token,
)

V3 = "/_matrix/client/v3"


def media_files(store: Path) -> list[Path]:
    """The stored files (not the store's change mark, CHANGES_FILE)."""
    return sorted(p for p in store.rglob("*") if p.is_file() and p.name != CHANGES_FILE)


async def run_cli(config_path: Path, *args: str) -> Result:
    # The command runs its own event loop: give it a thread of its own.
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["media", *args, "--config", str(config_path)]
    )
    return result


async def setup(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path
) -> tuple[Any, dict[str, str], Path, Path]:
    store = tmp_path / "media"
    # Thumbnails only on request: the file counts below are the uploads' own.
    media = {"store_path": str(store), "thumbnails_on_upload": False}
    client = await accounts_client({"database": migrated_dsn, "media": media})
    config_path = tmp_path / "cli.yaml"
    config_path.write_text(
        f'server_name: "localhost"\ndatabase: "{migrated_dsn}"\nmedia: {{store_path: "{store}"}}\n',
        encoding="utf-8",
    )
    return client, await user_token(client, "alice"), store, config_path


async def test_list_usage_and_quarantine(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path
) -> None:
    client, alice, _, config_path = await setup(accounts_client, migrated_dsn, tmp_path)
    bob = await user_token(client, "bob")
    first = await upload(client, alice, b"12345", "text/plain", "a.txt")
    await upload(client, alice, b"1234567890", "text/plain")
    await upload(client, bob, b"xyz")
    listed = await run_cli(config_path, "list", "@alice:localhost")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert lines[-1] == "2 media, 15 bytes"
    assert any(line.startswith(f"{first}\t5\ttext/plain\ta.txt\t2023-11-14") for line in lines)
    usage = await run_cli(config_path, "usage")
    assert usage.output.splitlines() == ["@alice:localhost\t2\t15", "@bob:localhost\t1\t3"]

    server, media_id = split_mxc(first)
    assert (await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=bob)).status == 200
    result = await run_cli(config_path, "quarantine", first)
    assert result.exit_code == 0 and result.output == f"Quarantined {first}\n"
    for headers in (alice, bob):
        response = await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=headers)
        assert response.status == 404
        assert (await response.json())["errcode"] == "M_NOT_FOUND"
    unknown = await run_cli(config_path, "quarantine", "mxc://localhost/nope")
    assert unknown.exit_code == 1 and "No media mxc://localhost/nope" in unknown.output
    assert (await run_cli(config_path, "quarantine", "--undo", first)).exit_code == 0
    assert (await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=bob)).status == 200


async def test_delete_old_keeps_referenced_media(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path
) -> None:
    client, alice, store, config_path = await setup(accounts_client, migrated_dsn, tmp_path)
    image = await upload(client, alice, image_bytes((50, 50)), "image/png")
    thumb = await upload(client, alice, image_bytes((10, 10)), "image/png")
    avatar = await upload(client, alice, image_bytes((20, 20)), "image/png")
    orphan = await upload(client, alice, b"nobody uses me")
    response = await client.post(f"{V3}/createRoom", json={}, headers=alice)
    room_id = (await response.json())["room_id"]
    content = {
        "msgtype": "m.image",
        "body": "pic",
        "url": image,
        "info": {"thumbnail_url": thumb},
    }
    sent = await client.put(
        f"{V3}/rooms/{quote(room_id)}/send/m.room.message/t1", json=content, headers=alice
    )
    assert sent.status == 200
    put = await client.put(
        f"{V3}/profile/@alice:localhost/avatar_url", json={"avatar_url": avatar}, headers=alice
    )
    assert put.status == 200
    files_before = media_files(store)
    assert len(files_before) == 4

    dry = await run_cli(config_path, "delete-old", "--days", "30")
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines() == [
        orphan,
        "Would delete 1 media (0 files freed); kept 3 still referenced",
    ]
    assert media_files(store) == files_before
    done = await run_cli(config_path, "delete-old", "--days", "30", "--yes")
    assert (
        done.output.splitlines()[-1] == "Deleted 1 media (1 files freed); kept 3 still referenced"
    )
    assert len(media_files(store)) == 3
    server, media_id = split_mxc(orphan)
    gone = await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=alice)
    assert gone.status == 404
    server, media_id = split_mxc(image)
    assert (await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=alice)).status == 200
    # Nothing is older than 10000 days: nothing to delete.
    recent = await run_cli(config_path, "delete-old", "--days", "10000", "--yes")
    assert recent.output.splitlines() == [
        "Deleted 0 media (0 files freed); kept 0 still referenced"
    ]


async def test_quarantine_holds_at_once_for_cached_media_and_thumbnails(
    accounts_client: AccountsClient, database_dsn: str, tmp_path: Path
) -> None:
    """The server caches media rows and thumbnail lists; the command, another
    process, changes the database under it: its next request must see it."""
    client, alice, _, config_path = await setup(accounts_client, database_dsn, tmp_path)
    uri = await upload(client, alice, image_bytes((200, 150)), "image/png")
    server, media_id = split_mxc(uri)
    paths = (
        f"{DOWNLOAD}/{server}/{media_id}",
        f"{LEGACY_DOWNLOAD}/{server}/{media_id}",
        f"{THUMBNAIL}/{server}/{media_id}?width=32&height=32&method=crop",
    )
    for _ in range(2):  # the second time from the cache
        for path in paths:
            assert (await client.get(path, headers=alice)).status == 200, path
    assert (await run_cli(config_path, "quarantine", uri)).exit_code == 0
    for path in paths:
        response = await client.get(path, headers=alice)
        assert response.status == 404, path
        assert (await response.json())["errcode"] == "M_NOT_FOUND"
    assert (await run_cli(config_path, "quarantine", "--undo", uri)).exit_code == 0
    for path in paths:
        assert (await client.get(path, headers=alice)).status == 200, path


async def test_a_quarantine_before_any_download_holds(
    accounts_client: AccountsClient, database_dsn: str, tmp_path: Path
) -> None:
    """An upload caches its row at once; the server read the store's change
    mark when it started: a quarantine made before any download still shows."""
    client, alice, _, config_path = await setup(accounts_client, database_dsn, tmp_path)
    uri = await upload(client, alice, b"first words", "text/plain")
    server, media_id = split_mxc(uri)
    assert (await run_cli(config_path, "quarantine", uri)).exit_code == 0
    response = await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=alice)
    assert response.status == 404
    assert (await response.json())["errcode"] == "M_NOT_FOUND"


async def test_deletion_holds_at_once_for_cached_media_and_thumbnails(
    accounts_client: AccountsClient, database_dsn: str, tmp_path: Path
) -> None:
    client, alice, store, config_path = await setup(accounts_client, database_dsn, tmp_path)
    data = image_bytes((200, 150))
    uri = await upload(client, alice, data, "image/png")
    # The same bytes under another ID, kept by a profile avatar: their shared
    # file must stay served.
    kept = await upload(client, alice, data, "image/png")
    put = await client.put(
        f"{V3}/profile/@alice:localhost/avatar_url", json={"avatar_url": kept}, headers=alice
    )
    assert put.status == 200
    server, media_id = split_mxc(uri)
    thumb = f"{THUMBNAIL}/{server}/{media_id}?width=32&height=32&method=crop"
    download = f"{DOWNLOAD}/{server}/{media_id}"
    for path in (download, thumb, download, thumb):  # cached by the second round
        assert (await client.get(path, headers=alice)).status == 200, path
    done = await run_cli(config_path, "delete-old", "--days", "30", "--yes")
    assert done.output.splitlines()[-1] == (
        "Deleted 1 media (1 files freed); kept 1 still referenced"
    ), done.output
    for path in (download, thumb):
        response = await client.get(path, headers=alice)
        assert response.status == 404, path
        assert (await response.json())["errcode"] == "M_NOT_FOUND"
    kept_server, kept_id = split_mxc(kept)
    response = await client.get(f"{DOWNLOAD}/{kept_server}/{kept_id}", headers=alice)
    assert response.status == 200 and await response.read() == data
    assert len(media_files(store)) == 1  # the shared upload; its thumbnail was freed
