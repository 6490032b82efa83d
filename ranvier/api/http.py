"""The HTTP layer shared by every endpoint: errors, JSON, CORS, access log, serving.

Client-Server API, "Standard error response": every error is a JSON object with
``errcode`` and ``error``. "Web Browser Clients": every response carries the
CORS headers and ``OPTIONS`` is answered without running any endpoint logic.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import orjson
from aiohttp import web

import ranvier
from ranvier.api.connections import ConnectionGuard, ConnectionLimits, RequestBodyError
from ranvier.config import Config
from ranvier.core.input_limits import MAX_JSON_DEPTH, NUL, TextWithNulError, exceeds_depth
from ranvier.core.signing import SigningKey
from ranvier.errors import MatrixError

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


def json_response(body: Any, status: int = 200) -> web.Response:
    """``body`` as a JSON response.

    A body orjson cannot encode (stored before input limits existed: nested
    deeper than orjson's 254 levels) is not served: 404 ``M_NOT_FOUND``, logged.
    Collections use :func:`json_items_response`, which leaves out only the bad items.
    """
    try:
        encoded = orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        logger.warning("Not served: the response cannot be encoded as JSON (%s)", exc)
        raise MatrixError(404, "M_NOT_FOUND", "This data cannot be served") from None
    return web.Response(body=encoded, status=status, content_type=JSON_CONTENT_TYPE)


def to_response(error: MatrixError) -> web.Response:
    """The HTTP response of a Matrix error raised below the API."""
    return json_response(error.json_body(), status=error.status)


def json_items_response(body: Any) -> web.Response:
    """A response made of lists of items (events, account data, to-device messages...).

    An item that cannot be encoded (stored by an older version, nested too deep
    for orjson) is left out and logged, never failing the whole answer (issue 9).
    Items are the objects with a ``content`` (every event and EDU shape): they
    are left out whole, never altered. Encoding is tried once as a whole first,
    so the usual case costs nothing extra.
    """
    try:
        return web.Response(body=orjson.dumps(body), content_type=JSON_CONTENT_TYPE)
    except orjson.JSONEncodeError:
        pass
    return json_response(_without_unencodable_items(body, 0, ""))


#: How many levels of objects wrap the item lists of a response: /sync's
#: ``rooms.join.<room>.timeline.events`` is the deepest, a list at level 5.
_MAX_WRAPPER_LEVEL = 6


def _fits(value: Any, level: int) -> bool:
    """True if ``value`` can be encoded ``level`` containers below a response's root."""
    nested = value
    for _ in range(level):
        nested = [nested]
    try:
        orjson.dumps(nested)
    except orjson.JSONEncodeError:
        return False
    return True


def _without_unencodable_items(value: Any, level: int, path: str) -> Any:
    """``value`` (which does not fit at ``level``) without the list items that do
    not fit. Only wrapper objects are descended (down to
    :data:`_MAX_WRAPPER_LEVEL`), never list items nor objects with ``content``."""
    if isinstance(value, list):
        kept = []
        for index, item in enumerate(value):
            if _fits(item, level + 1):
                kept.append(item)
            else:
                logger.warning("Left out of the response: %s[%d] cannot be encoded", path, index)
        return kept
    if isinstance(value, dict) and "content" not in value and level < _MAX_WRAPPER_LEVEL:
        return {
            key: item
            if _fits(item, level + 1)
            else _without_unencodable_items(item, level + 1, f"{path}/{key}")
            for key, item in value.items()
        }
    return value  # json_response refuses the whole answer


def parse_json(raw: bytes | str, what: str = "Content", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode JSON that a client sent, or raise the spec's 400 error.

    Not JSON at all → M_NOT_JSON. JSON nested deeper than ``max_depth`` (for
    clients MAX_JSON_DEPTH; ranvier/core/input_limits.py says why 100, and what
    federation bodies may carry) → M_BAD_JSON: it is valid JSON whose value is
    not acceptable (Client-Server API, "Common error codes"). orjson itself
    refuses more than 1024 levels; that is the same answer.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise _too_deep(what, max_depth) from None
        raise MatrixError(400, "M_NOT_JSON", f"{what} not JSON.") from None
    if _may_exceed_depth(raw, max_depth) and exceeds_depth(value, max_depth):
        raise _too_deep(what, max_depth)
    return value


def _may_exceed_depth(raw: bytes | str, max_depth: int) -> bool:
    """False when ``raw`` has too few brackets to nest deeper than ``max_depth``:
    counting them in C spares the walk over almost every body."""
    if isinstance(raw, str):
        return raw.count("{") + raw.count("[") > max_depth
    return raw.count(b"{") + raw.count(b"[") > max_depth


def _too_deep(what: str, max_depth: int) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", f"{what} is nested deeper than {max_depth} levels")


async def read_json_object(
    request: web.Request, max_depth: int = MAX_JSON_DEPTH
) -> dict[str, Any]:
    """The request body as a JSON object, or the spec's 400 error.

    Not JSON at all → M_NOT_JSON; JSON but not an object, or nested too deep →
    M_BAD_JSON (Client-Server API, "Common error codes").
    """
    value = parse_json(await request.read(), max_depth=max_depth)
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
    response = to_response(error)
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
    response = to_response(error)
    response.force_close()
    return response


@web.middleware
async def http_layer_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's outermost layer, one coroutine (each layer costs every request):

    - CORS preflights: every ``OPTIONS`` is answered 204 without endpoint
      logic, known path or not, so that a browser goes on to the real request
      and sees its proper M_UNRECOGNIZED error instead of an opaque CORS
      failure (Synapse does the same);
    - no NUL in identifiers: 400 ``M_INVALID_PARAM`` on both engines (issue 9).
      Path and query parameters are identifiers, tokens and numbers, none of
      which may contain U+0000 (Appendices, "Identifier Grammar"); storage
      refuses any text with NUL (``TextWithNulError``), which covers
      identifiers in bodies;
    - every failure becomes a Matrix JSON error; a traceback never leaks;
    - the access log: one line per request (client, method, target with query
      values redacted, status, duration), replacing aiohttp's own, which
      would print tokens. The line is written once the answer has gone out
      (``call_soon``: after this task step, in which aiohttp writes it), so
      the client does not wait for it; 499 when the client closed the
      connection first (nginx's convention).
    """
    started = time.perf_counter()
    status = 500
    try:
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204)
        else:
            try:
                for name, value in (*request.match_info.items(), *request.query.items()):
                    if NUL in value:
                        raise MatrixError(
                            400, "M_INVALID_PARAM", f"{name} must not contain NUL (U+0000)"
                        )
                try:
                    response = await handler(request)
                except TextWithNulError as exc:
                    raise MatrixError(400, "M_INVALID_PARAM", str(exc)) from None
            except MatrixError as exc:
                response = to_response(exc)
            except (RequestBodyError, web.RequestPayloadError) as exc:
                response = _body_error_response(exc)
            except web.HTTPException as exc:
                if exc.status < 400:  # redirects and other non-errors pass through
                    raise
                response = _from_http_exception(request, exc)
            except (asyncio.CancelledError, ConnectionResetError):
                raise  # the client went away; nobody to answer
            except Exception:
                logger.exception(
                    "Unhandled error in %s %s", request.method, request.rel_url.raw_path
                )
                response = to_response(MatrixError(500, "M_UNKNOWN", "Internal server error"))
        status = response.status
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        status = 499  # the client closed the connection first (nginx's convention)
        raise
    finally:
        asyncio.get_running_loop().call_soon(
            access_logger.info,
            '%s "%s %s" %d %.1fms',
            client_address(request),
            request.method,
            _loggable_target(request),
            status,
            (time.perf_counter() - started) * 1000,
        )


async def _add_common_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(CORS_HEADERS)
    response.headers["Server"] = SERVER_HEADER


def install_http_layer(app: web.Application) -> None:
    """Middlewares (outermost first) and the CORS signal every Ranvier app has."""
    app.middlewares.append(http_layer_middleware)
    app.on_response_prepare.append(_add_common_headers)


# --- serving ------------------------------------------------------------------------

# How long in-flight requests get to finish after SIGTERM before being cut off.
GRACEFUL_SHUTDOWN_SECONDS = 10.0


@dataclass(frozen=True)
class TlsSite:
    """An extra HTTPS listener of the same app (the federation TLS listener)."""

    host: str
    port: int
    ssl_context: ssl.SSLContext


async def serve(
    app: web.Application,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    started: Callable[[list[Any]], None] | None = None,
    shutdown_timeout: float = GRACEFUL_SHUTDOWN_SECONDS,
    tls_sites: Sequence[TlsSite] = (),
) -> None:
    """Serve ``app`` until ``stop`` is set, then shut down gracefully.

    Shutdown stops accepting connections, lets in-flight requests finish (up to
    ``shutdown_timeout`` seconds), closes idle keep-alive connections and runs
    the app's cleanup hooks. ``started`` receives the bound socket addresses (the
    plain listener's first, then those of ``tls_sites``). Every listener's
    connections get the slow-client timeouts and per-address cap of
    ``config.listen`` (ranvier.api.connections).
    """
    # access_log=None: http_layer_middleware writes our own, token-free lines.
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
        for tls_site in tls_sites:
            listeners.append(
                await guard.listen(runner, tls_site.host, tls_site.port, ssl=tls_site.ssl_context)
            )
        if started is not None:
            started([sock.getsockname() for listener in listeners for sock in listener.sockets])
        await stop.wait()
        logger.info("Shutting down: no new connections, finishing requests in flight")
    finally:
        for listener in listeners:
            listener.close()
        await runner.cleanup()
