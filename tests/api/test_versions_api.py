"""GET /_matrix/client/versions lists a release only once what clients switch on
for it is served (issue 11, "What Element checks at start"), and advertises the
unstable flags of features Ranvier has, and only those."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from ranvier.api.client.versions import (
    UNSTABLE_FEATURE_REQUIREMENTS,
    VERSION_REQUIREMENTS,
    Endpoint,
    listed_versions,
    routed_endpoints,
    unstable_features,
)
from ranvier.app import ROUTE_TABLES
from tests.api.conftest import MakeClient

Client = TestClient[Any, Any]


async def _versions(client: Client) -> dict[str, Any]:
    response = await client.get("/_matrix/client/versions")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def _served(client: Client, method: str, path: str) -> bool:
    """Not the router's 404/405 M_UNRECOGNIZED (auth or bad-input errors are fine)."""
    body = b"{}" if method in ("PUT", "POST") else None
    response = await client.request(method, re.sub(r"\{[^}]+\}", "x", path), data=body)
    payload = await response.json() if response.content_type == "application/json" else {}
    return not (response.status in (404, 405) and payload.get("errcode") == "M_UNRECOGNIZED")


async def test_every_listed_version_has_its_endpoints_served(make_client: MakeClient) -> None:
    client = await make_client()
    listed = (await _versions(client))["versions"]
    assert listed == list(VERSION_REQUIREMENTS)[: len(listed)], "a run from v1.1, in order"
    for version in listed:
        for method, path in VERSION_REQUIREMENTS[version]:
            assert await _served(client, method, path), f"{version} listed, {method} {path} 404"


async def test_the_first_unlisted_version_misses_an_endpoint(make_client: MakeClient) -> None:
    client = await make_client()
    listed = (await _versions(client))["versions"]
    if len(listed) == len(VERSION_REQUIREMENTS):
        return  # every release is served: nothing left out to check
    first_unlisted = list(VERSION_REQUIREMENTS)[len(listed)]
    missing = [
        (method, path)
        for method, path in VERSION_REQUIREMENTS[first_unlisted]
        if not await _served(client, method, path)
    ]
    assert missing, f"{first_unlisted} could be listed"


async def test_v1_1_is_always_listed_for_matrix_js_sdk(make_client: MakeClient) -> None:
    # matrix-js-sdk's autodiscovery rejects a server listing none of v1.1 … v1.13.
    client = await make_client()
    assert "v1.1" in (await _versions(client))["versions"]


async def test_unstable_features_are_exactly_those_served(make_client: MakeClient) -> None:
    client = await make_client()
    flags = (await _versions(client))["unstable_features"]
    # Element 1.11 sets up cross-signing only when it sees this flag.
    assert flags["org.matrix.e2e_cross_signing"] is True
    assert flags["org.matrix.msc2285.stable"] is True  # m.read.private receipts
    assert set(flags.values()) == {True}
    for flag, endpoints in UNSTABLE_FEATURE_REQUIREMENTS.items():
        served = [await _served(client, method, path) for method, path in endpoints]
        assert (flag in flags) == all(served), flag
    assert set(flags) <= set(UNSTABLE_FEATURE_REQUIREMENTS)


async def test_threads_flags_wait_for_threads(make_client: MakeClient) -> None:
    client = await make_client()
    threads = "/_matrix/client/v1/rooms/{roomId}/threads"
    if await _served(client, "GET", threads):
        return  # the relations task has landed: covered by the test above
    flags = (await _versions(client))["unstable_features"]
    assert "org.matrix.msc3440.stable" not in flags
    assert "org.matrix.msc3856.stable" not in flags
    assert "v1.4" not in (await _versions(client))["versions"]


def _router_with(*endpoints: Endpoint) -> web.UrlDispatcher:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    for method, path in endpoints:
        app.router.add_route(method, path, handler)
    return app.router


def test_versions_stop_at_the_first_release_with_a_missing_endpoint() -> None:
    requirements = {
        "v1.1": (("GET", "/a"),),
        "v1.2": (("GET", "/b/{id}"),),
        "v1.3": (("POST", "/c"),),
        "v1.4": (),
    }
    routed = routed_endpoints(_router_with(("GET", "/a"), ("GET", "/b/{x}"), ("GET", "/c")))
    # /c is routed for GET only: v1.3 is missing, and so v1.4 (cumulative) is too.
    assert listed_versions(routed, requirements) == ["v1.1", "v1.2"]
    routed |= routed_endpoints(_router_with(("POST", "/c")))
    assert listed_versions(routed, requirements) == ["v1.1", "v1.2", "v1.3", "v1.4"]


def test_the_app_routes_list_v1_1_and_flags_as_data() -> None:
    app = web.Application()
    for routes in ROUTE_TABLES:
        app.add_routes(routes)
    routed = routed_endpoints(app.router)
    assert listed_versions(routed)[0] == "v1.1"
    assert "org.matrix.e2e_cross_signing" in unstable_features(routed)
