"""Third-party identifiers on the account (Client-Server API, "Adding Account
Administrative Contact Information"), on a server that binds none.

Ranvier sends no email or SMS and talks to no identity server, and says so
with ``m.3pid_changes: {"enabled": false}`` in /capabilities. So the list is
empty (Element shows it in its account settings, and shows an error on a
404); changes are refused as the capability announces (Synapse with
``enable_3pid_changes: false`` refuses them the same way); asking for a
validation token is ``M_THREEPID_MEDIUM_NOT_SUPPORTED`` (MSC4178, v1.13); an
unbind answers ``id_server_unbind_result: "no-support"``, the spec's value for
a homeserver that cannot unbind from an identity server.
"""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import json_response, read_json_object
from ranvier.errors import MatrixError

routes = web.RouteTableDef()

ACCOUNT_3PID = "/_matrix/client/v3/account/3pid"


def _changes_disabled() -> MatrixError:
    return MatrixError(
        403, "M_FORBIDDEN", "Third-party identifier changes are disabled on this server."
    )


@routes.get(ACCOUNT_3PID)
async def get_threepids(request: web.Request) -> web.Response:
    await require_user(request)
    return json_response({"threepids": []})


@routes.post(ACCOUNT_3PID)  # post3PIDs (deprecated)
@routes.post(ACCOUNT_3PID + "/add")
@routes.post(ACCOUNT_3PID + "/delete")
async def change_threepids(request: web.Request) -> web.Response:
    await require_user(request)
    await read_json_object(request)
    raise _changes_disabled()


@routes.post(ACCOUNT_3PID + "/unbind")
async def unbind_threepid(request: web.Request) -> web.Response:
    await require_user(request)
    body = await read_json_object(request)
    for key in ("medium", "address"):
        if not isinstance(body.get(key), str):
            raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be a string.")
    return json_response({"id_server_unbind_result": "no-support"})


@routes.post(ACCOUNT_3PID + "/email/requestToken")
@routes.post(ACCOUNT_3PID + "/msisdn/requestToken")
async def request_token(request: web.Request) -> web.Response:
    await read_json_object(request)
    medium = "email" if "/email/" in request.path else "msisdn"
    raise MatrixError(
        400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", f"This server does not support {medium}."
    )
