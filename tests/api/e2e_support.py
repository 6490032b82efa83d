"""Helpers for the end-to-end encryption API tests: users with passwords (for
user-interactive auth) and signed device and cross-signing keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from ranvier.core.signing import SigningKey, encode_base64, sign_json
from tests.api.accounts_support import login, register

Client = TestClient[Any, Any]
V3 = "/_matrix/client/v3"
PASSWORD = "secret-pw"


@dataclass
class Device:
    user_id: str
    device_id: str
    token: str
    signing_key: SigningKey = field(init=False)

    def __post_init__(self) -> None:
        self.signing_key = SigningKey.generate(self.device_id)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def ed25519(self) -> str:
        return encode_base64(self.signing_key.verify_key)

    def device_keys(self, **overrides: Any) -> dict[str, Any]:
        keys = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{self.device_id}": "curve" + self.device_id,
                f"ed25519:{self.device_id}": self.ed25519,
            },
            **overrides,
        }
        return sign_json(keys, self.user_id, self.signing_key)

    def signed_key(self, key: str, **extra: Any) -> dict[str, Any]:
        return sign_json({"key": key, **extra}, self.user_id, self.signing_key)


async def new_user(client: Client, localpart: str) -> Device:
    body = await register(client, localpart, PASSWORD)
    return Device(body["user_id"], body["device_id"], body["access_token"])


async def new_device(client: Client, user: Device, device_id: str) -> Device:
    body = await login(client, user.user_id, PASSWORD, device_id=device_id)
    return Device(body["user_id"], body["device_id"], body["access_token"])


async def call(
    client: Client, method: str, path: str, device: Device | None = None, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    if device is not None:
        kwargs["headers"] = device.headers
    if body is not None:
        kwargs["json"] = body
    response = await client.request(method, V3 + path, **kwargs)
    payload = await response.json() if response.content_type == "application/json" else None
    return response.status, payload


def password_auth(user: Device, session: str | None = None) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": PASSWORD,
    }
    if session is not None:
        auth["session"] = session
    return auth


@dataclass
class CrossSigning:
    """A user's three cross-signing keys."""

    user_id: str
    master: SigningKey = field(default_factory=lambda: SigningKey.generate("m"))
    self_signing: SigningKey = field(default_factory=lambda: SigningKey.generate("s"))
    user_signing: SigningKey = field(default_factory=lambda: SigningKey.generate("u"))

    @staticmethod
    def public(key: SigningKey) -> str:
        return encode_base64(key.verify_key)

    def key_object(self, key: SigningKey, usage: str, signer: SigningKey | None = None) -> dict[str, Any]:
        public = self.public(key)
        obj: dict[str, Any] = {"user_id": self.user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}
        if signer is not None:
            obj = sign_with(obj, self.user_id, signer)
        return obj

    def upload_body(self) -> dict[str, Any]:
        return {
            "master_key": self.key_object(self.master, "master"),
            "self_signing_key": self.key_object(self.self_signing, "self_signing", self.master),
            "user_signing_key": self.key_object(self.user_signing, "user_signing", self.master),
        }


def sign_with(obj: dict[str, Any], user_id: str, key: SigningKey) -> dict[str, Any]:
    """Sign with a cross-signing key: key ID ``ed25519:<public key>``."""
    public = encode_base64(key.verify_key)
    named = SigningKey(public, key.seed)
    return sign_json(obj, user_id, named)
