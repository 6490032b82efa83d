"""The Matrix error every layer below the API raises.

Client-Server API, "Standard error response": an error is a JSON object with
``errcode`` and ``error`` (plus extra keys some errors define, such as
``retry_after_ms`` or ``soft_logout``) sent with an HTTP status. Services and
storage raise :class:`MatrixError`; the API layer turns it into an HTTP
response (``ranvier.api.http.to_response``), so the client API, the federation
API, the admin API and the CLI share one error type without this module knowing
HTTP.
"""

from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """An error the client sees as ``{"errcode": ..., "error": ..., **extra}``."""

    def __init__(self, status: int, errcode: str, error: str, **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra

    def json_body(self) -> dict[str, Any]:
        """The response body the client receives."""
        return {"errcode": self.errcode, "error": self.error, **self.extra}
