"""Identifier grammar (spec: Appendices, "Identifier Grammar")."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier.core.ids import (
    MAX_IDENTIFIER_BYTES,
    EventID,
    InvalidIdentifier,
    RoomAlias,
    RoomID,
    UserID,
    is_compliant_user_localpart,
    is_connectable_port,
    is_mine,
    is_my_user_id,
    is_valid_namespaced_id,
    is_valid_opaque_id,
    is_valid_server_name,
    is_valid_user_localpart,
    parse_server_name,
    server_name_of,
)
from ranvier.core.room_versions import get_room_version

# Real identifiers from the oracle vectors (../shared/test-vectors/hashes.jsonl).
V12_ROOM_ID = "!GFSvd_aKN-2DXTby7DgmPkThHEiAOd_gdd-QE6Cgsso"
V3_EVENT_ID = "$rXwPBSyyLMvCfTKXtTfK/ki9K7H6mRL94724/qgs78o"
V4_EVENT_ID = "$9jNWhnAISdROS07QSf_oOAWkeGl30888BOD_RLKPF-I"
V1_EVENT_ID = "$h1:a.test"


def _padded(sigil: str, domain: str, total_bytes: int, fill: str = "a") -> str:
    """``sigil + fill* + ":" + domain``, exactly ``total_bytes`` UTF-8 bytes long."""
    room = total_bytes - len(sigil.encode()) - 1 - len(domain.encode())
    width = len(fill.encode())
    assert room % width == 0
    return f"{sigil}{fill * (room // width)}:{domain}"


# --- Server names -------------------------------------------------------------

VALID_SERVER_NAMES = [
    # The spec's own examples.
    ("matrix.org", ("matrix.org", None)),
    ("matrix.org:8888", ("matrix.org", 8888)),
    ("1.2.3.4", ("1.2.3.4", None)),
    ("1.2.3.4:1234", ("1.2.3.4", 1234)),
    ("[1234:5678::abcd]", ("[1234:5678::abcd]", None)),
    ("[1234:5678::abcd]:5678", ("[1234:5678::abcd]", 5678)),
    # DNS names.
    ("localhost", ("localhost", None)),
    ("a", ("a", None)),
    ("MATRIX.ORG", ("MATRIX.ORG", None)),  # case is kept: server names are case-sensitive
    ("my-server.example", ("my-server.example", None)),
    ("xn--bcher-kva.example", ("xn--bcher-kva.example", None)),
    ("a.b.c.d.e.f", ("a.b.c.d.e.f", None)),
    ("123", ("123", None)),  # all-digit labels are dns-chars too
    ("1.2.3", ("1.2.3", None)),
    ("1.2.3.4.5", ("1.2.3.4.5", None)),
    ("1.2.3.4a", ("1.2.3.4a", None)),
    # Not IPv4address (1*3DIGIT per part), so read as a dns-name, as Synapse does.
    ("1.2.3.1000", ("1.2.3.1000", None)),
    # Ports: ``port = 1*5DIGIT``, whatever the number (as Synapse accepts them).
    ("localhost:1", ("localhost", 1)),
    ("localhost:65535", ("localhost", 65535)),
    ("matrix.org:0", ("matrix.org", 0)),
    ("matrix.org:00000", ("matrix.org", 0)),
    ("matrix.org:65536", ("matrix.org", 65536)),
    ("matrix.org:99999", ("matrix.org", 99999)),
    ("[::1]:99999", ("[::1]", 99999)),
    ("example.org:08448", ("example.org", 8448)),
    ("example.org:00001", ("example.org", 1)),
    # IPv4 edges.
    ("0.0.0.0", ("0.0.0.0", None)),
    ("255.255.255.255:443", ("255.255.255.255", 443)),
    ("010.001.0.00", ("010.001.0.00", None)),  # 1*3DIGIT allows leading zeros
    # IPv6 forms (RFC 3513 section 2.2).
    ("[::1]", ("[::1]", None)),
    ("[::]", ("[::]", None)),
    ("[::1]:8448", ("[::1]", 8448)),
    ("[2001:db8::1]", ("[2001:db8::1]", None)),
    ("[2001:DB8:0:0:8:800:200C:417A]", ("[2001:DB8:0:0:8:800:200C:417A]", None)),
    ("[1:2:3:4:5:6:7:8]", ("[1:2:3:4:5:6:7:8]", None)),
    ("[FF01::101]:1", ("[FF01::101]", 1)),
    ("[::ffff:1.2.3.4]", ("[::ffff:1.2.3.4]", None)),  # IPv4-mapped
    ("[::13.1.68.3]", ("[::13.1.68.3]", None)),
    ("[0:0:0:0:0:FFFF:129.144.52.38]:80", ("[0:0:0:0:0:FFFF:129.144.52.38]", 80)),
]

INVALID_SERVER_NAMES = [
    "",
    ":",
    ":80",
    "matrix.org:",
    # Ports: more than five digits, or not ASCII digits.
    "matrix.org:123456",
    "matrix.org:000000",
    "matrix.org:-1",
    "matrix.org:+80",
    "matrix.org: 80",
    "matrix.org:80 ",
    "matrix.org:8_0",
    "matrix.org:0x50",
    "matrix.org:٨٠",  # Arabic-Indic digits: int() would take them
    "matrix.org:80:80",
    "matrix.org:http",
    # DNS names.
    "matrix.org.",
    ".matrix.org",
    "matrix..org",
    ".",
    "matr!x.org",
    "matrix_org.com",
    "matrix.org/",
    "matrix.org/path",
    "user@matrix.org",
    " matrix.org",
    "matrix.org ",
    "matrix .org",
    "matrix.org\n",
    "mätrix.org",  # IDNs must be punycode
    "例え.jp",
    "matrix.org\x00",
    # IPv4 out of range.
    "1.2.3.256",
    "256.1.1.1",
    "999.999.999.999:80",
    # IPv6.
    "[1234:5678::abcd",
    "1234:5678::abcd",
    "::1",
    "[]",
    "[:]",
    "[::1]x",
    "[::1]:",
    "[::1]:123456",
    "[::1]]",
    "[[::1]]",
    "[::1%eth0]",
    "[fe80::1%25eth0]",
    "[1:2:3:4:5:6:7:8:9]",
    "[1:2:3:4:5:6:7]",
    "[:::]",
    "[1::2::3]",
    "[g::1]",
    "[12345::]",
    "[1.2.3.4]",
    "[::1.2.3.256]",
    "[" + "0:" * 22 + ":]",  # longer than 45 characters
    "x[::1]",
    # Length.
    "a" * 256,
    "a" * 251 + ":8448",
]


@pytest.mark.parametrize(("server_name", "expected"), VALID_SERVER_NAMES)
def test_valid_server_names(server_name: str, expected: tuple[str, int | None]) -> None:
    assert parse_server_name(server_name) == expected
    assert is_valid_server_name(server_name)


@pytest.mark.parametrize("server_name", INVALID_SERVER_NAMES)
def test_invalid_server_names(server_name: str) -> None:
    with pytest.raises(InvalidIdentifier):
        parse_server_name(server_name)
    assert not is_valid_server_name(server_name)


def test_server_name_length_boundary() -> None:
    longest = ".".join(["a" * 63] * 4)  # 255 characters
    assert len(longest) == 255
    assert parse_server_name(longest) == (longest, None)
    assert not is_valid_server_name(longest + "a")
    with_port = "a" * 249 + ":65535"
    assert len(with_port) == 255
    assert parse_server_name(with_port) == ("a" * 249, 65535)


@pytest.mark.parametrize("value", [None, 1, b"matrix.org", ["matrix.org"]])
def test_server_name_must_be_a_string(value: Any) -> None:
    with pytest.raises(InvalidIdentifier):
        parse_server_name(value)
    assert not is_valid_server_name(value)


def test_ports_beyond_65535_are_valid_identifiers_but_not_connectable() -> None:
    """``port = 1*5DIGIT``: Synapse accepts ``:99999`` in IDs, so refusing it would
    reject events other servers accept; connecting is another matter."""
    user = UserID.parse("@alice:example.org:99999")
    assert (user.localpart, user.domain) == ("alice", "example.org:99999")
    assert RoomAlias.is_valid("#room:example.org:99999")
    assert [is_connectable_port(p) for p in (0, 1, 8448, 65535, 65536, 99999)] == [
        False,
        True,
        True,
        True,
        False,
        False,
    ]


def test_invalid_identifier_is_a_value_error() -> None:
    assert issubclass(InvalidIdentifier, ValueError)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    host=st.from_regex(r"[A-Za-z0-9-]{1,20}(\.[A-Za-z0-9-]{1,20}){0,3}", fullmatch=True),
    port=st.none() | st.integers(min_value=0, max_value=99999),
)
def test_any_dns_name_and_port_parse_back(host: str, port: int | None) -> None:
    server_name = host if port is None else f"{host}:{port}"
    parsed_host, parsed_port = parse_server_name(server_name)
    assert parsed_port == port
    # A dotted quad with an octet over 255 is the one dns-char string we refuse.
    assert parsed_host == host


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.ip_addresses(v=6), st.none() | st.integers(min_value=0, max_value=99999))
def test_any_ipv6_address_parses(address: Any, port: int | None) -> None:
    literal = f"[{address}]"
    server_name = literal if port is None else f"{literal}:{port}"
    assert parse_server_name(server_name) == (literal, port)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.ip_addresses(v=4))
def test_any_ipv4_address_parses(address: Any) -> None:
    assert parse_server_name(str(address)) == (str(address), None)


# --- User ID localparts -------------------------------------------------------

# (localpart, valid for new users, valid historically, compliant)
LOCALPARTS = [
    ("alice", True, True, True),
    ("a", True, True, True),
    ("0123456789", True, True, True),
    ("a.b_c=d-e/f+g", True, True, True),
    ("_", True, True, True),
    ("=2e", True, True, True),
    # Historical: outside the current grammar but still U+0021–U+007E.
    ("Alice", False, True, True),
    ("ALICE", False, True, True),
    ("alice!", False, True, True),
    ("~tilde", False, True, True),
    ("a*b", False, True, True),
    ("a#b@c$d", False, True, True),
    ("[]{}|\\^`'\"", False, True, True),
    # Historical and non-compliant: the spec still says servers MUST accept
    # them (Appendices, "Historical User IDs").
    ("", False, True, False),
    ("a b", False, True, False),
    ("é", False, True, False),
    ("日本", False, True, False),
    ("\U0001f600", False, True, False),
    ("tab\there", False, True, False),
    ("\x01", False, True, False),
    ("\x7f", False, True, False),
    ("\u2028", False, True, False),
    # Never valid.
    (":", False, False, False),
    ("a:b", False, False, False),
    ("\x00", False, False, False),
    ("a\x00b", False, False, False),
    ("\ud800", False, False, False),
    ("a\udfff", False, False, False),
]


@pytest.mark.parametrize(("localpart", "new", "historical", "compliant"), LOCALPARTS)
def test_user_localparts(localpart: str, new: bool, historical: bool, compliant: bool) -> None:
    assert is_valid_user_localpart(localpart, historical=False) is new
    assert is_valid_user_localpart(localpart, historical=True) is historical
    assert is_compliant_user_localpart(localpart) is compliant


def test_every_ascii_character_in_localparts() -> None:
    strict = set("abcdefghijklmnopqrstuvwxyz0123456789._=-/+")
    for code in range(0x80):
        char = chr(code)
        assert is_valid_user_localpart(char, historical=False) is (char in strict)
        assert is_valid_user_localpart(char, historical=True) is (char not in ":\x00")
        # 0x21-0x39 and 0x3B-0x7E.
        assert is_compliant_user_localpart(char) is (0x21 <= code <= 0x7E and code != 0x3A)


@pytest.mark.parametrize("value", [None, 1, b"alice"])
def test_localpart_must_be_a_string(value: Any) -> None:
    assert not is_valid_user_localpart(value, historical=True)
    assert not is_valid_user_localpart(value, historical=False)
    assert not is_compliant_user_localpart(value)


# --- User IDs -----------------------------------------------------------------

VALID_USER_IDS = [
    ("@alice:example.org", "alice", "example.org"),
    ("@a:b", "a", "b"),
    ("@alice:example.org:8448", "alice", "example.org:8448"),
    ("@alice:[::1]:8448", "alice", "[::1]:8448"),
    ("@alice:1.2.3.4", "alice", "1.2.3.4"),
    ("@a.b_c=d-e/f+g:example.org", "a.b_c=d-e/f+g", "example.org"),
    ("@alice:EXAMPLE.ORG", "alice", "EXAMPLE.ORG"),
]

HISTORICAL_USER_IDS = [
    ("@Alice:example.org", "Alice", True),
    ("@alice!:example.org", "alice!", True),
    ("@~:example.org", "~", True),
    ("@:example.org", "", False),
    ("@a b:example.org", "a b", False),
    ("@ünïcödé:example.org", "ünïcödé", False),
    ("@ctrl\x01:example.org", "ctrl\x01", False),
]

INVALID_USER_IDS = [
    "",
    "@",
    "alice:example.org",
    "#alice:example.org",
    "!alice:example.org",
    " @alice:example.org",
    "@alice",
    "@alice:",
    "@:",
    "@alice:example.org:123456",
    "@alice:example.org:+80",
    "@alice:bad_domain.org",
    "@alice:exa mple.org",
    "@alice:[::1",
    "@alice:example.org/",
    "@a\x00b:example.org",
    "@\ud800:example.org",
    "@alice:example.org\ud800",
    _padded("@", "example.org", MAX_IDENTIFIER_BYTES + 1),
]


@pytest.mark.parametrize(("user_id", "localpart", "domain"), VALID_USER_IDS)
def test_valid_user_ids(user_id: str, localpart: str, domain: str) -> None:
    for historical in (False, True):
        parsed = UserID.parse(user_id, historical=historical)
        assert (parsed.localpart, parsed.domain) == (localpart, domain)
        assert str(parsed) == user_id
        assert UserID.is_valid(user_id, historical=historical)
    assert not parsed.is_historical
    assert parsed.is_compliant


@pytest.mark.parametrize(("user_id", "localpart", "compliant"), HISTORICAL_USER_IDS)
def test_historical_user_ids(user_id: str, localpart: str, compliant: bool) -> None:
    parsed = UserID.parse(user_id)  # the default accepts what federation must accept
    assert parsed == UserID.parse(user_id, historical=True)
    assert parsed.localpart == localpart
    assert parsed.domain == "example.org"
    assert str(parsed) == user_id
    assert parsed.is_historical
    assert parsed.is_compliant is compliant
    with pytest.raises(InvalidIdentifier):
        UserID.parse(user_id, historical=False)
    assert not UserID.is_valid(user_id, historical=False)


@pytest.mark.parametrize("user_id", INVALID_USER_IDS)
def test_invalid_user_ids(user_id: str) -> None:
    for historical in (False, True):
        with pytest.raises(InvalidIdentifier):
            UserID.parse(user_id, historical=historical)
        assert not UserID.is_valid(user_id, historical=historical)


@pytest.mark.parametrize("value", [None, 1, b"@a:b"])
def test_user_id_must_be_a_string(value: Any) -> None:
    with pytest.raises(InvalidIdentifier):
        UserID.parse(value)


@pytest.mark.parametrize("historical", [False, True])
def test_user_id_255_byte_boundary(historical: bool) -> None:
    longest = _padded("@", "example.org", MAX_IDENTIFIER_BYTES)
    assert len(longest.encode()) == 255
    assert UserID.parse(longest, historical=historical).domain == "example.org"
    too_long = _padded("@", "example.org", MAX_IDENTIFIER_BYTES + 1)
    with pytest.raises(InvalidIdentifier, match="255 bytes"):
        UserID.parse(too_long, historical=historical)


def test_user_id_limit_counts_bytes_not_characters() -> None:
    # ":example.org" is 12 bytes and "@" one, leaving 242 bytes: 121 "é".
    longest = _padded("@", "example.org", 255, fill="é")
    assert len(longest) == 134
    assert UserID.parse(longest).localpart == "é" * 121
    with pytest.raises(InvalidIdentifier, match="255 bytes"):
        UserID.parse("@a" + longest[1:])
    # A long domain counts too.
    domain = "d" * 240
    assert UserID.is_valid(_padded("@", domain, 255))
    assert not UserID.is_valid(_padded("@", domain, 256))


def test_user_id_is_a_frozen_value() -> None:
    user = UserID.parse("@alice:example.org")
    assert user == UserID("alice", "example.org")
    assert hash(user) == hash(UserID("alice", "example.org"))
    assert user != UserID("alice", "EXAMPLE.ORG")  # case-sensitive domains
    with pytest.raises(dataclasses.FrozenInstanceError):
        user.localpart = "bob"  # type: ignore[misc]


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    localpart=st.from_regex(r"[a-z0-9._=\-/+]{1,30}", fullmatch=True),
    domain=st.sampled_from(["example.org", "example.org:8448", "[::1]", "1.2.3.4:80"]),
)
def test_strict_user_ids_round_trip(localpart: str, domain: str) -> None:
    user_id = f"@{localpart}:{domain}"
    parsed = UserID.parse(user_id, historical=False)
    assert parsed == UserID(localpart, domain)
    assert str(parsed) == user_id


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_characters=":\x00"), max_size=20))
def test_historical_user_ids_round_trip(localpart: str) -> None:
    user_id = f"@{localpart}:example.org"
    assert str(UserID.parse(user_id)) == user_id


# --- Room IDs -----------------------------------------------------------------

VALID_ROOM_IDS = [
    ("!abc:example.org", "abc", "example.org"),
    ("!hashroom:a.test", "hashroom", "a.test"),
    ("!ABCdef123:example.org:8448", "ABCdef123", "example.org:8448"),
    ("!r:[::1]", "r", "[::1]"),
    ("!ünï côdé\x01:example.org", "ünï côdé\x01", "example.org"),  # MUST-accept grammar
    (V12_ROOM_ID, V12_ROOM_ID[1:], None),
    ("!" + "A" * 43, "A" * 43, None),
    ("!" + "-_" * 21 + "w", "-_" * 21 + "w", None),
]

INVALID_ROOM_IDS = [
    "",
    "!",
    "abc:example.org",
    "@abc:example.org",
    "!abc",  # no domain and not a hash
    "!:example.org",
    "!abc:",
    "!a\x00c:example.org",
    "!\ud800:example.org",
    "!abc:bad_domain",
    "!abc:example.org:123456",
    "!" + "A" * 42,
    "!" + "A" * 44,
    "!" + "+" * 43,  # v12 room IDs use URL-safe base64
    "!" + "/" * 43,
    "!" + "A" * 42 + "=",
    "!" + "A" * 41 + "==",
    "!" + "A" * 42 + "!",
    "$" + "A" * 43,
    _padded("!", "example.org", MAX_IDENTIFIER_BYTES + 1),
]


@pytest.mark.parametrize(("room_id", "opaque_id", "domain"), VALID_ROOM_IDS)
def test_valid_room_ids(room_id: str, opaque_id: str, domain: str | None) -> None:
    parsed = RoomID.parse(room_id)
    assert (parsed.opaque_id, parsed.domain) == (opaque_id, domain)
    assert parsed.localpart == opaque_id
    assert str(parsed) == room_id
    assert RoomID.is_valid(room_id)


@pytest.mark.parametrize("room_id", INVALID_ROOM_IDS)
def test_invalid_room_ids(room_id: str) -> None:
    with pytest.raises(InvalidIdentifier):
        RoomID.parse(room_id)
    assert not RoomID.is_valid(room_id)


def test_room_id_255_byte_boundary() -> None:
    longest = _padded("!", "example.org", MAX_IDENTIFIER_BYTES)
    assert RoomID.is_valid(longest)
    assert not RoomID.is_valid(_padded("!", "example.org", MAX_IDENTIFIER_BYTES + 1))
    assert RoomID.is_valid(_padded("!", "example.org", 255, fill="é"))
    assert not RoomID.is_valid("!a" + _padded("!", "example.org", 255, fill="é")[1:])


@pytest.mark.parametrize("version", [str(n) for n in range(1, 12)])
def test_room_versions_1_to_11_need_a_domain(version: str) -> None:
    room_version = get_room_version(version)
    assert RoomID.parse("!abc:example.org", room_version=room_version).domain == "example.org"
    with pytest.raises(InvalidIdentifier, match="!opaque_id:domain"):
        RoomID.parse(V12_ROOM_ID, room_version=room_version)
    assert not RoomID.is_valid(V12_ROOM_ID, room_version=room_version)


def test_room_version_12_room_ids_are_hashes() -> None:
    # MSC4291: "room IDs are simply the event ID of the m.room.create event
    # using ! as the sigil instead of $".
    v12 = get_room_version("12")
    parsed = RoomID.parse(V12_ROOM_ID, room_version=v12)
    assert parsed.domain is None
    assert parsed.create_event_id == "$" + V12_ROOM_ID[1:]
    assert EventID.is_valid(parsed.create_event_id, room_version=v12)
    with pytest.raises(InvalidIdentifier, match="!hash"):
        RoomID.parse("!abc:example.org", room_version=v12)
    assert RoomID.parse("!abc:example.org").create_event_id is None


# --- Room aliases -------------------------------------------------------------

VALID_ALIASES = [
    ("#room:example.org", "room", "example.org"),
    ("#Room With Spaces:example.org", "Room With Spaces", "example.org"),
    ("#日本語:example.org", "日本語", "example.org"),
    ("#a:1.2.3.4:80", "a", "1.2.3.4:80"),
    ("#a:[2001:db8::1]:8448", "a", "[2001:db8::1]:8448"),
    ("##!@$:example.org", "#!@$", "example.org"),
]

INVALID_ALIASES = [
    "",
    "#",
    "#room",
    "#room:",
    "#:example.org",
    "room:example.org",
    "@room:example.org",
    "#ro\x00om:example.org",
    "#\udc00:example.org",
    "#room:exa mple.org",
    "#room:example.org:123456",
    _padded("#", "example.org", MAX_IDENTIFIER_BYTES + 1),
]


@pytest.mark.parametrize(("alias", "localpart", "domain"), VALID_ALIASES)
def test_valid_room_aliases(alias: str, localpart: str, domain: str) -> None:
    parsed = RoomAlias.parse(alias)
    assert (parsed.localpart, parsed.domain) == (localpart, domain)
    assert str(parsed) == alias
    assert RoomAlias.is_valid(alias)


@pytest.mark.parametrize("alias", INVALID_ALIASES)
def test_invalid_room_aliases(alias: str) -> None:
    with pytest.raises(InvalidIdentifier):
        RoomAlias.parse(alias)
    assert not RoomAlias.is_valid(alias)


def test_room_alias_255_byte_boundary() -> None:
    assert RoomAlias.is_valid(_padded("#", "example.org", 255))
    assert not RoomAlias.is_valid(_padded("#", "example.org", 256))
    assert RoomAlias.is_valid(_padded("#", "example.org", 255, fill="é"))


# --- Event IDs ----------------------------------------------------------------

VALID_EVENT_IDS = [
    (V1_EVENT_ID, "h1", "a.test"),
    ("$1234567890abcdef:example.org:8448", "1234567890abcdef", "example.org:8448"),
    ("$opaque:[::1]", "opaque", "[::1]"),
    (V3_EVENT_ID, V3_EVENT_ID[1:], None),
    (V4_EVENT_ID, V4_EVENT_ID[1:], None),
    ("$" + "A" * 43, "A" * 43, None),
]

INVALID_EVENT_IDS = [
    "",
    "$",
    "$abc",
    "$:example.org",
    "$abc:",
    "$abc:bad..domain",
    "$a\x00:example.org",
    "$\ud800:example.org",
    "abc:example.org",
    "!" + V4_EVENT_ID[1:],
    "$" + "A" * 42,
    "$" + "A" * 44,
    "$" + "A" * 42 + "=",
    "$" + "A" * 42 + ".",
    _padded("$", "example.org", MAX_IDENTIFIER_BYTES + 1),
]


@pytest.mark.parametrize(("event_id", "opaque_id", "domain"), VALID_EVENT_IDS)
def test_valid_event_ids(event_id: str, opaque_id: str, domain: str | None) -> None:
    parsed = EventID.parse(event_id)
    assert (parsed.opaque_id, parsed.domain) == (opaque_id, domain)
    assert parsed.localpart == opaque_id
    assert str(parsed) == event_id
    assert EventID.is_valid(event_id)


@pytest.mark.parametrize("event_id", INVALID_EVENT_IDS)
def test_invalid_event_ids(event_id: str) -> None:
    with pytest.raises(InvalidIdentifier):
        EventID.parse(event_id)
    assert not EventID.is_valid(event_id)


def test_event_id_255_byte_boundary() -> None:
    assert EventID.is_valid(_padded("$", "example.org", 255))
    assert not EventID.is_valid(_padded("$", "example.org", 256))


# Which event IDs each room version accepts: v1–v2 "$opaque:domain"
# (fragment v1-event-ids), v3 standard base64 hash, v4+ URL-safe base64
# (fragment v4-event-ids). An all-letter hash is valid in both alphabets.
EVENT_ID_FORMS = {
    V1_EVENT_ID: {"1", "2"},
    V3_EVENT_ID: {"3"},
    V4_EVENT_ID: {str(n) for n in range(4, 13)},
    "$" + "A" * 43: {str(n) for n in range(3, 13)},
}


@pytest.mark.parametrize("version", [str(n) for n in range(1, 13)])
@pytest.mark.parametrize("event_id", EVENT_ID_FORMS)
def test_event_id_forms_per_room_version(version: str, event_id: str) -> None:
    room_version = get_room_version(version)
    expected = version in EVENT_ID_FORMS[event_id]
    assert EventID.is_valid(event_id, room_version=room_version) is expected
    if not expected:
        with pytest.raises(InvalidIdentifier, match=f"room version {version}"):
            EventID.parse(event_id, room_version=room_version)


# --- Opaque and namespaced identifiers ----------------------------------------


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a", True),
        ("AZaz09-._~", True),
        ("x" * 255, True),
        ("x" * 256, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("a:b", False),
        ("é", False),
        ("a+b", False),
        (None, False),
    ],
)
def test_opaque_ids(value: Any, valid: bool) -> None:
    assert is_valid_opaque_id(value) is valid


def test_opaque_id_custom_length() -> None:
    assert is_valid_opaque_id("x" * 32, max_length=32)
    assert not is_valid_opaque_id("x" * 33, max_length=32)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("m.room.message", True),
        ("com.example.identifier", True),
        ("a", True),
        ("a-b_c.d9", True),
        ("a" * 255, True),
        ("a" * 256, False),
        ("", False),
        ("1abc", False),
        (".abc", False),
        ("_abc", False),
        ("M.room", False),
        ("m.Room", False),
        ("m room", False),
        ("m/room", False),
        (None, False),
    ],
)
def test_namespaced_ids(value: Any, valid: bool) -> None:
    assert is_valid_namespaced_id(value) is valid


# --- which server an identifier belongs to ---------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "server_name"),
    [
        ("@alice:example.org", "example.org"),
        ("@alice:example.org:8448", "example.org:8448"),
        ("@alice:127.0.0.1:8448", "127.0.0.1:8448"),
        ("@alice:[::1]", "[::1]"),
        ("@alice:[::1]:8448", "[::1]:8448"),
        ("@alice:[2001:db8::1]:443", "[2001:db8::1]:443"),
        ("@:example.org", "example.org"),  # historical: empty localpart
        ("!opaque:example.org:8448", "example.org:8448"),
        ("#room:[::1]:8448", "[::1]:8448"),
        ("$h1:127.0.0.1:8448", "127.0.0.1:8448"),  # room versions 1-2
        (V12_ROOM_ID, None),  # room version 12: no server name
        (V3_EVENT_ID, None),
        (V4_EVENT_ID, None),
        ("alice:example.org", None),  # no sigil: not an identifier
        ("", None),
        ("@alice", None),
    ],
)
def test_server_name_of(identifier: str, server_name: str | None) -> None:
    assert server_name_of(identifier) == server_name


@given(
    sigil=st.sampled_from("@!#$"),
    localpart=st.text(st.characters(exclude_characters=":\x00", codec="utf-8")),
    host=st.sampled_from(["example.org", "127.0.0.1", "[::1]", "[2001:db8::8:800:200c:417a]"]),
    port=st.one_of(st.none(), st.integers(1, 65535)),
)
def test_server_name_of_round_trips_every_server_name(
    sigil: str, localpart: str, host: str, port: int | None
) -> None:
    server_name = host if port is None else f"{host}:{port}"
    identifier = f"{sigil}{localpart}:{server_name}"
    assert server_name_of(identifier) == server_name
    assert is_mine(identifier, server_name)
    assert not is_mine(identifier, host if port is not None else f"{host}:8448")


@pytest.mark.parametrize(
    ("identifier", "server_name", "mine"),
    [
        ("@alice:127.0.0.1:8448", "127.0.0.1:8448", True),
        ("@alice:127.0.0.1:8448", "127.0.0.1", False),  # the port is part of the name
        ("@alice:127.0.0.1", "127.0.0.1:8448", False),
        ("@alice:8448", "127.0.0.1:8448", False),  # the old rpartition(":") answered True
        ("@alice:evil.org:8448", "example.org:8448", False),
        ("@alice:Example.org", "example.org", False),  # case-sensitive
        ("@alice:[::1]:8448", "[::1]:8448", True),
        ("@alice:[::1]:8448", "1]:8448", False),
        ("#room:[::1]:8448", "[::1]:8448", True),
        ("!opaque:example.org:8448", "example.org:8448", True),
        (V12_ROOM_ID, "example.org", False),
        ("alice:example.org", "example.org", False),
    ],
)
def test_is_mine(identifier: str, server_name: str, mine: bool) -> None:
    assert is_mine(identifier, server_name) is mine


@pytest.mark.parametrize(
    ("identifier", "mine"),
    [
        ("@alice:example.org:8448", True),
        ("#alice:example.org:8448", False),  # an alias of this server, not a user
        ("!alice:example.org:8448", False),
        ("@alice:example.org", False),
    ],
)
def test_is_my_user_id(identifier: str, mine: bool) -> None:
    assert is_my_user_id(identifier, "example.org:8448") is mine


def test_server_name_of_agrees_with_the_parsers() -> None:
    for identifier, parse in [
        ("@alice:[::1]:8448", UserID.parse),
        ("!opaque:[::1]:8448", RoomID.parse),
        ("#room:[::1]:8448", RoomAlias.parse),
        ("$h1:[::1]:8448", EventID.parse),
        (V12_ROOM_ID, RoomID.parse),
        (V4_EVENT_ID, EventID.parse),
    ]:
        assert server_name_of(identifier) == parse(identifier).domain  # type: ignore[operator]
