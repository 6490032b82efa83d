"""The ``X-Matrix`` request signature (Server-Server API, "Request Authentication").

A federation request is signed by wrapping its method, target URI, origin,
destination and JSON body in an object, signing that object with the JSON
signing algorithm (Appendices, "Signing JSON") and sending the signature in an
``Authorization: X-Matrix origin=...,destination=...,key=...,sig=...`` header.

The header syntax is RFC 9110 section 11.4 (``credentials = auth-scheme
1*SP #auth-param``): names are case-insensitive, values are a ``token`` or a
``quoted-string`` (backslash escapes undone), spaces and tabs may surround the
commas, unknown parameters are ignored. For older servers a value may contain
colons without quotes. Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ranvier.core.ids import is_valid_server_name
from ranvier.core.signing import (
    SignatureError,
    SigningKey,
    sign_json,
    verify_signature,
)

SCHEME = "X-Matrix"

#: ``authorization_header(method, destination, path_with_query, content)``: the
#: hook the federation client calls to sign an outbound request.
RequestSigner = Callable[[str, str, str, Any], str]


class XMatrixError(ValueError):
    """An ``Authorization`` header that is not a usable X-Matrix header, or a
    signature that does not verify."""


@dataclass(frozen=True, slots=True)
class XMatrixAuthorization:
    """The parameters of one X-Matrix header."""

    origin: str
    #: None when the sender left it out: "For compatibility with older
    #: servers, recipients should accept requests without this parameter".
    destination: str | None
    key_id: str
    signature: str


def request_json(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> dict[str, Any]:
    """The object a request signature covers (step 1 of "Request Authentication").

    ``uri`` is the request target as sent: the path from ``/_matrix/...`` and,
    if present, ``?`` and the query string. ``content`` is the parsed JSON
    body; None (no body) leaves the ``content`` key out, as the spec's code does.
    """
    signed: dict[str, Any] = {
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        signed["content"] = content
    return signed


def sign_request(
    key: SigningKey,
    origin: str,
    destination: str,
    method: str,
    uri: str,
    content: Any = None,
) -> XMatrixAuthorization:
    """Sign a request as ``origin`` with ``key``."""
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, key)
    return XMatrixAuthorization(
        origin=origin,
        destination=destination,
        key_id=key.key_id,
        signature=signed["signatures"][origin][key.key_id],
    )


def format_header(authorization: XMatrixAuthorization) -> str:
    """The ``Authorization`` header value, written as the spec asks senders to
    for older servers: one space after the scheme, lower-case names, quoted
    values, no spaces around the commas. Server names, key IDs and base64
    never contain ``"`` or ``\\``, so no escaping is needed (and the
    destination is always sent: recipients "MUST always send it")."""
    params = [("origin", authorization.origin)]
    if authorization.destination is not None:
        params.append(("destination", authorization.destination))
    params += [("key", authorization.key_id), ("sig", authorization.signature)]
    for name, value in params:
        if '"' in value or "\\" in value:
            raise XMatrixError(f"{name} cannot contain quotes or backslashes: {value!r}")
    return f"{SCHEME} " + ",".join(f'{name}="{value}"' for name, value in params)


def authorization_header(
    key: SigningKey,
    origin: str,
    destination: str,
    method: str,
    uri: str,
    content: Any = None,
) -> str:
    """The signed ``Authorization`` header value for one outbound request."""
    return format_header(sign_request(key, origin, destination, method, uri, content))


def request_signer(origin: str, key: SigningKey) -> RequestSigner:
    """The outbound signer of server ``origin``: ``signer(method, destination,
    path_with_query, content)`` → ``Authorization`` header value."""

    def sign(method: str, destination: str, path_with_query: str, content: Any) -> str:
        return authorization_header(key, origin, destination, method, path_with_query, content)

    return sign


# --- parsing --------------------------------------------------------------------------

# RFC 9110 section 5.6.2: tchar.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# One auth-param: name BWS "=" BWS value, where value is a quoted-string
# (qdtext / quoted-pair, section 5.6.4) or an unquoted run. The unquoted form
# is wider than ``token`` (colons for older servers, and Synapse accepts any
# unquoted text up to the comma); it still stops at whitespace, commas and quotes.
_PARAM = re.compile(
    rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*)"'
    r'|([^\s,"\\]+))[ \t]*'
)
_ESCAPED = re.compile(r"\\(.)")
_SCHEME_PREFIX = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) +")
# The required parameters; "sig" is what the spec's example, its code and every
# implementation send (the prose list calls it "signature").
_REQUIRED = ("origin", "key", "sig")


def is_x_matrix(header: str) -> bool:
    """Whether an ``Authorization`` value uses the X-Matrix scheme (case-insensitive,
    RFC 9110 section 11.1)."""
    match = _SCHEME_PREFIX.match(header)
    return match is not None and match.group(1).lower() == SCHEME.lower()


def _parse_params(text: str) -> dict[str, str]:
    """``name=value`` pairs separated by commas; names lower-cased, a name twice is an error."""
    params: dict[str, str] = {}
    position = 0
    while True:
        match = _PARAM.match(text, position)
        if match is None:
            raise XMatrixError("malformed X-Matrix parameters")
        name = match.group(1).lower()
        if name in params:
            raise XMatrixError(f"X-Matrix parameter {name!r} given twice")
        quoted, plain = match.group(2), match.group(3)
        params[name] = _ESCAPED.sub(r"\1", quoted) if quoted is not None else plain
        position = match.end()
        if position == len(text):
            return params
        if text[position] != ",":
            raise XMatrixError("malformed X-Matrix parameters")
        position += 1


def parse_header(header: str) -> XMatrixAuthorization:
    """Parse an ``Authorization: X-Matrix ...`` value; XMatrixError if unusable.

    The origin must be a valid server name (Appendices, "Server Name"); key
    and sig must be present and non-empty. Unknown parameters are ignored.
    """
    scheme = _SCHEME_PREFIX.match(header)
    if scheme is None or scheme.group(1).lower() != SCHEME.lower():
        raise XMatrixError("not an X-Matrix Authorization header")
    params = _parse_params(header[scheme.end() :])
    for name in _REQUIRED:
        if not params.get(name):
            raise XMatrixError(f"X-Matrix header without {name}")
    origin = params["origin"]
    if not is_valid_server_name(origin):
        raise XMatrixError(f"X-Matrix origin {origin!r} is not a valid server name")
    destination = params.get("destination")
    if destination is not None and not destination:
        raise XMatrixError("X-Matrix destination is empty")
    return XMatrixAuthorization(
        origin=origin, destination=destination, key_id=params["key"], signature=params["sig"]
    )


def verify_request(
    authorization: XMatrixAuthorization,
    destination: str,
    method: str,
    uri: str,
    content: Any,
    verify_key: bytes,
) -> None:
    """Check the request signature with the origin's ``verify_key``; XMatrixError if bad.

    ``destination`` is the receiving server's own name: the signed object uses
    it whether or not the header carried one (a header with another
    destination must already have been refused with 401, as the spec says).
    """
    if authorization.destination is not None and authorization.destination != destination:
        raise XMatrixError("X-Matrix destination is not this server")
    signed = request_json(method, uri, authorization.origin, destination, content)
    signed["signatures"] = {authorization.origin: {authorization.key_id: authorization.signature}}
    try:
        verify_signature(signed, authorization.origin, authorization.key_id, verify_key)
    except SignatureError as exc:
        raise XMatrixError(f"invalid X-Matrix signature: {exc}") from None
