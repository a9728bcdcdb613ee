"""Initial /sync of a large account: a user in many rooms, as Element asks for it.

``setup`` registers ``members + 1`` users; the measured user creates ``rooms`` public
rooms, the ``members`` others join every one of them, and then ``messages`` messages
are sent in each room by its members in turn. Everything runs in parallel (at most
``concurrency`` requests in flight); rate limits must be off.

``measure_sync`` then times one initial ``/sync`` (request start to the whole body
read) of the measured user with Element Web's first-sync filter, and checks that the
response is complete: every room in ``rooms.join``, each with a full timeline and the
membership of each of its senders.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from load import V3, BenchError, Http, q, register_dummy

# What Element Web asks for on its first sync (matrix-js-sdk's SyncApi with Element's
# startClient options: ``lazyLoadMembers: true``, ``initialSyncLimit: 20``, and
# ``unread_thread_notifications`` since the server supports threads). The filter is
# uploaded and its id used; ``include_leave`` is absent (false), state and timeline
# are otherwise unfiltered; the first request has ``timeout=0``.
ELEMENT_FIRST_SYNC_FILTER: dict[str, Any] = {
    "room": {
        "state": {"lazy_load_members": True},
        "timeline": {"unread_thread_notifications": True, "limit": 20},
    }
}
TIMELINE_LIMIT = ELEMENT_FIRST_SYNC_FILTER["room"]["timeline"]["limit"]
SYNC_TIMEOUT_S = 300.0
SETUP_TIMEOUT_S = 1200.0


@dataclass
class Account:
    user_id: str
    token: str


@dataclass
class Setup:
    measured: Account
    others: list[Account]
    room_ids: list[str]
    filter_id: str
    seconds: float


async def setup(
    base_url: str, rooms: int, members: int, messages: int, concurrency: int = 32
) -> Setup:
    start = time.monotonic()
    async with _session(concurrency) as session:
        http = Http(session, base_url)
        sem = asyncio.Semaphore(concurrency)

        async def ok(method: str, path: str, body: Any, token: str) -> Any:
            async with sem:
                return await http.ok(method, path, body, token=token, timeout_s=120)

        prefix = f"init{secrets.token_hex(3)}_"

        async def register(i: int) -> Account:
            async with sem:
                return Account(*await register_dummy(http, f"{prefix}{i}"))

        accounts = await asyncio.gather(*(register(i) for i in range(members + 1)))
        measured, others = accounts[0], accounts[1:]
        everyone = [measured, *others]
        run = secrets.token_hex(4)

        async def one_room(n: int) -> str:
            created = await ok(
                "POST",
                f"{V3}/createRoom",
                {"preset": "public_chat", "name": f"room {n} {run}"},
                measured.token,
            )
            room_id = str(created["room_id"])
            await asyncio.gather(
                *(ok("POST", f"{V3}/join/{q(room_id)}", {}, a.token) for a in others)
            )
            # Messages in parallel too: their order in the room does not matter here.
            await asyncio.gather(
                *(
                    ok(
                        "PUT",
                        f"{V3}/rooms/{q(room_id)}/send/m.room.message/{run}-{n}-{i}",
                        {"msgtype": "m.text", "body": f"message {i} in room {n}"},
                        everyone[i % len(everyone)].token,
                    )
                    for i in range(messages)
                )
            )
            return room_id

        room_ids = await asyncio.wait_for(
            asyncio.gather(*(one_room(n) for n in range(rooms))), SETUP_TIMEOUT_S
        )
        uploaded = await http.ok(
            "POST",
            f"{V3}/user/{q(measured.user_id)}/filter",
            ELEMENT_FIRST_SYNC_FILTER,
            token=measured.token,
        )
    return Setup(
        measured, others, list(room_ids), str(uploaded["filter_id"]), time.monotonic() - start
    )


async def measure_sync(base_url: str, s: Setup, messages: int, timeout_ms: int = 0) -> float:
    """Seconds for one complete initial /sync; raises if the response is incomplete.

    An initial sync answers at once whatever its ``timeout``; Synapse keeps the response
    to an identical request for 2 minutes, so another ``timeout_ms`` makes it compute
    the response again (with its caches warm) rather than replay it."""
    async with _session(4) as session:
        params = {"filter": s.filter_id, "timeout": str(timeout_ms)}
        headers = {"Authorization": f"Bearer {s.measured.token}"}
        start = time.monotonic()
        async with session.get(
            f"{base_url}{V3}/sync",
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=SYNC_TIMEOUT_S),
        ) as resp:
            raw = await resp.read()
        elapsed = time.monotonic() - start
        if resp.status != 200:
            raise BenchError(f"initial sync -> {resp.status} {raw[:300]!r}")
    check_complete(json.loads(raw), s, messages)
    return elapsed


def check_complete(body: dict[str, Any], s: Setup, messages: int) -> None:
    joined = body.get("rooms", {}).get("join", {})
    missing = [r for r in s.room_ids if r not in joined]
    if missing:
        raise BenchError(f"initial sync lacks {len(missing)} of {len(s.room_ids)} rooms")
    want = min(TIMELINE_LIMIT, messages)
    for room_id in s.room_ids:
        events = joined[room_id].get("timeline", {}).get("events", [])
        bodies = [e for e in events if e.get("type") == "m.room.message"]
        if len(bodies) < want:
            raise BenchError(f"{room_id}: {len(bodies)} messages in the timeline, want {want}")
        members = {
            e.get("state_key")
            for e in joined[room_id].get("state", {}).get("events", [])
            + joined[room_id].get("timeline", {}).get("events", [])
            if e.get("type") == "m.room.member"
        }
        senders = {e["sender"] for e in bodies}
        if not senders <= members:  # lazy-loaded members: every sender's membership
            raise BenchError(f"{room_id}: members of {senders - members} missing")


def _session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit + 4, limit_per_host=limit + 4)
    )
