"""Connection-level defences of the HTTP listener: slow clients, floods, malformed HTTP.

aiohttp reads and parses a request before any middleware runs, so these live
one layer below, in :class:`GuardedRequestHandler`, aiohttp's per-connection
protocol with a few additions:

- a new connection must send a complete request line and headers within
  ``header_timeout``, and so must a kept-alive one from the first byte of its
  next request (a slow-loris sends headers byte by byte to hold connections
  open); a partial request then gets 408, a silent connection is just closed;
- a request body that stops arriving for ``body_timeout`` fails its read with
  :class:`RequestBodyTimeout`, which the error middleware answers with 408
  (and a body whose chunked encoding breaks off, with
  :class:`MalformedRequestBody`, 400);
- an idle keep-alive connection is closed after ``idle_timeout`` (aiohttp's
  ``keepalive_timeout``);
- a TCP peer gets at most ``max_per_ip`` open connections; further ones are
  closed at once, before any byte is read, so a single host cannot exhaust the
  server's file descriptors;
- a request aiohttp's parser rejects (request line or headers too long, too
  many headers, bytes that are not HTTP) gets a Matrix JSON error and one log
  line, where aiohttp would answer plain text echoing the request and log a
  traceback.

Nothing here imports the rest of the API layer, so the HTTP layer
(``ranvier.api.http.serve``) builds on it without an import cycle.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError, InvalidURLError, LineTooLong
from aiohttp.streams import StreamReader

from ranvier.config import ListenConfig

logger = logging.getLogger(__name__)
# The same logger as ranvier.api.http's access log: one line per request.
access_logger = logging.getLogger("ranvier.access")

# What aiohttp's parser (C and Python) says when a request has more headers than max_headers.
_TOO_MANY_HEADERS = "Too many headers received"
# Standing in for the request line in log lines about requests that could not be parsed
# (the bytes themselves are not logged: they may hold an access token).
_UNPARSED_REQUEST = "-"
# After the head or body timeout finds no byte read, how long to look again (seconds).
HEAD_GRACE_S = 0.05
# A request body's bytes aiohttp holds before it stops reading the socket is
# twice this (the rest waits in the kernel's socket buffer). aiohttp 3.14's
# default is 256 KiB, so up to 512 KiB (plus one 256 KiB socket read) per upload
# in flight; 64 KiB (aiohttp's default before) measured: peak RSS during 20
# concurrent 10 MiB uploads 71.5-71.8 MiB instead of 77-80, with the uploads no
# slower (docs/performance.md, 2026-12-07).
READ_BUFFER_SIZE = 64 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    """The listener's limits, timeouts in seconds; ``max_per_ip`` None: no limit."""

    header_timeout: float
    body_timeout: float
    idle_timeout: float
    max_per_ip: int | None

    @classmethod
    def from_config(cls, listen: ListenConfig) -> ConnectionLimits:
        return cls(
            header_timeout=listen.header_timeout / 1000,
            body_timeout=listen.body_timeout / 1000,
            idle_timeout=listen.idle_timeout / 1000,
            max_per_ip=listen.connection_cap,
        )


class ConnectionsPerPeer:
    """Open connections per TCP peer address, refusing those beyond a limit.

    It counts TCP peers, never X-Forwarded-For, which any client can forge.
    """

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}
        # Addresses refused since they last were under the limit: one warning per episode.
        self._refusing: set[str] = set()

    def try_open(self, address: str) -> bool:
        """Count a new connection from ``address``; False (not counted) if over the limit."""
        count = self._open.get(address, 0)
        if self._limit is not None and count >= self._limit:
            if address not in self._refusing:
                self._refusing.add(address)
                logger.warning(
                    "Refusing connections from %s: it has %d open (listen.max_connections_per_ip)",
                    address,
                    count,
                )
            return False
        self._open[address] = count + 1
        return True

    def close(self, address: str) -> None:
        count = self._open[address] - 1
        if count:
            self._open[address] = count
        else:
            del self._open[address]
        self._refusing.discard(address)

    def open_count(self, address: str) -> int:
        return self._open.get(address, 0)


class RequestBodyError(Exception):
    """The request body cannot be read; the error middleware answers with this
    status and errcode and closes the connection (its bytes no longer line up
    with requests)."""

    status = 400
    errcode = "M_UNRECOGNIZED"
    error = "Malformed request body"


class RequestBodyTimeout(RequestBodyError):
    """The client stopped sending the request body for ``body_timeout`` seconds."""

    # RFC 9110 §15.5.9: the server would not wait any longer for the request.
    status = 408
    errcode = "M_UNKNOWN"
    error = "Timed out reading the request body"


class MalformedRequestBody(RequestBodyError):
    """The body's transfer encoding broke off (e.g. a bad chunk size): the body
    is neither complete nor ever going to be."""


def _peer_address(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def raw_json_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for use outside aiohttp."""
    payload = orjson.dumps(body)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol with the defences of this module's docstring."""

    __slots__ = (
        "_body",
        "_body_activity",
        "_body_deadline",
        "_body_grace",
        "_counted_address",
        "_head_deadline",
        "_head_grace",
        "_head_started",
        "_limits",
        "_peers",
        "_refused",
        "_request_line_bytes",
        "_request_line_ended",
        "_response_headers",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        limits: ConnectionLimits,
        peers: ConnectionsPerPeer,
        response_headers: Mapping[str, str],
    ) -> None:
        # access_log=None (aiohttp's documented "off", typed too narrowly): the
        # http_layer_middleware of ranvier.api.http writes token-free lines.
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=limits.idle_timeout,
            read_bufsize=READ_BUFFER_SIZE,
            access_log=None,  # type: ignore[arg-type]
        )
        self._limits = limits
        self._peers = peers
        self._response_headers = response_headers
        self._refused = False
        self._counted_address: str | None = None
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_started = False
        self._head_grace = False
        self._request_line_bytes = 0
        self._request_line_ended = False
        self._body: StreamReader | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._body_activity = 0.0
        self._body_grace = False

    # --- connection lifetime ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = _peer_address(transport)
        if address is not None and not self._peers.try_open(address):
            self._refused = True
            transport.close()  # aiohttp never sees this connection
            return
        self._counted_address = address
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._stop_timers()
        if self._counted_address is not None:
            self._peers.close(self._counted_address)
            self._counted_address = None
        super().connection_lost(exc)

    def _stop_timers(self) -> None:
        for timer in (self._head_deadline, self._body_deadline):
            if timer is not None:
                timer.cancel()
        self._head_deadline = self._body_deadline = None
        self._body = None

    def data_received(self, data: bytes) -> None:
        if self.transport is None or not data:
            super().data_received(data)
            return
        if self._head_deadline is None and self._is_idle():
            self._await_head()  # the first byte of the next request on a kept-alive connection
        if self._head_deadline is not None:
            self._note_head_bytes(data)
        requests_before = self._request_count
        super().data_received(data)
        if self._request_count != requests_before:
            self._head_received()
        elif self._body is not None:
            self._body_received()

    def _is_idle(self) -> bool:
        """Between requests: aiohttp waits for the next one and handles none."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    # --- the request line and headers ------------------------------------------------

    def _await_head(self) -> None:
        self._head_deadline = self._loop.call_later(
            self._limits.header_timeout, self._on_head_timeout
        )
        self._head_started = False
        self._head_grace = False
        self._request_line_bytes = 0
        self._request_line_ended = False

    def _note_head_bytes(self, data: bytes) -> None:
        if not self._head_started:
            self._head_started = True
            # A request is coming: the head clock replaces aiohttp's idle clock,
            # which keep_alive(True) stops (it restarts after the response).
            self.keep_alive(True)
        # The request line's length tells an over-long target (414) from an
        # over-long header (431) when the parser rejects a line as too long.
        if not self._request_line_ended:
            newline = data.find(b"\n")
            if newline < 0:
                self._request_line_bytes += len(data)
            else:
                self._request_line_bytes += newline
                self._request_line_ended = True

    def _head_received(self) -> None:
        """A request's head was parsed (or rejected): stop its clock, start its body's."""
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        if not self._messages:
            return
        message, payload = self._messages[-1]
        if not isinstance(message, RawRequestMessage) and self._body is not None:
            # The parser failed inside the body in flight and gave up on it without
            # telling the handler reading it, which would wait forever.
            self._fail_body(MalformedRequestBody())
        self._body = None if payload.is_eof() else payload
        if self._body is not None:
            self._body_received()

    def _on_head_timeout(self) -> None:
        self._head_deadline = None
        if self.transport is None:
            return
        if not self._head_started and not self._head_grace:
            # No byte read yet, but some may be waiting: after a stall of the
            # loop, uvloop runs expired timers before it reads the sockets. Look
            # again once they are read, so that a client which did send part of
            # its head gets its 408 rather than a silent close.
            self._head_grace = True
            self._head_deadline = self._loop.call_later(HEAD_GRACE_S, self._on_head_timeout)
            return
        peer = self._counted_address or "-"
        if self._head_started:
            # RFC 9110 §15.5.9: 408, the server would not wait any longer for the request.
            access_logger.info(
                '%s "%s" 408 request head not received within %gs',
                peer,
                _UNPARSED_REQUEST,
                self._limits.header_timeout,
            )
            error = {"errcode": "M_UNKNOWN", "error": "Timed out waiting for the request"}
            self.transport.write(raw_json_response(408, error, self._response_headers))
        else:
            logger.debug("Closing a connection from %s that sent no request", peer)
        self.force_close()

    # --- the request body -------------------------------------------------------------

    def _body_received(self) -> None:
        """Data for the body in flight: restart its inactivity clock, or stop it at the end."""
        body = self._body
        if body is None or body.is_eof():
            self._body = None
            if self._body_deadline is not None:
                self._body_deadline.cancel()
                self._body_deadline = None
            return
        self._body_activity = self._loop.time()
        self._body_grace = False
        if self._body_deadline is None:
            self._body_deadline = self._loop.call_later(
                self._limits.body_timeout, self._on_body_timeout
            )

    def _on_body_timeout(self) -> None:
        self._body_deadline = None
        body = self._body
        if body is None or body.is_eof():
            return
        if self._reading_paused:
            # aiohttp stopped reading because the handler has not consumed what came:
            # the wait is the server's, not the client's, so it does not count.
            self._body_activity = self._loop.time()
        silent_for = self._loop.time() - self._body_activity
        if silent_for < self._limits.body_timeout:  # data came since: check again later
            self._body_deadline = self._loop.call_later(
                self._limits.body_timeout - silent_for, self._on_body_timeout
            )
            return
        if not self._body_grace:
            # As for the head: after a stall of the loop, uvloop runs expired
            # timers before it reads the sockets, so bytes the client did send
            # may be waiting. Look again once they are read.
            self._body_grace = True
            self._body_deadline = self._loop.call_later(HEAD_GRACE_S, self._on_body_timeout)
            return
        self._fail_body(RequestBodyTimeout())

    def _fail_body(self, error: RequestBodyError) -> None:
        """Make the handler's pending or next body read raise ``error``."""
        if self._body is not None and not self._body.is_eof():
            self._body.set_exception(error)
        self._body = None
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # aiohttp reads what is left of a body after the response and logs a
        # traceback when that read fails; for a body failed on purpose (above) or
        # one the client garbled (RequestPayloadError), a debug line is enough.
        if isinstance(kwargs.get("exc_info"), (RequestBodyError, web.RequestPayloadError)):
            logger.debug("Closing a connection whose request body failed: %r", kwargs["exc_info"])
            return
        super().log_exception(*args, **kwargs)

    # --- requests aiohttp could not parse, or whose handler failed --------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        status, errcode, error = self._describe_error(status, exc)
        if isinstance(exc, ConnectionError):  # the client went away mid-request
            logger.debug("Connection from %s lost during a request: %r", request.remote, exc)
        elif status >= 500:  # an exception escaped every middleware: a bug, keep its traceback
            logger.error("Error handling a request from %s", request.remote, exc_info=exc)
        else:
            access_logger.info(
                '%s "%s" %d %s (%s)',
                request.remote,
                _UNPARSED_REQUEST,
                status,
                errcode,
                type(exc).__name__,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started: no error response can follow")
        response = web.Response(
            body=orjson.dumps({"errcode": errcode, "error": error}),
            status=status,
            content_type="application/json",
            headers=self._response_headers,
        )
        response.force_close()
        return response

    def _describe_error(self, status: int, exc: BaseException | None) -> tuple[int, str, str]:
        """Status, errcode and message for ``exc`` (Client-Server API, "Common error codes")."""
        if isinstance(exc, LineTooLong):
            if self._request_line_bytes > self.max_line_size:
                return 414, "M_TOO_LARGE", "Request line too long"
            return 431, "M_TOO_LARGE", "Request header too large"
        if isinstance(exc, HttpProcessingError) and exc.message == _TOO_MANY_HEADERS:
            return 431, "M_TOO_LARGE", "Too many request headers"
        if isinstance(exc, InvalidURLError):
            return 400, "M_UNRECOGNIZED", "Invalid request target"
        if isinstance(exc, HttpProcessingError) or status < 500:
            return 400, "M_UNRECOGNIZED", "Malformed HTTP request"
        return status, "M_UNKNOWN", HTTPStatus(status).phrase


class ConnectionGuard:
    """Opens listeners whose connections share one set of limits and per-peer counts."""

    def __init__(self, limits: ConnectionLimits, response_headers: Mapping[str, str]) -> None:
        self.limits = limits
        self.peers = ConnectionsPerPeer(limits.max_per_ip)
        self._response_headers = dict(response_headers)

    async def listen(
        self, runner: web.AppRunner, host: str, port: int, **create_server: Any
    ) -> asyncio.Server:
        """Listen on ``host:port`` for ``runner``'s app (set up); extra arguments
        (e.g. ``ssl=``) go to ``loop.create_server``. Closing the returned server
        stops accepting; ``runner.cleanup()`` then ends the connections."""
        server = runner.server
        if server is None:
            raise RuntimeError("runner.setup() must run before listen()")
        loop = asyncio.get_running_loop()

        def protocol() -> GuardedRequestHandler:
            return GuardedRequestHandler(
                server,
                loop=loop,
                limits=self.limits,
                peers=self.peers,
                response_headers=self._response_headers,
            )

        return await loop.create_server(protocol, host, port, backlog=128, **create_server)
