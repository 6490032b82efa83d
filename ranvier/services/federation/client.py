"""The outbound federation HTTP client: discovery, TLS, the SSRF guard, capped answers.

``FederationClient.request_json`` sends one request to a server name and
returns the parsed JSON answer, or raises a ``FederationError``:
``FederationUnreachable`` (discovery, connection, timeout; with the subclasses
``FederationAddressDenied`` for the SSRF guard and ``FederationTlsError`` for a
certificate that is not valid for the expected name), ``FederationBadResponse``
(not JSON, too large) or ``FederationResponseError`` (a non-2xx answer, with the
remote's status and errcode).

Server-Server API, "TLS": certificates are checked against the system's CAs,
plus ``federation.trusted_ca_file`` if set, for the name discovery says
(``ResolvedServer.tls_name``). Requests are never redirected and never go
through an HTTP proxy from the environment: both would take them around the
SSRF guard and the certificate check.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from yarl import URL

from ranvier.config import FederationConfig
from ranvier.services.federation.address_guard import (
    AddressDenied,
    GuardedResolver,
    check_ip_literal,
)
from ranvier.services.federation.discovery import (
    DiscoveryError,
    ResolvedServer,
    ResponseTooLarge,
    ServerResolver,
    read_body_capped,
)
from ranvier.services.federation.dns import Dns, SystemDns
from ranvier.services.outbound import USER_AGENT, outbound_ssl_context

# (method, destination, path with query, JSON content or None) -> the Authorization
# header value (Server-Server API, "Request Authentication"); the X-Matrix signer
# plugs in here.
AuthorizationHook = Callable[[str, str, str, Any], str]
Query = Mapping[str, str | list[str]]


class FederationError(Exception):
    """A federation request to ``destination`` failed."""

    def __init__(self, destination: str, message: str) -> None:
        super().__init__(f"{destination}: {message}")
        self.destination = destination


class FederationUnreachable(FederationError):
    """No answer: the name did not resolve, no connection, or it timed out."""


class FederationAddressDenied(FederationUnreachable):
    """Every address of the destination is private; no connection was opened (SSRF guard)."""


class FederationTlsError(FederationUnreachable):
    """The TLS handshake failed, e.g. the certificate is not valid for the expected name."""


class FederationBadResponse(FederationError):
    """An answer that is not JSON or is larger than ``federation.max_response_size``."""


class FederationResponseError(FederationError):
    """A non-2xx answer; ``errcode`` and ``error`` as the remote's Matrix error gave them."""

    def __init__(self, destination: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        fields = body if isinstance(body, dict) else {}
        errcode, error = fields.get("errcode"), fields.get("error")
        self.errcode: str | None = errcode if isinstance(errcode, str) else None
        self.error: str | None = error if isinstance(error, str) else None
        super().__init__(destination, f"HTTP {status} {self.errcode or ''} {self.error or ''}")


def build_session(config: FederationConfig, dns: Dns) -> aiohttp.ClientSession:
    """An aiohttp session whose every connection passes the SSRF guard and the TLS check."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(dns, allow_private=config.allow_private_addresses),
        ssl=outbound_ssl_context(config.trusted_ca_file),
    )
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, headers={"User-Agent": USER_AGENT}
    )


def encode_query(query: Query | None) -> str:
    """``a=1&b=x&b=y``, percent-encoded; what the X-Matrix signature covers."""
    if not query:
        return ""
    return urlencode(
        [(name, value) for name, values in query.items() for value in _as_list(values)],
        quote_via=quote,
        safe="",
    )


def _as_list(values: str | list[str]) -> list[str]:
    return [values] if isinstance(values, str) else values


class FederationClient:
    def __init__(
        self,
        config: FederationConfig,
        *,
        dns: Dns | None = None,
        authorization: AuthorizationHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._dns = dns if dns is not None else SystemDns()
        self._authorization = authorization
        self._clock = clock
        self._rng = rng
        self._session: aiohttp.ClientSession | None = None
        self._resolver: ServerResolver | None = None

    @property
    def resolver(self) -> ServerResolver:
        """Server discovery, sharing this client's guarded session and its .well-known cache."""
        if self._resolver is None:
            self._resolver = ServerResolver(
                self._dns,
                self._get_session(),
                allow_private_addresses=self._config.allow_private_addresses,
                clock=self._clock,
                rng=self._rng,
            )
        return self._resolver

    def _get_session(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the running event loop.
        if self._session is None:
            self._session = build_session(self._config, self._dns)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._resolver = None

    async def request_json(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Query | None = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send ``method path?query`` with JSON ``content`` to ``destination``; its JSON answer.

        ``path`` is already percent-encoded (e.g. room IDs in it); ``query``
        values are encoded here. Connection failures move on to the next
        target discovery gave (SRV records); nothing else is retried.
        """
        try:
            server = await self.resolver.resolve(destination)
        except DiscoveryError as error:
            raise FederationUnreachable(destination, str(error)) from None
        query_string = encode_query(query)
        path_with_query = f"{path}?{query_string}" if query_string else path
        request_headers = self._request_headers(
            method, server, path_with_query, content, headers
        )
        body = None if content is None else orjson.dumps(content)
        last_error: FederationUnreachable | None = None
        for host, port in server.targets:
            url = _target_url(host, port, path, query_string)
            try:
                return await self._send(method, url, server, request_headers, body)
            except _ConnectFailed as failure:
                last_error = failure.error
        assert last_error is not None  # discovery always gives at least one target
        raise last_error

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, destination: str, path: str, *, query: Query | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Like ``request_json``, but the 2xx response is handed over unread, for
        bodies too big to hold (federation media); the caller caps what it reads.
        A non-2xx answer raises ``FederationResponseError`` as ``request_json`` does."""
        try:
            server = await self.resolver.resolve(destination)
        except DiscoveryError as error:
            raise FederationUnreachable(destination, str(error)) from None
        query_string = encode_query(query)
        path_with_query = f"{path}?{query_string}" if query_string else path
        headers = self._request_headers(method, server, path_with_query, None, None)
        response = await self._open(method, server, path, query_string, headers)
        try:
            if not 200 <= response.status < 300:
                await self._answer(destination, response)  # raises with the remote's error
            yield response
        except aiohttp.ClientError as error:
            raise FederationUnreachable(destination, f"{path}: {error}") from None
        finally:
            response.release()

    async def _open(
        self,
        method: str,
        server: ResolvedServer,
        path: str,
        query_string: str,
        headers: Mapping[str, str],
    ) -> aiohttp.ClientResponse:
        """The response of the first target that connects (its body unread)."""
        destination = server.server_name
        last_error: FederationUnreachable | None = None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._config.request_timeout / 1000,
            sock_read=self._config.request_timeout / 1000,
        )  # fmt: skip
        for host, port in server.targets:
            url = _target_url(host, port, path, query_string)
            try:
                check_ip_literal(url.host or "", allow_private=self._config.allow_private_addresses)
                return await self._get_session().request(
                    method,
                    url,
                    headers=headers,
                    server_hostname=server.tls_name,
                    allow_redirects=False,
                    timeout=timeout,
                )
            except AddressDenied as error:
                last_error = FederationAddressDenied(destination, str(error))
            except aiohttp.ClientConnectorError as error:
                last_error = _connect_error(destination, url, error)
            except TimeoutError:
                raise FederationUnreachable(destination, f"{url} timed out") from None
            except aiohttp.ClientError as error:
                raise FederationUnreachable(destination, f"{url}: {error}") from None
        assert last_error is not None  # discovery always gives at least one target
        raise last_error

    @contextlib.asynccontextmanager
    async def get_url(self, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET a plain URL through the guarded session (no signature, no redirects
        followed: the caller decides), e.g. the ``Location`` a federation media
        download points at. Every address passes the SSRF guard."""
        target = URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise FederationBadResponse(target.host or "?", f"not an http(s) URL: {url!r}")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._config.request_timeout / 1000,
            sock_read=self._config.request_timeout / 1000,
        )  # fmt: skip
        try:
            check_ip_literal(target.host, allow_private=self._config.allow_private_addresses)
            response = await self._get_session().get(target, allow_redirects=False, timeout=timeout)
        except AddressDenied as error:
            raise FederationAddressDenied(target.host, str(error)) from None
        except aiohttp.ClientConnectorError as error:
            raise _connect_error(target.host, target, error) from None
        except (TimeoutError, aiohttp.ClientError) as error:
            raise FederationUnreachable(target.host, f"{url}: {error!r}") from None
        try:
            yield response
        except aiohttp.ClientError as error:
            raise FederationUnreachable(target.host, f"{url}: {error}") from None
        finally:
            response.release()

    def _request_headers(
        self,
        method: str,
        server: ResolvedServer,
        path_with_query: str,
        content: Any,
        extra: Mapping[str, str] | None,
    ) -> dict[str, str]:
        headers = {"Host": server.host_header, **(extra or {})}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if self._authorization is not None:
            headers["Authorization"] = self._authorization(
                method, server.server_name, path_with_query, content
            )
        return headers

    async def _send(
        self,
        method: str,
        url: URL,
        server: ResolvedServer,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> Any:
        destination = server.server_name
        timeout = aiohttp.ClientTimeout(total=self._config.request_timeout / 1000)
        try:
            check_ip_literal(url.host or "", allow_private=self._config.allow_private_addresses)
            async with self._get_session().request(
                method,
                url,
                data=body,
                headers=headers,
                server_hostname=server.tls_name,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                return await self._answer(destination, response)
        except AddressDenied as error:
            raise _ConnectFailed(FederationAddressDenied(destination, str(error))) from None
        except aiohttp.ClientConnectorError as error:
            raise _ConnectFailed(_connect_error(destination, url, error)) from None
        except TimeoutError:
            raise FederationUnreachable(destination, f"{url} timed out") from None
        except aiohttp.ClientError as error:
            raise FederationUnreachable(destination, f"{url}: {error}") from None

    async def _answer(self, destination: str, response: aiohttp.ClientResponse) -> Any:
        try:
            raw = await read_body_capped(response, self._config.max_response_size)
        except ResponseTooLarge as error:
            raise FederationBadResponse(destination, f"response too large: {error}") from None
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if 200 <= response.status < 300:
                raise FederationBadResponse(destination, "response is not JSON") from None
            parsed = None  # an error page from a proxy, say: the status still tells
        if not 200 <= response.status < 300:
            raise FederationResponseError(destination, response.status, parsed)
        return parsed


class _ConnectFailed(Exception):
    """Nothing was sent to this target; the next one may be tried."""

    def __init__(self, error: FederationUnreachable) -> None:
        super().__init__(str(error))
        self.error = error


def _target_url(host: str, port: int, path: str, query_string: str) -> URL:
    # encoded=True keeps the caller's percent-encoding as it is (the X-Matrix
    # signature covers it byte for byte); IPv6 hosts then need their brackets.
    netloc_host = f"[{host}]" if ":" in host else host
    return URL.build(
        scheme="https", host=netloc_host, port=port, path=path,
        query_string=query_string, encoded=True,
    )  # fmt: skip


def _connect_error(
    destination: str, url: URL, error: aiohttp.ClientConnectorError
) -> FederationUnreachable:
    if isinstance(error.os_error, AddressDenied):
        return FederationAddressDenied(destination, str(error.os_error))
    if isinstance(error, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
        return FederationTlsError(destination, f"{url}: {error}")
    return FederationUnreachable(destination, f"{url}: {error}")
