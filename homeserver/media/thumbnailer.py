"""Thumbnails with Pillow: blocking, pure functions meant to run on worker threads.

Invariants:
- Only JPEG, PNG, GIF and WebP decoders are ever used (``Image.open(formats=...)``):
  every decoder allowed is attack surface.
- The pixel count is checked from the header, before anything is decoded: an image
  with more than ``max_pixels`` pixels is never decoded (``ThumbnailError("too_large")``).
  Animated thumbnails also bound frames x pixels, falling back to a still image.
- Nothing is ever upscaled: every target size is clamped to the source's size.
- A file Pillow cannot read raises ``ThumbnailError("unreadable")``; callers keep the
  original downloadable and refuse thumbnails cleanly.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageOps, ImageSequence

logger = logging.getLogger(__name__)

PILLOW_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")

# Uploaded type -> type of its still thumbnails (as Synapse: GIF and PNG keep
# transparency as PNG, photos become JPEG).
THUMBNAIL_TYPE_FOR = {
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "image/webp": "image/jpeg",
    "image/gif": "image/png",
    "image/png": "image/png",
}
ANIMATED_THUMBNAIL_TYPE = "image/webp"
_ENCODERS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
# Shrink by whole factors first (cheap box reduction), then LANCZOS for the last
# factor of at most this much: the output is indistinguishable, large images much faster.
_GAP = 3.0


class ThumbnailError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # "too_large" | "unreadable"


@dataclass(frozen=True, slots=True)
class ThumbnailSpec:
    width: int
    height: int
    method: str  # "crop" | "scale"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    animated: bool


@dataclass(frozen=True, slots=True)
class Thumbnail:
    width: int
    height: int
    method: str
    content_type: str
    animated: bool
    data: bytes


def base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def thumbnail_type_for(content_type: str | None) -> str | None:
    return THUMBNAIL_TYPE_FOR.get(base_type(content_type))


def target_size(spec: ThumbnailSpec, src_width: int, src_height: int) -> tuple[int, int]:
    """The output size for ``spec`` from a ``src_width`` x ``src_height`` image, never larger."""
    w, h = spec.width, spec.height
    if spec.method == "crop":
        if w <= src_width and h <= src_height:
            return w, h
        # Shrink the requested box (keeping its aspect) until it fits in the source.
        if src_width * h < src_height * w:
            return src_width, max(1, src_width * h // w)
        return max(1, src_height * w // h), src_height
    # scale: the largest size with the source's aspect that fits in w x h.
    if w * src_height < h * src_width:
        out = w, max(1, w * src_height // src_width)
    else:
        out = max(1, h * src_width // src_height), h
    return min(out[0], src_width), min(out[1], src_height)


@contextmanager
def _open(open_file: Callable[[], BinaryIO], max_pixels: int) -> Iterator[Image.Image]:
    with open_file() as f:
        try:
            image = Image.open(f, formats=PILLOW_FORMATS)
        except Image.DecompressionBombError as e:
            raise ThumbnailError("too_large", str(e)) from None
        except (OSError, ValueError, SyntaxError) as e:
            raise ThumbnailError("unreadable", str(e)) from None
        with image:
            width, height = image.size
            if width < 1 or height < 1:
                raise ThumbnailError("unreadable", "empty image")
            if width * height > max_pixels:
                raise ThumbnailError("too_large", f"{width}x{height} pixels")
            yield image


def _is_animated(image: Image.Image) -> bool:
    return bool(getattr(image, "is_animated", False)) and getattr(image, "n_frames", 1) > 1


def _oriented(image: Image.Image) -> Image.Image:
    """The decoded first frame, turned upright by its EXIF orientation when it has one."""
    try:
        image.load()
    except Image.DecompressionBombError as e:
        raise ThumbnailError("too_large", str(e)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ThumbnailError("unreadable", str(e)) from None
    try:
        transposed = ImageOps.exif_transpose(image)
        if transposed is not None:
            return transposed
    except Exception as e:  # broken EXIF is common; the pixels are still fine
        logger.info("Ignoring unreadable EXIF orientation: %s", e)
    return image


def _resize(image: Image.Image, width: int, height: int, method: str) -> Image.Image:
    if image.mode in ("1", "L", "P", "LA", "PA", "I", "I;16", "F"):
        has_alpha = "A" in image.mode or image.info.get("transparency") is not None
        image = image.convert("RGBA" if has_alpha else "RGB")
    src_w, src_h = image.size
    if method != "crop":
        return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=_GAP)
    # Scale to cover the box, then cut the centre.
    if width * src_h > height * src_w:
        scaled = (width, max(height, width * src_h // src_w))
    else:
        scaled = (max(width, height * src_w // src_h), height)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    resized = image.resize(scaled, Image.Resampling.LANCZOS, reducing_gap=_GAP)
    return resized.crop((left, top, left + width, top + height))


def _encode(image: Image.Image, content_type: str) -> bytes:
    out = io.BytesIO()
    fmt = _ENCODERS[content_type]
    if fmt == "JPEG" and image.mode != "RGB" or fmt == "PNG" and image.mode == "CMYK":
        image = image.convert("RGB")
    image.save(out, fmt, quality=80)
    return out.getvalue()


def probe(open_file: Callable[[], BinaryIO], max_pixels: int) -> ImageInfo:
    """Size and animation of an image, read from its header only (nothing is decoded)."""
    with _open(open_file, max_pixels) as image:
        return ImageInfo(image.size[0], image.size[1], _is_animated(image))


def make_thumbnails(
    open_file: Callable[[], BinaryIO],
    specs: list[ThumbnailSpec],
    content_type: str,
    max_pixels: int,
) -> tuple[ImageInfo, list[Thumbnail]]:
    """Still thumbnails for every spec (de-duplicated by output size), and the image facts.

    Raises ``ThumbnailError`` when the image is too large or unreadable.
    """
    with _open(open_file, max_pixels) as image:
        animated = _is_animated(image)
        src_w, src_h = image.size
        if image.format == "JPEG" and specs:
            # Let libjpeg decode at a reduced scale, still at least the largest target
            # (asked for as a square, so an EXIF rotation cannot make it too small).
            side = max(max(target_size(s, src_w, src_h)) for s in specs)
            drafted = image.size
            image.draft("RGB", (side, side))
            if image.size != drafted:
                logger.debug("Decoding JPEG at %s instead of %s", image.size, drafted)
        decoded_size = image.size
        oriented = _oriented(image)
        if oriented.size != decoded_size:  # EXIF rotated it by 90 degrees
            src_w, src_h = src_h, src_w
        info = ImageInfo(src_w, src_h, animated=animated)
        seen: set[tuple[int, int, str]] = set()
        out = []
        for spec in specs:
            width, height = target_size(spec, info.width, info.height)
            if (width, height, spec.method) in seen:
                continue
            seen.add((width, height, spec.method))
            try:
                data = _encode(_resize(oriented, width, height, spec.method), content_type)
            except (OSError, ValueError) as e:
                raise ThumbnailError("unreadable", str(e)) from None
            out.append(Thumbnail(width, height, spec.method, content_type, False, data))
        return info, out


def make_thumbnail(
    open_file: Callable[[], BinaryIO],
    width: int,
    height: int,
    method: str,
    content_type: str,
    max_pixels: int,
    *,
    animated: bool = False,
) -> Thumbnail:
    """One thumbnail of exactly ``width`` x ``height`` (already clamped by the caller).

    With ``animated``, an animated source gives an animated WebP; a still source, or one
    with too many frames x pixels, gives a still thumbnail of ``content_type``.
    """
    with _open(open_file, max_pixels) as image:
        src_pixels = image.size[0] * image.size[1]
        if (
            animated
            and _is_animated(image)
            and int(getattr(image, "n_frames", 1)) * src_pixels <= max_pixels
        ):
            try:
                return _animated_thumbnail(image, width, height, method)
            except (OSError, ValueError, EOFError) as e:
                raise ThumbnailError("unreadable", str(e)) from None
        oriented = _oriented(image)
        try:
            data = _encode(_resize(oriented, width, height, method), content_type)
        except (OSError, ValueError) as e:
            raise ThumbnailError("unreadable", str(e)) from None
        return Thumbnail(width, height, method, content_type, False, data)


def _animated_thumbnail(image: Image.Image, width: int, height: int, method: str) -> Thumbnail:
    frames = []
    durations = []
    for frame in ImageSequence.Iterator(image):
        frames.append(_resize(frame.convert("RGBA"), width, height, method))
        durations.append(int(frame.info.get("duration", image.info.get("duration", 100)) or 100))
    out = io.BytesIO()
    frames[0].save(
        out,
        "WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=int(image.info.get("loop", 0) or 0),
        quality=80,
    )
    return Thumbnail(width, height, method, ANIMATED_THUMBNAIL_TYPE, True, out.getvalue())
