"""Password hashing: argon2id for new hashes, bcrypt hashes imported from Synapse accepted.

Hashing is deliberately slow and memory-hard, so it runs in worker threads
(argon2-cffi and bcrypt release the GIL) and the event loop keeps serving.
At most ``password_hashing.max_concurrent`` hashes run at once, in a pool of
their own whose queue is first come, first served: a burst of registrations
or logins waits its turn instead of holding ``memory_cost`` each at the same
time (a burst of eight at 64 MiB once took the server to 457 MiB).

Passwords are NFKC-normalised first, as Synapse does, so a Synapse hash of the
same password verifies. An argon2 hash carries its own parameters, so hashes
made with other settings (older defaults, bcrypt) still verify, and are
upgraded to the current parameters at the next successful login.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import argon2

from ranvier.config import ARGON2_PARALLELISM, PasswordHashingConfig

# bcrypt only ever looked at the first 72 bytes; bcrypt >= 5 refuses longer input.
_BCRYPT_MAX_BYTES = 72
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")

# glibc's mallopt(M_MMAP_THRESHOLD, ...) and its default threshold (128 KiB).
_M_MMAP_THRESHOLD = -3
_GLIBC_DEFAULT_MMAP_THRESHOLD = 128 * 1024
_malloc_tuned = False


def _return_hash_buffers_to_the_os() -> None:
    """Make freed argon2 buffers leave the process instead of staying in its RSS.

    argon2 mallocs ``memory_cost`` per hash. glibc serves large blocks with
    mmap and unmaps them on free, but after the first such free it raises its
    mmap threshold (up to 32 MiB) to the freed size, so every later 19 MiB
    buffer comes from the hashing thread's heap and stays resident after the
    hash: measured, 24 hashes two at a time left RSS 76 MiB higher for good.
    Setting the threshold explicitly (to glibc's own default) turns that
    adaptation off; the buffers are unmapped after each hash. Process-wide,
    harmless elsewhere: only blocks over 128 KiB are affected. glibc only.
    """
    global _malloc_tuned
    if _malloc_tuned or not sys.platform.startswith("linux"):
        return
    _malloc_tuned = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return
    mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_MMAP_THRESHOLD)


def _normalise(password: str) -> bytes:
    return unicodedata.normalize("NFKC", password).encode("utf-8")


class PasswordHasher:
    def __init__(self, config: PasswordHashingConfig) -> None:
        _return_hash_buffers_to_the_os()
        self._argon2 = argon2.PasswordHasher(
            time_cost=config.time_cost,
            memory_cost=config.memory_cost,
            parallelism=ARGON2_PARALLELISM,
            type=argon2.Type.ID,
        )
        # Threads start on first use, so an idle pool costs nothing; they end
        # when the hasher is garbage-collected (or at close()).
        self._pool = ThreadPoolExecutor(
            config.max_concurrent, thread_name_prefix="ranvier-password-hash"
        )

    def _hash(self, password: str) -> str:
        return self._argon2.hash(_normalise(password))

    def _verify(self, password: str, password_hash: str | None) -> bool:
        encoded = _normalise(password)
        if password_hash is None:
            # Unknown user: spend what verifying a current hash would cost (one
            # argon2id computation with the same parameters), so the answer
            # takes as long as for a known user (no user enumeration by timing).
            self._argon2.hash(encoded)
            return False
        if password_hash.startswith(_BCRYPT_PREFIXES):
            # Imported here: only hashes imported from Synapse need it (and
            # they are upgraded to argon2id at their first login).
            import bcrypt

            try:
                return bcrypt.checkpw(encoded[:_BCRYPT_MAX_BYTES], password_hash.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                return False
        try:
            return self._argon2.verify(password_hash, encoded)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Whether ``password`` matches; a missing hash never matches (but costs the same)."""
        matches = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._verify, password, password_hash
        )
        return matches

    def needs_rehash(self, password_hash: str) -> bool:
        if password_hash.startswith(_BCRYPT_PREFIXES):
            return True
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except argon2.exceptions.InvalidHashError:
            return True

    def close(self) -> None:
        """Let the hashing threads end (queued hashes still finish)."""
        self._pool.shutdown(wait=False)
