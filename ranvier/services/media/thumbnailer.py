"""Thumbnails with Pillow (Client-Server API, "Thumbnails").

Plain functions over a file path, run in a worker thread by the media service
(decoding a big image must never stall the event loop). The image's size is
read from its header *before* any pixel is decoded, and refused beyond a pixel
limit: a small file may declare a gigantic canvas (a decompression bomb).

Pillow (about 5 MiB resident) is imported with this module, which the media
service loads at the first thumbnail, not at startup.

Methods: ``scale`` keeps the aspect ratio and fits the requested box; ``crop``
covers the box and cuts the overflow, centred. Never upscaled (the spec:
"Servers MUST NOT upscale thumbnails under any circumstance").
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError

from ranvier.errors import MatrixError
from ranvier.services.media.kinds import NotThumbnailable, cannot_thumbnail

#: Formats whose thumbnails can stay animated, with their output type.
_ANIMATED_OUTPUT = {
    "GIF": ("GIF", "image/gif"),
    "WEBP": ("WEBP", "image/webp"),
    "PNG": ("PNG", "image/png"),
}
#: Frames of an animated thumbnail at most (beyond, it becomes static).
MAX_ANIMATED_FRAMES = 100


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    content_type: str
    width: int
    height: int
    animated: bool


def target_size(
    source: tuple[int, int], box: tuple[int, int], method: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size to resize to, size to crop that to, centred) for a source and a box."""
    src_w, src_h = source
    box_w, box_h = box
    if method == "crop":
        factor = min(1.0, max(box_w / src_w, box_h / src_h))
        resized = (max(1, math.ceil(src_w * factor)), max(1, math.ceil(src_h * factor)))
        return resized, (min(box_w, resized[0]), min(box_h, resized[1]))
    factor = min(1.0, box_w / src_w, box_h / src_h)
    resized = (max(1, round(src_w * factor)), max(1, round(src_h * factor)))
    return resized, resized


def _fit(frame: Image.Image, resized: tuple[int, int], cropped: tuple[int, int]) -> Image.Image:
    if frame.size != resized:
        # reducing_gap: a cheap integer-factor reduction first, then LANCZOS over
        # the last factor of 3 at most (Pillow: "indistinguishable" from full
        # LANCZOS at 3.0); several times faster for big reductions.
        frame = frame.resize(resized, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if cropped != resized:
        left = (resized[0] - cropped[0]) // 2
        top = (resized[1] - cropped[1]) // 2
        frame = frame.crop((left, top, left + cropped[0], top + cropped[1]))
    return frame


def _open(path: Path, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels("more pixels than Pillow's own limit", max_pixels) from None
    except UnidentifiedImageError:
        raise cannot_thumbnail("the content is not an image we can read") from None
    except OSError:
        raise cannot_thumbnail("the image is corrupt") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise cannot_thumbnail("the image has no pixels")
    if width * height > max_pixels:
        image.close()
        raise _too_many_pixels(f"{width}x{height} pixels", max_pixels)
    return image


def _too_many_pixels(what: str, max_pixels: int) -> MatrixError:
    """Per the spec: "Homeservers should not attempt to generate thumbnails for images that are
    too large, returning a HTTP 413 error with the M_TOO_LARGE code." """
    return MatrixError(
        413,
        "M_TOO_LARGE",
        f"Content is too large to thumbnail: {what}, the limit is {max_pixels} pixels",
    )


def make_thumbnail(
    path: Path,
    box: tuple[int, int],
    method: str,
    animated: bool,
    max_pixels: int,
    requested: tuple[int, int] | None = None,
) -> Thumbnail:
    """A thumbnail of the image at ``path`` fitting ``box`` (worker thread).
    Raises NotThumbnailable when the image is no larger than the size the client
    ``requested`` (default: the box), MatrixError 400 for a non-image or
    corrupt image and 413 beyond ``max_pixels``."""
    image = _open(path, max_pixels)
    within = requested or box
    try:
        if image.width <= within[0] and image.height <= within[1]:
            raise NotThumbnailable
        resized, cropped = target_size(image.size, box, method)
        frames = getattr(image, "n_frames", 1)
        fmt = image.format or ""
        if animated and frames > 1 and fmt in _ANIMATED_OUTPUT:
            if frames * image.width * image.height > max_pixels * 4 or frames > MAX_ANIMATED_FRAMES:
                return _static(image, resized, cropped)
            return _animated(image, fmt, resized, cropped)
        return _static(image, resized, cropped)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        # Pillow reports truncated or malformed pixel data this way.
        raise cannot_thumbnail("the image is corrupt") from None
    finally:
        image.close()


def make_static_thumbnails(
    path: Path, boxes: list[tuple[int, int, str]], max_pixels: int
) -> list[Thumbnail | None]:
    """Static thumbnails of one image for several ``(width, height, method)``
    boxes from a single decode (worker thread): the image is decoded once, at
    the reduced JPEG scale the largest box allows, and each box is resized from
    that. ``None`` for a box the image already fits in (never upscaled)."""
    image = _open(path, max_pixels)
    try:
        plans = [
            None
            if image.width <= width and image.height <= height
            else target_size(image.size, (width, height), method)
            for width, height, method in boxes
        ]
        wanted = [plan for plan in plans if plan is not None]
        if not wanted:
            return [None] * len(boxes)
        image.seek(0)
        largest = max((plan[0] for plan in wanted), key=lambda size: size[0] * size[1])
        image.draft("RGB", largest)
        keep_alpha = image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info
        decoded = image.convert("RGBA" if keep_alpha else "RGB")
        return [
            None if plan is None else _encode(_fit(decoded, *plan), keep_alpha) for plan in plans
        ]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise cannot_thumbnail("the image is corrupt") from None
    finally:
        image.close()


def _encode(frame: Image.Image, keep_alpha: bool) -> Thumbnail:
    out = io.BytesIO()
    if keep_alpha:
        frame.save(out, "PNG", optimize=False)
        return Thumbnail(out.getvalue(), "image/png", frame.width, frame.height, False)
    frame.save(out, "JPEG", quality=80)
    return Thumbnail(out.getvalue(), "image/jpeg", frame.width, frame.height, False)


def _static(image: Image.Image, resized: tuple[int, int], cropped: tuple[int, int]) -> Thumbnail:
    image.seek(0)
    image.draft("RGB", resized)  # JPEG: decode at a reduced scale when it can
    keep_alpha = image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info
    frame = image.convert("RGBA" if keep_alpha else "RGB")
    return _encode(_fit(frame, resized, cropped), keep_alpha)


def _animated(
    image: Image.Image, fmt: str, resized: tuple[int, int], cropped: tuple[int, int]
) -> Thumbnail:
    out_format, content_type = _ANIMATED_OUTPUT[fmt]
    frames: list[Image.Image] = []
    durations: list[int] = []
    for frame in ImageSequence.Iterator(image):
        durations.append(int(frame.info.get("duration", 100)))
        frames.append(_fit(frame.convert("RGBA"), resized, cropped))
    out = io.BytesIO()
    frames[0].save(
        out,
        out_format,
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=int(image.info.get("loop", 0)),
        disposal=2,
    )
    first = frames[0]
    return Thumbnail(out.getvalue(), content_type, first.width, first.height, True)
