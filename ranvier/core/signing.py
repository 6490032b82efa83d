"""Signing and verifying JSON with ed25519 (spec: Appendices, "Signing JSON").

A signature covers the canonical JSON of the object without its
``signatures`` and ``unsigned`` keys. Keys are named ``ed25519:<version>``;
signatures and keys travel as unpadded base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import nacl.exceptions
import nacl.signing

from ranvier.core.canonical_json import encode_canonical_json

ED25519 = "ed25519"


class SignatureError(ValueError):
    """A signature is missing, malformed or does not verify."""


def encode_base64(data: bytes, *, urlsafe: bool = False) -> str:
    """Unpadded base64 (spec: Appendices, "Unpadded Base64")."""
    encoded = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return encoded.rstrip(b"=").decode("ascii")


def decode_base64(value: str) -> bytes:
    """Decode unpadded (or padded) standard or URL-safe base64.

    "Implementations SHOULD accept input with or without padding characters"
    (Appendices, "Unpadded Base64"). Anything outside one alphabet (whitespace,
    junk, a mix of ``+/`` and ``-_``) raises ``ValueError``.
    """
    if not isinstance(value, str):
        raise ValueError("base64 value must be a string")
    stripped = value.rstrip("=")
    if "-" in stripped or "_" in stripped:
        # URL-safe alphabet (Appendices, "URL-safe unpadded Base64"). The
        # standard library's urlsafe_b64decode silently drops characters
        # outside the alphabet, so translate and decode strictly instead.
        if "+" in stripped or "/" in stripped:
            raise ValueError("invalid base64: mixes the standard and URL-safe alphabets")
        stripped = stripped.translate(_URLSAFE_TO_STANDARD)
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"invalid base64: {exc}") from exc


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class SigningKey:
    """An ed25519 signing key with its version (the part after ``ed25519:``)."""

    version: str
    #: The secret: kept out of ``repr`` so it cannot end up in logs.
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != 32:
            raise ValueError("ed25519 seed must be 32 bytes")

    @property
    def key_id(self) -> str:
        return f"{ED25519}:{self.version}"

    @cached_property
    def _nacl(self) -> nacl.signing.SigningKey:
        # Cached: deriving the key pair from the seed costs as much as a
        # signature. cached_property stores into __dict__ directly, which a
        # frozen dataclass allows.
        return nacl.signing.SigningKey(self.seed)

    @property
    def verify_key(self) -> bytes:
        return bytes(self._nacl.verify_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._nacl.sign(message).signature)

    @classmethod
    def generate(cls, version: str) -> SigningKey:
        return cls(version, bytes(nacl.signing.SigningKey.generate()))

    def serialise(self) -> str:
        """Synapse's signing key file line: ``ed25519 <version> <seed>``."""
        return f"{ED25519} {self.version} {encode_base64(self.seed)}"

    @classmethod
    def parse(cls, line: str) -> SigningKey:
        parts = line.split()
        if len(parts) != 3 or parts[0] != ED25519:
            raise ValueError("signing key must be 'ed25519 <version> <base64 seed>'")
        return cls(parts[1], decode_base64(parts[2]))


def signable_bytes(obj: dict[str, Any], *, strict: bool = True) -> bytes:
    """The bytes a signature covers: canonical JSON without signatures and unsigned.

    ``strict=False`` only for events of room versions 1–5, whose canonical JSON
    may hold floats and large integers (see ``canonical_json``).
    """
    return encode_canonical_json(
        {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}, strict=strict
    )


def sign_json(
    obj: dict[str, Any], signer: str, key: SigningKey, *, strict: bool = True
) -> dict[str, Any]:
    """Return a copy of ``obj`` with ``signer``'s signature added.

    Existing signatures (of other servers or other keys) are kept; ``unsigned``
    is carried over untouched. Raises ``SignatureError`` if the existing
    ``signatures`` are malformed, ``CanonicalJSONError`` if ``obj`` cannot be
    encoded.
    """
    existing = obj.get("signatures", {})
    if not isinstance(existing, dict) or not all(isinstance(s, dict) for s in existing.values()):
        raise SignatureError("signatures must be an object of objects")
    signature = encode_base64(key.sign(signable_bytes(obj, strict=strict)))
    signatures = {name: dict(sigs) for name, sigs in existing.items()}
    signatures.setdefault(signer, {})[key.key_id] = signature
    return {**obj, "signatures": signatures}


def verify_signature(
    obj: dict[str, Any], signer: str, key_id: str, verify_key: bytes, *, strict: bool = True
) -> None:
    """Check ``signer``'s signature with ``key_id`` on ``obj``; raise SignatureError if bad.

    ``strict=False`` for (redacted) events of room versions 1–5; see
    ``ranvier.core.events.verify_event_signature``, which picks it.
    """
    try:
        signature_b64 = obj["signatures"][signer][key_id]
    except (KeyError, TypeError):
        raise SignatureError(f"missing signature for {signer} {key_id}") from None
    if not key_id.startswith(f"{ED25519}:"):
        raise SignatureError(f"unsupported key algorithm in {key_id}")
    try:
        signature = decode_base64(signature_b64)
    except ValueError as exc:
        raise SignatureError(f"signature for {signer} {key_id} is not base64") from exc
    try:
        nacl.signing.VerifyKey(verify_key).verify(signable_bytes(obj, strict=strict), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError) as exc:
        raise SignatureError(f"bad signature for {signer} {key_id}") from exc


def sha256_base64(data: bytes, *, urlsafe: bool = False) -> str:
    return encode_base64(hashlib.sha256(data).digest(), urlsafe=urlsafe)
