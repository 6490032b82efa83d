"""Login, token refresh and logout (Client-Server API, "Login", "Refreshing access
tokens"; OpenAPI login.yaml, refresh.yaml, logout.yaml)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.auth import access_token_from_request
from ranvier.api.http import HOMESERVER, client_address, json_response, read_json_object
from ranvier.errors import MatrixError
from ranvier.services.accounts import (
    LOGIN_TYPE_PASSWORD,
    AccountsService,
    Session,
    password_login_user,
)
from ranvier.services.requester import Requester

routes = web.RouteTableDef()


def optional_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be a boolean.")
    return value


def session_body(session: Session) -> dict[str, Any]:
    """The token part of a login, registration or refresh answer."""
    body: dict[str, Any] = {"access_token": session.access_token}
    if session.refresh_token is not None:
        body["refresh_token"] = session.refresh_token
    if session.expires_in_ms is not None:
        body["expires_in_ms"] = session.expires_in_ms
    return body


@routes.get("/_matrix/client/v3/login")
async def get_login_flows(request: web.Request) -> web.Response:
    # Only password login is implemented; m.login.token is offered once it is.
    return json_response({"flows": [{"type": LOGIN_TYPE_PASSWORD}]})


@routes.post("/_matrix/client/v3/login")
async def login(request: web.Request) -> web.Response:
    hs = request.app[HOMESERVER]
    ip = client_address(request)
    hs.ratelimiter.check("login", ip)
    body = await read_json_object(request)
    login_type = body.get("type")
    if login_type is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'type'.")
    if login_type != LOGIN_TYPE_PASSWORD:
        raise MatrixError(400, "M_UNKNOWN", "Bad login type.")
    user = password_login_user(body)
    password = body.get("password")
    if password is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'password'.")
    password = AccountsService.check_password_shape(password)
    device_id = body.get("device_id")
    display_name = body.get("initial_device_display_name")
    AccountsService.check_device_params(device_id, display_name)
    want_refresh = optional_bool(body, "refresh_token", False)

    user_id = await hs.accounts.login_with_password(user, password)
    session = await hs.accounts.login(
        user_id,
        device_id=device_id,
        initial_display_name=display_name,
        want_refresh=want_refresh,
        ip=ip,
    )
    response: dict[str, Any] = {
        "user_id": session.user_id,
        "device_id": session.device_id,
        "home_server": hs.server_name,
        **session_body(session),
    }
    base_url = hs.config.well_known.client_base_url
    if base_url is not None:
        response["well_known"] = {"m.homeserver": {"base_url": base_url}}
    return json_response(response)


@routes.post("/_matrix/client/v3/refresh")
async def refresh(request: web.Request) -> web.Response:
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    token = body.get("refresh_token")
    if token is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'refresh_token'.")
    if not isinstance(token, str):
        raise MatrixError(400, "M_BAD_JSON", "'refresh_token' must be a string.")
    session = await hs.accounts.refresh(token)
    return json_response(session_body(session))


async def _requester_even_if_expired(request: web.Request) -> Requester:
    # Logging out works with an expired access token (as in Synapse).
    token = access_token_from_request(request)
    if token is None:
        raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token.")
    requester: Requester = await request.app[HOMESERVER].accounts.requester_for_access_token(
        token, allow_expired=True
    )
    return requester


@routes.post("/_matrix/client/v3/logout")
async def logout(request: web.Request) -> web.Response:
    requester = await _requester_even_if_expired(request)
    await request.app[HOMESERVER].accounts.logout(requester)
    return json_response({})


@routes.post("/_matrix/client/v3/logout/all")
async def logout_all(request: web.Request) -> web.Response:
    requester = await _requester_even_if_expired(request)
    await request.app[HOMESERVER].accounts.logout_all(requester.user_id)
    return json_response({})
