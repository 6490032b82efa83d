"""Password hashing: argon2id for new hashes, bcrypt hashes imported from Synapse accepted.

Hashing is deliberately slow, so it runs in a worker thread (argon2-cffi and
bcrypt release the GIL) and the event loop keeps serving. Passwords are
NFKC-normalised first, as Synapse does, so a Synapse hash of the same password
verifies. Hashes with other parameters (older settings, bcrypt) are upgraded to
the current argon2id parameters at the next successful login.
"""

from __future__ import annotations

import asyncio
import unicodedata

import argon2
import bcrypt

from ranvier.config import ARGON2_PARALLELISM, PasswordHashingConfig

# bcrypt only ever looked at the first 72 bytes; bcrypt >= 5 refuses longer input.
_BCRYPT_MAX_BYTES = 72
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def _normalise(password: str) -> bytes:
    return unicodedata.normalize("NFKC", password).encode("utf-8")


class PasswordHasher:
    def __init__(self, config: PasswordHashingConfig) -> None:
        self._argon2 = argon2.PasswordHasher(
            time_cost=config.time_cost,
            memory_cost=config.memory_cost,
            parallelism=ARGON2_PARALLELISM,
            type=argon2.Type.ID,
        )
        # Compared against when the user is unknown, so that the answer takes
        # as long as for a known user (no user enumeration by timing).
        self._dummy_hash = self._argon2.hash("not the password")

    def _hash(self, password: str) -> str:
        return self._argon2.hash(_normalise(password))

    def _verify(self, password: str, password_hash: str) -> bool:
        encoded = _normalise(password)
        if password_hash.startswith(_BCRYPT_PREFIXES):
            try:
                return bcrypt.checkpw(encoded[:_BCRYPT_MAX_BYTES], password_hash.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                return False
        try:
            return self._argon2.verify(password_hash, encoded)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self._hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Whether ``password`` matches; a missing hash never matches (but costs the same)."""
        target = password_hash if password_hash is not None else self._dummy_hash
        matches = await asyncio.get_running_loop().run_in_executor(
            None, self._verify, password, target
        )
        return matches and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        if password_hash.startswith(_BCRYPT_PREFIXES):
            return True
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except argon2.exceptions.InvalidHashError:
            return True
