"""Streaming request bodies for upload tests: chunked (no length) and from a file."""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from twisted.internet import defer, task
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from tests.media.helpers import pool


@implementer(IBodyProducer)
class RandomChunkedProducer:
    """``total`` random bytes with no declared length: sent with chunked encoding."""

    length = UNKNOWN_LENGTH

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self._total = total
        self._chunk = chunk
        self._stopped = False

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        from twisted.internet import reactor

        async def _run() -> None:
            sent = 0
            while sent < self._total and not self._stopped:
                n = min(self._chunk, self._total - sent)
                consumer.write(os.urandom(n))
                sent += n
                await task.deferLater(reactor, 0, lambda: None)

        return defer.ensureDeferred(_run())

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self._stopped = True


async def chunked_upload(url: str, token: str, total: int) -> tuple[int, Any]:
    try:
        resp = await treq.post(
            url,
            data=RandomChunkedProducer(total),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/octet-stream",
            },
            pool=pool(),
        )
    except Exception as e:  # the server may answer before the client finished sending
        return 0, repr(e)
    body = await treq.content(resp)
    return resp.code, json.loads(body) if body else None


async def file_upload(url: str, token: str, path: str, content_type: str) -> tuple[int, Any]:
    with open(path, "rb") as f:
        resp = await treq.post(
            url,
            data=FileBodyProducer(f, readSize=256 * 1024),
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
            pool=pool(),
        )
        body = await treq.content(resp)
    return resp.code, json.loads(body) if body else None


async def send_and_hang_up(base_url: str, path: str, token: str, body: bytes) -> None:
    """Send a complete upload request on a raw socket and close before the answer."""
    import socket
    from urllib.parse import urlsplit

    from twisted.internet import threads

    url = urlsplit(base_url)

    def _send() -> None:
        with socket.create_connection((url.hostname, url.port)) as sock:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            sock.sendall(head + body)

    await threads.deferToThread(_send)
