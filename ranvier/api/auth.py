"""Who is calling: access-token extraction for the Client-Server API.

Client-Server API, "Using access tokens": the token comes in the
``Authorization: Bearer`` header or (deprecated, still accepted) the
``access_token`` query parameter. Missing → 401 ``M_MISSING_TOKEN``; unknown,
expired or logged out → 401 ``M_UNKNOWN_TOKEN`` (raised by the accounts
service, with ``soft_logout`` where it applies).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ranvier.api.http import HOMESERVER, client_address
from ranvier.errors import MatrixError
from ranvier.services.requester import Requester

if TYPE_CHECKING:
    from ranvier.services.accounts import UiAuthResult


def access_token_from_request(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MatrixError(401, "M_MISSING_TOKEN", "Invalid Authorization header.")
        return token.strip()
    return request.query.get("access_token") or None


async def require_user(request: web.Request, *, allow_guest: bool = False) -> Requester:
    """The requester, or the spec's 401/403; guests only where ``allow_guest``."""
    token = access_token_from_request(request)
    if token is None:
        raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token.")
    hs = request.app[HOMESERVER]
    requester: Requester = await hs.accounts.requester_for_access_token(token)
    if requester.is_guest and not allow_guest:
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not allowed here.")
    if requester.device_id is not None:
        # last_seen_ts / last_seen_ip of the device (throttled by the devices service).
        await hs.devices.note_seen(requester.user_id, requester.device_id, client_address(request))
    return requester


async def password_ui_auth(
    request: web.Request, requester: Requester, body: dict[str, Any]
) -> UiAuthResult:
    """User-interactive auth with the account password, for the endpoints that
    ask for it (password change, deactivation, device deletion, cross-signing
    key replacement). The accounts service runs the UIA; password attempts are
    rate limited by client address."""
    from ranvier.services.accounts import LOGIN_TYPE_PASSWORD

    hs = request.app[HOMESERVER]
    ip = client_address(request)
    result: UiAuthResult = await hs.accounts.check_ui_auth(
        body,
        uri=request.path,
        method=request.method,
        flows=[[LOGIN_TYPE_PASSWORD]],
        requester=requester,
        ratelimit=lambda action: hs.ratelimiter.check(action, ip),
    )
    return result
