"""Hypothesis strategies for JSON documents that canonical JSON can encode."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

MAX_SAFE_INTEGER = 2**53 - 1
MIN_SAFE_INTEGER = -(2**53) + 1

# Characters worth hitting on purpose: every control character, the JSON
# metacharacters, DEL, C1 controls, the JavaScript line separators, the BOM,
# noncharacters and the astral plane.
SPECIAL_CHARS = [chr(c) for c in range(0x20)] + list(
    '"\\/\x7f\x80\x85\x9f\u2028\u2029\ufeff\ufffe\uffff\ue000\U00010000\U0001f600\U0010ffff'
)
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),  # any codepoint except lone surrogates
        st.sampled_from(SPECIAL_CHARS),
    ),
    max_size=12,
)
SAFE_INTEGERS = st.one_of(
    st.integers(min_value=MIN_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER),
    st.sampled_from([0, -1, 1, MIN_SAFE_INTEGER, MAX_SAFE_INTEGER, 2**31, -(2**31), 2**32]),
)
LEAVES = st.one_of(st.none(), st.booleans(), SAFE_INTEGERS, TEXT)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(TEXT, children, max_size=6),
    ),
    max_leaves=20,
)
#: Smaller objects for tests where each example costs more than encoding.
JSON_OBJECTS: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    TEXT,
    st.recursive(
        LEAVES,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
        ),
        max_leaves=8,
    ),
    max_size=5,
)
