"""GET /_matrix/client/versions (Client-Server API, "API Versions")."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.http import json_response

routes = web.RouteTableDef()

# The spec releases this server speaks: every stable release since v1.1 (as Synapse
# lists every release it is compatible with). Ranvier implements v1.19, and each
# release is backwards compatible with the ones before it (Client-Server API, "API
# Versions": deprecated endpoints stay until removed; the r0 paths are not served, so
# no r0.x release is listed). What is not implemented yet (media, relations, ...) is
# equally missing from every one of them, so listing v1.19 alone would be no more
# accurate — and clients compare these strings exactly: matrix-js-sdk (and Element)
# refuse a server that lists none of v1.1 … v1.13 (autodiscovery, "Homeserver does
# not meet version requirements") and gate features on single entries (``m.read.private``
# receipts on "v1.4", intentional mentions on "v1.7").
SUPPORTED_VERSIONS: tuple[str, ...] = tuple(f"v1.{minor}" for minor in range(1, 20))
UNSTABLE_FEATURES: dict[str, bool] = {}


@routes.get("/_matrix/client/versions")
async def get_versions(request: web.Request) -> web.Response:
    # No authentication: clients call this before logging in.
    return json_response(
        {"versions": list(SUPPORTED_VERSIONS), "unstable_features": UNSTABLE_FEATURES}
    )
