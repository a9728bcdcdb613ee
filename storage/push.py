"""Push rules, pushers and the push actions behind unread counts and /notifications.

Invariants:
- A user's push rules are one row of JSON (``PushRuleSet.to_storage_json``): what the
  user changed, never the server defaults.
- Pushers are unique per (app_id, pushkey, user_id); each has ``last_stream_ordering``:
  every notifying action of its user at or below it was handled (sent, given up on or
  skipped while the user was online).
- ``event_push_actions`` holds only notifying actions (``notif`` = 1); a user's
  unread count for a thread is the number of its rows after the user's read position
  for that thread (the later of the unthreaded and the thread's own ``m.read`` /
  ``m.read.private`` receipt). Rows are unique per (user, event): storing an event's
  actions twice keeps the first.
- ``push_actions_position`` (one row) moves in the transaction that stores a batch's
  actions: every event at or below it has its actions stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction

READ_RECEIPT_TYPES = ("m.read", "m.read.private")
UNTHREADED = ""


# Rows per multi-row INSERT (8 parameters each, below SQLite's 32,766 and PostgreSQL's
# 65,535): a 500-member room's message is one statement. Few statements matter: each
# one gives the GIL back, and a busy reactor keeps it up to the switch interval.
ROWS_PER_INSERT = 1000


@dataclass(frozen=True, slots=True)
class PusherRecord:
    user_id: str
    app_id: str
    pushkey: str
    kind: str
    device_id: str | None
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    pushkey_ts: int  # milliseconds
    # Every notifying action at or below this events stream position was handled.
    last_stream_ordering: int = 0

    def to_client_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "pushkey": self.pushkey,
            "kind": self.kind,
            "app_id": self.app_id,
            "app_display_name": self.app_display_name,
            "device_display_name": self.device_display_name,
            "lang": self.lang,
            "data": dict(self.data),
        }
        if self.profile_tag is not None:
            body["profile_tag"] = self.profile_tag
        return body


@dataclass(frozen=True, slots=True)
class PushActionRow:
    user_id: str
    room_id: str
    event_id: str
    stream_ordering: int
    thread_id: str
    highlight: bool
    actions: list[Any]
    received_ts: int


@dataclass(frozen=True, slots=True)
class UnreadRow:
    """One unread notifying action (after the unthreaded read position)."""

    room_id: str
    thread_id: str
    stream_ordering: int
    highlight: bool


@dataclass(frozen=True, slots=True)
class UnreadState:
    # room -> thread ('' = unthreaded) -> event stream position of the latest read receipt
    receipts: dict[str, dict[str, int]]
    rows: list[UnreadRow]


_PUSHER_COLUMNS = (
    "user_id, app_id, pushkey, kind, device_id, app_display_name, device_display_name,"
    " profile_tag, lang, data, pushkey_ts, last_stream_ordering"
)


def _pusher(row: Sequence[Any]) -> PusherRecord:
    return PusherRecord(
        user_id=row[0],
        app_id=row[1],
        pushkey=row[2],
        kind=row[3],
        device_id=row[4],
        app_display_name=row[5],
        device_display_name=row[6],
        profile_tag=row[7],
        lang=row[8],
        data=json.loads(row[9]),
        pushkey_ts=int(row[10]),
        last_stream_ordering=int(row[11]),
    )


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class PushStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Push rules -------------------------------------------------------------------------

    async def get_push_rules(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored rule JSON of these users (users with no changes are absent)."""
        ids = list(dict.fromkeys(user_ids))

        def _txn(txn: Transaction) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for user_id, rules in txn.select_all(
                    f"SELECT user_id, rules FROM push_rules WHERE user_id IN ({marks})",
                    list(chunk),
                ):
                    out[user_id] = json.loads(rules)
            return out

        return await self._db.run_interaction("get_push_rules", _txn) if ids else {}

    async def set_push_rules(self, user_id: str, rules: dict[str, Any]) -> None:
        encoded = _encode(rules)

        def _txn(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO push_rules (user_id, rules) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET rules = excluded.rules",
                (user_id, encoded),
            )

        await self._db.run_interaction("set_push_rules", _txn)

    # Pushers ----------------------------------------------------------------------------

    async def get_all_pushers(self) -> list[PusherRecord]:
        def _txn(txn: Transaction) -> list[PusherRecord]:
            return [_pusher(r) for r in txn.select_all(f"SELECT {_PUSHER_COLUMNS} FROM pushers")]

        return await self._db.run_interaction("get_all_pushers", _txn)

    async def add_pusher(self, pusher: PusherRecord, *, append: bool) -> list[PusherRecord]:
        """Create or replace the pusher; without ``append``, remove the pushers of
        other users with the same app id and pushkey. Returns the removed ones."""

        def _txn(txn: Transaction) -> list[PusherRecord]:
            removed: list[PusherRecord] = []
            if not append:
                removed = [
                    _pusher(r)
                    for r in txn.select_all(
                        f"SELECT {_PUSHER_COLUMNS} FROM pushers WHERE app_id = ?"
                        " AND pushkey = ? AND user_id != ?",
                        (pusher.app_id, pusher.pushkey, pusher.user_id),
                    )
                ]
                txn.execute(
                    "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?",
                    (pusher.app_id, pusher.pushkey, pusher.user_id),
                )
            txn.execute(
                "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id = ?",
                (pusher.app_id, pusher.pushkey, pusher.user_id),
            )
            txn.execute(
                f"INSERT INTO pushers ({_PUSHER_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pusher.user_id,
                    pusher.app_id,
                    pusher.pushkey,
                    pusher.kind,
                    pusher.device_id,
                    pusher.app_display_name,
                    pusher.device_display_name,
                    pusher.profile_tag,
                    pusher.lang,
                    _encode(pusher.data),
                    pusher.pushkey_ts,
                    pusher.last_stream_ordering,
                ),
            )
            return removed

        return await self._db.run_interaction("add_pusher", _txn)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> bool:
        def _txn(txn: Transaction) -> bool:
            txn.execute(
                "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                (user_id, app_id, pushkey),
            )
            return txn.rowcount > 0

        return await self._db.run_interaction("delete_pusher", _txn)

    async def delete_pushers_of_devices(
        self, user_id: str, device_ids: Sequence[str]
    ) -> list[tuple[str, str]]:
        """Delete the pushers created from these devices; their (app_id, pushkey)."""

        def _txn(txn: Transaction) -> list[tuple[str, str]]:
            gone: list[tuple[str, str]] = []
            for chunk in _chunks(list(device_ids)):
                marks = ",".join("?" * len(chunk))
                args = [user_id, *chunk]
                gone += [
                    (str(r[0]), str(r[1]))
                    for r in txn.select_all(
                        "SELECT app_id, pushkey FROM pushers WHERE user_id = ?"
                        f" AND device_id IN ({marks})",
                        args,
                    )
                ]
                txn.execute(
                    f"DELETE FROM pushers WHERE user_id = ? AND device_id IN ({marks})", args
                )
            return gone

        return await self._db.run_interaction("delete_pushers_of_devices", _txn)

    async def set_pusher_position(
        self, user_id: str, app_id: str, pushkey: str, position: int
    ) -> None:
        """Move a pusher's ``last_stream_ordering`` forward (never back)."""

        def _txn(txn: Transaction) -> None:
            txn.execute(
                "UPDATE pushers SET last_stream_ordering = ? WHERE user_id = ? AND app_id = ?"
                " AND pushkey = ? AND last_stream_ordering < ?",
                (position, user_id, app_id, pushkey, position),
            )

        await self._db.run_interaction("set_pusher_position", _txn)

    async def get_unread_push_actions_after(
        self, user_id: str, after: int, limit: int
    ) -> list[PushActionRow]:
        """The newest ``limit`` notifying actions of the user after stream ``after``
        that are still unread, oldest first (what a pusher owes after a restart)."""

        def _txn(txn: Transaction) -> list[PushActionRow]:
            rows = [
                PushActionRow(
                    user_id, r[0], r[1], int(r[2]), r[3], bool(r[4]), json.loads(r[5]), int(r[6])
                )
                for r in txn.select_all(
                    "SELECT room_id, event_id, stream_ordering, thread_id, highlight, actions,"
                    " received_ts FROM event_push_actions WHERE user_id = ?"
                    " AND stream_ordering > ? ORDER BY stream_ordering DESC LIMIT ?",
                    (user_id, after, limit),
                )
            ]
            receipts = self._receipts_txn(txn, user_id, sorted({r.room_id for r in rows}))

            def _unread(row: PushActionRow) -> bool:
                by_thread = receipts.get(row.room_id, {})
                read = max(by_thread.get(UNTHREADED, 0), by_thread.get(row.thread_id, 0))
                return row.stream_ordering > read

            return [r for r in reversed(rows) if _unread(r)]

        return await self._db.run_interaction("get_unread_push_actions_after", _txn)

    # Push actions -----------------------------------------------------------------------

    async def get_push_actions_position(self) -> int:
        """Every event at or below this events stream position has its actions stored."""

        def _txn(txn: Transaction) -> int:
            row = txn.select_one("SELECT stream_ordering FROM push_actions_position WHERE id = 1")
            return int(row[0]) if row is not None else 0

        return await self._db.run_interaction("get_push_actions_position", _txn)

    async def get_push_catch_up(
        self, after: int, up_to: int, limit: int
    ) -> tuple[list[tuple[int, str]], set[str]]:
        """(stream ordering, event id) of the non-outlier events and out-of-band invites
        in (after, up_to], oldest first, at most ``limit``; and which of them already have
        push actions stored."""

        def _txn(txn: Transaction) -> tuple[list[tuple[int, str]], set[str]]:
            rows = [
                (int(r[0]), str(r[1]))
                for r in txn.select_all(
                    "SELECT stream_ordering, event_id FROM events"
                    " WHERE stream_ordering > ? AND stream_ordering <= ? AND (outlier = 0"
                    " OR (type = 'm.room.member' AND EXISTS (SELECT 1"
                    " FROM out_of_band_memberships o WHERE o.user_id = events.state_key"
                    " AND o.room_id = events.room_id AND o.event_id = events.event_id"
                    " AND o.membership = 'invite')))"
                    " ORDER BY stream_ordering LIMIT ?",
                    (after, up_to, limit),
                )
            ]
            done: set[str] = set()
            if rows:
                done = {
                    str(r[0])
                    for r in txn.select_all(
                        "SELECT DISTINCT event_id FROM event_push_actions"
                        " WHERE stream_ordering > ? AND stream_ordering <= ?",
                        (after, rows[-1][0]),
                    )
                }
            return rows, done

        return await self._db.run_interaction("get_push_catch_up", _txn)

    async def add_push_actions(
        self, rows: Sequence[PushActionRow], position: int | None = None
    ) -> None:
        """Store the actions (one multi-row INSERT per ROWS_PER_INSERT rows) and move
        ``push_actions_position`` to ``position`` with them."""

        def _txn(txn: Transaction) -> None:
            for start in range(0, len(rows), ROWS_PER_INSERT):
                chunk = rows[start : start + ROWS_PER_INSERT]
                args: list[Any] = []
                for r in chunk:
                    args += [
                        r.user_id,
                        r.room_id,
                        r.event_id,
                        r.stream_ordering,
                        r.thread_id,
                        int(r.highlight),
                        _encode(r.actions),
                        r.received_ts,
                    ]
                txn.execute(
                    "INSERT INTO event_push_actions (user_id, room_id, event_id, stream_ordering,"
                    " thread_id, notif, highlight, actions, received_ts) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?, 1, ?, ?, ?)"] * len(chunk))
                    + " ON CONFLICT (user_id, stream_ordering) DO NOTHING",
                    args,
                )
            if position is not None:
                txn.execute(
                    "UPDATE push_actions_position SET stream_ordering = ?"
                    " WHERE id = 1 AND stream_ordering < ?",
                    (position, position),
                )

        if rows or position is not None:
            await self._db.run_interaction("add_push_actions", _txn)

    def _receipts_txn(
        self, txn: Transaction, user_id: str, room_ids: Sequence[str]
    ) -> dict[str, dict[str, int]]:
        receipts: dict[str, dict[str, int]] = {}
        for chunk in _chunks(list(room_ids)):
            marks = ",".join("?" * len(chunk))
            for room_id, thread_id, position in txn.select_all(
                "SELECT room_id, thread_id, MAX(event_stream_ordering) FROM receipts"
                f" WHERE user_id = ? AND room_id IN ({marks}) AND receipt_type IN (?, ?)"
                " GROUP BY room_id, thread_id",
                [user_id, *chunk, *READ_RECEIPT_TYPES],
            ):
                receipts.setdefault(room_id, {})[thread_id] = int(position)
        return receipts

    async def get_unread_state(self, user_id: str, room_ids: Sequence[str]) -> UnreadState:
        """The user's read positions and unread notifying actions in these rooms.

        In a room where the user has no unthreaded read receipt, their latest membership
        event (their join) stands for one, as on Synapse: what came before they joined
        (the invite that notified them) is not unread in the room they joined.
        """
        rooms = list(dict.fromkeys(room_ids))

        def _txn(txn: Transaction) -> UnreadState:
            receipts = self._receipts_txn(txn, user_id, rooms)
            if not rooms:
                return UnreadState(receipts, [])
            without = [r for r in rooms if UNTHREADED not in receipts.get(r, {})]
            for chunk in _chunks(without):
                marks = ",".join("?" * len(chunk))
                for room_id, position in txn.select_all(
                    "SELECT room_id, MAX(stream_ordering) FROM room_memberships"
                    f" WHERE user_id = ? AND room_id IN ({marks}) GROUP BY room_id",
                    [user_id, *chunk],
                ):
                    receipts.setdefault(room_id, {})[UNTHREADED] = int(position)
            floors = {r: receipts.get(r, {}).get(UNTHREADED, 0) for r in rooms}
            # One range of the (user_id, stream_ordering) key from the oldest read
            # position; rows of other rooms, or before their room's position, are skipped.
            rows = [
                UnreadRow(str(r[0]), str(r[1]), int(r[2]), bool(r[3]))
                for r in txn.select_all(
                    "SELECT room_id, thread_id, stream_ordering, highlight FROM event_push_actions"
                    " WHERE user_id = ? AND stream_ordering > ?",
                    (user_id, min(floors.values())),
                )
                if r[0] in floors and int(r[2]) > floors[r[0]]
            ]
            return UnreadState(receipts, rows)

        return await self._db.run_interaction("get_unread_state", _txn)

    async def get_notifications(
        self, user_id: str, *, before: int | None, limit: int, only_highlight: bool
    ) -> tuple[list[PushActionRow], dict[str, dict[str, int]]]:
        """The user's notifications, newest first, strictly before stream ``before``;
        and the read positions (room -> thread -> stream) in their rooms."""

        def _txn(txn: Transaction) -> tuple[list[PushActionRow], dict[str, dict[str, int]]]:
            sql = (
                "SELECT room_id, event_id, stream_ordering, thread_id, highlight, actions,"
                " received_ts FROM event_push_actions WHERE user_id = ?"
            )
            args: list[Any] = [user_id]
            if before is not None:
                sql += " AND stream_ordering < ?"
                args.append(before)
            if only_highlight:
                sql += " AND highlight = 1"
            sql += " ORDER BY stream_ordering DESC LIMIT ?"
            rows = [
                PushActionRow(
                    user_id, r[0], r[1], int(r[2]), r[3], bool(r[4]), json.loads(r[5]), int(r[6])
                )
                for r in txn.select_all(sql, [*args, limit])
            ]
            return rows, self._receipts_txn(txn, user_id, sorted({r.room_id for r in rows}))

        return await self._db.run_interaction("get_notifications", _txn)
