"""The media building blocks without a server: store, ranges, sizes, headers, filters."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
import pytest_twisted

from homeserver.config import ConfigError, parse_config
from homeserver.http.ip_filter import IpFilter
from homeserver.http.responses import RangeNotSatisfiable, parse_range
from homeserver.media.headers import content_disposition, is_valid_content_type
from homeserver.media.preview import parse_html
from homeserver.media.repository import select_thumbnail
from homeserver.media.storage import (
    FileSystemMediaStorage,
    MediaTooLarge,
    local_content_key,
    local_thumbnail_key,
)
from homeserver.media.thumbnailer import ThumbnailSpec, target_size
from storage.media import ThumbnailRecord


def _files(base: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, f), base) for root, _, fs in os.walk(base) for f in fs
    )


class _Failing(io.RawIOBase):
    """Gives some bytes, then fails like a dropped connection."""

    def __init__(self) -> None:
        self._sent = 0

    def read(self, n: int = -1) -> bytes:
        if self._sent >= 3 * 1024 * 1024:
            raise OSError("connection lost")
        self._sent += 1024 * 1024
        return b"x" * (1024 * 1024)


@pytest_twisted.ensureDeferred
async def test_store_is_atomic_and_cleans_up_on_failure(tmp_path: Path) -> None:
    store = FileSystemMediaStorage(str(tmp_path))
    key = local_content_key("abcdefghij")
    stored = await store.store(key, io.BytesIO(b"hello"))
    assert stored.size == 5
    assert stored.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert _files(tmp_path) == ["local_content/ab/cd/efghij"]

    with pytest.raises(OSError):
        await store.store(local_content_key("zzzzzzzzzz"), _Failing())  # type: ignore[arg-type]
    with pytest.raises(MediaTooLarge):
        await store.store(local_content_key("yyyyyyyyyy"), io.BytesIO(b"x" * 11), max_size=10)
    assert _files(tmp_path) == ["local_content/ab/cd/efghij"]  # nothing half-written kept

    await store.store_bytes(key, b"replaced")
    with store.open_blocking(key) as f:
        assert f.read() == b"replaced"
    await store.delete(key)
    await store.delete(key)  # deleting twice is fine
    assert not await store.exists(key)


def test_keys_are_sharded_and_validated(tmp_path: Path) -> None:
    assert local_content_key("abcdefgh") == "local_content/ab/cd/efgh"
    assert (
        local_thumbnail_key("abcdefgh", 32, 24, "image/png", "crop", False)
        == "local_thumbnails/ab/cd/efgh/32-24-image-png-crop"
    )
    for bad in ("../../etc", "ab/cdefg", "abc", "abcd%2e%2e", ""):
        with pytest.raises(ValueError):
            local_content_key(bad)
    store = FileSystemMediaStorage(str(tmp_path))
    for bad_key in ("../x", "/etc/passwd", "a//b", "a/./b"):
        with pytest.raises(ValueError):
            store.path_of(bad_key)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 10)),
        ("bytes=-5", 100, (95, 5)),
        ("bytes=-500", 100, (0, 100)),
        ("bytes=50-1000", 100, (50, 50)),
        ("bytes=5-1", 100, None),
        ("bytes=0-1,3-4", 100, None),
        ("items=0-1", 100, None),
        ("bytes=-", 100, None),
    ],
)
def test_parse_range(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_target_size_never_upscales_and_keeps_the_method_shape() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        src = (rng.randint(1, 3000), rng.randint(1, 3000))
        spec = ThumbnailSpec(
            rng.randint(1, 1000), rng.randint(1, 1000), rng.choice(["crop", "scale"])
        )
        w, h = target_size(spec, *src)
        assert 1 <= w <= src[0] and 1 <= h <= src[1]
        if spec.method == "scale":
            assert w <= spec.width and h <= spec.height
            if spec.width <= src[0] and spec.height <= src[1]:
                assert w == spec.width or h == spec.height  # fills the box in one dimension
        elif spec.width <= src[0] and spec.height <= src[1]:
            assert (w, h) == (spec.width, spec.height)


def test_select_thumbnail_prefers_the_smallest_large_enough() -> None:
    thumbs = [
        ThumbnailRecord(32, 32, "crop", "image/png", 100),
        ThumbnailRecord(96, 96, "crop", "image/png", 300),
        ThumbnailRecord(300, 240, "scale", "image/png", 1000),
        ThumbnailRecord(600, 480, "scale", "image/png", 3000),
    ]
    assert select_thumbnail(thumbs, 50, 50, "crop", "image/png") == thumbs[1]
    assert select_thumbnail(thumbs, 20, 20, "crop", "image/png") == thumbs[0]
    assert select_thumbnail(thumbs, 400, 400, "scale", "image/png") == thumbs[3]
    assert select_thumbnail(thumbs, 1000, 1000, "scale", "image/png") == thumbs[3]
    assert select_thumbnail(thumbs[:2], 10, 10, "scale", "image/png") is None


def test_content_disposition() -> None:
    assert content_disposition("image/png", None) == "inline"
    assert content_disposition("image/PNG; x=y", "a.png") == "inline; filename=a.png"
    assert content_disposition("text/html", "a.html") == "attachment; filename=a.html"
    assert content_disposition("image/svg+xml", None) == "attachment"
    assert content_disposition("application/pdf", 'a "b".pdf') == (
        "attachment; filename*=utf-8''a%20%22b%22.pdf"
    )
    assert content_disposition("text/html", "t.png", inline=True) == "inline; filename=t.png"
    assert is_valid_content_type("text/plain; charset=utf-8")
    assert not is_valid_content_type("text")
    assert not is_valid_content_type("text/plain\r\nX-Evil: 1")


def test_ip_filter() -> None:
    ip_filter = IpFilter(["127.0.0.0/8", "10.0.0.0/8", "::1/128"], ["127.0.0.5/32"])
    assert not ip_filter.allows("127.0.0.1")
    assert ip_filter.allows("127.0.0.5")
    assert not ip_filter.allows("10.1.2.3")
    assert not ip_filter.allows("::1")
    assert not ip_filter.allows("::ffff:10.0.0.1")  # IPv4-mapped IPv6
    assert ip_filter.allows("93.184.216.34")
    assert not ip_filter.allows("0.0.0.0") and not ip_filter.allows("::")
    assert not ip_filter.allows("not-an-ip")


def test_parse_html_charsets() -> None:
    latin1 = '<meta charset="iso-8859-1"><meta property="og:title" content="café">'.encode(
        "latin-1"
    )
    assert parse_html(latin1, None) == {"og:title": "café"}
    assert parse_html(b"<title>x</title>", "no-such-charset") == {"og:title": "x"}
    assert parse_html(b"\xff\xfe<<<>>>", None) == {}


def test_media_config_keys(tmp_path: Path) -> None:
    base = {"server_name": "example.com"}
    config = parse_config(
        {
            **base,
            "media_upload_limits": [{"time_period": "1h", "max_size": "1M"}],
            "thumbnail_sizes": [{"width": 10, "height": 20, "method": "crop"}],
        },
        str(tmp_path),
    )
    assert config.media_upload_limits == [{"time_period": 3_600_000, "max_size": 1024 * 1024}]
    assert config.thumbnail_sizes == [{"width": 10, "height": 20, "method": "crop"}]
    defaults = parse_config(dict(base), str(tmp_path))
    assert defaults.max_upload_size == 50 * 1024 * 1024
    assert defaults.enable_authenticated_media is True
    assert defaults.url_preview_enabled is False
    assert len(defaults.thumbnail_sizes) == 5
    for bad, key in [
        ({"thumbnail_sizes": [{"width": 0, "height": 1}]}, "thumbnail_sizes[0]"),
        ({"thumbnail_sizes": [{"width": 1, "height": 1, "method": "x"}]}, "thumbnail_sizes[0]"),
        ({"media_upload_limits": [{"time_period": "1h"}]}, "media_upload_limits[0].max_size"),
        ({"url_preview_ip_range_whitelist": ["not an ip"]}, "url_preview_ip_range_whitelist[0]"),
    ]:
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            parse_config({**base, **bad}, str(tmp_path))


def test_upload_bodies_spool_into_the_media_store(tmp_path: Path) -> None:
    import types

    from homeserver.http.server import JsonResource, MatrixSite

    site = MatrixSite(
        JsonResource(),
        max_body_size=1000,
        x_forwarded=False,
        max_upload_size=10**6,
        upload_spool_dir=str(tmp_path),
    )

    def request_for(method: bytes, path: bytes, length: int | None) -> object:
        channel = types.SimpleNamespace(
            _command=method,
            _path=path,
            site=site,
            getPeer=lambda: None,
            getHost=lambda: None,
            transport=None,
        )
        request = site.requestFactory(channel)  # type: ignore[misc]
        request.gotLength(length)
        return request

    upload = request_for(b"POST", b"/_matrix/media/v3/upload?filename=a", 500_000)
    assert not upload.body_too_large  # type: ignore[attr-defined]
    fd = upload.content.fileno()  # type: ignore[attr-defined]
    assert os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path))
    upload.content.close()  # type: ignore[attr-defined]
    assert request_for(b"PUT", b"/_matrix/media/v3/upload/s/m", 10**6 + 1).body_too_large  # type: ignore[attr-defined]
    json_body = request_for(b"POST", b"/_matrix/client/v3/upload", 5000)
    assert json_body.body_too_large  # type: ignore[attr-defined]
    small = request_for(b"POST", b"/_matrix/media/v3/upload", 10)
    assert isinstance(small.content, io.BytesIO)  # type: ignore[attr-defined]
