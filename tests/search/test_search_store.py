"""The search store against both engines directly: the index follows persisted
events and redactions, scopes and cursors are exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from homeserver.events.event import Event
from homeserver.events.room_versions import get_room_version
from storage.database import Database, Transaction, make_engine
from storage.search import RoomScope, SearchScope, index_event_txn
from storage.search_query import parse_search_term
from storage.storage import Storage

V12 = get_room_version("12")
ALL_KEYS = ("content.body", "content.name", "content.topic")


@pytest_twisted.async_yield_fixture
async def storage(database: dict[str, Any]) -> AsyncIterator[Storage]:
    db = Database(make_engine(database), reactor, cp_min=1, cp_max=2)
    try:
        yield await Storage.open(db)
    finally:
        db.close()


def make_event(stream: int, room: str, body: str, **pdu: Any) -> Event:
    assert V12 is not None
    base = {
        "type": "m.room.message",
        "room_id": room,
        "sender": "@u:hs",
        "content": {"msgtype": "m.text", "body": body},
        "origin_server_ts": 1000 + stream,
        "depth": stream,
    }
    base.update(pdu)
    return Event(event_id=f"$e{stream}", pdu=base, room_version=V12, stream_ordering=stream)


def persist(txn: Transaction, ev: Event) -> None:
    """The rows the search store reads, then the indexing hook, as _persist_txn does."""
    if not txn.select_one("SELECT 1 FROM rooms WHERE room_id = ?", (ev.room_id,)):
        txn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
            " VALUES (?, '12', NULL, 0, 0)",
            (ev.room_id,),
        )
    txn.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
        " topological_ordering, origin_server_ts, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}')",
        (
            ev.stream_ordering,
            ev.event_id,
            ev.room_id,
            ev.type,
            ev.state_key,
            ev.sender,
            ev.depth,
            ev.origin_server_ts,
        ),
    )
    if ev.redacts is not None:
        txn.execute(
            "INSERT INTO redactions (event_id, redacts) VALUES (?, ?)", (ev.event_id, ev.redacts)
        )
    # Every test event has one sender, so each redaction applies (events/redaction.py).
    redacted = txn.select_one("SELECT 1 FROM redactions WHERE redacts = ?", (ev.event_id,))
    index_event_txn(
        txn, ev, redacted=redacted is not None, redaction_applied=ev.redacts is not None
    )


async def store(storage: Storage, *events: Event) -> None:
    def _txn(txn: Transaction) -> None:
        for ev in events:
            persist(txn, ev)

    await storage.db.run_interaction("test_persist", _txn)


async def ids(storage: Storage, term: str, scope: SearchScope, **kw: Any) -> list[str]:
    kw.setdefault("by_rank", False)
    kw.setdefault("after", None)
    kw.setdefault("limit", 100)
    hits = await storage.search.search(parse_search_term(term), scope, **kw)
    return [h.event_id for h in hits]


@pytest_twisted.ensureDeferred
async def test_redaction_stored_before_its_target_keeps_the_target_out(storage: Storage) -> None:
    scope = SearchScope((RoomScope("!r"),), ALL_KEYS)
    redaction = make_event(1, "!r", "", type="m.room.redaction", content={"redacts": "$e2"})
    await store(storage, redaction, make_event(2, "!r", "walrus"), make_event(3, "!r", "walrus"))
    assert await ids(storage, "walrus", scope) == ["$e3"]
    await store(
        storage, make_event(4, "!r", "", type="m.room.redaction", content={"redacts": "$e3"})
    )
    assert await ids(storage, "walrus", scope) == []


@pytest_twisted.ensureDeferred
async def test_rejected_outlier_state_keyed_and_encrypted_events_are_not_indexed(
    storage: Storage,
) -> None:
    rejected = make_event(1, "!r", "otter")
    rejected.rejected_reason = "auth"
    outlier = make_event(2, "!r", "otter")
    outlier.outlier = True
    weird_name = make_event(
        3, "!r", "", type="m.room.name", state_key="x", content={"name": "otter"}
    )
    message_state = make_event(4, "!r", "otter", state_key="")
    encrypted = make_event(5, "!r", "", type="m.room.encrypted", content={"body": "otter"})
    nul = make_event(6, "!r", "otter\x00 with nul")
    await store(storage, rejected, outlier, weird_name, message_state, encrypted, nul)
    assert await ids(storage, "otter", SearchScope((RoomScope("!r"),), ALL_KEYS)) == ["$e6"]


@pytest_twisted.ensureDeferred
async def test_scope_bounds_keys_and_senders(storage: Storage) -> None:
    await store(
        storage,
        make_event(1, "!a", "heron one"),
        make_event(2, "!b", "heron two", sender="@v:hs"),
        make_event(3, "!a", "heron three"),
        make_event(4, "!b", "", type="m.room.topic", state_key="", content={"topic": "heron"}),
    )
    both = (RoomScope("!a"), RoomScope("!b"))
    assert await ids(storage, "heron", SearchScope(both, ALL_KEYS)) == ["$e4", "$e3", "$e2", "$e1"]
    bounded = (RoomScope("!a", max_stream=1), RoomScope("!b"))
    assert await ids(storage, "heron", SearchScope(bounded, ALL_KEYS)) == ["$e4", "$e2", "$e1"]
    assert await ids(storage, "heron", SearchScope(both, ("content.topic",))) == ["$e4"]
    assert await ids(storage, "heron", SearchScope(both, ALL_KEYS, senders=("@v:hs",))) == ["$e2"]
    scope = SearchScope(both, ALL_KEYS, not_senders=("@u:hs",))
    assert await ids(storage, "heron", scope) == ["$e2"]
    assert (
        await storage.search.count(parse_search_term("heron"), SearchScope(bounded, ALL_KEYS)) == 3
    )


@pytest_twisted.ensureDeferred
async def test_rank_cursor_walks_ties_and_ranks_exactly_once(storage: Storage) -> None:
    events = [
        make_event(i, "!r", " ".join(["crane"] * (1 + i % 3) + ["filler"] * (3 - i % 3)))
        for i in range(1, 31)
    ]
    await store(storage, *events)
    query = parse_search_term("crane")
    scope = SearchScope((RoomScope("!r"),), ALL_KEYS)
    seen: list[str] = []
    after = None
    while True:
        hits = await storage.search.search(query, scope, by_rank=True, after=after, limit=4)
        if not hits:
            break
        seen += [h.event_id for h in hits]
        after = hits[-1].cursor(True)
    everything = await storage.search.search(query, scope, by_rank=True, after=None, limit=100)
    assert seen == [h.event_id for h in everything]
    assert len(set(seen)) == 30
    ranks = [h.rank for h in everything]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1]


@pytest_twisted.ensureDeferred
async def test_highlights_are_the_matched_words(storage: Storage) -> None:
    await store(storage, make_event(1, "!r", "Running runners ran"))
    query = parse_search_term("run")
    words = await storage.search.highlights(query, [(1, "Running runners ran")])
    assert "running" in words and "ran" not in words
