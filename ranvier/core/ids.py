"""Identifier grammar (spec: Appendices, "Identifier Grammar").

Parsing and validation only: server names, user IDs (current and historical
grammar), room IDs (with and without a domain), room aliases, event IDs (room
version 1–2 ``$opaque:domain`` and version 3+ ``$hash``), opaque identifiers
and the common namespaced identifier grammar. Pure functions, no I/O.

Everything here is case-sensitive, as the spec requires ("Server names must be
treated case-sensitively"; room and event IDs "are case-sensitive").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ranvier.core.room_versions import EventIdFormat, RoomVersion

#: "The length of a user ID, including the ``@`` sigil and the domain, MUST NOT
#: exceed 255 bytes" — and the same for room IDs, room aliases and event IDs
#: (Appendices, "User Identifiers", "Room IDs", "Room Aliases", "Event IDs").
MAX_IDENTIFIER_BYTES = 255

USER_ID_SIGIL = "@"
ROOM_ID_SIGIL = "!"
ROOM_ALIAS_SIGIL = "#"
EVENT_ID_SIGIL = "$"


class InvalidIdentifier(ValueError):
    """A string does not follow the identifier grammar it claims to."""


# --- Server names (Appendices, "Server Name") --------------------------------

#: ``IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT``
_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}\Z")
#: ``IPv6address = 2*45IPv6char``; ``IPv6char = DIGIT / %x41-46 / %x61-66 / ":" / "."``
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}\Z")
#: DNS names "should consist of a series of labels separated by ``.``, where
#: each label consists of the alphanumeric characters or hyphens". Empty labels
#: (leading, trailing or doubled dots) are rejected, as Synapse does.
_DNS_NAME_RE = re.compile(r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*\Z")
#: ``port = 1*5DIGIT`` (ASCII digits only: ``int()`` alone would accept
#: ``"+80"``, ``" 80"``, ``"8_0"`` and non-ASCII digits).
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")
#: ``dns-name = 1*255dns-char``. We hold the whole server name, port included,
#: to 255 characters: nothing longer fits in any identifier anyway.
MAX_SERVER_NAME_LENGTH = 255


def _parse_port(port: str, server_name: str) -> int:
    """The port of a server name: any 1 to 5 ASCII digits, as the grammar says.

    Ports 0 and 65536–99999 match ``1*5DIGIT``, though nothing can listen on
    them. A server name is an identifier inside user, room and event IDs, and
    Synapse accepts such names too (it only checks that the port is an
    integer); refusing them would reject events, and with them rooms, that
    every other server accepts. Whoever connects to a server uses
    ``is_connectable_port`` (Server-Server API "Resolving server names").
    """
    if not _PORT_RE.match(port):
        raise InvalidIdentifier(f"invalid port in server name {server_name!r}")
    return int(port)


def is_connectable_port(port: int) -> bool:
    """A TCP port one can connect to (1–65535); the grammar allows up to 99999."""
    return 1 <= port <= 65535


def _check_hostname(host: str, server_name: str) -> None:
    if host.startswith("["):
        # IPv6 literals "must be as specified by RFC3513, section 2.2". The
        # character check keeps out zone IDs (``%eth0``) that ``ipaddress``
        # would accept.
        literal = host[1:-1]
        if not host.endswith("]") or not _IPV6_CHARS_RE.match(literal):
            raise InvalidIdentifier(f"invalid IPv6 literal in server name {server_name!r}")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise InvalidIdentifier(
                f"invalid IPv6 literal in server name {server_name!r}"
            ) from None
        return
    if _IPV4_RE.match(host):
        # "IPv4 literals must be a sequence of four decimal numbers in the
        # range 0 to 255". A dotted quad with a larger number is not taken as a
        # DNS name either: no real host name has an all-numeric top label.
        if any(int(octet) > 255 for octet in host.split(".")):
            raise InvalidIdentifier(f"IPv4 octet out of range in server name {server_name!r}")
        return
    if not _DNS_NAME_RE.match(host):
        raise InvalidIdentifier(f"invalid host name in server name {server_name!r}")


def parse_server_name(server_name: str) -> tuple[str, int | None]:
    """Split a server name into ``(host, port)``; ``port`` is None if absent.

    IPv6 hosts keep their brackets (``"[::1]"``), so ``host`` can be put back
    in front of ``":port"`` unchanged. Raises ``InvalidIdentifier``.
    """
    if not isinstance(server_name, str):
        raise InvalidIdentifier("server name must be a string")
    if not server_name:
        raise InvalidIdentifier("server name must not be empty")
    if len(server_name) > MAX_SERVER_NAME_LENGTH:
        raise InvalidIdentifier("server name is longer than 255 characters")
    if server_name.startswith("["):
        close = server_name.find("]")
        if close == -1:
            raise InvalidIdentifier(f"unterminated IPv6 literal in {server_name!r}")
        host, rest = server_name[: close + 1], server_name[close + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidIdentifier(f"junk after IPv6 literal in {server_name!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = server_name.partition(":")
        port_text = port_text_or_empty if colon else None
    _check_hostname(host, server_name)
    port = None if port_text is None else _parse_port(port_text, server_name)
    return host, port


def is_valid_server_name(server_name: str) -> bool:
    try:
        parse_server_name(server_name)
    except InvalidIdentifier:
        return False
    return True


# --- Shared helpers ----------------------------------------------------------


def _has_surrogate(value: str) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in value)


def _is_permissive_localpart(localpart: str) -> bool:
    """Any "valid non-surrogate Unicode code points ... except ``:`` and NUL".

    The grammar of historical user ID localparts, room ID localparts and room
    alias localparts (Appendices, "Historical User IDs", "Room IDs",
    "Room Aliases").
    """
    return ":" not in localpart and "\x00" not in localpart and not _has_surrogate(localpart)


def _check_length(identifier: str, kind: str) -> None:
    # Callers have already ruled out surrogates, so this cannot raise.
    if len(identifier.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise InvalidIdentifier(f"{kind} is longer than {MAX_IDENTIFIER_BYTES} bytes")


def _split_sigil(identifier: str, sigil: str, kind: str) -> str:
    if not isinstance(identifier, str):
        raise InvalidIdentifier(f"{kind} must be a string")
    if not identifier.startswith(sigil):
        raise InvalidIdentifier(f"{kind} must start with {sigil!r}: {identifier!r}")
    if _has_surrogate(identifier):
        raise InvalidIdentifier(f"{kind} contains a lone surrogate")
    _check_length(identifier, kind)
    return identifier[len(sigil) :]


def _split_domain(body: str, identifier: str, kind: str) -> tuple[str, str]:
    # The localpart never contains ``:``, so the first one starts the domain
    # (whose port or IPv6 literal may contain more).
    localpart, colon, domain = body.partition(":")
    if not colon:
        raise InvalidIdentifier(f"{kind} has no domain: {identifier!r}")
    if not is_valid_server_name(domain):
        raise InvalidIdentifier(f"{kind} has an invalid domain: {identifier!r}")
    return localpart, domain


# --- User IDs (Appendices, "User Identifiers") --------------------------------

#: ``user_id_char = DIGIT / %x61-7A / "-" / "." / "=" / "_" / "/" / "+"``
_USER_LOCALPART_RE = re.compile(r"[a-z0-9._=\-/+]+\Z")
#: "User IDs with localparts containing characters outside the range U+0021 to
#: U+007E, or with an empty localpart, are considered non-compliant."
_COMPLIANT_USER_LOCALPART_RE = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")


def is_valid_user_localpart(localpart: str, *, historical: bool) -> bool:
    """Whether ``localpart`` may be the localpart of a user ID.

    ``historical=False``: the current grammar (``a-z 0-9 . _ = - / +``, not
    empty), which new accounts on this server must follow.

    ``historical=True``: what servers "MUST accept" for user IDs from elsewhere
    (Appendices, "Historical User IDs"): "any legal non-surrogate Unicode code
    points except for ``:`` and NUL (U+0000), including other control characters
    and the empty string".
    """
    if not isinstance(localpart, str):
        return False
    if historical:
        return _is_permissive_localpart(localpart)
    return _USER_LOCALPART_RE.match(localpart) is not None


def is_compliant_user_localpart(localpart: str) -> bool:
    """Whether a historical localpart is still "compliant": non-empty, U+0021–U+007E, no ``:``.

    Servers accept non-compliant user IDs inside events but "SHOULD NOT forward
    such user IDs to clients when referenced outside the context of an event"
    (Appendices, "Historical User IDs").
    """
    return isinstance(localpart, str) and _COMPLIANT_USER_LOCALPART_RE.match(localpart) is not None


@dataclass(frozen=True)
class UserID:
    """``@localpart:domain``."""

    localpart: str
    domain: str

    @classmethod
    def parse(cls, user_id: str, *, historical: bool = True) -> UserID:
        """Parse a user ID; ``historical=False`` demands the current localpart grammar.

        The default accepts every user ID a server must accept over federation.
        """
        body = _split_sigil(user_id, USER_ID_SIGIL, "user ID")
        localpart, domain = _split_domain(body, user_id, "user ID")
        if not is_valid_user_localpart(localpart, historical=historical):
            raise InvalidIdentifier(f"invalid user ID localpart: {user_id!r}")
        return cls(localpart, domain)

    @classmethod
    def is_valid(cls, user_id: str, *, historical: bool = True) -> bool:
        try:
            cls.parse(user_id, historical=historical)
        except InvalidIdentifier:
            return False
        return True

    @property
    def is_historical(self) -> bool:
        """True if the localpart does not follow the current grammar."""
        return not is_valid_user_localpart(self.localpart, historical=False)

    @property
    def is_compliant(self) -> bool:
        return is_compliant_user_localpart(self.localpart)

    def __str__(self) -> str:
        return f"{USER_ID_SIGIL}{self.localpart}:{self.domain}"


# --- Room IDs (Appendices, "Room IDs") ----------------------------------------

#: A reference hash is a SHA-256 digest: 32 bytes, 43 characters of unpadded
#: base64 (Server-Server API, "Calculating the reference hash for an event").
_URLSAFE_HASH_RE = re.compile(r"[A-Za-z0-9_-]{43}\Z")
_STANDARD_HASH_RE = re.compile(r"[A-Za-z0-9+/]{43}\Z")


@dataclass(frozen=True)
class RoomID:
    """``!opaque_id:domain`` (room versions 1–11) or ``!hash`` (12+, MSC4291).

    "When a room version requires the domain-less format, room IDs are simply
    the event ID of the ``m.room.create`` event using ``!`` as the sigil instead
    of ``$``" — room version 12 event IDs being URL-safe base64 hashes.
    """

    opaque_id: str
    domain: str | None = None

    @classmethod
    def parse(cls, room_id: str, *, room_version: RoomVersion | None = None) -> RoomID:
        """Parse a room ID; with ``room_version``, demand that version's form."""
        body = _split_sigil(room_id, ROOM_ID_SIGIL, "room ID")
        if ":" in body:
            opaque_id, domain = _split_domain(body, room_id, "room ID")
            # The localpart "MUST only contain valid non-surrogate Unicode code
            # points, including control characters, except ``:`` and NUL".
            if not opaque_id or not _is_permissive_localpart(opaque_id):
                raise InvalidIdentifier(f"invalid room ID localpart: {room_id!r}")
            parsed = cls(opaque_id, domain)
        else:
            if not _URLSAFE_HASH_RE.match(body):
                raise InvalidIdentifier(
                    f"room ID without a domain must be a URL-safe base64 hash: {room_id!r}"
                )
            parsed = cls(body, None)
        if room_version is not None:
            wants_hash = room_version.room_id_from_create_event
            if wants_hash != (parsed.domain is None):
                form = "!hash" if wants_hash else "!opaque_id:domain"
                raise InvalidIdentifier(
                    f"room version {room_version.identifier} room IDs look like {form}: {room_id!r}"
                )
        return parsed

    @classmethod
    def is_valid(cls, room_id: str, *, room_version: RoomVersion | None = None) -> bool:
        try:
            cls.parse(room_id, room_version=room_version)
        except InvalidIdentifier:
            return False
        return True

    @property
    def localpart(self) -> str:
        return self.opaque_id

    @property
    def create_event_id(self) -> str | None:
        """For a domain-less room ID, the ID of its ``m.room.create`` event."""
        return None if self.domain is not None else f"{EVENT_ID_SIGIL}{self.opaque_id}"

    def __str__(self) -> str:
        if self.domain is None:
            return f"{ROOM_ID_SIGIL}{self.opaque_id}"
        return f"{ROOM_ID_SIGIL}{self.opaque_id}:{self.domain}"


# --- Room aliases (Appendices, "Room Aliases") --------------------------------


@dataclass(frozen=True)
class RoomAlias:
    """``#room_alias:domain``."""

    localpart: str
    domain: str

    @classmethod
    def parse(cls, alias: str) -> RoomAlias:
        body = _split_sigil(alias, ROOM_ALIAS_SIGIL, "room alias")
        localpart, domain = _split_domain(body, alias, "room alias")
        # "The localpart of a room alias may contain any valid non-surrogate
        # Unicode codepoints except ``:`` and NUL." An empty one names nothing.
        if not localpart or not _is_permissive_localpart(localpart):
            raise InvalidIdentifier(f"invalid room alias localpart: {alias!r}")
        return cls(localpart, domain)

    @classmethod
    def is_valid(cls, alias: str) -> bool:
        try:
            cls.parse(alias)
        except InvalidIdentifier:
            return False
        return True

    def __str__(self) -> str:
        return f"{ROOM_ALIAS_SIGIL}{self.localpart}:{self.domain}"


# --- Event IDs (Appendices, "Event IDs"; rooms fragments v1-/v4-event-ids) ----


@dataclass(frozen=True)
class EventID:
    """``$opaque_id:domain`` (room versions 1–2) or ``$hash`` (3+).

    Version 3 hashes use standard base64, version 4+ URL-safe base64.
    """

    opaque_id: str
    domain: str | None = None

    @classmethod
    def parse(cls, event_id: str, *, room_version: RoomVersion | None = None) -> EventID:
        """Parse an event ID; with ``room_version``, demand that version's form."""
        body = _split_sigil(event_id, EVENT_ID_SIGIL, "event ID")
        if ":" in body:
            opaque_id, domain = _split_domain(body, event_id, "event ID")
            if not opaque_id or not _is_permissive_localpart(opaque_id):
                raise InvalidIdentifier(f"invalid event ID localpart: {event_id!r}")
            parsed = cls(opaque_id, domain)
        elif _URLSAFE_HASH_RE.match(body) or _STANDARD_HASH_RE.match(body):
            parsed = cls(body, None)
        else:
            raise InvalidIdentifier(f"event ID without a domain must be a hash: {event_id!r}")
        if room_version is not None:
            parsed._check_room_version(room_version, event_id)
        return parsed

    def _check_room_version(self, room_version: RoomVersion, event_id: str) -> None:
        id_format = room_version.event_id_format
        if id_format is EventIdFormat.V1_OPAQUE:
            ok = self.domain is not None
        elif id_format is EventIdFormat.V3_BASE64:
            ok = self.domain is None and _STANDARD_HASH_RE.match(self.opaque_id) is not None
        else:
            ok = self.domain is None and _URLSAFE_HASH_RE.match(self.opaque_id) is not None
        if not ok:
            raise InvalidIdentifier(
                f"{event_id!r} is not an event ID of room version {room_version.identifier}"
            )

    @classmethod
    def is_valid(cls, event_id: str, *, room_version: RoomVersion | None = None) -> bool:
        try:
            cls.parse(event_id, room_version=room_version)
        except InvalidIdentifier:
            return False
        return True

    @property
    def localpart(self) -> str:
        return self.opaque_id

    def __str__(self) -> str:
        if self.domain is None:
            return f"{EVENT_ID_SIGIL}{self.opaque_id}"
        return f"{EVENT_ID_SIGIL}{self.opaque_id}:{self.domain}"


# --- Which server an identifier belongs to ------------------------------------

_SIGILS = (USER_ID_SIGIL, ROOM_ID_SIGIL, ROOM_ALIAS_SIGIL, EVENT_ID_SIGIL)


def server_name_of(identifier: str) -> str | None:
    """The server name of a user ID, room ID, room alias or (v1–v2) event ID.

    "The localpart ... MUST NOT contain ``:``" in every sigilled identifier
    (Appendices, "Identifier Grammar"), so the server name is everything after
    the *first* colon — port and IPv6 literal included (``@a:[::1]:8448`` →
    ``[::1]:8448``). None for what has no server name: a room version 12 room
    ID or a v3+ event ID (a bare hash), or a string without a sigil. The
    server name is not validated: use the ``parse`` methods for that.
    """
    if not isinstance(identifier, str) or not identifier.startswith(_SIGILS):
        return None
    _, colon, server_name = identifier.partition(":")
    return server_name if colon else None


def is_mine(identifier: str, server_name: str) -> bool:
    """Whether ``identifier`` belongs to the server ``server_name``.

    Server names compare exactly: they "must be treated case-sensitively"
    (Appendices, "Server Name"), and a port is part of the name, so
    ``example.org`` and ``example.org:8448`` are different servers.
    """
    return server_name_of(identifier) == server_name


def is_my_user_id(user_id: str, server_name: str) -> bool:
    """Whether ``user_id`` is a user ID (``@``) of the server ``server_name``."""
    return isinstance(user_id, str) and user_id.startswith(USER_ID_SIGIL) and is_mine(
        user_id, server_name
    )


# --- Opaque and namespaced identifiers ----------------------------------------

#: Appendices, "Opaque Identifiers": RFC 3986 unreserved characters.
_OPAQUE_ID_RE = re.compile(r"[0-9A-Za-z\-._~]+\Z")
#: Appendices, "Common Namespaced Identifier Grammar".
_NAMESPACED_ID_RE = re.compile(r"[a-z][a-z0-9\-_.]*\Z")


def is_valid_opaque_id(value: str, *, max_length: int = 255) -> bool:
    """Opaque Identifier Grammar: ``[0-9A-Za-z-._~]``, 1 to ``max_length`` characters."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= max_length
        and _OPAQUE_ID_RE.match(value) is not None
    )


def is_valid_namespaced_id(value: str) -> bool:
    """Common Namespaced Identifier Grammar: ``[a-z][a-z0-9-_.]*``, at most 255 characters."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 255
        and _NAMESPACED_ID_RE.match(value) is not None
    )
