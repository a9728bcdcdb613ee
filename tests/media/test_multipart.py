"""The streaming multipart/mixed parser of federation media answers, and its helpers."""

from __future__ import annotations

import os

import pytest

from homeserver.media.headers import filename_from_disposition
from homeserver.media.multipart import (
    MultipartError,
    MultipartParser,
    MultipartResult,
    boundary_of,
)

BOUNDARY = b"6e2a1b9f0c"


def answer(file_part: bytes, *, metadata: bytes = b"{}", epilogue: bytes = b"") -> bytes:
    """An answer framed exactly as ``MultipartFileResponse`` writes it."""
    return (
        b"--" + BOUNDARY + b"\r\nContent-Type: application/json\r\n\r\n" + metadata
        + b"\r\n--" + BOUNDARY + b"\r\n" + file_part
        + b"\r\n--" + BOUNDARY + b"--\r\n" + epilogue
    )  # fmt: skip


def parse(data: bytes, chunk: int | None = None) -> tuple[MultipartResult, bytes]:
    out: list[bytes] = []
    parser = MultipartParser(BOUNDARY, out.append)
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        parser.feed(data[i : i + step])
    return parser.finish(), b"".join(out)


FILE = os.urandom(3000) + b"\r\n--" + BOUNDARY[:-1] + b"x\r\n--" + BOUNDARY[:5] + b"\r\n"
FILE_PART = b"Content-Type: image/png\r\nContent-Disposition: inline; filename=a.png\r\n\r\n" + FILE


def test_whole_answer() -> None:
    result, data = parse(answer(FILE_PART, metadata=b'{"k": 1}'))
    assert data == FILE
    assert result.metadata == {"k": 1}
    assert result.headers == {
        "content-type": "image/png",
        "content-disposition": "inline; filename=a.png",
    }
    assert result.location is None


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 13, 64, 1000])
def test_boundaries_split_across_chunks(chunk: int) -> None:
    result, data = parse(answer(FILE_PART, epilogue=b"ignored\r\n"), chunk)
    assert data == FILE
    assert result.headers["content-type"] == "image/png"


def test_every_split_point() -> None:
    body = answer(b"Content-Type: text/plain\r\n\r\nab\r\n-c--")
    for cut in range(len(body) + 1):
        out: list[bytes] = []
        parser = MultipartParser(BOUNDARY, out.append)
        parser.feed(body[:cut])
        parser.feed(body[cut:])
        assert parser.finish().metadata == {}
        assert b"".join(out) == b"ab\r\n-c--", cut


def test_preamble_padding_and_empty_file() -> None:
    body = b"preamble\r\n" + answer(b"Content-Type: text/plain\r\n\r\n").replace(
        b"--" + BOUNDARY + b"\r\nContent-Type: text",
        b"--" + BOUNDARY + b"  \t\r\nContent-Type: text",
    )
    result, data = parse(body, 5)
    assert data == b""
    assert result.headers == {"content-type": "text/plain"}


def test_location_part() -> None:
    result, data = parse(answer(b"Location: https://cdn.example/file?x=1\r\n\r\n"), 4)
    assert result.location == "https://cdn.example/file?x=1"
    assert data == b""


def test_file_part_without_headers() -> None:
    result, data = parse(answer(b"\r\nraw"))
    assert result.headers == {}
    assert data == b"raw"


@pytest.mark.parametrize(
    "body",
    [
        b"",  # nothing at all
        answer(FILE_PART)[:-12],  # cut before the closing delimiter
        answer(FILE_PART, metadata=b"{not json"),
        answer(FILE_PART, metadata=b"[1, 2]"),
        answer(b"Bad header line\r\n\r\nx"),  # no colon
        b"--" + BOUNDARY + b"junk\r\n\r\n{}",  # garbage after a delimiter
        b"--" + BOUNDARY + b"\r\nContent-Type: application/json\r\n\r\n{}\r\n--" + BOUNDARY + b"--",
    ],
    ids=["empty", "truncated", "bad-json", "json-not-object", "bad-header", "garbage", "no-file"],
)
def test_malformed(body: bytes) -> None:
    with pytest.raises(MultipartError):
        parse(body, 3)


def test_limits() -> None:
    parser = MultipartParser(BOUNDARY, lambda _d: None, max_json=10)
    with pytest.raises(MultipartError):
        parser.feed(answer(FILE_PART, metadata=b'{"a": "' + b"x" * 20 + b'"}'))
    parser = MultipartParser(BOUNDARY, lambda _d: None)
    with pytest.raises(MultipartError):
        parser.feed(b"--" + BOUNDARY + b"\r\nX: " + b"y" * 20_000)


def test_file_sink_errors_propagate() -> None:
    def refuse(_data: bytes) -> None:
        raise OverflowError

    parser = MultipartParser(BOUNDARY, refuse)
    with pytest.raises(OverflowError):
        parser.feed(answer(FILE_PART))


def test_boundary_of() -> None:
    assert boundary_of("multipart/mixed; boundary=abc") == b"abc"
    assert boundary_of('Multipart/Mixed; charset=x; boundary="a b:c"') == b"a b:c"
    for bad in (None, "", "application/json", "multipart/mixed", "multipart/mixed; boundary="):
        with pytest.raises(MultipartError):
            boundary_of(bad)


def test_filename_from_disposition() -> None:
    assert filename_from_disposition("attachment; filename=a.pdf") == "a.pdf"
    assert filename_from_disposition('inline; filename="a \\"b\\".txt"') == 'a "b".txt'
    assert (
        filename_from_disposition("attachment; filename=x.txt; filename*=utf-8''%C3%A9t%C3%A9.txt")
        == "été.txt"
    )
    assert filename_from_disposition("attachment") is None
    assert filename_from_disposition(None) is None
    assert filename_from_disposition("attachment; filename*=utf-8''%FF") is None
