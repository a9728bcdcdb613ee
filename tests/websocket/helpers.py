"""A real WebSocket client (the ``websockets`` package, blocking API) driven from tests
running on the Twisted reactor: every blocking call runs on a thread."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlencode

from twisted.internet import threads
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.client import Client
from tests.support.server import RunningServer

WS_PATH = "/_matrix/client/unstable/org.homeserver.ws/stream"


def ws_url(server: RunningServer, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    url = server.base_url.replace("http://", "ws://") + WS_PATH
    return f"{url}?{query}" if query else url


class Ws:
    """One connection; pushed /sync bodies and call replies are sorted as they come."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.syncs: list[dict[str, Any]] = []
        self.replies: dict[str, dict[str, Any]] = {}
        self.next_batch: str | None = None
        self._calls = 0

    @classmethod
    async def open(
        cls,
        server: RunningServer,
        client: Client | None = None,
        *,
        header_token: bool = True,
        sock: socket.socket | None = None,
        max_queue: int | None = 64,
        **params: Any,
    ) -> Ws:
        headers = {}
        if client is not None and header_token:
            headers["Authorization"] = f"Bearer {client.access_token}"
        url = ws_url(server, **params)

        def _connect() -> ClientConnection:
            return connect(
                url,
                sock=sock,
                subprotocols=["m.json"],  # type: ignore[list-item]
                additional_headers=headers,
                compression=None,
                proxy=None,
                max_queue=max_queue,
                max_size=64 * 1024 * 1024,
                open_timeout=10,
            )

        return cls(await threads.deferToThread(_connect))

    async def _recv_one(self, timeout: float) -> dict[str, Any]:
        raw = await threads.deferToThread(self.conn.recv, timeout)
        message: dict[str, Any] = json.loads(raw)
        if "next_batch" in message:
            self.syncs.append(message)
            self.next_batch = message["next_batch"]
        else:
            self.replies[message["id"]] = message
        return message

    async def next_sync(self, timeout: float = 10.0) -> dict[str, Any]:
        seen = len(self.syncs)
        while len(self.syncs) == seen:
            await self._recv_one(timeout)
        return self.syncs[seen]

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, call_id: str | None = None
    ) -> dict[str, Any]:
        if call_id is None:
            self._calls += 1
            call_id = f"c{self._calls}"
        message: dict[str, Any] = {"id": call_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send_raw(json.dumps(message))
        return await self.reply(call_id)

    async def send_raw(self, text: str) -> None:
        await threads.deferToThread(self.conn.send, text)

    async def reply(self, call_id: str, timeout: float = 10.0) -> dict[str, Any]:
        while call_id not in self.replies:
            await self._recv_one(timeout)
        return self.replies.pop(call_id)

    async def drain_until_closed(self, timeout: float = 10.0) -> ConnectionClosed:
        """Read everything left; the close that ends it."""
        while True:
            try:
                await self._recv_one(timeout)
            except ConnectionClosed as e:
                return e

    async def close(self) -> None:
        await threads.deferToThread(self.conn.close)


def timeline_bodies(sync: dict[str, Any], room_id: str) -> list[str]:
    room = sync["rooms"]["join"].get(room_id)
    if room is None:
        return []
    return [
        e["content"]["body"]
        for e in room["timeline"]["events"]
        if e["type"] == "m.room.message" and "body" in e["content"]
    ]
