"""URL previews (Client-Server API, "Content repository", GET /media/preview_url).

Off unless ``media.url_preview.enabled`` (as in Synapse: fetching URLs for
users is an SSRF risk and leaks what they read). When on:

* SSRF guard: every address a host resolves to is checked, private,
  loopback, link-local, CGNAT... ones dropped (the federation guard's list,
  ``address_guard.is_denied``), IP literals checked before connecting, and
  redirects followed by hand so each hop passes the same checks; unless
  ``media.url_preview.allow_private_addresses``.
* Limits: ``media.url_preview.max_size`` bytes per fetch, read as they arrive;
  ``media.url_preview.timeout`` for each fetch; at most ``MAX_REDIRECTS`` hops.
* Content: HTML gives OpenGraph ``og:*`` properties, else ``<title>`` and
  ``<meta name="description">``; the ``og:image`` (or an image URL itself) is
  fetched the same way and stored as media: ``og:image`` becomes its
  ``mxc://`` URI with ``matrix:image:size``.
* Cache: the answer per URL, in the database, for ``CACHE_MS``; a ``ts`` in
  the past is served from the newest cached answer not younger than it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from yarl import URL

from ranvier.errors import MatrixError
from ranvier.services.federation.address_guard import GuardedResolver, is_denied
from ranvier.services.federation.dns import Dns, SystemDns
from ranvier.services.outbound import outbound_ssl_context

if TYPE_CHECKING:
    from ranvier.services.media.service import MediaService

MAX_REDIRECTS = 5
CACHE_MS = 3_600_000
_CHUNK = 64 * 1024
USER_AGENT = "Ranvier URL preview (like Synapse; +https://matrix.org)"

Deny = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


class PreviewRefused(Exception):
    """The URL (or a hop of its redirects) points at a refused address."""


def _no_address(host: str) -> Exception:
    return PreviewRefused(f"{host} has no address we may fetch from")


def _refused(url: str) -> MatrixError:
    return MatrixError(
        403, "M_FORBIDDEN", f"URL previews of private or local addresses are not allowed: {url}"
    )


class _OpenGraph(HTMLParser):
    """``og:*`` meta properties, ``<title>`` and the description meta tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title: str | None = None
        self.description: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "meta":
            key = attributes.get("property") or attributes.get("name") or ""
            content = attributes.get("content")
            if content is None:
                return
            if key.startswith("og:") and key not in self.og:
                self.og[key] = content[:1000]
            elif key.lower() == "description" and self.description is None:
                self.description = content[:1000]
        elif tag == "title" and self.title is None:
            self._in_title = True
            self.title = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title and self.title is not None and len(self.title) < 1000:
            self.title += data


def parse_html(html: str) -> dict[str, str]:
    """OpenGraph data of a page, with <title> and description as fall-backs."""
    parser = _OpenGraph()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # HTMLParser on hopeless markup
        pass
    og = dict(parser.og)
    if "og:title" not in og and parser.title and parser.title.strip():
        og["og:title"] = parser.title.strip()
    if "og:description" not in og and parser.description:
        og["og:description"] = parser.description.strip()
    return og


class UrlPreviewer:
    def __init__(self, media: MediaService, dns: Dns | None = None, deny: Deny | None = None):
        self.media = media
        self.config = media.hs.config.media
        allow = self.config.url_preview_allow_private_addresses
        self.deny: Deny = deny or (lambda address: not allow and is_denied(address))
        self._dns = dns or SystemDns()
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._dns, deny=self.deny, refused=_no_address),
                # Its own context (the system's CAs), not aiohttp's default,
                # which the server leaves without CAs (ranvier/entry.py).
                ssl=outbound_ssl_context(None),
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def preview(self, url: str, ts: int | None) -> dict[str, Any]:
        if not self.config.url_preview_enabled:
            # Synapse serves no preview_url endpoint when previews are off.
            raise MatrixError(404, "M_UNRECOGNIZED", "URL previews are disabled on this server")
        target = _parse_url(url)
        now = self.media.hs.clock_ms()
        cached = await self.media.store.cached_preview(url, ts if ts is not None else now, now)
        if cached is not None:
            parsed: dict[str, Any] = orjson.loads(cached)
            return parsed
        og = await self._build(target)
        await self.media.store.cache_preview(url, now, now + CACHE_MS, orjson.dumps(og).decode())
        return og

    async def _build(self, target: URL) -> dict[str, Any]:
        content_type, body, final_url = await self._fetch(target, self.config.url_preview_max_size)
        if content_type.startswith("image/"):
            return await self._image_fields(content_type, body)
        if content_type not in ("text/html", "application/xhtml+xml"):
            return {}
        og: dict[str, Any] = parse_html(body.decode("utf-8", errors="replace"))
        image = og.pop("og:image", None)
        for key in [key for key in og if key.startswith("og:image:")]:
            del og[key]
        if image:
            try:
                image_url = final_url.join(URL(image))
                image_type, image_body, _ = await self._fetch(
                    image_url, self.media.config.max_upload_size
                )
                if image_type.startswith("image/"):
                    og.update(await self._image_fields(image_type, image_body))
            except MatrixError:
                pass  # a preview without its image is still a preview
        return og

    async def _image_fields(self, content_type: str, body: bytes) -> dict[str, Any]:
        async def one() -> AsyncIterator[bytes]:
            yield body

        uri = await self.media.store_server_media(one(), content_type)
        fields: dict[str, Any] = {
            "og:image": uri,
            "og:image:type": content_type,
            "matrix:image:size": len(body),
        }
        size = await asyncio.to_thread(_image_size, body)
        if size is not None:
            fields["og:image:width"], fields["og:image:height"] = size
        return fields

    async def _fetch(self, url: URL, max_size: int) -> tuple[str, bytes, URL]:
        """(content type, body, final URL) after redirects; every hop guarded."""
        timeout = aiohttp.ClientTimeout(total=self.config.url_preview_timeout / 1000)
        for _ in range(MAX_REDIRECTS + 1):
            _check_literal(url, self.deny)
            try:
                async with self._get_session().get(
                    url, allow_redirects=False, timeout=timeout
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in (301, 302, 303, 307, 308) and location:
                        url = _parse_url(str(url.join(URL(location))))
                        continue
                    if response.status != 200:
                        raise MatrixError(502, "M_UNKNOWN", f"The URL answered {response.status}")
                    body = await _read_capped(response, max_size)
                    return response.content_type.lower(), body, url
            except PreviewRefused:
                raise _refused(str(url)) from None
            except aiohttp.ClientConnectorError as error:
                if isinstance(error.os_error, PreviewRefused):
                    raise _refused(str(url)) from None
                raise MatrixError(502, "M_UNKNOWN", f"Could not fetch {url}") from None
            except (TimeoutError, aiohttp.ClientError):
                raise MatrixError(502, "M_UNKNOWN", f"Could not fetch {url}") from None
        raise MatrixError(502, "M_UNKNOWN", "Too many redirects")


def _parse_url(url: str) -> URL:
    try:
        target = URL(url)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "Not a valid URL") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise MatrixError(400, "M_INVALID_PARAM", "Only http and https URLs can be previewed")
    return target


def _check_literal(url: URL, deny: Deny) -> None:
    try:
        address = ipaddress.ip_address((url.host or "").strip("[]"))
    except ValueError:
        return  # a name: the resolver checks each address
    if deny(address):
        raise _refused(str(url))


async def _read_capped(response: aiohttp.ClientResponse, max_size: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > max_size:
        raise MatrixError(502, "M_TOO_LARGE", "The page is too large to preview")
    data = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        data += chunk
        if len(data) > max_size:
            raise MatrixError(502, "M_TOO_LARGE", "The page is too large to preview")
    return bytes(data)


def _image_size(body: bytes) -> tuple[int, int] | None:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(body)) as image:
            width, height = image.size
            return int(width), int(height)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None
