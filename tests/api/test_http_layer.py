"""The shared HTTP layer: Matrix errors, CORS, JSON bodies, access log, graceful serving."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ranvier.api.http import CORS_HEADERS, json_response, read_json_object, redact_query, serve
from ranvier.errors import MatrixError

MakeClient = Any  # the make_client fixture of conftest.py


def _assert_cors(response: aiohttp.ClientResponse) -> None:
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, DELETE, OPTIONS"
    assert (
        response.headers["Access-Control-Allow-Headers"]
        == "X-Requested-With, Content-Type, Authorization"
    )


async def _echo_json(request: web.Request) -> web.Response:
    return json_response({"received": await read_json_object(request)})


async def _explode(request: web.Request) -> web.Response:
    raise RuntimeError("secret internal detail")


async def _teapot(request: web.Request) -> web.Response:
    raise MatrixError(418, "M_TEAPOT", "I am a teapot", retry_after_ms=5)


class _RecordingResponse(web.Response):
    """Notes which access lines were written when its last bytes went out."""

    logged_before_eof: list[str] | None = None

    async def write_eof(self, data: bytes = b"") -> None:
        _RecordingResponse.logged_before_eof = list(_ACCESS_LINES)
        await super().write_eof(data)


#: Access lines as they are written, for _RecordingResponse.
_ACCESS_LINES: list[str] = []


async def _recorded(request: web.Request) -> web.Response:
    return _RecordingResponse(text="ok")


def _test_routes(app: web.Application) -> None:
    app.router.add_get("/_test/recorded", _recorded)
    app.router.add_post("/_test/echo", _echo_json)
    app.router.add_get("/_test/explode", _explode)
    app.router.add_get("/_test/teapot", _teapot)


@pytest.fixture
async def test_client(make_client: MakeClient) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await make_client(setup=_test_routes)
    return client


# --- unknown endpoints and methods ------------------------------------------------------


async def test_unknown_path_is_404_unrecognized(client: TestClient[Any, Any]) -> None:
    response = await client.get("/_matrix/client/v3/no_such_endpoint")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert await response.json() == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}


async def test_wrong_method_on_known_path_is_405_unrecognized(
    client: TestClient[Any, Any],
) -> None:
    response = await client.post("/_matrix/client/versions", json={})
    assert response.status == 405
    assert await response.json() == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}
    assert "GET" in response.headers["Allow"]


# --- CORS --------------------------------------------------------------------------------


async def test_cors_headers_on_success(client: TestClient[Any, Any]) -> None:
    response = await client.get("/_matrix/client/versions")
    assert response.status == 200
    _assert_cors(response)


async def test_cors_headers_on_errors(test_client: TestClient[Any, Any]) -> None:
    for method, path in [("GET", "/nowhere"), ("PUT", "/_matrix/client/versions"),
                         ("GET", "/_test/explode"), ("POST", "/_test/echo")]:
        response = await test_client.request(method, path, data=b"not json")
        assert response.status >= 400, path
        _assert_cors(response)


@pytest.mark.parametrize("path", ["/_matrix/client/versions", "/_matrix/client/v3/unknown"])
async def test_options_preflight_answers_with_cors_headers(
    client: TestClient[Any, Any], path: str
) -> None:
    response = await client.options(
        path,
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status == 204
    assert await response.read() == b""
    _assert_cors(response)


async def test_options_does_not_run_endpoint_logic(make_client: MakeClient) -> None:
    calls: list[str] = []

    async def counted(request: web.Request) -> web.Response:
        calls.append(request.method)
        return json_response({})

    client = await make_client(setup=lambda app: app.router.add_route("*", "/_test/any", counted))
    assert (await client.options("/_test/any")).status == 204
    assert calls == []


def test_cors_constant_matches_the_spec_recommendation() -> None:
    assert CORS_HEADERS == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
    }


# --- JSON bodies -------------------------------------------------------------------------


async def test_json_object_body_is_parsed(test_client: TestClient[Any, Any]) -> None:
    response = await test_client.post("/_test/echo", data=b'{"a": [1, "\\u00e9"]}')
    assert response.status == 200
    assert await response.json() == {"received": {"a": [1, "é"]}}


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"{'a': 1}", b"\xff\xfe", b"NaN"])
async def test_malformed_json_is_400_not_json(
    test_client: TestClient[Any, Any], body: bytes
) -> None:
    response = await test_client.post("/_test/echo", data=body)
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_NOT_JSON"


@pytest.mark.parametrize("body", [b"[]", b"[1, 2]", b'"text"', b"42", b"null", b"true"])
async def test_json_that_is_not_an_object_is_400_bad_json(
    test_client: TestClient[Any, Any], body: bytes
) -> None:
    response = await test_client.post("/_test/echo", data=body)
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_BAD_JSON"


async def test_oversized_body_is_413_too_large(test_client: TestClient[Any, Any]) -> None:
    response = await test_client.post("/_test/echo", data=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert response.status == 413
    assert (await response.json())["errcode"] == "M_TOO_LARGE"


# --- errors ------------------------------------------------------------------------------


async def test_matrix_error_carries_its_status_code_and_extra_fields(
    test_client: TestClient[Any, Any],
) -> None:
    response = await test_client.get("/_test/teapot")
    assert response.status == 418
    assert await response.json() == {
        "errcode": "M_TEAPOT",
        "error": "I am a teapot",
        "retry_after_ms": 5,
    }


async def test_unhandled_exception_is_500_json_without_traceback(
    test_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="ranvier.api.http"):
        response = await test_client.get("/_test/explode")
    assert response.status == 500
    assert response.content_type == "application/json"
    text = await response.text()
    assert "Traceback" not in text
    assert "secret internal detail" not in text
    assert await response.json() == {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    # ...but the server's own log has the whole story.
    (record,) = [r for r in caplog.records if r.name == "ranvier.api.http"]
    assert record.exc_info is not None
    assert "secret internal detail" in caplog.text


# --- access log ------------------------------------------------------------------------


async def test_access_log_line_redacts_the_access_token(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ranvier.access"):
        response = await client.get(
            "/_matrix/client/versions?filter=1&access_token=syt_secret_token&x=2"
        )
    assert response.status == 200
    (record,) = [r for r in caplog.records if r.name == "ranvier.access"]
    line = record.getMessage()
    assert "syt_secret_token" not in line
    assert '"GET /_matrix/client/versions?filter=1&access_token=<redacted>&x=<redacted>" 200 ' in line
    assert line.endswith("ms")


async def test_access_log_line_is_written_after_the_answer_went_out(
    test_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The client does not wait for the line: it is written once aiohttp has
    written the answer, and is still written, with the status and duration."""

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            _ACCESS_LINES.append(record.getMessage())

    collect = Collect()
    access = logging.getLogger("ranvier.access")
    access.addHandler(collect)
    _ACCESS_LINES.clear()
    try:
        with caplog.at_level(logging.INFO, logger="ranvier.access"):
            response = await test_client.get("/_test/recorded")
            assert await response.text() == "ok"
            for _ in range(100):
                if _ACCESS_LINES:
                    break
                await asyncio.sleep(0.01)
    finally:
        access.removeHandler(collect)
    assert _RecordingResponse.logged_before_eof == []
    (line,) = _ACCESS_LINES
    assert '"GET /_test/recorded" 200 ' in line and line.endswith("ms")


async def test_access_log_records_error_statuses(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ranvier.access"):
        await client.get("/nowhere")
    (record,) = [r for r in caplog.records if r.name == "ranvier.access"]
    assert '"GET /nowhere" 404 ' in record.getMessage()


async def test_access_log_uses_x_forwarded_for_when_configured(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client({"listen": {"x_forwarded": True}})
    with caplog.at_level(logging.INFO, logger="ranvier.access"):
        await client.get("/nowhere", headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
    (record,) = [r for r in caplog.records if r.name == "ranvier.access"]
    assert record.getMessage().startswith('203.0.113.7 "GET /nowhere"')


@pytest.mark.parametrize(
    ("query", "redacted"),
    [
        ("access_token=abc", "access_token=<redacted>"),
        ("a=1&access_token=abc&b=2", "a=<redacted>&access_token=<redacted>&b=<redacted>"),
        # Keys are matched percent-decoded, as aiohttp reads them for authentication.
        ("access%5Ftoken=abc", "access%5Ftoken=<redacted>"),
        ("%61ccess_token=abc", "%61ccess_token=<redacted>"),
        ("my_access_token=abc", "my_access_token=<redacted>"),
        # Harmless parameters keep their values, however their keys are spelt.
        ("since=s1_2&timeout=30000&%66ilter=0&dir=b", "since=s1_2&timeout=30000&%66ilter=0&dir=b"),
        ("limit=10&token=registration_secret", "limit=10&token=<redacted>"),
        ("empty=&bare&access_token=", "empty=&bare&access_token="),
        ("", ""),
    ],
)
def test_redact_query(query: str, redacted: str) -> None:
    assert redact_query(query) == redacted


# --- serving -----------------------------------------------------------------------------


async def test_serve_finishes_in_flight_requests_on_stop(make_app: Any) -> None:
    request_started = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        request_started.set()
        await asyncio.sleep(0.3)
        return json_response({"done": True})

    app = make_app()
    app.router.add_get("/_test/slow", slow)
    stop = asyncio.Event()
    bound: list[Any] = []
    server = asyncio.create_task(
        serve(app, "127.0.0.1", 0, stop, started=bound.extend, shutdown_timeout=5)
    )
    while not bound:
        await asyncio.sleep(0.01)
    host, port = bound[0][:2]
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(session.get(f"http://{host}:{port}/_test/slow"))
        await request_started.wait()
        stop.set()
        response = await in_flight
        assert response.status == 200
        assert await response.json() == {"done": True}
        await asyncio.wait_for(server, 5)
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://{host}:{port}/_matrix/client/versions")
