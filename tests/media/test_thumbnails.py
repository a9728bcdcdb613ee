"""GET /_matrix/client/v1/media/thumbnail: sizes, formats, animation and refusals."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
import pytest_twisted
from PIL import Image

from tests.media.helpers import (
    animated_gif,
    assert_error,
    download,
    image_bytes,
    open_image,
    sqlite_only,
    thumbnail,
    upload_ok,
    user,
    with_config,
)
from tests.support.client import Client
from tests.support.server import RunningServer

# (requested width, height, method) -> expected output size, for a 1000x800 source and
# the default thumbnail_sizes (32x32 and 96x96 crop; 320x240, 640x480, 800x600 scale).
EXPECTED_1000x800 = [
    ((32, 32, "crop"), (32, 32)),
    ((96, 96, "crop"), (96, 96)),
    ((50, 50, "crop"), (96, 96)),  # never smaller than asked: the next size up
    ((320, 240, "scale"), (300, 240)),
    ((640, 480, "scale"), (600, 480)),
    ((800, 600, "scale"), (750, 600)),
    ((100, 100, "scale"), (300, 240)),
]

FORMATS = [
    ("PNG", "image/png", "image/png"),
    ("JPEG", "image/jpeg", "image/jpeg"),
    ("GIF", "image/gif", "image/png"),
    ("WEBP", "image/webp", "image/jpeg"),
]


async def thumb_image(
    client: Client, media_id: str, w: int, h: int, method: str, **params: object
) -> tuple[str, Image.Image, bytes]:
    resp = await thumbnail(client, media_id, w, h, method, **params)
    assert resp.code == 200, resp
    content_type = resp.header("Content-Type")
    assert content_type is not None
    return content_type, open_image(resp.raw), resp.raw


@pytest.mark.parametrize(("fmt", "upload_type", "thumb_type"), FORMATS)
@sqlite_only
@pytest_twisted.ensureDeferred
async def test_thumbnail_sizes_for_each_format(
    server: RunningServer, fmt: str, upload_type: str, thumb_type: str
) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, image_bytes(fmt, (1000, 800)), upload_type)
    for (w, h, method), expected in EXPECTED_1000x800:
        content_type, image, _ = await thumb_image(alice, media_id, w, h, method)
        assert image.size == expected, (w, h, method)
        assert content_type == thumb_type
        assert image.format == thumb_type.split("/")[1].upper()


@pytest_twisted.ensureDeferred
async def test_thumbnail_headers(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, image_bytes("PNG", (400, 300)), "image/png")
    resp = await thumbnail(alice, media_id, 32, 32, "crop")
    assert resp.code == 200
    assert resp.header("Content-Disposition") == "inline; filename=thumbnail.png"
    assert (resp.header("Content-Security-Policy") or "").startswith("sandbox")
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("Cross-Origin-Resource-Policy") == "cross-origin"
    assert resp.header("ETag")


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_small_image_is_answered_with_the_original(server: RunningServer) -> None:
    alice = await user(server, "alice")
    original = image_bytes("PNG", (50, 40))
    media_id = await upload_ok(alice, original, "image/png")
    for method in ("crop", "scale"):
        resp = await thumbnail(alice, media_id, 96, 96, method)
        assert resp.code == 200 and resp.raw == original
        assert resp.header("Content-Type") == "image/png"
    # Asked smaller than the image, it is thumbnailed, but never upscaled.
    _, image, _ = await thumb_image(alice, media_id, 32, 32, "crop")
    assert image.size == (32, 32)
    _, image, _ = await thumb_image(alice, media_id, 40, 100, "crop")
    assert image.size[0] <= 50 and image.size[1] <= 40


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_request_larger_than_every_size_gets_the_original(server: RunningServer) -> None:
    alice = await user(server, "alice")
    original = image_bytes("JPEG", (1200, 1000))
    media_id = await upload_ok(alice, original, "image/jpeg")
    resp = await thumbnail(alice, media_id, 1000, 900, "scale")
    assert resp.code == 200 and resp.raw == original


@sqlite_only
@with_config(dynamic_thumbnails=True)
@pytest_twisted.ensureDeferred
async def test_dynamic_thumbnails_have_the_exact_size(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, image_bytes("PNG", (1000, 800)), "image/png")
    _, image, first = await thumb_image(alice, media_id, 50, 50, "crop")
    assert image.size == (50, 50)
    _, image, _ = await thumb_image(alice, media_id, 500, 500, "scale")
    assert image.size == (500, 400)
    _, _, again = await thumb_image(alice, media_id, 50, 50, "crop")
    assert again == first  # cached, not regenerated differently
    rows = await server.hs.storage.media.get_thumbnails("test.local", media_id)
    assert any((t.width, t.height, t.method) == (50, 50, "crop") for t in rows)


@pytest_twisted.ensureDeferred
async def test_animated_gif(server: RunningServer) -> None:
    alice = await user(server, "alice")
    original = animated_gif((400, 300), frames=4)
    media_id = await upload_ok(alice, original, "image/gif")

    content_type, image, _ = await thumb_image(alice, media_id, 96, 96, "crop", animated="true")
    assert content_type == "image/webp"
    assert image.size == (96, 96)
    assert getattr(image, "is_animated", False) and getattr(image, "n_frames", 1) == 4

    # Not asked for (or asked not to): a still image.
    for params in ({}, {"animated": "false"}):
        content_type, image, _ = await thumb_image(alice, media_id, 96, 96, "crop", **params)
        assert content_type == "image/png"
        assert not getattr(image, "is_animated", False)

    # Larger than the image: the animated original itself.
    resp = await thumbnail(alice, media_id, 500, 500, "scale", animated="true")
    assert resp.code == 200 and resp.raw == original
    # ... but never an animation when not asked for.
    content_type, image, _ = await thumb_image(alice, media_id, 500, 500, "scale")
    assert content_type == "image/png" and image.size == (400, 300)
    assert not getattr(image, "is_animated", False)


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_animated_true_on_a_still_image_is_a_still_thumbnail(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, image_bytes("JPEG", (640, 480)), "image/jpeg")
    content_type, image, _ = await thumb_image(alice, media_id, 96, 96, "crop", animated="true")
    assert content_type == "image/jpeg" and image.size == (96, 96)


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_exif_orientation_is_applied(server: RunningServer) -> None:
    alice = await user(server, "alice")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    original = image_bytes("JPEG", (400, 200), exif=exif.tobytes())
    media_id = await upload_ok(alice, original, "image/jpeg")
    _, image, _ = await thumb_image(alice, media_id, 320, 240, "scale")
    assert image.size == (120, 240)  # upright: 200x400 scaled into 320x240


@pytest_twisted.ensureDeferred
async def test_corrupt_image_refuses_thumbnails_but_keeps_the_original(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    broken = image_bytes("PNG", (300, 300))[:200] + b"\x00garbage" * 50
    media_id = await upload_ok(alice, broken, "image/png")
    resp = await thumbnail(alice, media_id, 32, 32, "crop")
    assert_error(resp, 400, "M_UNKNOWN")
    got = await download(alice, media_id)
    assert got.code == 200 and got.raw == broken
    # Not an image at all, though labelled as one.
    fake = await upload_ok(alice, b"<html>hi</html>", "image/jpeg")
    assert_error(await thumbnail(alice, fake, 32, 32, "crop"), 400, "M_UNKNOWN")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size, with one tiny compressed row of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest_twisted.ensureDeferred
async def test_huge_dimensions_are_refused_before_decoding(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bomb = _png_header_only(60_000, 60_000)  # 3.6 gigapixels claimed, a few bytes sent
    media_id = await upload_ok(alice, bomb, "image/png")
    assert_error(await thumbnail(alice, media_id, 32, 32, "crop"), 413, "M_TOO_LARGE")
    got = await download(alice, media_id)
    assert got.code == 200 and got.raw == bomb


@sqlite_only
@with_config(max_image_pixels=10_000)
@pytest_twisted.ensureDeferred
async def test_max_image_pixels_is_configurable(server: RunningServer) -> None:
    alice = await user(server, "alice")
    small = await upload_ok(alice, image_bytes("PNG", (100, 100)), "image/png")
    big = await upload_ok(alice, image_bytes("PNG", (101, 100)), "image/png")
    assert (await thumbnail(alice, small, 32, 32, "crop")).code == 200
    assert_error(await thumbnail(alice, big, 32, 32, "crop"), 413, "M_TOO_LARGE")


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_thumbnail_of_non_image_and_bad_parameters(server: RunningServer) -> None:
    alice = await user(server, "alice")
    text = await upload_ok(alice, b"just text", "text/plain")
    assert_error(await thumbnail(alice, text, 32, 32, "crop"), 400, "M_UNKNOWN")
    png = await upload_ok(alice, image_bytes("PNG", (64, 64)), "image/png")
    path = f"/_matrix/client/v1/media/thumbnail/test.local/{png}"
    assert_error(await alice.get(path, params={"height": 32}), 400, "M_MISSING_PARAM")
    assert_error(await alice.get(path, params={"width": 0, "height": 32}), 400, "M_INVALID_PARAM")
    assert_error(
        await alice.get(path, params={"width": 32, "height": 32, "method": "stretch"}),
        400,
        "M_INVALID_PARAM",
    )
    assert_error(await thumbnail(alice, "NoSuchMedia123", 32, 32), 404, "M_NOT_FOUND")
    assert_error(
        await server.client().get(path, params={"width": 32, "height": 32}),
        401,
        "M_MISSING_TOKEN",
    )


@sqlite_only
@with_config(thumbnail_sizes=[{"width": 64, "height": 64, "method": "crop"}])
@pytest_twisted.ensureDeferred
async def test_configured_thumbnail_sizes(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, image_bytes("PNG", (300, 200)), "image/png")
    rows = await server.hs.storage.media.get_thumbnails("test.local", media_id)
    assert [(t.width, t.height, t.method) for t in rows] == [(64, 64, "crop")]
    _, image, _ = await thumb_image(alice, media_id, 32, 32, "crop")
    assert image.size == (64, 64)
    # No scale thumbnail exists: a scale request larger than every size gets the original.
    resp = await thumbnail(alice, media_id, 100, 100, "scale")
    assert resp.code == 200 and open_image(resp.raw).size == (300, 200)
    assert io.BytesIO(resp.raw).getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
