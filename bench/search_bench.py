#!/usr/bin/env python3
"""Search latency on SQLite and PostgreSQL over a 100,000-message index.

For each engine it makes a fresh database (a temporary SQLite file; a temporary
PostgreSQL database, dropped afterwards), applies the migrations, and loads
``--messages`` messages spread over ``--rooms`` rooms straight through the store layer:
the event rows by SQL and the index through ``storage.search.index_event_txn``, the
function the event persister calls, in batches of ``--batch`` per transaction. The
searching user is joined to half of the rooms. Texts are drawn from a Zipf-distributed
vocabulary, so some words are in a large share of messages and others in a handful.

It then times ``--queries`` searches per kind, each run once warm:

- ``store``: ``SearchStore.search`` alone: the SQL of one candidate batch (21 rows,
  what the handler fetches for a page of 10);
- ``handler``: ``SearchHandler.search`` as ``POST /search`` runs it, without HTTP:
  membership lookup, candidate pages, event loading, visibility checks, ``count`` and
  ``highlights``;

for ``rank`` and ``recent`` order, and prints p50/p95/max in milliseconds. Query mix:
frequent words, rare words, two-word queries and prefixes.

    .venv/bin/python bench/search_bench.py                  # both engines
    .venv/bin/python bench/search_bench.py --engines sqlite --messages 20000
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import defer, task  # noqa: E402

from homeserver.events.event import Event  # noqa: E402
from homeserver.events.room_versions import get_room_version  # noqa: E402
from homeserver.handlers.search import SearchHandler, SearchRequest  # noqa: E402
from homeserver.rooms.memberships import MembershipCache  # noqa: E402
from homeserver.rooms.room_cache import RoomCache  # noqa: E402
from homeserver.rooms.visibility import VisibilityFilter  # noqa: E402
from storage.database import Database, Transaction, make_engine  # noqa: E402
from storage.search import SEARCH_KEYS, RoomScope, SearchScope, index_event_txn  # noqa: E402
from storage.search_query import parse_search_term  # noqa: E402
from storage.storage import Storage  # noqa: E402

USER = "@searcher:bench"
ROOM_VERSION = get_room_version("12")
PG_ARGS = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def make_vocabulary(rng: random.Random, size: int) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "do", "fe"]
    words: dict[str, None] = {}
    while len(words) < size:
        words.setdefault("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return list(words)


def zipf_weights(n: int, s: float = 1.07) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return at(50) * 1000, at(95) * 1000, ordered[-1] * 1000


class Loader:
    def __init__(self, rng: random.Random, vocab: list[str], rooms: int) -> None:
        self.rng = rng
        self.vocab = vocab
        self.cum_weights = list(itertools.accumulate(zipf_weights(len(vocab))))
        self.rooms = [f"!room{i}:bench" for i in range(rooms)]
        self.stream = 0

    def _event(
        self, room: str, etype: str, sender: str, content: dict[str, Any], **extra: Any
    ) -> Event:
        assert ROOM_VERSION is not None
        self.stream += 1
        pdu = {
            "type": etype,
            "room_id": room,
            "sender": sender,
            "content": content,
            "origin_server_ts": 1_700_000_000_000 + self.stream,
            "depth": self.stream,
            **extra,
        }
        return Event(f"$ev{self.stream}", pdu, ROOM_VERSION, stream_ordering=self.stream)

    def setup_rooms_txn(self, txn: Transaction) -> None:
        for index, room in enumerate(self.rooms):
            txn.execute(
                "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
                " VALUES (?, '12', ?, 0, 0)",
                (room, USER),
            )
            if index % 2:
                continue  # the searcher is in half the rooms
            join = self._event(room, "m.room.member", USER, {"membership": "join"}, state_key=USER)
            self._insert_events(txn, [join])
            txn.execute(
                "INSERT INTO current_state_events (room_id, type, state_key, event_id,"
                " membership) VALUES (?, 'm.room.member', ?, ?, 'join')",
                (room, USER, join.event_id),
            )
            txn.execute(
                "INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership,"
                " stream_ordering) VALUES (?, ?, ?, ?, 'join', ?)",
                (join.event_id, USER, USER, room, join.stream_ordering),
            )

    def _insert_events(self, txn: Transaction, events: list[Event]) -> None:
        txn.execute_many(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " topological_ordering, origin_server_ts, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    ev.stream_ordering,
                    ev.event_id,
                    ev.room_id,
                    ev.type,
                    ev.state_key,
                    ev.sender,
                    ev.depth,
                    ev.origin_server_ts,
                    json.dumps(ev.pdu, separators=(",", ":")),
                )
                for ev in events
            ],
        )

    def messages_txn(self, txn: Transaction, count: int) -> None:
        events = []
        for _ in range(count):
            words = self.rng.choices(
                self.vocab, cum_weights=self.cum_weights, k=self.rng.randint(4, 20)
            )
            room = self.rng.choice(self.rooms)
            sender = f"@user{self.rng.randrange(200)}:bench"
            content = {"msgtype": "m.text", "body": " ".join(words)}
            events.append(self._event(room, "m.room.message", sender, content))
        self._insert_events(txn, events)
        for ev in events:
            index_event_txn(txn, ev, redacted=False, redaction_applied=False)


def query_mix(rng: random.Random, vocab: list[str], n: int) -> list[tuple[str, str]]:
    frequent, rare = vocab[:30], vocab[len(vocab) // 2 :]
    out: list[tuple[str, str]] = []
    for i in range(n):
        kind = ("frequent", "rare", "two words", "prefix")[i % 4]
        if kind == "frequent":
            term = rng.choice(frequent)
        elif kind == "rare":
            term = rng.choice(rare)
        elif kind == "two words":
            term = f"{rng.choice(frequent)} {rng.choice(vocab[30:2000])}"
        else:
            term = rng.choice(vocab[:500])[:3]
        out.append((kind, term))
    return out


async def run_engine(name: str, database: dict[str, Any], args: argparse.Namespace) -> None:
    from twisted.internet import reactor

    db = Database(make_engine(database), reactor, cp_min=1, cp_max=4)
    try:
        storage = await Storage.open(db)
        rng = random.Random(args.seed)
        vocab = make_vocabulary(rng, args.vocabulary)
        loader = Loader(rng, vocab, args.rooms)
        started = time.perf_counter()
        await db.run_interaction("bench_rooms", loader.setup_rooms_txn)
        left = args.messages
        while left > 0:
            batch = min(args.batch, left)
            await db.run_interaction("bench_load", loader.messages_txn, batch)
            left -= batch
        if name == "postgres":
            await db.run_interaction("analyze", lambda txn: txn.execute("ANALYZE"))
        load_s = time.perf_counter() - started
        print(
            f"\n{name}: loaded {args.messages} messages in {args.rooms} rooms in {load_s:.1f}s "
            f"({args.messages / load_s:.0f} msg/s)"
        )

        rooms = RoomCache(storage.events, storage.state_groups)
        handler = SearchHandler(
            storage,
            rooms,
            MembershipCache(storage.memberships),
            VisibilityFilter(storage.events, storage.state_groups, rooms),
        )
        joined = tuple(RoomScope(r) for i, r in enumerate(loader.rooms) if i % 2 == 0)
        scope = SearchScope(joined, tuple(SEARCH_KEYS))
        queries = query_mix(random.Random(args.seed + 1), vocab, args.queries)
        # Warm caches once (membership cache, plans).
        await handler.search(USER, SearchRequest(vocab[0]), None)

        rows = []
        for order in ("rank", "recent"):
            by_rank = order == "rank"
            store_t: list[float] = []
            handler_t: list[float] = []
            for _, term in queries:
                q = parse_search_term(term)
                t0 = time.perf_counter()
                await storage.search.search(q, scope, by_rank=by_rank, after=None, limit=21)
                store_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await handler.search(USER, SearchRequest(term, order_by=order), None)
                handler_t.append(time.perf_counter() - t0)
            rows.append((order, "store", *percentiles(store_t)))
            rows.append((order, "handler", *percentiles(handler_t)))
        counts = []
        for kind, term in queries[:8]:
            res = await handler.search(USER, SearchRequest(term), None)
            counts.append(f"{kind} {term!r}: {res.count}")
        print("  sample match counts (searcher's rooms): " + "; ".join(counts))
        print(f"  {'order':<7} {'layer':<8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for order, layer, p50, p95, worst in rows:
            print(f"  {order:<7} {layer:<8} {p50:>8.1f} {p95:>8.1f} {worst:>8.1f}")
    finally:
        db.close()


async def main(reactor: Any, args: argparse.Namespace) -> None:
    print(
        f"{args.messages} messages, {args.rooms} rooms (searcher in half), "
        f"{args.queries} queries per order, vocabulary {args.vocabulary} (Zipf)"
    )
    for engine in args.engines.split(","):
        if engine == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "bench.db")
                await run_engine("sqlite", {"name": "sqlite3", "args": {"database": path}}, args)
        elif engine == "postgres":
            import psycopg2

            name = f"hs_search_bench_{uuid.uuid4().hex[:12]}"
            admin = psycopg2.connect(dbname="postgres", **PG_ARGS)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
            try:
                config = {"name": "psycopg2", "args": {"database": name, **PG_ARGS}}
                await run_engine("postgres", config, args)
            finally:
                with admin.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                admin.close()
        else:
            raise SystemExit(f"unknown engine {engine}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--vocabulary", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
