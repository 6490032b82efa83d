"""GET /_matrix/client/v1/media/preview_url (and the legacy path) through the
real HTTP stack, on both engines: off by default, OpenGraph and HTML metadata,
the preview image stored as media, the cache, limits, and the SSRF guard on
every address and every redirect.

The pages come from a local aiohttp server (on 127.0.0.1). So that a page can
be "public" at all in a test, the previewer gets a fake DNS (``site.test`` is
127.0.0.1, ``internal.test`` is 10.1.2.3) and a guard that exempts exactly
127.0.0.1 while refusing every other private address as in production. The
tests of the production guard itself use it unchanged."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ranvier.api.http import HOMESERVER
from ranvier.services.federation.address_guard import is_denied
from ranvier.services.federation.dns import SrvRecord
from tests.api.accounts_support import AccountsClient, Client
from tests.api.media_support import DOWNLOAD, image_bytes, split_mxc, user_token

PREVIEW = "/_matrix/client/v1/media/preview_url"
LEGACY_PREVIEW = "/_matrix/media/v3/preview_url"
LOOPBACK = ipaddress.ip_address("127.0.0.1")

PAGE = b"""<html><head>
<title>Ignored when og:title exists</title>
<meta property="og:title" content="A Matrix page">
<meta property="og:description" content="Decentralised &amp; open">
<meta property="og:image" content="/logo.png">
</head><body>hello</body></html>"""
PLAIN_PAGE = b"""<html><head><title> Plain title </title>
<meta name="description" content="Just a description"></head><body></body></html>"""


FAKE_HOSTS: dict[str, list[str]] = {"site.test": ["127.0.0.1"], "internal.test": ["10.1.2.3"]}


class FakeDns:
    async def srv(self, name: str) -> list[SrvRecord]:
        return []

    async def addresses(self, host: str) -> list[str]:
        return FAKE_HOSTS.get(host, [])


class Site:
    def __init__(self, port: int) -> None:
        self.port = port
        self.hits: list[str] = []

    def url(self, path: str, host: str = "site.test") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def site(aiohttp_server: Any) -> Site:
    app = web.Application()
    holder: list[Site] = []

    def route(path: str, handler: Any) -> None:
        async def counted(request: web.Request) -> web.StreamResponse:
            holder[0].hits.append(path)
            result: web.StreamResponse = await handler(request)
            return result

        app.router.add_get(path, counted)

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=PLAIN_PAGE, content_type="text/html")

    async def logo(request: web.Request) -> web.Response:
        return web.Response(body=image_bytes((120, 80)), content_type="image/png")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"<html>" + b"x" * 50_000, content_type="text/html")

    def redirect(to: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            raise web.HTTPFound(to.format(port=request.url.port))

        return handler

    route("/page", page)
    route("/plain", plain)
    route("/logo.png", logo)
    route("/big", big)
    route("/hop1", redirect("/hop2"))
    route("/hop2", redirect("http://internal.test:{port}/page"))
    route("/to-metadata", redirect("http://169.254.169.254/latest/meta-data"))
    route("/to-loopback-name", redirect("http://localhost:{port}/page"))
    server = await aiohttp_server(app, host="127.0.0.1")
    holder.append(Site(server.port))
    return holder[0]


async def preview_client(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path, **media: Any
) -> tuple[Client, dict[str, str]]:
    client = await accounts_client(
        {
            "database": migrated_dsn,
            "media": {"store_path": str(tmp_path / "media"), **media},
        }
    )
    return client, await user_token(client)


def exempt_test_site(client: Client) -> None:
    previewer = client.app[HOMESERVER].media.previewer
    previewer._dns = FakeDns()
    previewer.deny = lambda address: address != LOOPBACK and is_denied(address)


async def get_preview(client: Client, headers: dict[str, str], url: str, **extra: str) -> Any:
    return await client.get(PREVIEW, params={"url": url, **extra}, headers=headers)


async def error(response: Any) -> tuple[int, str]:
    return response.status, (await response.json())["errcode"]


async def test_off_by_default(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path, site: Site
) -> None:
    client, alice = await preview_client(accounts_client, migrated_dsn, tmp_path)
    response = await get_preview(client, alice, site.url("/page"))
    assert await error(response) == (404, "M_UNRECOGNIZED")
    assert site.hits == []


@pytest.fixture
async def enabled(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path
) -> tuple[Client, dict[str, str]]:
    return await preview_client(
        accounts_client,
        migrated_dsn,
        tmp_path,
        url_preview_enabled=True,
        url_preview_max_size=20_000,
    )


async def test_opengraph_preview_with_image_and_cache(enabled: Any, site: Site) -> None:
    client, alice = enabled
    exempt_test_site(client)
    response = await get_preview(client, alice, site.url("/page"))
    assert response.status == 200, await response.text()
    body = await response.json()
    image = body.pop("og:image")
    assert body == {
        "og:title": "A Matrix page",
        "og:description": "Decentralised & open",
        "og:image:type": "image/png",
        "og:image:width": 120,
        "og:image:height": 80,
        "matrix:image:size": len(image_bytes((120, 80))),
    }
    server, media_id = split_mxc(image)
    stored = await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=alice)
    assert await stored.read() == image_bytes((120, 80))
    assert site.hits == ["/page", "/logo.png"]
    again = await client.get(LEGACY_PREVIEW, params={"url": site.url("/page")}, headers=alice)
    assert (await again.json())["og:image"] == image
    assert site.hits == ["/page", "/logo.png"]  # served from the cache


async def test_title_and_description_fallback(enabled: Any, site: Site) -> None:
    client, alice = enabled
    exempt_test_site(client)
    response = await get_preview(client, alice, site.url("/plain"))
    assert await response.json() == {
        "og:title": "Plain title",
        "og:description": "Just a description",
    }


async def test_image_url_itself(enabled: Any, site: Site) -> None:
    client, alice = enabled
    exempt_test_site(client)
    body = await (await get_preview(client, alice, site.url("/logo.png"))).json()
    assert body["og:image"].startswith("mxc://") and body["og:image:width"] == 120


@pytest.mark.parametrize(
    "path",
    ["/hop1", "/to-metadata", "/to-loopback-name"],
    ids=["to-10/8", "to-169.254", "to-localhost"],
)
async def test_redirect_into_a_private_range_is_refused(
    enabled: Any, site: Site, path: str
) -> None:
    client, alice = enabled
    exempt_test_site(client)
    response = await get_preview(client, alice, site.url(path))
    assert await error(response) == (403, "M_FORBIDDEN")
    assert "/page" not in site.hits  # the private target was never fetched


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "10.0.0.1", "169.254.169.254"])
async def test_private_addresses_are_refused_by_the_real_guard(
    enabled: Any, site: Site, host: str
) -> None:
    client, alice = enabled  # no exemption: the production guard and DNS
    response = await get_preview(client, alice, site.url("/page", host=host))
    assert await error(response) == (403, "M_FORBIDDEN")
    assert site.hits == []


async def test_allow_private_addresses_switch(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path, site: Site
) -> None:
    client, alice = await preview_client(
        accounts_client,
        migrated_dsn,
        tmp_path,
        url_preview_enabled=True,
        url_preview_allow_private_addresses=True,
    )
    response = await get_preview(client, alice, site.url("/plain", host="127.0.0.1"))
    assert (await response.json())["og:title"] == "Plain title"


async def test_limits_and_bad_urls(enabled: Any, site: Site) -> None:
    client, alice = enabled
    exempt_test_site(client)
    assert await error(await get_preview(client, alice, site.url("/big"))) == (502, "M_TOO_LARGE")
    assert await error(await get_preview(client, alice, site.url("/missing"))) == (502, "M_UNKNOWN")
    assert await error(await get_preview(client, alice, "ftp://site.test/")) == (
        400,
        "M_INVALID_PARAM",
    )
    assert await error(await get_preview(client, alice, "not a url")) == (400, "M_INVALID_PARAM")
    missing = await client.get(PREVIEW, headers=alice)
    assert await error(missing) == (400, "M_MISSING_PARAM")
    assert await error(await client.get(PREVIEW, params={"url": site.url("/page")})) == (
        401,
        "M_MISSING_TOKEN",
    )
