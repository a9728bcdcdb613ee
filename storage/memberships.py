"""Memberships: ``room_memberships`` (every timeline membership event, in stream order)
and ``out_of_band_memberships`` (a local user's membership in a room we do not hold,
e.g. a remote invite, with the stripped state to show with it).

Both are written only in the persist transaction (``insert_membership_txn``,
``set_out_of_band_membership_txn``); ``forgotten`` is the one later change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import Event
from storage.database import Database, Transaction


@dataclass(frozen=True, slots=True)
class MembershipRow:
    room_id: str
    membership: str
    event_id: str
    stream_ordering: int
    sender: str


def insert_membership_txn(txn: Transaction, ev: Event) -> None:
    txn.execute(
        "INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership,"
        " stream_ordering) VALUES (?, ?, ?, ?, ?, ?)",
        (ev.event_id, ev.state_key, ev.sender, ev.room_id, ev.membership, ev.stream_ordering),
    )


def set_out_of_band_membership_txn(
    txn: Transaction, ev: Event, stripped_state: list[dict[str, Any]]
) -> None:
    txn.execute(
        "DELETE FROM out_of_band_memberships WHERE user_id = ? AND room_id = ?",
        (ev.state_key, ev.room_id),
    )
    txn.execute(
        "INSERT INTO out_of_band_memberships (user_id, room_id, event_id, membership,"
        " stream_ordering, stripped_state) VALUES (?, ?, ?, ?, ?, ?)",
        (
            ev.state_key,
            ev.room_id,
            ev.event_id,
            ev.membership,
            ev.stream_ordering,
            json.dumps(stripped_state),
        ),
    )


class MembershipStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_rooms_for_user(self, user_id: str) -> list[MembershipRow]:
        """The user's current membership in every room they have one in."""

        def _txn(txn: Transaction) -> list[MembershipRow]:
            # From `events`, not `room_memberships`: a remote user's membership that came
            # with a joined room's state is an outlier, which has no membership row.
            rows = txn.select_all(
                "SELECT c.room_id, c.membership, c.event_id, e.stream_ordering, e.sender,"
                " m.forgotten FROM current_state_events c"
                " JOIN events e ON e.event_id = c.event_id"
                " LEFT JOIN room_memberships m ON m.event_id = c.event_id"
                " WHERE c.type = 'm.room.member' AND c.state_key = ?",
                (user_id,),
            )
            # A forgotten room stays hidden until the user's membership changes again.
            out = [MembershipRow(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows if not r[5]]
            held = {row.room_id for row in out} | {r[0] for r in rows}
            for r in txn.select_all(
                "SELECT o.room_id, o.membership, o.event_id, o.stream_ordering, e.sender"
                " FROM out_of_band_memberships o JOIN events e USING (event_id)"
                " WHERE o.user_id = ?",
                (user_id,),
            ):
                if r[0] not in held:
                    out.append(MembershipRow(r[0], r[1], r[2], int(r[3]), r[4]))
            return out

        return await self._db.run_interaction("get_rooms_for_user", _txn)

    async def get_membership_changes(
        self, user_id: str, from_stream: int, to_stream: int
    ) -> list[MembershipRow]:
        def _txn(txn: Transaction) -> list[MembershipRow]:
            rows = txn.select_all(
                "SELECT room_id, membership, event_id, stream_ordering, sender FROM room_memberships"
                " WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
                " ORDER BY stream_ordering",
                (user_id, from_stream, to_stream),
            )
            return [MembershipRow(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]

        return await self._db.run_interaction("membership_changes", _txn)

    async def get_joined_users(self, room_id: str) -> list[str]:
        def _txn(txn: Transaction) -> list[str]:
            return [
                str(r[0])
                for r in txn.select_all(
                    "SELECT state_key FROM current_state_events WHERE room_id = ?"
                    " AND type = 'm.room.member' AND membership = 'join'",
                    (room_id,),
                )
            ]

        return await self._db.run_interaction("joined_users", _txn)

    async def get_out_of_band_stripped_state(
        self, user_id: str, room_id: str
    ) -> list[dict[str, Any]] | None:
        def _txn(txn: Transaction) -> list[dict[str, Any]] | None:
            row = txn.select_one(
                "SELECT stripped_state FROM out_of_band_memberships WHERE user_id = ?"
                " AND room_id = ?",
                (user_id, room_id),
            )
            return json.loads(row[0]) if row else None  # type: ignore[no-any-return]

        return await self._db.run_interaction("oob_stripped_state", _txn)

    async def get_out_of_band_invite_state(
        self, user_id: str, room_id: str, event_id: str
    ) -> list[dict[str, Any]] | None:
        """The stripped state of ``event_id`` if it is ``user_id``'s current out-of-band
        invite to ``room_id`` (None otherwise: another or a later membership)."""

        def _txn(txn: Transaction) -> list[dict[str, Any]] | None:
            row = txn.select_one(
                "SELECT stripped_state FROM out_of_band_memberships WHERE user_id = ?"
                " AND room_id = ? AND event_id = ? AND membership = 'invite'",
                (user_id, room_id, event_id),
            )
            return json.loads(row[0]) if row else None  # type: ignore[no-any-return]

        return await self._db.run_interaction("oob_invite_state", _txn)

    async def forget_room(self, user_id: str, room_id: str) -> None:
        await self._db.run_interaction(
            "forget_room",
            lambda txn: txn.execute(
                "UPDATE room_memberships SET forgotten = 1 WHERE user_id = ? AND room_id = ?",
                (user_id, room_id),
            ),
        )
