"""``m.room.server_acl``: parsing, the schema's order of evaluation, globs, bounds."""

from __future__ import annotations

import fnmatch
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier.core import server_acl
from ranvier.core.server_acl import GlobSet, ServerAcl, is_ip_literal

#: The example of the m.room.server_acl schema (data/event-schemas/examples).
SPEC_EXAMPLE = {"allow_ip_literals": False, "allow": ["*"], "deny": ["*.evil.com", "evil.com"]}


def _acl(**content: Any) -> ServerAcl:
    return ServerAcl.from_content(content)


# --- the spec's example and order of evaluation -----------------------------------


@pytest.mark.parametrize(
    ("server_name", "allowed"),
    [
        ("matrix.org", True),
        ("example.com:8448", True),
        ("evil.com", False),
        # "the suspect server's port number must not be considered".
        ("evil.com:8448", False),
        ("evil.com:1234", False),
        ("sub.evil.com", False),
        ("a.b.evil.com:443", False),
        # Only the listed shapes: neither of these is evil.com or *.evil.com.
        ("notevil.com", True),
        ("evil.com.example", True),
        # allow_ip_literals false.
        ("1.2.3.4", False),
        ("1.2.3.4:8448", False),
        ("[::1]", False),
        ("[2001:db8::1]:8448", False),
    ],
)
def test_spec_example(server_name: str, allowed: bool) -> None:
    assert ServerAcl.from_content(SPEC_EXAMPLE).allows(server_name) is allowed


def test_deny_is_checked_before_allow() -> None:
    acl = _acl(allow=["evil.com", "*"], deny=["evil.com"])
    assert not acl.allows("evil.com")
    assert acl.allows("good.com")


def test_server_matching_nothing_is_denied() -> None:
    acl = _acl(allow=["*.example.org"])
    assert acl.allows("hs.example.org")
    assert not acl.allows("example.org")
    assert not acl.allows("other.net")


def test_missing_allow_denies_everyone_including_the_sender() -> None:
    # "Failing to provide an allow rule of some kind will prevent all servers
    # from participating in the room, including the sender."
    acl = _acl(deny=["evil.com"])
    assert not acl.allows("good.com")
    assert not acl.allows("evil.com")
    assert not ServerAcl.from_content({}).allows("good.com")


def test_ip_literals_are_allowed_by_default() -> None:
    acl = _acl(allow=["*"])
    assert acl.allow_ip_literals is True
    assert acl.allows("1.2.3.4")
    assert acl.allows("[::1]:8448")


@pytest.mark.parametrize("value", [None, 0, 1, "false", "no", [], {}])
def test_allow_ip_literals_that_is_not_a_boolean_means_true(value: Any) -> None:
    # "Defaults to true if missing or otherwise not a boolean."
    acl = _acl(allow_ip_literals=value, allow=["*"])
    assert acl.allow_ip_literals is True
    assert acl.allows("10.0.0.1")


def test_ip_literal_allowed_when_flag_true_can_still_be_denied_by_glob() -> None:
    acl = _acl(allow_ip_literals=True, allow=["*"], deny=["10.*"])
    assert not acl.allows("10.1.2.3")
    assert acl.allows("11.1.2.3")


def test_ipv6_literal_is_matched_with_its_brackets() -> None:
    # Synapse matches the bracketed form; a glob written without brackets
    # therefore does not match an IPv6 literal.
    acl = _acl(allow=["*"], deny=["[2001:db8::*]"])
    assert not acl.allows("[2001:db8::1]:8448")
    assert acl.allows("[2001:db9::1]")
    assert _acl(allow=["[::1]"]).allows("[::1]:8448")
    assert not _acl(allow=["::1"]).allows("[::1]")


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("1.2.3.4", True),
        ("255.255.255.255", True),
        ("[::1]", True),
        ("[2001:db8::1]", True),
        ("::1", True),  # unbracketed: not a valid server name, still an IP literal
        ("1.2.3.256", False),
        ("1.2.3", False),
        ("example.com", False),
        ("1.2.3.4.example.com", False),
        ("", False),
    ],
)
def test_is_ip_literal(host: str, literal: bool) -> None:
    assert is_ip_literal(host) is literal


def test_unbracketed_ipv6_name_is_taken_whole() -> None:
    acl = _acl(allow_ip_literals=False, allow=["*"])
    assert not acl.allows("::1")
    assert not acl.allows("2001:db8::1")


# --- parsing: invalid entries are ignored -----------------------------------------


@pytest.mark.parametrize("value", ["*", {"*": True}, 5, None, True])
def test_allow_that_is_not_a_list_is_empty(value: Any) -> None:
    assert not _acl(allow=value).allows("good.com")


@pytest.mark.parametrize("value", ["evil.com", {"evil.com": True}, 5, None])
def test_deny_that_is_not_a_list_is_empty(value: Any) -> None:
    assert _acl(allow=["*"], deny=value).allows("evil.com")


def test_entries_that_are_not_strings_are_ignored() -> None:
    acl = _acl(allow=[5, None, ["*"], {"a": "*"}, True, "good.com"], deny=[1, ["evil.com"]])
    assert acl.allows("good.com")
    assert not acl.allows("other.com")
    # The non-string deny entries did not turn into anything that matches.
    assert _acl(allow=["*"], deny=[1, ["evil.com"], None]).allows("evil.com")


# --- globs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("*", "", True),
        ("*", "anything.at.all", True),
        ("?", "a", True),
        ("?", "", False),
        ("?", "ab", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("*.org", "matrix.org", True),
        ("*.org", "matrix.org.uk", False),
        ("m*x.org", "mx.org", True),
        ("m*x.org", "matrix.org", True),
        ("m**x.org", "matrix.org", True),
        ("*ev*l*", "xxevxxlxx", True),
        ("*ev*l*", "xxlxxevxx", False),
        ("a*a*a*b", "aaab", True),
        ("a*a*a*b", "aab", False),
        ("exact.host", "exact.host", True),
        ("exact.host", "exact.hosts", False),
        ("", "", True),
        ("", "a", False),
        # Regex metacharacters are literal.
        ("a.c", "abc", False),
        ("a+c", "a+c", True),
        ("a+c", "aac", False),
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("(x|y)", "x", False),
        ("^a$", "^a$", True),
        ("a\\*", "a\\bbb", True),
    ],
)
def test_glob(pattern: str, host: str, matches: bool) -> None:
    assert GlobSet.compile([pattern]).matches(host) is matches


def test_globs_are_case_insensitive() -> None:
    # The schema: "The case-insensitive glob expressions".
    acl = _acl(allow=["*"], deny=["*.EVIL.com", "Bad.Example"])
    assert not acl.allows("sub.evil.COM")
    assert not acl.allows("SUB.EVIL.COM:8448")
    assert not acl.allows("bad.example")
    assert acl.allows("good.example")


def test_several_patterns_in_one_set_do_not_leak_into_each_other() -> None:
    # In the combined automaton a pattern's accept bit sits right before the
    # next pattern's first token: a match of "ab" must not continue into "cd".
    globs = GlobSet.compile(["a?", "cd*", "*x"])
    assert globs.matches("ab")
    assert globs.matches("cdzz")
    assert globs.matches("zzx")
    assert not globs.matches("abcd")
    assert not globs.matches("abc")
    assert not globs.matches("c")
    assert not globs.matches("zz")


def test_duplicate_patterns_compile_once() -> None:
    once = GlobSet.compile(["*.a", "b?"])
    thrice = GlobSet.compile(["*.a", "b?", "*.a", "b?", "b?"])
    assert thrice == once


@settings(max_examples=600, derandomize=True, deadline=None)
@given(
    patterns=st.lists(st.text(alphabet="ab*?.", max_size=8), min_size=1, max_size=5),
    host=st.text(alphabet="ab.", max_size=12),
)
def test_glob_set_agrees_with_fnmatch(patterns: list[str], host: str) -> None:
    # fnmatchcase with this alphabet (no "[") is exactly "*" and "?" globbing.
    expected = any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)
    assert GlobSet.compile(patterns).matches(host) is expected


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    allow=st.lists(st.text(alphabet="aB*?.", max_size=6), max_size=4),
    deny=st.lists(st.text(alphabet="Ab*?.", max_size=6), max_size=4),
    literals=st.booleans(),
    host=st.one_of(st.text(alphabet="abAB.", max_size=8), st.sampled_from(["1.2.3.4", "[::1]"])),
    port=st.sampled_from(["", ":8448", ":1"]),
)
def test_acl_agrees_with_the_schema_order(
    allow: list[str], deny: list[str], literals: bool, host: str, port: str
) -> None:
    acl = _acl(allow=allow, deny=deny, allow_ip_literals=literals)

    def glob(pattern: str) -> bool:
        return fnmatch.fnmatchcase(host.lower(), pattern.lower())

    ip_literal = host in ("1.2.3.4", "[::1]")
    # Steps 2 and 3 deny; step 4 allows; step 5 denies.
    denied = (not literals and ip_literal) or any(map(glob, deny))
    expected = not denied and any(map(glob, allow))
    assert acl.allows(host + port) is expected


# --- hostile ACLs (CVE-2023-45129) ------------------------------------------------


def test_backtracking_pattern_is_linear() -> None:
    # A backtracking regex for "a*a*...a*b" tries O(n^k) ways to place the
    # stars on a long run of "a"s: at k=40 and n=255 it would never finish.
    pattern = "a*" * 40 + "b"
    acl = _acl(allow=[pattern])
    assert acl.allows("a" * 40 + "b")
    assert not acl.allows("a" * 39 + "b")
    host = "a" * 255
    started = time.perf_counter()
    for _ in range(200):
        assert not acl._decide(host)
    elapsed = time.perf_counter() - started
    # ~0.1 ms per check when measured; a generous bound for a loaded machine.
    assert elapsed < 2.0
    assert acl.allows("a" * 254 + "b")


def test_acl_of_the_largest_size_an_event_allows_is_checked_quickly() -> None:
    # 64 KiB of distinct wildcard patterns, none of which matches the host:
    # every pattern stays alive through the whole name (the worst case).
    patterns = [f"*{index}*?" for index in range(7000)]
    acl = _acl(allow=patterns, deny=patterns)
    started = time.perf_counter()
    for _ in range(20):
        assert not acl._decide("x" * 255)
    per_check = (time.perf_counter() - started) / 20
    # ~3 ms when measured; one automaton pass per list, not one per pattern.
    assert per_check < 0.1


def test_pattern_budget_bounds_what_is_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_acl, "MAX_PATTERN_CHARS_PER_LIST", 10)
    acl = _acl(allow=["aaaa", "bbbb", "cccc", "dddd"])
    # "aaaa" + "bbbb" = 8 characters fit; "cccc" would make 12.
    assert acl.allows("aaaa") and acl.allows("bbbb")
    assert not acl.allows("cccc") and not acl.allows("dddd")


def test_default_budget_holds_everything_a_valid_event_can_carry() -> None:
    entries = [f"s{index}.example" for index in range(5000)]
    acl = _acl(allow=entries)
    assert acl.allows("s4999.example")
    assert sum(map(len, entries)) < server_acl.MAX_PATTERN_CHARS_PER_LIST


def test_pattern_longer_than_any_host_is_never_compiled() -> None:
    long_literal = "a" * 256
    long_glob = "?" * 256 + "*"
    globs = GlobSet.compile([long_literal, long_glob, "ok*"])
    assert globs.literals == frozenset()
    assert globs.matches("okay")
    assert not globs.matches("a" * 256)
    # 255 characters still fit.
    assert GlobSet.compile(["a" * 255]).matches("a" * 255)


def test_host_longer_than_a_server_name_is_denied() -> None:
    acl = _acl(allow=["*"])
    assert acl.allows("a" * 255)
    assert not acl.allows("a" * 256)
    assert not acl.allows("a" * 256 + ":8448")


def test_answers_are_remembered_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_acl, "MAX_REMEMBERED_ANSWERS", 3)
    acl = _acl(allow=["*"], deny=["evil.com"])
    assert acl.allows("a.com") and acl.allows("b.com") and not acl.allows("EVIL.com:1")
    assert acl._answers == {"a.com": True, "b.com": True, "evil.com": False}
    assert acl.allows("c.com")
    assert acl._answers == {"c.com": True}
    # A remembered answer is the same answer.
    assert not acl.allows("evil.com") and not acl.allows("evil.com:8448")
