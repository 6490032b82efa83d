"""Dot-separated property paths (spec: Appendices, "Dot-separated property paths").

Used by push rule conditions (``content.m\\.relates_to.rel_type``) and by
filters' ``event_fields``.
"""

from __future__ import annotations

import functools


# Cached: push rule evaluation splits the same few condition keys for every event.
@functools.lru_cache(maxsize=1024)
def split_property_path(path: str) -> tuple[str, ...]:
    """``content.m\\.relates_to.rel_type`` → ``("content", "m.relates_to", "rel_type")``.

    ``\\.`` is a literal dot, ``\\\\`` a literal backslash; any other escape is
    kept as it is (backslash and all).
    """
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(path):
        char = path[index]
        if char == "\\" and index + 1 < len(path) and path[index + 1] in ".\\":
            current.append(path[index + 1])
            index += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return tuple(parts)
