"""Checking a PDU from another server before anything else looks at it.

Server-Server API, "Checks performed on receipt of a PDU", steps 1–3 (format
and limits, signatures, content hash) are pure (``core/federation_checks.py``);
this module fetches the signing keys they need through the keyring first.
Every source of events goes through here — /send, /get_missing_events,
/state_ids and /event answers, send_join answers, invites — so no event skips
a check (CVE-2022-39200).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ranvier.core.events import Event
from ranvier.core.federation_checks import (
    InvalidPdu,
    PduCheckResult,
    PduOutcome,
    VerifyKey,
    check_pdu_format,
    check_received_pdu,
    minimum_valid_until_ts,
    required_signing_keys,
)
from ranvier.core.room_versions import RoomVersion
from ranvier.core.server_acl import ServerAcl
from ranvier.services.federation.events import PduCheckFailed
from ranvier.services.federation.keyring import Keyring


class PduChecker:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def check(
        self,
        room_version: RoomVersion,
        pdu: Any,
        *,
        origin: str | None = None,
        acl: ServerAcl | None = None,
    ) -> PduCheckResult:
        """Steps 1–3 (and the room's ACL when given), with the keys fetched."""
        keys: dict[tuple[str, str], VerifyKey] = {}
        try:
            event = check_pdu_format(pdu, room_version)
        except InvalidPdu:
            event = None  # check_received_pdu reports the format error itself
        if event is not None:
            minimum = minimum_valid_until_ts(event)
            for server, key_ids in required_signing_keys(event).items():
                found = await self.keyring.get_verify_keys(server, key_ids, minimum)
                keys.update(
                    {
                        (server, key_id): VerifyKey(key.key, key.valid_until_ts)
                        for key_id, key in found.items()
                    }
                )
        return check_received_pdu(
            pdu,
            room_version,
            lambda server, key_id: keys.get((server, key_id)),
            origin=origin,
            acl=acl,
        )

    async def verify(self, room_version: RoomVersion, pdu: Mapping[str, Any]) -> Event:
        """The PDU as an event to go on with (the redacted copy when its content
        hash is wrong), or :class:`PduCheckFailed`. For events fetched to fill
        gaps, where a PDU kept only as rejected is of no use either."""
        result = await self.check(room_version, pdu)
        if result.outcome in (PduOutcome.ACCEPTED, PduOutcome.REDACTED) and result.event:
            return result.event
        raise PduCheckFailed(result.reason or "invalid PDU")
