"""What each simplified sliding sync connection was already sent (0050, 0051).

Invariants:
- A connection is (user, device, conn_id); its positions are ids from one increasing
  generator, so a later response always has a greater position.
- The state at position P is, per room, the row with the greatest position <= P.
  ``load(P)`` deletes every other position of the connection and every room row after P
  (responses the client never acknowledged: it came back with P), and the rows of rooms
  rewritten at P below it: a connection holds at most two positions (the one in use and
  the one handed out last) and at most two rows a room.
- A device holds at most ``MAX_CONNECTIONS_PER_DEVICE`` connections, and a connection
  unused for ``CONNECTION_TTL_MS`` is deleted when its device opens another one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from storage.database import Database, Transaction
from storage.id_generator import IdGenerator

MAX_CONNECTIONS_PER_DEVICE = 10
CONNECTION_TTL_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class SentRoom:
    """A room as a connection holds it: up to events position ``stream``, as a member
    with ``membership``, under the room config ``config`` (canonical JSON), with the
    member events of ``lazy_members`` (sorted) sent for ``$LAZY``."""

    stream: int
    membership: str
    config: str
    lazy_members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionState:
    connection_key: int
    position: int
    rooms: dict[str, SentRoom]


class SlidingSyncStore:
    def __init__(self, db: Database, ids: IdGenerator) -> None:
        self._db = db
        self._ids = ids

    @classmethod
    async def open(cls, db: Database) -> SlidingSyncStore:
        positions = await IdGenerator.load(db, "sliding_sync_positions", "position")
        connections = await IdGenerator.load(db, "sliding_sync_connections", "connection_key")
        start = max(positions.current_position, connections.current_position)
        return cls(db, IdGenerator(start))

    async def load(
        self, user_id: str, device_id: str, conn_id: str, position: int, now_ms: int
    ) -> ConnectionState | None:
        """The connection's state at ``position`` (None: no such connection or position),
        dropping what came after it (see the module's invariants)."""

        def _txn(txn: Transaction) -> ConnectionState | None:
            row = txn.select_one(
                "SELECT c.connection_key FROM sliding_sync_connections c"
                " JOIN sliding_sync_positions p ON p.connection_key = c.connection_key"
                " WHERE c.user_id = ? AND c.device_id = ? AND c.conn_id = ? AND p.position = ?",
                (user_id, device_id, conn_id, position),
            )
            if row is None:
                return None
            key = int(row[0])
            txn.execute(
                "DELETE FROM sliding_sync_positions WHERE connection_key = ? AND position <> ?",
                (key, position),
            )
            txn.execute(
                "DELETE FROM sliding_sync_rooms WHERE connection_key = ? AND position > ?",
                (key, position),
            )
            txn.execute(
                "DELETE FROM sliding_sync_rooms WHERE connection_key = ? AND position < ?"
                " AND room_id IN (SELECT room_id FROM sliding_sync_rooms"
                " WHERE connection_key = ? AND position = ?)",
                (key, position, key, position),
            )
            txn.execute(
                "UPDATE sliding_sync_connections SET last_used_ts = ? WHERE connection_key = ?",
                (now_ms, key),
            )
            rooms: dict[str, tuple[int, SentRoom]] = {}
            for room_id, pos, stream, membership, config, lazy in txn.select_all(
                "SELECT room_id, position, stream, membership, config, lazy_members"
                " FROM sliding_sync_rooms WHERE connection_key = ?",
                (key,),
            ):
                held = rooms.get(room_id)
                if held is None or held[0] < int(pos):
                    members = json.loads(lazy)
                    rooms[str(room_id)] = (
                        int(pos),
                        SentRoom(int(stream), str(membership), str(config), tuple(members)),
                    )
            return ConnectionState(key, position, {r: sent for r, (_, sent) in rooms.items()})

        return await self._db.run_interaction("sliding_sync_load", _txn)

    async def persist(
        self,
        user_id: str,
        device_id: str,
        conn_id: str,
        base: ConnectionState | None,
        changes: dict[str, SentRoom],
        now_ms: int,
    ) -> int | None:
        """A new position holding ``base`` with ``changes`` (``base`` None: a new
        connection, replacing any of the same id). None if ``base`` is gone meanwhile
        (another request of the connection went on from another position)."""
        position = self._ids.next_id()
        new_key = self._ids.next_id()

        def _txn(txn: Transaction) -> int | None:
            if base is None:
                key = new_key
                self._delete_connections(
                    txn,
                    "user_id = ? AND device_id = ? AND (conn_id = ? OR last_used_ts < ?)",
                    (user_id, device_id, conn_id, now_ms - CONNECTION_TTL_MS),
                )
                extra = txn.select_all(
                    "SELECT connection_key FROM sliding_sync_connections"
                    " WHERE user_id = ? AND device_id = ?"
                    " ORDER BY last_used_ts DESC, connection_key DESC",
                    (user_id, device_id),
                )[MAX_CONNECTIONS_PER_DEVICE - 1 :]
                for (old,) in extra:
                    self._delete_connections(txn, "connection_key = ?", (int(old),))
                txn.execute(
                    "INSERT INTO sliding_sync_connections"
                    " (connection_key, user_id, device_id, conn_id, last_used_ts)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key, user_id, device_id, conn_id, now_ms),
                )
            else:
                key = base.connection_key
                if (
                    txn.select_one(
                        "SELECT 1 FROM sliding_sync_positions"
                        " WHERE connection_key = ? AND position = ?",
                        (key, base.position),
                    )
                    is None
                ):
                    return None
            txn.execute(
                "INSERT INTO sliding_sync_positions (position, connection_key) VALUES (?, ?)",
                (position, key),
            )
            txn.execute_many(
                "INSERT INTO sliding_sync_rooms"
                " (connection_key, position, room_id, stream, membership, config, lazy_members)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        key,
                        position,
                        room_id,
                        sent.stream,
                        sent.membership,
                        sent.config,
                        json.dumps(list(sent.lazy_members), separators=(",", ":")),
                    )
                    for room_id, sent in changes.items()
                ],
            )
            return position

        return await self._db.run_interaction("sliding_sync_persist", _txn)

    async def delete_for_device(self, user_id: str, device_id: str) -> None:
        """Forget every connection of a device (deleted or logged out)."""

        def _txn(txn: Transaction) -> None:
            self._delete_connections(txn, "user_id = ? AND device_id = ?", (user_id, device_id))

        await self._db.run_interaction("sliding_sync_delete_device", _txn)

    @staticmethod
    def _delete_connections(txn: Transaction, where: str, args: tuple[object, ...]) -> None:
        keys = [
            int(row[0])
            for row in txn.select_all(
                f"SELECT connection_key FROM sliding_sync_connections WHERE {where}", args
            )
        ]
        for key in keys:
            txn.execute("DELETE FROM sliding_sync_rooms WHERE connection_key = ?", (key,))
            txn.execute("DELETE FROM sliding_sync_positions WHERE connection_key = ?", (key,))
            txn.execute("DELETE FROM sliding_sync_connections WHERE connection_key = ?", (key,))
