"""Limits on what the server accepts from outside: JSON nesting depth, and NUL in text.

Depth. The spec sets no nesting limit, but every JSON encoder has one: orjson,
which encodes every Ranvier response, refuses more than 254 nested containers,
and serde_json (Conduit, conduwuit, and ruma, which matrix-rust-sdk clients
such as Element X use to parse /sync) refuses more than 128. What a client
stores is served back wrapped: /sync puts event content 7 levels down
(``rooms.join.<room>.timeline.events[i].content``), invite stripped state and
bundled relations (``unsigned.m.relations.m.replace``) a few more, and a
federation transaction puts content 3 levels down (``pdus[i].content``). So any
JSON document that enters — a client request body, or one PDU or EDU received
over federation — may be at most :data:`MAX_JSON_DEPTH` = 100 containers deep,
counted from its root (the root object is level 1). That leaves a margin of 28
levels for wrapping below serde_json's 128 and 154 below orjson's 254. Deeper
input is rejected as ``M_BAD_JSON`` (Client-Server API, "Standard error
response": valid JSON with invalid values); a remote PDU that is too deep is
rejected like any other invalid PDU.

An event built from a client body is one level deeper than its content
(``content`` is a key of the event), and a to-device or device-list EDU one
level deeper than the client body it came from: :data:`MAX_FEDERATED_ITEM_DEPTH`
is the limit for a single PDU or EDU, so that everything this server creates is
accepted by its peers, and :data:`MAX_TRANSACTION_DEPTH` for the body of a
``PUT /_matrix/federation/v1/send/{txnId}`` that carries them.

NUL. PostgreSQL ``text`` (and ``jsonb``) cannot hold U+0000. JSON documents are
stored as their JSON text, where NUL is the escape ``\\u0000``, so JSON content
keeps its NULs on every engine. A plain string bound to a text column cannot:
the storage layer refuses it on both engines alike with :class:`TextWithNulError`,
which the client API answers with 400 ``M_INVALID_PARAM``. So an identifier
with NUL is refused: the grammars that constrain identifiers (Appendices,
"Identifier Grammar") exclude it, and where the spec leaves a string free (event
types, state keys, transaction IDs) PostgreSQL could not store it, so both
engines refuse it alike. Free text outside JSON (presence ``status_msg``, device
display names) is a plain text column too, and is refused the same way.
"""

from __future__ import annotations

from typing import Any

#: The deepest JSON document accepted from outside, in nested containers (root = 1).
MAX_JSON_DEPTH = 100
#: The deepest single PDU or EDU: its content may be a client body of MAX_JSON_DEPTH.
MAX_FEDERATED_ITEM_DEPTH = MAX_JSON_DEPTH + 1
#: The deepest federation transaction body: ``{"pdus": [pdu, ...], "edus": [...]}``.
MAX_TRANSACTION_DEPTH = MAX_FEDERATED_ITEM_DEPTH + 2

NUL = "\x00"


def exceeds_depth(value: Any, limit: int) -> bool:
    """True if ``value`` nests more than ``limit`` containers (dicts, lists, tuples).

    Iterative, so arbitrarily deep input cannot exhaust the Python stack, and
    it stops at the first container beyond ``limit``.
    """
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth > limit:
            return True
        for child in children:
            if isinstance(child, (dict, list, tuple)):
                pending.append((child, depth + 1))
    return False


def json_depth(value: Any) -> int:
    """How many containers ``value`` nests (a scalar is 0, ``{}`` and ``[]`` are 1)."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


class TextWithNulError(ValueError):
    """A string containing NUL (U+0000) was to be stored as text or used as an identifier."""
