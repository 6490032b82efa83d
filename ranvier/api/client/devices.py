"""Device management endpoints (Client-Server API, "Device Management";
OpenAPI device_management.yaml). The rules live in ranvier/services/devices.py."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.auth import password_ui_auth, require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.errors import MatrixError
from ranvier.services.devices import MAX_DEVICES_PER_DELETE
from ranvier.services.requester import Requester

routes = web.RouteTableDef()
V3 = "/_matrix/client/v3"


async def read_optional_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body counts as ``{}`` (a first DELETE
    that only asks which authentication flows there are, as Synapse allows)."""
    if not (await request.read()).strip():
        return {}
    return await read_json_object(request)


async def _ui_auth(request: web.Request, requester: Requester, body: dict[str, Any]) -> dict[str, Any]:
    """Password UIA; the request parameters (those of the first request of the session)."""
    params: dict[str, Any] = (await password_ui_auth(request, requester, body)).clientdict
    return params


@routes.get(V3 + "/devices")
async def get_devices(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    return json_response({"devices": await hs.devices.list_devices(requester.user_id)})


@routes.get(V3 + "/devices/{device_id}")
async def get_device(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    return json_response(
        await hs.devices.get_device(requester.user_id, request.match_info["device_id"])
    )


@routes.put(V3 + "/devices/{device_id}")
async def update_device(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    await hs.devices.set_display_name(
        requester.user_id, request.match_info["device_id"], body.get("display_name")
    )
    return json_response({})


@routes.delete(V3 + "/devices/{device_id}")
async def delete_device(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_optional_json_object(request)
    await _ui_auth(request, requester, body)
    # Deleting an unknown device is a no-op, as in Synapse.
    await hs.devices.delete_devices(requester.user_id, [request.match_info["device_id"]])
    return json_response({})


def _device_id_list(params: dict[str, Any]) -> list[str]:
    devices = params.get("devices")
    if devices is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'devices'.")
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise MatrixError(400, "M_BAD_JSON", "'devices' must be a list of device IDs.")
    if len(devices) > MAX_DEVICES_PER_DELETE:
        raise MatrixError(413, "M_TOO_LARGE", f"At most {MAX_DEVICES_PER_DELETE} devices at once.")
    return devices


@routes.post(V3 + "/delete_devices")
async def delete_devices(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    # Shapes first: a malformed request is 400 before any authentication.
    if "devices" in body:
        _device_id_list(body)
    params = await _ui_auth(request, requester, body)
    await hs.devices.delete_devices(requester.user_id, _device_id_list(params))
    return json_response({})
