"""Server access control lists: ``m.room.server_acl`` (pure, no I/O).

Spec: Client-Server API module "Server Access Control Lists (ACLs) for rooms"
and the ``m.room.server_acl`` event schema; Server-Server API "Server Access
Control Lists (ACLs)" (which requests and PDUs the ACL applies to);
Appendices "Glob-style matching".

The schema's order of evaluation, implemented by :meth:`ServerAcl.allows`:

1. no ``m.room.server_acl`` event in the room state: allow (the caller has no
   ``ServerAcl`` then);
2. the server name is an IP literal and ``allow_ip_literals`` is ``false``: deny;
3. it matches an entry of ``deny``: deny;
4. it matches an entry of ``allow``: allow;
5. otherwise deny.

Matching ignores the port ("``evil.com``, ``evil.com:8448`` and ``evil.com:1234``
would all match rules that apply to ``evil.com``") and is case-insensitive:
the schema calls ``allow`` and ``deny`` "case-insensitive glob expressions",
although server names are otherwise case-sensitive (Appendices, "Server
Name"). Synapse does the same (``glob_to_regex`` with ``re.IGNORECASE``).

Hostile ACLs (CVE-2023-45129, a lasting slowdown caused by one malicious ACL
event): the globs are compiled once, when the ACL is built, into a single
bit-parallel automaton per list, so one check costs one pass over the host
name whatever the patterns are (a regex with several ``.*`` can backtrack for
exponentially long), and the amount of pattern text compiled is bounded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

#: A host longer than this cannot belong to a valid server name ("dns-name =
#: 1*255dns-char"; ``ranvier.core.ids.MAX_SERVER_NAME_LENGTH``). Such names
#: are denied outright, which also bounds the cost of one check.
MAX_HOST_LENGTH: Final = 255

#: At most this many characters of patterns are compiled per list; entries
#: after the budget is spent are ignored. No valid event reaches it: the
#: whole event is at most 65,536 bytes of canonical JSON (Client-Server API,
#: "Size limits"), so only content that skipped that check can be cut short.
MAX_PATTERN_CHARS_PER_LIST: Final = 65_536

#: How many answers one ACL remembers (then it starts over).
MAX_REMEMBERED_ANSWERS: Final = 4096


def _host_of(server_name: str) -> str:
    """The server name without its port (``[v6]`` literals keep their brackets).

    Lenient on purpose: whatever the string is, the ACL still decides about
    it. An unbracketed name with several colons is taken whole (a bare IPv6
    address, not a valid server name but an IP literal nonetheless).
    """
    if server_name.startswith("["):
        close = server_name.find("]")
        return server_name if close == -1 else server_name[: close + 1]
    if server_name.count(":") == 1:
        return server_name.partition(":")[0]
    return server_name


def is_ip_literal(host: str) -> bool:
    """``host`` (port already removed) is an IPv4 or IPv6 address literal.

    As Synapse does, anything in brackets counts as an IPv6 literal: only
    IPv6 literals are written that way in server names.
    """
    if host.startswith("["):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _tokens(pattern: str) -> list[str]:
    """The glob as tokens, with runs of ``*`` merged ("**" matches what "*" does)."""
    tokens: list[str] = []
    for char in pattern:
        if char == "*" and tokens and tokens[-1] == "*":
            continue
        tokens.append(char)
    return tokens


def _can_match_a_host(tokens: list[str]) -> bool:
    # Every token but "*" consumes one character, and hosts longer than
    # MAX_HOST_LENGTH are denied before matching: such a pattern never matches.
    return sum(token != "*" for token in tokens) <= MAX_HOST_LENGTH


@dataclass(frozen=True, slots=True)
class GlobSet:
    """Several globs (``*``: any run, ``?``: one character), matched in one pass.

    Literal patterns (no wildcard, the common ``evil.com``) are a set lookup.
    The rest are one bit-parallel NFA: pattern *p* owns the bits
    ``offset_p .. offset_p + len_p``; bit ``offset_p + i`` set means "the
    first *i* tokens of *p* match what has been read so far". Each character
    costs a few integer operations over all patterns at once, so a check is
    linear in the host name. ``ranvier.core.push_rules`` has the one-pattern
    form of the same automaton.
    """

    literals: frozenset[str] = frozenset()
    start: int = 0
    accept: int = 0
    star_mask: int = 0
    any_mask: int = 0
    literal_masks: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def compile(cls, patterns: Iterable[str]) -> GlobSet:
        """Compile lower-cased ``patterns``; ones that can match no host are left out."""
        literals: set[str] = set()
        start = accept = star_mask = any_mask = 0
        literal_masks: dict[str, int] = {}
        offset = 0
        for pattern in dict.fromkeys(patterns):  # de-duplicated, order kept
            tokens = _tokens(pattern)
            if not _can_match_a_host(tokens):
                continue
            if "*" not in tokens and "?" not in tokens:
                literals.add(pattern)
                continue
            start |= 1 << offset
            for index, token in enumerate(tokens):
                bit = 1 << (offset + index)
                if token == "*":
                    star_mask |= bit
                elif token == "?":
                    any_mask |= bit
                else:
                    literal_masks[token] = literal_masks.get(token, 0) | bit
            offset += len(tokens)
            accept |= 1 << offset
            offset += 1
        return cls(frozenset(literals), start, accept, star_mask, any_mask, literal_masks)

    def _closure(self, states: int) -> int:
        # A "*" may match nothing; runs of "*" were merged, so one shift suffices.
        return states | ((states & self.star_mask) << 1)

    def matches(self, text: str) -> bool:
        """Whether any pattern matches all of ``text`` (both already lower-cased)."""
        if text in self.literals:
            return True
        if not self.start:
            return False
        states = self._closure(self.start)
        for char in text:
            advanced = (states & (self.any_mask | self.literal_masks.get(char, 0))) << 1
            states = self._closure((states & self.star_mask) | advanced)
            if not states:
                return False
        return bool(states & self.accept)


def _patterns(value: Any) -> list[str]:
    """The string entries of ``allow``/``deny``, lower-cased, within the budget.

    Not a list: no entries; entries that are not strings: ignored (both as
    Synapse does; the schema only says the lists hold strings).
    """
    if not isinstance(value, list):
        return []
    patterns: list[str] = []
    budget = MAX_PATTERN_CHARS_PER_LIST
    for entry in value:
        if not isinstance(entry, str):
            continue
        budget -= len(entry)
        if budget < 0:
            break
        patterns.append(entry.lower())
    return patterns


@dataclass(frozen=True, slots=True)
class ServerAcl:
    """A room's compiled ``m.room.server_acl``: build it once per ACL event."""

    allow_ip_literals: bool
    allow: GlobSet
    deny: GlobSet
    #: Answers so far, by lower-cased host: a room sees few distinct servers,
    #: and every PDU, EDU and request from them is checked.
    _answers: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_content(cls, content: Mapping[str, Any]) -> ServerAcl:
        """Compile the ``content`` of an ``m.room.server_acl`` event.

        ``allow_ip_literals`` "defaults to ``true`` if missing or otherwise not a
        boolean"; ``allow`` "defaults to an empty list when not provided,
        effectively disallowing every server"; ``deny`` defaults to empty.
        """
        allow_ip_literals = content.get("allow_ip_literals", True)
        return cls(
            allow_ip_literals=allow_ip_literals if isinstance(allow_ip_literals, bool) else True,
            allow=GlobSet.compile(_patterns(content.get("allow"))),
            deny=GlobSet.compile(_patterns(content.get("deny"))),
        )

    def allows(self, server_name: str) -> bool:
        """Whether ``server_name`` (with or without a port) may take part in the room."""
        host = _host_of(server_name).lower()
        if len(host) > MAX_HOST_LENGTH:
            return False
        answer = self._answers.get(host)
        if answer is None:
            answer = self._decide(host)
            if len(self._answers) >= MAX_REMEMBERED_ANSWERS:
                self._answers.clear()
            self._answers[host] = answer
        return answer

    def _decide(self, host: str) -> bool:
        if not self.allow_ip_literals and is_ip_literal(host):
            return False
        if self.deny.matches(host):
            return False
        return self.allow.matches(host)
