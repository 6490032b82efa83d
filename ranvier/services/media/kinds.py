"""What can be thumbnailed, and the errors of thumbnailing, without Pillow
(``thumbnailer.py`` imports it at the first thumbnail)."""

from __future__ import annotations

from ranvier.errors import MatrixError

#: Content types we try to thumbnail; anything else is 400 (the spec's "the
#: server cannot thumbnail the content").
THUMBNAILABLE_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/gif", "image/webp", "image/apng", "image/bmp"}
)


class NotThumbnailable(Exception):
    """The source is no larger than what was asked: serve the original instead."""


def cannot_thumbnail(reason: str) -> MatrixError:
    return MatrixError(400, "M_UNKNOWN", f"Cannot generate a thumbnail: {reason}")
