"""How the C allocator (glibc's malloc) serves the server process.

glibc gives each thread that allocates while the others hold the arena lock
an arena of its own, up to 8 per core, and an arena keeps the high-water mark
of what its thread once held: freed chunks are reused by that arena, rarely
returned to the system. Ranvier's worker threads (the SQLite writer and
readers, the fsync of group commit, password hashing) each allocate SQLite's
page cache and statements and the rows they read; in bench scenario 14
(docs/performance.md, "Populated server") the reader threads' arenas held
~14 MiB each, of which 5-6 MiB free. With two arenas the threads share what
one of them freed.

The Python objects themselves are allocated under the GIL, mostly by
Python's own allocator (pymalloc), which this does not change.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping

#: glibc's mallopt(M_ARENA_MAX, ...).
M_ARENA_MAX = -8
#: Arenas for the whole process: the main thread's and one for the workers.
DEFAULT_ARENAS = 2


def limit_malloc_arenas(
    environ: Mapping[str, str] | None = None,
    mallopt: Callable[[int, int], int] | None = None,
) -> bool:
    """Cap glibc's malloc arenas at :data:`DEFAULT_ARENAS`, unless the
    ``MALLOC_ARENA_MAX`` environment variable says otherwise (glibc reads it
    itself). Call before the worker threads start. True if the cap was set."""
    environ = os.environ if environ is None else environ
    if "MALLOC_ARENA_MAX" in environ:
        return False  # the operator's choice, already applied by glibc
    if mallopt is None:
        if not sys.platform.startswith("linux"):
            return False
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
            return False
    return bool(mallopt(M_ARENA_MAX, DEFAULT_ARENAS))


__all__ = ["DEFAULT_ARENAS", "M_ARENA_MAX", "limit_malloc_arenas"]
