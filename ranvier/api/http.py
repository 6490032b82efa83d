"""The HTTP layer shared by every endpoint: errors, JSON, CORS, access log, serving.

Client-Server API, "Standard error response": every error is a JSON object with
``errcode`` and ``error``. "Web Browser Clients": every response carries the
CORS headers and ``OPTIONS`` is answered without running any endpoint logic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import orjson
from aiohttp import web

import ranvier
from ranvier.api.connections import ConnectionGuard, ConnectionLimits, RequestBodyError
from ranvier.config import Config
from ranvier.core.signing import SigningKey

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("ranvier.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Typed application state, set by ranvier.app.build_app.
CONFIG = web.AppKey("config", Config)
SIGNING_KEY = web.AppKey("signing_key", SigningKey)
# Milliseconds since the epoch; replaceable so tests can fix the time.
CLOCK_MS: web.AppKey[Callable[[], int]] = web.AppKey("clock_ms")
# The Homeserver (storage and services); set when the application starts.
HOMESERVER: web.AppKey[Homeserver] = web.AppKey("homeserver")

# Client-Server API, "Web Browser Clients": the recommended headers, verbatim.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
}

JSON_CONTENT_TYPE = "application/json"
SERVER_HEADER = f"Ranvier/{ranvier.__version__}"


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class MatrixError(Exception):
    """An error the client sees as ``{"errcode": ..., "error": ..., **extra}``."""

    def __init__(self, status: int, errcode: str, error: str, **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra

    def to_response(self) -> web.Response:
        return json_response(
            {"errcode": self.errcode, "error": self.error, **self.extra}, status=self.status
        )


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON_CONTENT_TYPE)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or the spec's 400 error.

    Not JSON at all → M_NOT_JSON; JSON but not an object → M_BAD_JSON
    (Client-Server API, "Common error codes").
    """
    body = await request.read()
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MatrixError(400, "M_NOT_JSON", "Content not JSON.") from None
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object.")
    return value


# --- middlewares and signals ---------------------------------------------------------

# Query parameters whose values the access log shows: positions, limits, directions,
# filters and server names, harmless and what one reads a log for. Every other value
# is logged as <redacted> (keys are logged). Matching keys after percent-decoding
# (as aiohttp does before auth reads ``access_token``, so ``?access%5Ftoken=`` and
# ``?%61ccess_token=`` authenticate too), and redacting by default rather than
# only ``access_token``, keeps the token out of the log however it is spelt, and
# so the other secrets a query can carry: registration tokens (``token``), SSO
# ``loginToken``, ``client_secret``, appservice ``user_id``... (Client-Server
# API, "Using access tokens": the query parameter is deprecated but accepted).
LOGGED_QUERY_PARAMETERS = frozenset(
    {
        "since", "timeout", "full_state", "set_presence",  # /sync
        "from", "to", "dir", "limit", "filter",  # pagination
        "via", "server_name", "kind", "version", "allow_remote",
        "suggested_only", "max_depth", "recurse", "membership", "not_membership",
    }
)  # fmt: skip
REDACTED = "<redacted>"


def redact_query(query_string: str) -> str:
    """``query_string`` (raw) with the value of every parameter not in
    LOGGED_QUERY_PARAMETERS replaced by ``<redacted>``."""
    parts = []
    for part in query_string.split("&"):
        raw_key, has_value, raw_value = part.partition("=")
        if has_value and raw_value and unquote_plus(raw_key) not in LOGGED_QUERY_PARAMETERS:
            part = f"{raw_key}={REDACTED}"
        parts.append(part)
    return "&".join(parts)


def client_address(request: web.Request) -> str:
    """The client's IP; behind a proxy (``listen.x_forwarded``), X-Forwarded-For's first hop."""
    config = request.app.get(CONFIG)
    if config is not None and config.listen.x_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.remote or "-"


def _loggable_target(request: web.Request) -> str:
    query = request.rel_url.raw_query_string
    path = request.rel_url.raw_path
    return f"{path}?{redact_query(query)}" if query else path


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request: client, method, target (query values redacted), status, duration.

    It replaces aiohttp's own access log, which would print tokens.
    """
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        status = 499  # the client closed the connection first (nginx's convention)
        raise
    finally:
        access_logger.info(
            '%s "%s %s" %d %.1fms',
            client_address(request),
            request.method,
            _loggable_target(request),
            status,
            (time.perf_counter() - started) * 1000,
        )


# Errors aiohttp itself raises (routing, body size, ...) as Matrix errors.
_HTTP_ERRCODES = {
    404: ("M_NOT_FOUND", "Not found"),
    405: ("M_UNRECOGNIZED", "Unrecognized request"),
    413: ("M_TOO_LARGE", "Request body too large"),
}


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    if request.match_info.http_exception is not None:
        # Raised by the router: Client-Server API, "Common error codes", M_UNRECOGNIZED —
        # 404 for an unknown endpoint, 405 for a known one with the wrong method.
        error = MatrixError(exc.status, "M_UNRECOGNIZED", "Unrecognized request")
    else:
        errcode, message = _HTTP_ERRCODES.get(exc.status, ("M_UNKNOWN", exc.reason))
        error = MatrixError(exc.status, errcode, message)
    response = error.to_response()
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def _body_error_response(exc: RequestBodyError | web.RequestPayloadError) -> web.Response:
    """The body stalled (408) or is malformed (400); the connection closes after the
    answer, since its remaining bytes no longer line up with requests."""
    if isinstance(exc, RequestBodyError):
        error = MatrixError(exc.status, exc.errcode, exc.error)
    else:  # aiohttp could not decode the body (transfer or content encoding)
        error = MatrixError(400, "M_UNRECOGNIZED", "Malformed request body")
    response = error.to_response()
    response.force_close()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a Matrix JSON error; never leak a traceback."""
    try:
        return await handler(request)
    except MatrixError as exc:
        return exc.to_response()
    except (RequestBodyError, web.RequestPayloadError) as exc:
        return _body_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and other non-errors pass through
            raise
        return _from_http_exception(request, exc)
    except (asyncio.CancelledError, ConnectionResetError):
        raise  # the client went away; nobody to answer
    except Exception:
        logger.exception("Unhandled error in %s %s", request.method, request.rel_url.raw_path)
        return MatrixError(500, "M_UNKNOWN", "Internal server error").to_response()


@web.middleware
async def options_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every CORS preflight, known path or not, without endpoint logic.

    Answering unknown paths too lets a browser go on to the real request and see
    its proper M_UNRECOGNIZED error instead of an opaque CORS failure (Synapse
    does the same).
    """
    if request.method == "OPTIONS":
        return web.Response(status=204)
    return await handler(request)


async def _add_common_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(CORS_HEADERS)
    response.headers["Server"] = SERVER_HEADER


def install_http_layer(app: web.Application) -> None:
    """Middlewares (outermost first) and the CORS signal every Ranvier app has."""
    app.middlewares.extend([access_log_middleware, error_middleware, options_middleware])
    app.on_response_prepare.append(_add_common_headers)


# --- serving ------------------------------------------------------------------------

# How long in-flight requests get to finish after SIGTERM before being cut off.
GRACEFUL_SHUTDOWN_SECONDS = 10.0


async def serve(
    app: web.Application,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    started: Callable[[list[Any]], None] | None = None,
    shutdown_timeout: float = GRACEFUL_SHUTDOWN_SECONDS,
) -> None:
    """Serve ``app`` until ``stop`` is set, then shut down gracefully.

    Shutdown stops accepting connections, lets in-flight requests finish (up to
    ``shutdown_timeout`` seconds), closes idle keep-alive connections and runs
    the app's cleanup hooks. ``started`` receives the bound socket addresses.
    Connections get the slow-client timeouts and per-address cap of
    ``config.listen`` (ranvier.api.connections); another listener (e.g. TLS)
    is one more ``guard.listen(...)``.
    """
    # access_log=None: access_log_middleware writes our own, token-free lines.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    # Slow clients, connection floods and unparsable requests (ranvier.api.connections).
    guard = ConnectionGuard(
        ConnectionLimits.from_config(app[CONFIG].listen),
        {**CORS_HEADERS, "Server": SERVER_HEADER},
    )
    listeners: list[asyncio.Server] = []
    try:
        listeners.append(await guard.listen(runner, host, port))
        if started is not None:
            started([sock.getsockname() for listener in listeners for sock in listener.sockets])
        await stop.wait()
        logger.info("Shutting down: no new connections, finishing requests in flight")
    finally:
        for listener in listeners:
            listener.close()
        await runner.cleanup()
