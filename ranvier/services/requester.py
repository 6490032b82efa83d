"""Who is acting: the authenticated user (and device) a service call is made for.

The API layer resolves it from an access token (Client-Server API, "Using
access tokens"); services take it as plain data, so every front end (client
API, admin API, CLI) can call them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Requester:
    """An authenticated user acting through one device."""

    user_id: str
    device_id: str | None
    is_guest: bool = False
    #: Row ID of the access token, so logout can remove exactly it.
    access_token_id: int | None = None
    #: Set when an appservice masquerades as one of its users.
    app_service_id: str | None = None
