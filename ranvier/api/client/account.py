"""Registration and account management (Client-Server API, "Account registration",
"Account management", "Token-authenticated registration"; OpenAPI
registration.yaml, registration_tokens.yaml, whoami.yaml,
password_management.yaml, account_deactivation.yaml)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.auth import password_ui_auth, require_user
from ranvier.api.client.login import optional_bool, session_body
from ranvier.api.http import HOMESERVER, client_address, json_response, read_json_object
from ranvier.errors import MatrixError
from ranvier.services.accounts import (
    LOGIN_TYPE_DUMMY,
    LOGIN_TYPE_REGISTRATION_TOKEN,
    AccountsService,
)

routes = web.RouteTableDef()


def _registration_disabled() -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", "Registration has been disabled.")


def _check_register_params(params: dict[str, Any]) -> None:
    """Shapes of the registration parameters; 400 before any authentication."""
    username = params.get("username")
    if username is not None and not isinstance(username, str):
        raise MatrixError(400, "M_BAD_JSON", "'username' must be a string.")
    if params.get("password") is not None:
        AccountsService.check_password_shape(params["password"])
    AccountsService.check_device_params(
        params.get("device_id"), params.get("initial_device_display_name")
    )
    optional_bool(params, "inhibit_login", False)
    optional_bool(params, "refresh_token", False)


def _registration_answer(hs_name: str, user_id: str, session: Any) -> web.Response:
    body: dict[str, Any] = {"user_id": user_id, "home_server": hs_name}
    if session is not None:
        body["device_id"] = session.device_id
        body.update(session_body(session))
    return json_response(body)


@routes.post("/_matrix/client/v3/register")
async def register(request: web.Request) -> web.Response:
    hs = request.app[HOMESERVER]
    ip = client_address(request)
    kind = request.query.get("kind", "user")
    if kind not in ("user", "guest"):
        raise MatrixError(400, "M_INVALID_PARAM", "'kind' must be 'user' or 'guest'.")
    body = await read_json_object(request)
    settings = hs.config.registration

    if kind == "guest":
        if not settings.guest_access:
            raise MatrixError(403, "M_FORBIDDEN", "Guest access is disabled.")
        hs.ratelimiter.check("registration", ip)
        # "all parameters in the request body with the exception of
        # initial_device_display_name MUST BE ignored"; the server picks the device ID.
        display_name = body.get("initial_device_display_name")
        AccountsService.check_device_params(None, display_name)
        user_id, session = await hs.accounts.register(
            None, None, is_guest=True, initial_display_name=display_name, ip=ip
        )
        return _registration_answer(hs.server_name, user_id, session)

    if not settings.enabled:
        raise _registration_disabled()
    auth = body.get("auth")
    if not (isinstance(auth, dict) and "session" in auth):
        # Each new registration attempt (a new UIA session) costs one token.
        hs.ratelimiter.check("registration", ip)
    _check_register_params(body)
    # "Homeservers MUST perform the relevant checks and return these codes
    # before performing User-Interactive Authentication".
    if body.get("username") is not None:
        await hs.accounts.check_username_available(body["username"])

    flow = [LOGIN_TYPE_REGISTRATION_TOKEN] if settings.require_token else [LOGIN_TYPE_DUMMY]
    result = await hs.accounts.check_ui_auth(
        body, uri=request.path, method=request.method, flows=[flow]
    )

    params = result.clientdict
    _check_register_params(params)
    username = params.get("username")
    if username is not None:
        await hs.accounts.check_username_available(username)
    password = params.get("password")
    if password is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'password'.")
    user_id, session = await hs.accounts.register(
        username,
        password,
        login=not params.get("inhibit_login", False),
        device_id=params.get("device_id"),
        initial_display_name=params.get("initial_device_display_name"),
        want_refresh=params.get("refresh_token", False),
        ip=ip,
        ui_auth=result,
    )
    return _registration_answer(hs.server_name, user_id, session)


@routes.get("/_matrix/client/v3/register/available")
async def username_available(request: web.Request) -> web.Response:
    hs = request.app[HOMESERVER]
    if not hs.config.registration.enabled:
        raise _registration_disabled()
    username = request.query.get("username")
    if username is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'username'.")
    await hs.accounts.check_username_available(username)
    return json_response({"available": True})


@routes.get("/_matrix/client/v1/register/m.login.registration_token/validity")
async def registration_token_validity(request: web.Request) -> web.Response:
    hs = request.app[HOMESERVER]
    settings = hs.config.registration
    if not (settings.enabled and settings.require_token):
        raise MatrixError(403, "M_FORBIDDEN", "Registration tokens are not enabled.")
    # "Servers should be sure to rate limit this endpoint to avoid brute force attacks."
    hs.ratelimiter.check("registration", client_address(request))
    token = request.query.get("token")
    if token is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'token'.")
    return json_response({"valid": await hs.accounts.registration_token_is_valid(token)})


@routes.get("/_matrix/client/v3/account/whoami")
async def whoami(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    body: dict[str, Any] = {"user_id": requester.user_id, "is_guest": requester.is_guest}
    if requester.device_id is not None:
        body["device_id"] = requester.device_id
    return json_response(body)


def _check_password_params(params: dict[str, Any]) -> None:
    if params.get("new_password") is not None:
        AccountsService.check_password_shape(params["new_password"], "new_password")
    optional_bool(params, "logout_devices", True)


@routes.post("/_matrix/client/v3/account/password")
async def change_password(request: web.Request) -> web.Response:
    # An access token is required: without one the spec would have us verify
    # an email address, and no 3PIDs are kept here.
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    _check_password_params(body)
    result = await password_ui_auth(request, requester, body)
    params = result.clientdict
    _check_password_params(params)
    new_password = params.get("new_password")
    if new_password is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'new_password'.")
    await hs.accounts.change_password(
        requester,
        new_password,
        logout_devices=params.get("logout_devices", True),
        ui_auth=result,
    )
    return json_response({})


def _check_deactivate_params(params: dict[str, Any]) -> None:
    optional_bool(params, "erase", False)
    id_server = params.get("id_server")
    if id_server is not None and not isinstance(id_server, str):
        raise MatrixError(400, "M_BAD_JSON", "'id_server' must be a string.")


@routes.post("/_matrix/client/v3/account/deactivate")
async def deactivate(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    _check_deactivate_params(body)
    result = await password_ui_auth(request, requester, body)
    _check_deactivate_params(result.clientdict)
    await hs.accounts.deactivate(requester.user_id, ui_auth=result)
    # No third-party identifiers are kept, so there is nothing to unbind:
    # "This must be success if the homeserver has no identifiers to unbind".
    return json_response({"id_server_unbind_result": "success"})
