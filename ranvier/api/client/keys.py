"""End-to-end encryption key endpoints (Client-Server API, "End-to-End
Encryption"; OpenAPI keys.yaml, cross_signing.yaml). The rules live in
ranvier/services/e2e_keys.py."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.client.devices import _ui_auth
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.errors import MatrixError
from ranvier.services.sync import InvalidToken, SyncToken

routes = web.RouteTableDef()
V3 = "/_matrix/client/v3"


@routes.post(V3 + "/keys/upload")
async def upload_keys(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    counts = await hs.e2e_keys.upload_keys(requester, body)
    return json_response({"one_time_key_counts": counts})


@routes.post(V3 + "/keys/query")
async def query_keys(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    if "device_keys" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'device_keys'.")
    return json_response(await hs.e2e_keys.query_keys(requester, body["device_keys"]))


@routes.post(V3 + "/keys/claim")
async def claim_keys(request: web.Request) -> web.Response:
    await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    if "one_time_keys" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'one_time_keys'.")
    return json_response(await hs.e2e_keys.claim_keys(body["one_time_keys"]))


@routes.post(V3 + "/keys/device_signing/upload")
async def upload_cross_signing_keys(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    params = {key: value for key, value in body.items() if key != "auth"}
    keys, needs_auth = await hs.e2e_keys.parse_cross_signing_upload(requester.user_id, params)
    if needs_auth:
        params = await _ui_auth(request, requester, body)
        keys, _ = await hs.e2e_keys.parse_cross_signing_upload(requester.user_id, params)
    await hs.e2e_keys.store_cross_signing_keys(requester.user_id, keys)
    return json_response({})


@routes.post(V3 + "/keys/signatures/upload")
async def upload_signatures(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    return json_response(await hs.e2e_keys.upload_signatures(requester, body))


def _sync_token(request: web.Request, name: str) -> SyncToken:
    text = request.query.get(name)
    if text is None:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing '{name}' query parameter.")
    try:
        return SyncToken.parse(text)
    except InvalidToken:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid '{name}' token.") from None


@routes.get(V3 + "/keys/changes")
async def key_changes(request: web.Request) -> web.Response:
    """Users whose devices changed between two /sync tokens (keys.yaml, getKeysChanges)."""
    requester = await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    since, until = _sync_token(request, "from"), _sync_token(request, "to")
    changed, left = await hs.e2e_keys.device_list_changes(
        requester.user_id,
        since.device_lists,
        until.device_lists,
        events_from=since.events,
        events_to=until.events,
    )
    return json_response({"changed": sorted(changed), "left": sorted(left)})
