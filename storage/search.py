"""Full-text index of room events and the queries of ``POST /search``.

PostgreSQL keeps a ``tsvector`` per event (English configuration, GIN index) and
ranks with ``ts_rank_cd``; SQLite keeps an FTS5 table (porter stemming) whose rowid
is the event's stream ordering, and ranks with ``-bm25()``. Either way a higher rank
is a better match.

Invariants:
- ``index_event_txn`` runs inside the transaction that persists an event: an event is
  searchable exactly when it is stored. Only ``m.room.message`` (``content.body``),
  ``m.room.name`` (``content.name``) and ``m.room.topic`` (``content.topic`` and the
  ``text/plain`` body of ``m.topic``) are indexed; encrypted events, rejected events and
  outliers never are.
- A redaction that takes effect deletes its target's row in the transaction that
  persists the redaction, and an event stored already redacted is not indexed, so a
  redacted event's text cannot be found (and an unauthorised redaction hides nothing).
- Result order is total: ``(rank, stream_ordering)`` descending or ``stream_ordering``
  descending, so a cursor (``SearchCursor``) resumes a listing without gaps or
  repeats while the matching rows do not change.
- User input reaches the engines only as bound parameters built by
  ``storage.search_query`` (never pasted into SQL or into query syntax).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import Event
from storage.database import Database, Transaction
from storage.search_query import SearchQuery

# Searchable key -> the event type it is read from.
SEARCH_KEYS: dict[str, str] = {
    "content.body": "m.room.message",
    "content.name": "m.room.name",
    "content.topic": "m.room.topic",
}
_KEY_FOR_TYPE = {event_type: key for key, event_type in SEARCH_KEYS.items()}


@dataclass(frozen=True, slots=True)
class RoomScope:
    """A room to search, up to ``max_stream`` inclusive (None: no bound)."""

    room_id: str
    max_stream: int | None = None


@dataclass(frozen=True, slots=True)
class SearchScope:
    rooms: tuple[RoomScope, ...]
    keys: tuple[str, ...]
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchCursor:
    """Where a listing stopped; ``rank`` is set for rank order."""

    stream_ordering: int
    rank: float | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    event_id: str
    room_id: str
    sender: str
    rank: float
    stream_ordering: int

    def cursor(self, by_rank: bool) -> SearchCursor:
        return SearchCursor(self.stream_ordering, self.rank if by_rank else None)


def searchable_text(ev: Event) -> tuple[str, str] | None:
    """(key, text) to index for ``ev``, or None when it is not searchable."""
    key = _KEY_FOR_TYPE.get(ev.type)
    if key is None:
        return None
    content = ev.content
    value: object
    if key == "content.body":
        if ev.is_state():
            return None
        value = content.get("body")
    elif ev.state_key != "":
        return None
    elif key == "content.name":
        value = content.get("name")
    else:
        parts = [content.get("topic")]
        m_topic = content.get("m.topic")
        if isinstance(m_topic, list):
            parts += [
                r.get("body")
                for r in m_topic
                if isinstance(r, dict) and r.get("mimetype", "text/plain") == "text/plain"
            ]
        texts = [p for p in parts if isinstance(p, str)]
        value = " ".join(dict.fromkeys(texts))
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", " ")  # PostgreSQL text cannot hold NUL
    if not value.strip():
        return None
    return key, value


def index_event_txn(
    txn: Transaction, ev: Event, *, redacted: bool, redaction_applied: bool
) -> None:
    """Keep the index in step with a persisted event (called by the persist txn).

    ``redacted``: ``ev`` is stored already redacted (its redaction arrived first);
    ``redaction_applied``: ``ev`` is a redaction that took effect on its target."""
    if ev.rejected_reason is not None or ev.outlier:
        return
    redacts = ev.redacts
    if redacts is not None:
        if redaction_applied:
            unindex_event_txn(txn, redacts, ev.room_id)
        return
    found = searchable_text(ev)
    if found is None or redacted:
        return
    key, value = found
    if txn.database_engine == "postgres":
        txn.execute(
            "INSERT INTO event_search (event_id, room_id, sender, key, vector,"
            " origin_server_ts, stream_ordering)"
            " VALUES (?, ?, ?, ?, to_tsvector('english', ?), ?, ?)",
            (
                ev.event_id,
                ev.room_id,
                ev.sender,
                key,
                value,
                ev.origin_server_ts,
                ev.stream_ordering,
            ),
        )
    else:
        txn.execute(
            "INSERT INTO event_search (rowid, value, event_id, room_id, sender, key,"
            " origin_server_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                ev.stream_ordering,
                value,
                ev.event_id,
                ev.room_id,
                ev.sender,
                key,
                ev.origin_server_ts,
            ),
        )


def unindex_event_txn(txn: Transaction, event_id: str, room_id: str) -> None:
    """Drop the event's row from the index (it must still be in `events`)."""
    if txn.database_engine == "postgres":
        txn.execute(
            "DELETE FROM event_search WHERE event_id = ? AND room_id = ?", (event_id, room_id)
        )
    else:
        # FTS5 finds rows fast only by rowid (the stream ordering).
        txn.execute(
            "DELETE FROM event_search WHERE rowid IN"
            " (SELECT stream_ordering FROM events WHERE event_id = ? AND room_id = ?)",
            (event_id, room_id),
        )


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _scope_sql(scope: SearchScope, stream_col: str) -> tuple[str, list[Any]]:
    args: list[Any] = []
    rooms: list[str] = []
    unbounded = [r.room_id for r in scope.rooms if r.max_stream is None]
    if unbounded:
        rooms.append(f"room_id IN ({_marks(len(unbounded))})")
        args += unbounded
    for r in scope.rooms:
        if r.max_stream is not None:
            rooms.append(f"(room_id = ? AND {stream_col} <= ?)")
            args += [r.room_id, r.max_stream]
    sql = "(" + " OR ".join(rooms) + ")"
    sql += f" AND key IN ({_marks(len(scope.keys))})"
    args += scope.keys
    if scope.senders is not None:
        sql += f" AND sender IN ({_marks(len(scope.senders))})"
        args += scope.senders
    if scope.not_senders:
        sql += f" AND sender NOT IN ({_marks(len(scope.not_senders))})"
        args += scope.not_senders
    return sql, args


def _is_empty(query: SearchQuery, scope: SearchScope, limit: int = 1) -> bool:
    return (
        query.is_empty
        or not scope.rooms
        or not scope.keys
        or limit <= 0
        or (scope.senders is not None and not scope.senders)
    )


class SearchStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def _postgres(self) -> bool:
        return self._db.engine_name == "postgres"

    async def search(
        self,
        query: SearchQuery,
        scope: SearchScope,
        *,
        by_rank: bool,
        after: SearchCursor | None,
        limit: int,
    ) -> list[SearchHit]:
        """Up to ``limit`` matches in result order, strictly after ``after``."""
        if _is_empty(query, scope, limit):
            return []
        if self._postgres:
            rank = "CAST(ts_rank_cd(vector, q) AS DOUBLE PRECISION)"
            stream = "stream_ordering"
            head = (
                f"SELECT event_id, room_id, sender, {rank}, stream_ordering"
                " FROM event_search, to_tsquery('english', ?) AS q WHERE vector @@ q"
            )
            args: list[Any] = [query.to_tsquery()]
            param = "CAST(? AS DOUBLE PRECISION)"
        else:
            rank = "(-bm25(event_search))"
            stream = "rowid"
            head = (
                f"SELECT event_id, room_id, sender, {rank}, rowid"
                " FROM event_search WHERE event_search MATCH ?"
            )
            args = [query.to_fts5()]
            param = "?"
        scope_sql, scope_args = _scope_sql(scope, stream)
        sql = f"{head} AND {scope_sql}"
        args += scope_args
        if after is not None and by_rank and after.rank is not None:
            sql += f" AND ({rank} < {param} OR ({rank} = {param} AND {stream} < ?))"
            args += [after.rank, after.rank, after.stream_ordering]
        elif after is not None:
            sql += f" AND {stream} < ?"
            args.append(after.stream_ordering)
        order = f"{rank} DESC, {stream} DESC" if by_rank else f"{stream} DESC"
        sql += f" ORDER BY {order} LIMIT ?"
        args.append(limit)

        def _txn(txn: Transaction) -> list[SearchHit]:
            return [
                SearchHit(str(r[0]), str(r[1]), str(r[2]), float(r[3]), int(r[4]))
                for r in txn.select_all(sql, args)
            ]

        return await self._db.run_interaction("search_events", _txn)

    async def count(self, query: SearchQuery, scope: SearchScope) -> int:
        """How many indexed events in ``scope`` match (before visibility checks)."""
        if _is_empty(query, scope):
            return 0
        if self._postgres:
            sql = "SELECT COUNT(*) FROM event_search WHERE vector @@ to_tsquery('english', ?)"
            args: list[Any] = [query.to_tsquery()]
            stream = "stream_ordering"
        else:
            sql = "SELECT COUNT(*) FROM event_search WHERE event_search MATCH ?"
            args = [query.to_fts5()]
            stream = "rowid"
        scope_sql, scope_args = _scope_sql(scope, stream)

        def _txn(txn: Transaction) -> int:
            row = txn.select_one(f"{sql} AND {scope_sql}", [*args, *scope_args])
            return int(row[0]) if row else 0

        return await self._db.run_interaction("search_count", _txn)

    async def highlights(self, query: SearchQuery, matches: Sequence[tuple[int, str]]) -> set[str]:
        """Words of the given texts that ``query`` matched, lower-cased.

        ``matches`` are (stream_ordering, indexed text) of result events.
        """
        if query.is_empty or not matches:
            return set()
        texts = [text for _, text in matches]
        start, stop = "\x02", "\x03"
        while any(start in t for t in texts):
            start += "\x02"
        while any(stop in t for t in texts):
            stop += "\x03"
        if self._postgres:
            values = ",".join("(?)" for _ in texts)
            sql = (
                "SELECT ts_headline('english', t.v, to_tsquery('english', ?), ?)"
                f" FROM (VALUES {values}) AS t(v)"
            )
            options = f'StartSel="{start}", StopSel="{stop}", HighlightAll=true'
            args: list[Any] = [query.to_tsquery(), options, *texts]
        else:
            ids = [stream for stream, _ in matches]
            sql = (
                "SELECT highlight(event_search, 0, ?, ?) FROM event_search"
                f" WHERE event_search MATCH ? AND rowid IN ({_marks(len(ids))})"
            )
            args = [start, stop, query.to_fts5(), *ids]

        def _txn(txn: Transaction) -> list[str]:
            return [str(r[0]) for r in txn.select_all(sql, args) if r[0] is not None]

        words: set[str] = set()
        for marked in await self._db.run_interaction("search_highlights", _txn):
            pos = 0
            while True:
                begin = marked.find(start, pos)
                if begin < 0:
                    break
                end = marked.find(stop, begin + len(start))
                if end < 0:
                    break
                words.update(w.lower() for w in marked[begin + len(start) : end].split())
                pos = end + len(stop)
        return words
