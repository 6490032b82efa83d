"""The body of POST /pushers/set, checked (Client-Server API, "Push Notifications").

Missing required keys answer 400 ``M_MISSING_PARAM`` naming them all (the
spec's example: "Missing parameters: lang, data"); keys of the wrong type or
value answer 400 ``M_INVALID_PARAM``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ranvier.errors import MatrixError

NOTIFY_PATH = "/_matrix/push/v1/notify"
MAX_PUSHKEY_BYTES = 512
MAX_APP_ID_CHARS = 64
# What a pusher that is not being deleted needs besides kind, app_id and pushkey.
_REQUIRED_TO_SET = ("app_display_name", "device_display_name", "lang", "data")


@dataclass(frozen=True, slots=True)
class PusherParams:
    kind: str | None  # None: delete the pusher
    app_id: str
    pushkey: str
    append: bool = False
    app_display_name: str = ""
    device_display_name: str = ""
    lang: str = ""
    profile_tag: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _missing(names: list[str]) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", "Missing parameters: " + ", ".join(names))


def _invalid(error: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", error)


def _string(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise _invalid(f"'{name}' must be a string.")
    return value


def parse_pusher_body(body: Mapping[str, Any], *, allow_http: bool) -> PusherParams:
    missing = [name for name in ("kind", "app_id", "pushkey") if name not in body]
    if body.get("kind") is not None:
        missing += [name for name in _REQUIRED_TO_SET if body.get(name) is None]
    if missing:
        raise _missing(missing)
    app_id, pushkey = _string(body, "app_id"), _string(body, "pushkey")
    if not app_id or len(app_id) > MAX_APP_ID_CHARS:
        raise _invalid(f"'app_id' must be 1 to {MAX_APP_ID_CHARS} characters.")
    if not pushkey or len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
        raise _invalid(f"'pushkey' must be 1 to {MAX_PUSHKEY_BYTES} bytes.")
    if body["kind"] is None:
        return PusherParams(kind=None, app_id=app_id, pushkey=pushkey)
    return PusherParams(
        kind=_kind(body),
        app_id=app_id,
        pushkey=pushkey,
        append=_append(body),
        app_display_name=_string(body, "app_display_name"),
        device_display_name=_string(body, "device_display_name"),
        lang=_string(body, "lang"),
        profile_tag=None if body.get("profile_tag") is None else _string(body, "profile_tag"),
        data=_http_data(body["data"], allow_http=allow_http),
    )


def _kind(body: Mapping[str, Any]) -> str:
    kind = _string(body, "kind")
    if kind == "email":
        # The spec's "email" kind needs a mailer; Ranvier has none.
        raise _invalid("Pushers of kind 'email' are not supported by this server.")
    if kind != "http":
        raise _invalid(f"Unknown pusher kind {kind!r}; this server supports 'http'.")
    return kind


def _append(body: Mapping[str, Any]) -> bool:
    append = body.get("append", False)
    if not isinstance(append, bool):
        raise _invalid("'append' must be true or false.")
    return append


def _http_data(data: object, *, allow_http: bool) -> dict[str, Any]:
    """``data`` of an http pusher: it "MUST contain url", an HTTPS URL "with a path
    of /_matrix/push/v1/notify" (v1.13); ``format``, if given, a string."""
    if not isinstance(data, dict):
        raise _invalid("'data' must be an object.")
    if "url" not in data:
        raise _missing(["data.url"])
    url = data["url"]
    if not isinstance(url, str):
        raise _invalid("'data.url' must be a string.")
    _check_url(url, allow_http=allow_http)
    if "format" in data and not isinstance(data["format"], str):
        raise _invalid("'data.format' must be a string.")
    return data


def _check_url(url: str, *, allow_http: bool) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _invalid("'data.url' is not a valid URL.") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise _invalid("'data.url' must be an https:// URL.")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise _invalid("'data.url' must name a host (and no credentials).")
    if parts.path != NOTIFY_PATH:
        raise _invalid(f"'data.url' must have the path {NOTIFY_PATH}.")
