"""GET /_matrix/client/versions (Client-Server API, "API Versions").

Clients switch behaviour on the listed versions (matrix-js-sdk: threads and
``m.read.private`` receipts on "v1.4", authenticated media on "v1.11",
extended profiles on "v1.16"; Element X: authenticated media on "v1.11"), so
a version is listed only once what clients switch on for it is served here.
Which endpoints each release adds is read off the spec's changelogs
(``content/changelog/v1.*.md``, "New Endpoints" and feature entries) into
:data:`VERSION_REQUIREMENTS`; the list is computed from the routes the
application actually has, so it grows by itself as endpoints land. Releases
are cumulative (a client that sees "v1.5" assumes v1.4's features too), so the
longest run from v1.1 whose requirements are all routed is listed.

The r0 paths are not served, so no r0.x release is listed. matrix-js-sdk (and
Element) refuse a server listing none of v1.1 … v1.13, so v1.1 is always
listed (its endpoints are the base every other release builds on).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from aiohttp import web

from ranvier.api.http import json_response

routes = web.RouteTableDef()

Endpoint = tuple[str, str]  # (method, path template as the spec writes it)

_ROOM = "/_matrix/client/v3/rooms/{roomId}"
_RELATIONS: tuple[Endpoint, ...] = (
    ("GET", "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}"),
    ("GET", "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}"),
    ("GET", "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}"),
)
_AUTHENTICATED_MEDIA: tuple[Endpoint, ...] = (
    ("GET", "/_matrix/client/v1/media/config"),
    ("GET", "/_matrix/client/v1/media/download/{serverName}/{mediaId}"),
    ("GET", "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}"),
    ("GET", "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}"),
    ("GET", "/_matrix/client/v1/media/preview_url"),
)

#: Per release, the endpoints clients may rely on once it is listed: those the
#: release added (its changelog's "New Endpoints"), and those of the features
#: clients gate on it. Endpoints the spec makes optional behind a capability or
#: discovery (``login/get_token``: ``m.get_login_token``; ``auth_metadata``:
#: 404 means "no OAuth"; the v1.18 admin endpoints: server admins only) are not
#: requirements.
VERSION_REQUIREMENTS: dict[str, tuple[Endpoint, ...]] = {
    "v1.1": (
        ("GET", "/_matrix/client/v3/login"),
        ("POST", "/_matrix/client/v3/login"),
        ("GET", "/_matrix/client/v3/sync"),
        ("POST", "/_matrix/client/v3/createRoom"),
        ("PUT", _ROOM + "/send/{eventType}/{txnId}"),
        ("GET", _ROOM + "/messages"),
        ("POST", "/_matrix/client/v3/keys/upload"),
        ("POST", "/_matrix/client/v3/keys/device_signing/upload"),
    ),
    # MSC2946 spaces hierarchy, MSC3231 registration tokens.
    "v1.2": (
        ("GET", "/_matrix/client/v1/rooms/{roomId}/hierarchy"),
        ("GET", "/_matrix/client/v1/register/m.login.registration_token/validity"),
    ),
    # MSC2674/MSC2675: event relationships and their aggregation (/relations).
    "v1.3": _RELATIONS,
    # MSC3440/MSC3856 threads (matrix-js-sdk's doesServerSupportThread is true
    # from "v1.4" on), MSC2676 edits, MSC2285 private receipts.
    "v1.4": (*_RELATIONS, ("GET", "/_matrix/client/v1/rooms/{roomId}/threads")),
    "v1.5": _RELATIONS,  # MSC3267 m.reference
    "v1.6": (("GET", "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event"),),
    # MSC2246 asynchronous uploads.
    "v1.7": (
        ("POST", "/_matrix/media/v1/create"),
        ("PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}"),
    ),
    "v1.8": (),
    "v1.9": (),
    "v1.10": _RELATIONS,  # MSC3981 recursive /relations
    # MSC3916 authenticated media: clients switch to /v1/media from "v1.11".
    "v1.11": _AUTHENTICATED_MEDIA,
    "v1.12": (),
    "v1.13": (("POST", _ROOM + "/report"),),  # MSC4151
    "v1.14": (("POST", "/_matrix/client/v3/users/{userId}/report"),),  # MSC4260
    "v1.15": (("GET", "/_matrix/client/v1/room_summary/{roomIdOrAlias}"),),  # MSC3266
    # MSC4133 extended profiles (matrix-js-sdk gates them on "v1.16").
    "v1.16": (
        ("GET", "/_matrix/client/v3/profile/{userId}/{keyName}"),
        ("PUT", "/_matrix/client/v3/profile/{userId}/{keyName}"),
        ("DELETE", "/_matrix/client/v3/profile/{userId}/{keyName}"),
    ),
    "v1.17": (),
    "v1.18": (),
    "v1.19": (("GET", "/_matrix/client/v1/mutual_rooms"),),  # MSC2666
}

#: Unstable feature flags clients still test (``unstable_features``), each with
#: the endpoints it needs; advertised (as true) only when those are routed.
#: Element 1.11 sets up cross-signing only when it sees
#: ``org.matrix.e2e_cross_signing``. The thread flags are what matrix-js-sdk
#: asks when "v1.4" is not listed (doesServerSupportThread): they switch on by
#: themselves once the relations task routes /threads and /relations.
UNSTABLE_FEATURE_REQUIREMENTS: dict[str, tuple[Endpoint, ...]] = {
    "org.matrix.e2e_cross_signing": (
        ("POST", "/_matrix/client/v3/keys/device_signing/upload"),
        ("POST", "/_matrix/client/v3/keys/signatures/upload"),
    ),
    # MSC2285: m.read.private receipts (js-sdk checks this when "v1.4" is absent).
    "org.matrix.msc2285.stable": (
        ("POST", _ROOM + "/receipt/{receiptType}/{eventId}"),
        ("POST", _ROOM + "/read_markers"),
    ),
    # Threads (MSC3440), thread list (MSC3856), forward /relations (MSC3715).
    "org.matrix.msc3440.stable": (
        *_RELATIONS,
        ("GET", "/_matrix/client/v1/rooms/{roomId}/threads"),
    ),
    "org.matrix.msc3856.stable": (("GET", "/_matrix/client/v1/rooms/{roomId}/threads"),),
    "org.matrix.msc3715.stable": _RELATIONS,
}

_PLACEHOLDER = re.compile(r"\{[^}]+\}")


def _concrete(path: str) -> str:
    """A path the template matches: each ``{param}`` becomes ``x``."""
    return _PLACEHOLDER.sub("x", path)


def routed_endpoints(router: web.UrlDispatcher) -> set[Endpoint]:
    """(method, path pattern) of every route, as ``web.Resource`` infos."""
    found: set[Endpoint] = set()
    for resource in router.resources():
        info = resource.get_info()
        pattern = info.get("pattern")
        text = pattern.pattern if pattern is not None else re.escape(str(info.get("path", "")))
        for route in resource:
            found.add((route.method, text))
    return found


def is_routed(routed: Iterable[Endpoint], method: str, path: str) -> bool:
    concrete = _concrete(path)
    return any(
        route_method in (method, "*") and re.fullmatch(pattern, concrete) is not None
        for route_method, pattern in routed
    )


def listed_versions(
    routed: set[Endpoint], requirements: Mapping[str, tuple[Endpoint, ...]] = VERSION_REQUIREMENTS
) -> list[str]:
    """The longest run of releases, from the first, whose endpoints are routed."""
    listed: list[str] = []
    for version, endpoints in requirements.items():
        if not all(is_routed(routed, method, path) for method, path in endpoints):
            break
        listed.append(version)
    return listed


def unstable_features(routed: set[Endpoint]) -> dict[str, bool]:
    return {
        flag: True
        for flag, endpoints in UNSTABLE_FEATURE_REQUIREMENTS.items()
        if all(is_routed(routed, method, path) for method, path in endpoints)
    }


_BODY: web.AppKey[dict[str, object]] = web.AppKey("versions_body")


async def compute_on_startup(app: web.Application) -> None:
    """Computed once, when the application starts: every route is added by
    then, and none is added after (an on_startup hook, since a started
    application's state is frozen)."""
    routed = routed_endpoints(app.router)
    body: dict[str, object] = {
        "versions": listed_versions(routed),
        "unstable_features": unstable_features(routed),
    }
    app[_BODY] = body


@routes.get("/_matrix/client/versions")
async def get_versions(request: web.Request) -> web.Response:
    # No authentication: clients call this before logging in.
    return json_response(request.app[_BODY])
