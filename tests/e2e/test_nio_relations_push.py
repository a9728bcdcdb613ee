"""End to end: two matrix-nio clients against a server process see each other's
receipts, typing, an edit, a reaction and a threaded reply, with unread counts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nio
import pytest

from tests.support.databases import database_config
from tests.support.subprocess_server import (
    NO_RATE_LIMITS,
    ServerProcess,
    free_port,
    generate_config,
    start_server,
    write_overrides,
)

PASSWORD = "correct horse battery staple"
THREADED_FILTER = {"room": {"timeline": {"unread_thread_notifications": True}}}


@pytest.fixture(params=["sqlite", "postgres"])
def homeserver_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    port = free_port()
    config_path = generate_config(tmp_path, port)
    with database_config(str(request.param), str(tmp_path)) as database:
        overrides: dict[str, Any] = {"bcrypt_rounds": 4, "database": database, **NO_RATE_LIMITS}
        server = start_server(tmp_path, port, config_path, write_overrides(tmp_path, overrides))
        try:
            yield server
        finally:
            status = server.stop()
        assert status == 0, f"exit status {status}; stderr:\n{server.stderr()}"


def _client(server: ServerProcess) -> nio.AsyncClient:
    config = nio.AsyncClientConfig(max_limit_exceeded=0, max_timeouts=2, request_timeout=20)
    return nio.AsyncClient(server.base_url, "", config=config)


class Syncer:
    """Incremental syncs of one client, remembering every room update seen."""

    def __init__(self, client: nio.AsyncClient, sync_filter: dict[str, Any] | None = None):
        self.client = client
        self.filter = sync_filter
        self.since: str | None = None
        self.updates: list[Any] = []  # RoomInfo of the room, one per response

    async def once(self, room_id: str, timeout: int = 3000) -> Any:
        resp = await self.client.sync(timeout=timeout, since=self.since, sync_filter=self.filter)
        assert isinstance(resp, nio.SyncResponse), resp
        self.since = resp.next_batch
        info = resp.rooms.join.get(room_id)
        if info is not None:
            self.updates.append(info)
        return info

    async def until(self, room_id: str, check: Callable[[Any], bool], attempts: int = 10) -> Any:
        for _ in range(attempts):
            info = await self.once(room_id)
            if info is not None and check(info):
                return info
        raise AssertionError(f"condition never met in {room_id}; last updates: {self.updates[-3:]}")


def _events(info: Any) -> list[Any]:
    return list(info.timeline.events)


def _relates(event: Any) -> dict[str, Any]:
    return dict(event.source.get("content", {}).get("m.relates_to") or {})


async def _scenario(server: ServerProcess) -> None:
    alice, bob = _client(server), _client(server)
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            reg = await client.register(name, PASSWORD)
            assert isinstance(reg, nio.RegisterResponse), reg
        created = await alice.room_create(name="Garden", preset=nio.RoomPreset.public_chat)
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        joined = await bob.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined

        alice_sync = Syncer(alice, THREADED_FILTER)
        bob_sync = Syncer(bob)
        await alice_sync.once(room_id, timeout=0)
        await bob_sync.once(room_id, timeout=0)

        # A message: bob sees it with one unread notification (a 1:1 room).
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi"})
        assert isinstance(sent, nio.RoomSendResponse), sent
        original = sent.event_id
        info = await bob_sync.until(
            room_id, lambda i: any(e.event_id == original for e in _events(i))
        )
        message = next(e for e in _events(info) if e.event_id == original)
        assert isinstance(message, nio.RoomMessageText) and message.body == "hi"
        assert info.unread_notifications.notification_count == 1

        # Typing: bob sees alice typing.
        typing = await alice.room_typing(room_id, True, timeout=10000)
        assert isinstance(typing, nio.RoomTypingResponse), typing
        await bob_sync.until(
            room_id,
            lambda i: any(
                isinstance(e, nio.TypingNoticeEvent) and alice.user_id in e.users
                for e in i.ephemeral
            ),
        )

        # A read receipt from bob: alice sees it, bob's count drops to zero.
        marked = await bob.update_receipt_marker(room_id, original)
        assert isinstance(marked, nio.UpdateReceiptMarkerResponse), marked
        await alice_sync.until(
            room_id,
            lambda i: any(
                isinstance(e, nio.ReceiptEvent)
                and any(r.user_id == bob.user_id and r.event_id == original for r in e.receipts)
                for e in i.ephemeral
            ),
        )
        info = await bob_sync.until(
            room_id, lambda i: i.unread_notifications.notification_count == 0
        )

        # An edit by alice: bob sees the replacement event.
        edit_content = {
            "msgtype": "m.text",
            "body": "* hello",
            "m.new_content": {"msgtype": "m.text", "body": "hello"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        }
        edited = await alice.room_send(room_id, "m.room.message", edit_content)
        assert isinstance(edited, nio.RoomSendResponse), edited
        info = await bob_sync.until(
            room_id, lambda i: any(e.event_id == edited.event_id for e in _events(i))
        )
        seen_edit = next(e for e in _events(info) if e.event_id == edited.event_id)
        assert _relates(seen_edit) == {"rel_type": "m.replace", "event_id": original}
        assert seen_edit.source["content"]["m.new_content"]["body"] == "hello"

        # A reaction by bob, then the same reaction again (refused), seen by alice once.
        reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "👍"}}
        reacted = await bob.room_send(room_id, "m.reaction", reaction)
        assert isinstance(reacted, nio.RoomSendResponse), reacted
        again = await bob.room_send(room_id, "m.reaction", reaction)
        assert (
            isinstance(again, nio.RoomSendError) and again.status_code == "M_DUPLICATE_ANNOTATION"
        )
        info = await alice_sync.until(
            room_id, lambda i: any(isinstance(e, nio.ReactionEvent) for e in _events(i))
        )
        seen_reaction = next(e for e in _events(info) if isinstance(e, nio.ReactionEvent))
        assert seen_reaction.reacts_to == original and seen_reaction.key == "👍"

        # A threaded reply by bob: alice sees it and counts it in the thread.
        thread = {
            "msgtype": "m.text",
            "body": "in a thread",
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": original,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": original},
            },
        }
        replied = await bob.room_send(room_id, "m.room.message", thread)
        assert isinstance(replied, nio.RoomSendResponse), replied
        info = await alice_sync.until(
            room_id, lambda i: any(e.event_id == replied.event_id for e in _events(i))
        )
        seen_reply = next(e for e in _events(info) if e.event_id == replied.event_id)
        assert _relates(seen_reply)["rel_type"] == "m.thread"
        thread_counts = info.unread_thread_notifications or {}
        assert original in thread_counts, info
        assert thread_counts[original].notification_count == 1

        # The original, fetched again, carries the edit and the thread summary.
        fetched = await alice.room_get_event(room_id, original)
        assert isinstance(fetched, nio.RoomGetEventResponse), fetched
        bundled = fetched.event.source["unsigned"]["m.relations"]
        assert bundled["m.replace"]["event_id"] == edited.event_id
        assert bundled["m.thread"]["latest_event"]["event_id"] == replied.event_id
        assert bundled["m.thread"]["count"] == 1
        assert bundled["m.thread"]["current_user_participated"] is True
        assert fetched.event.source["content"]["body"] == "hi"
    finally:
        await alice.close()
        await bob.close()


def test_nio_clients_see_receipts_typing_edits_reactions_and_threads(
    homeserver_process: ServerProcess,
) -> None:
    asyncio.run(_scenario(homeserver_process))
