"""Several writers on one stream: readers never see past an uncommitted id."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet import defer

from storage.database import Database
from storage.multi_writer_stream import MultiWriterStream
from storage.storage import Storage

WRITERS = ("writer1", "writer2")


async def _open(db: Database, instance: str) -> MultiWriterStream:
    return await MultiWriterStream.load(
        db,
        stream_name="events",
        instance_name=instance,
        writers=WRITERS,
        table="events",
        column="stream_ordering",
    )


async def _deployment(db: Database) -> dict[str, MultiWriterStream]:
    """Two writers and a reader, each writer's announcements delivered to the others
    at once (what the bus does between processes)."""
    await Storage.open(db)  # migrated schema: events and stream_positions
    streams = {name: await _open(db, name) for name in (*WRITERS, "reader")}
    for source in WRITERS:
        for name, other in streams.items():
            if name != source:
                streams[source].add_listener(
                    lambda _stream, instance, pos, other=other: other.on_remote_position(
                        instance, pos
                    )
                )
    return streams


def _postgres_only(db: Database) -> None:
    if db.engine_name != "postgres":
        pytest.skip("several writers need PostgreSQL")


@pytest_twisted.ensureDeferred
async def test_refused_on_sqlite(db: Database) -> None:
    if db.engine_name != "sqlite":
        pytest.skip("SQLite only")
    await Storage.open(db)
    with pytest.raises(ValueError, match="PostgreSQL"):
        await _open(db, "writer1")


@pytest_twisted.ensureDeferred
async def test_readers_wait_for_the_slowest_writer(db: Database) -> None:
    _postgres_only(db)
    s = await _deployment(db)
    w1, w2, reader = s["writer1"], s["writer2"], s["reader"]
    start = reader.current_position
    [a] = await w1.allocate()
    [b] = await w2.allocate()
    assert a < b
    w2.finished([b])
    # b committed but a has not: nobody may show b yet.
    assert w2.position_of("writer2") == b
    assert reader.current_position == start == w1.current_position == w2.current_position
    w1.finished([a])
    assert reader.current_position == b
    assert w1.current_position == w2.current_position == b


@pytest_twisted.ensureDeferred
async def test_an_idle_writer_follows_the_others(db: Database) -> None:
    _postgres_only(db)
    s = await _deployment(db)
    ids = await s["writer1"].allocate(5)
    assert ids == sorted(ids) and len(set(ids)) == 5
    s["writer1"].finished(ids)
    assert s["writer2"].position_of("writer2") == ids[-1]
    assert s["reader"].current_position == ids[-1]


@pytest_twisted.ensureDeferred
async def test_a_writer_waiting_for_its_id_does_not_advance(db: Database) -> None:
    _postgres_only(db)
    s = await _deployment(db)
    w2 = s["writer2"]
    before = w2.position_of("writer2")
    pending = defer.ensureDeferred(w2.allocate())
    # The sequence has not answered yet: a far position announced now must not carry
    # writer2 past the id it is about to get.
    w2.on_remote_position("writer1", before + 1000)
    assert w2.position_of("writer2") == before
    [mine] = await pending
    assert mine <= before + 1000
    assert w2.position_of("writer2") == max(before, mine - 1)
    w2.finished([mine])
    assert w2.position_of("writer2") == before + 1000


@pytest_twisted.ensureDeferred
async def test_positions_only_move_forward(db: Database) -> None:
    _postgres_only(db)
    s = await _deployment(db)
    reader = s["reader"]
    reader.on_remote_position("writer1", 50)
    reader.on_remote_position("writer1", 10)
    assert reader.position_of("writer1") == 50
    reader.on_remote_position("someone-else", 99)  # not a writer of this stream
    assert reader.current_position == min(50, reader.position_of("writer2"))


@pytest_twisted.ensureDeferred
async def test_restart_and_late_reader(db: Database) -> None:
    _postgres_only(db)
    s = await _deployment(db)
    [a] = await s["writer1"].allocate()
    [b] = await s["writer2"].allocate()
    s["writer2"].finished([b])
    await s["writer2"].persist_position()
    # writer1 "crashes" with a in flight; restarted, it has nothing in flight.
    restarted = await _open(db, "writer1")
    assert restarted.position_of("writer1") >= b > a
    # A reader starting now sees writer2's persisted position and writer1's start row.
    late = await _open(db, "reader")
    assert late.current_position == b
    # The sequence moved past every id handed out: the next one is above both.
    [c] = await restarted.allocate()
    assert c > b


@pytest_twisted.ensureDeferred
async def test_random_interleavings_never_expose_an_uncommitted_id(db: Database) -> None:
    _postgres_only(db)
    s = await _deployment(db)
    writers = [s["writer1"], s["writer2"]]
    reader = s["reader"]
    rng = random.Random(1234)
    in_flight: list[tuple[MultiWriterStream, int]] = []
    committed: set[int] = set()
    allocated: set[int] = set()
    floor = reader.current_position
    for _ in range(120):
        if in_flight and rng.random() < 0.5:
            writer, sid = in_flight.pop(rng.randrange(len(in_flight)))
            writer.finished([sid])
            committed.add(sid)
        else:
            writer = rng.choice(writers)
            ids = await writer.allocate(rng.randint(1, 3))
            allocated.update(ids)
            in_flight.extend((writer, i) for i in ids)
        for view in (reader, *writers):
            pos = view.current_position
            assert all(i in committed for i in allocated if i <= pos), (pos, in_flight)
            assert pos >= floor
    for writer, sid in in_flight:
        writer.finished([sid])
    assert reader.current_position == max(allocated)
