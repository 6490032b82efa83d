"""OpenID tokens (Client-Server API, "OpenID"; Server-Server API, "OpenID").

A client asks for a token (POST /user/{userId}/openid/request_token) and hands
it to a third party (an integration manager, a widget host), which asks this
server who it belongs to (GET /_matrix/federation/v1/openid/userinfo). The
token proves only the user's identity; it grants no access to the account,
and it expires after :data:`OPENID_TOKEN_LIFETIME_MS` (Synapse's default hour).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from ranvier.errors import MatrixError
from ranvier.services.requester import Requester
from ranvier.storage.directory import DirectoryStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

OPENID_TOKEN_LIFETIME_MS = 3_600_000


class OpenIdService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = DirectoryStore(hs.database)

    async def request_token(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """A new token for the requester; asking for another user's is 403."""
        if user_id != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You may only ask for your own OpenID token.")
        now = self.hs.clock_ms()
        token = secrets.token_urlsafe(32)
        await self.store.add_openid_token(token, user_id, now + OPENID_TOKEN_LIFETIME_MS, now)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self.hs.server_name,
            "expires_in": OPENID_TOKEN_LIFETIME_MS // 1000,
        }

    async def userinfo(self, token: str) -> dict[str, str]:
        """``{"sub": user_id}`` for a live token; else 401 M_UNKNOWN_TOKEN (openid.yaml)."""
        user_id = await self.store.openid_token_user(token, self.hs.clock_ms())
        if user_id is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token unknown or expired.")
        return {"sub": user_id}
