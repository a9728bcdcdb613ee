"""Local room aliases (``room_aliases``): alias -> room id and the servers to try.

Every committed change of a mapping is published on the bus (``AliasChanged``: alias,
room id or None once deleted): application services watch their alias namespaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from homeserver.bus import AliasChanged, Bus
from storage.database import Database, Transaction


@dataclass(slots=True)
class RoomAlias:
    alias: str
    room_id: str
    creator: str | None
    servers: list[str] = field(default_factory=list)


def move_aliases_txn(txn: Transaction, old_room_id: str, new_room_id: str) -> list[str]:
    """Point every alias of ``old_room_id`` at ``new_room_id``; the aliases moved."""
    moved = [
        str(r[0])
        for r in txn.select_all(
            "SELECT room_alias FROM room_aliases WHERE room_id = ?", (old_room_id,)
        )
    ]
    txn.execute("UPDATE room_aliases SET room_id = ? WHERE room_id = ?", (new_room_id, old_room_id))
    return moved


class AliasStore:
    def __init__(self, db: Database, bus: Bus) -> None:
        self._db = db
        self._bus = bus

    def changed(self, changes: Iterable[tuple[str, str | None]]) -> None:
        """After commit: publish the changed mappings."""
        for alias, room_id in changes:
            self._bus.publish(AliasChanged(alias, room_id))

    async def create(self, alias: RoomAlias) -> bool:
        def _txn(txn: Transaction) -> bool:
            # ON CONFLICT: two concurrent claims of one alias give one winner, no error.
            txn.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator, servers) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (room_alias) DO NOTHING",
                (alias.alias, alias.room_id, alias.creator, json.dumps(alias.servers)),
            )
            return txn.rowcount == 1

        created = await self._db.run_interaction("create_alias", _txn)
        if created:
            self.changed([(alias.alias, alias.room_id)])
        return created

    async def get(self, alias: str) -> RoomAlias | None:
        def _txn(txn: Transaction) -> RoomAlias | None:
            row = txn.select_one(
                "SELECT room_alias, room_id, creator, servers FROM room_aliases WHERE room_alias = ?",
                (alias,),
            )
            return RoomAlias(row[0], row[1], row[2], json.loads(row[3])) if row else None

        return await self._db.run_interaction("get_alias", _txn)

    async def delete(self, alias: str) -> None:
        await self._db.run_interaction(
            "delete_alias",
            lambda txn: txn.execute("DELETE FROM room_aliases WHERE room_alias = ?", (alias,)),
        )
        self.changed([(alias, None)])

    async def get_all(self) -> list[tuple[str, str]]:
        """Every local alias mapping, (alias, room id)."""

        def _txn(txn: Transaction) -> list[tuple[str, str]]:
            rows = txn.select_all("SELECT room_alias, room_id FROM room_aliases")
            return [(str(r[0]), str(r[1])) for r in rows]

        return await self._db.run_interaction("get_all_aliases", _txn)

    async def get_for_room(self, room_id: str) -> list[str]:
        def _txn(txn: Transaction) -> list[str]:
            return [
                str(r[0])
                for r in txn.select_all(
                    "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias",
                    (room_id,),
                )
            ]

        return await self._db.run_interaction("aliases_for_room", _txn)
