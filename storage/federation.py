"""Federation transport state: remote keys, the outbound queue, destination backoff,
processed inbound transactions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction, like_escape
from storage.id_generator import IdGenerator


@dataclass(frozen=True, slots=True)
class StoredServerKey:
    server_name: str
    key_id: str
    verify_key: str
    valid_until_ts: int
    expired_ts: int | None
    key_json: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboundPdu:
    """Where a local event goes over federation: written to the outbox by the event's
    own transaction (``EventsStore.persist_batch``), so a commit never loses its send."""

    destinations: tuple[str, ...]
    queued_ts: int


@dataclass(frozen=True, slots=True)
class OutboxItem:
    item_id: int
    destination: str
    kind: str  # "pdu" or "edu"
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Destination:
    """A server we have sent to: backed off until ``retry_last_ts + retry_interval_ms``
    while ``retry_last_ts`` is not 0, failing since ``failure_ts``."""

    destination: str
    retry_last_ts: int
    retry_interval_ms: int
    failure_ts: int | None


# order_by (Synapse's names) -> column; we keep no last successful stream ordering.
DESTINATION_ORDERS = {
    "destination": "destination",
    "retry_last_ts": "retry_last_ts",
    "retry_interval": "retry_interval_ms",
    "failure_ts": "failure_ts",
    "last_successful_stream_ordering": "destination",
}

_DESTINATION_COLUMNS = "destination, retry_last_ts, retry_interval_ms, failure_ts"


def _destination(row: tuple[Any, ...]) -> Destination:
    return Destination(
        str(row[0]), int(row[1]), int(row[2]), int(row[3]) if row[3] is not None else None
    )


class FederationStore:
    def __init__(self, db: Database, outbox_ids: IdGenerator) -> None:
        self._db = db
        self._outbox_ids = outbox_ids

    # Keys -----------------------------------------------------------------------

    async def store_server_keys(self, keys: list[StoredServerKey]) -> None:
        def _txn(txn: Transaction) -> None:
            for k in keys:
                txn.execute(
                    "DELETE FROM server_keys WHERE server_name = ? AND key_id = ?",
                    (k.server_name, k.key_id),
                )
                txn.execute(
                    "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts,"
                    " expired_ts, key_json) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        k.server_name,
                        k.key_id,
                        k.verify_key,
                        k.valid_until_ts,
                        k.expired_ts,
                        json.dumps(k.key_json),
                    ),
                )

        await self._db.run_interaction("store_server_keys", _txn)

    async def get_server_keys(self, server_name: str) -> list[StoredServerKey]:
        def _txn(txn: Transaction) -> list[StoredServerKey]:
            rows = txn.select_all(
                "SELECT server_name, key_id, verify_key, valid_until_ts, expired_ts, key_json"
                " FROM server_keys WHERE server_name = ?",
                (server_name,),
            )
            return [
                StoredServerKey(
                    r[0],
                    r[1],
                    r[2],
                    int(r[3]),
                    None if r[4] is None else int(r[4]),
                    json.loads(r[5]),
                )
                for r in rows
            ]

        return await self._db.run_interaction("get_server_keys", _txn)

    # Outbox ------------------------------------------------------------------------

    async def enqueue(self, items: list[tuple[str, str, dict[str, Any]]], now_ms: int) -> None:
        """Queue (destination, kind, payload) rows in one transaction."""
        await self._db.run_interaction("federation_enqueue", self.enqueue_txn, items, now_ms)

    def enqueue_txn(
        self, txn: Transaction, items: list[tuple[str, str, dict[str, Any]]], now_ms: int
    ) -> None:
        """Queue rows inside the caller's transaction (a local event's, so the send
        commits with the event). Ids come from a thread-safe generator; the event
        persister commits in order, so PDU ids commit in queue order."""
        if not items:
            return
        encoded: dict[int, str] = {}  # one payload to many destinations: encode it once
        rows = []
        for destination, kind, payload in items:
            text = encoded.get(id(payload))
            if text is None:
                text = encoded[id(payload)] = json.dumps(payload)
            rows.append((self._outbox_ids.next_id(), destination, kind, text, now_ms))
        txn.execute_many(
            "INSERT INTO federation_outbox (id, destination, kind, payload, created_ts)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )

    async def peek(self, destination: str, kind: str, limit: int) -> list[OutboxItem]:
        def _txn(txn: Transaction) -> list[OutboxItem]:
            rows = txn.select_all(
                "SELECT id, destination, kind, payload FROM federation_outbox"
                " WHERE destination = ? AND kind = ? ORDER BY id LIMIT ?",
                (destination, kind, limit),
            )
            return [OutboxItem(int(r[0]), r[1], r[2], json.loads(r[3])) for r in rows]

        return await self._db.run_interaction("federation_peek", _txn)

    async def ack(self, item_ids: list[int]) -> None:
        await self._db.run_interaction(
            "federation_ack",
            lambda txn: txn.execute_many(
                "DELETE FROM federation_outbox WHERE id = ?", [(i,) for i in item_ids]
            ),
        )

    async def pending_counts(self) -> dict[tuple[str, str], int]:
        """Items queued per (destination, kind) (for the metrics)."""

        def _txn(txn: Transaction) -> dict[tuple[str, str], int]:
            rows = txn.select_all(
                "SELECT destination, kind, COUNT(*) FROM federation_outbox"
                " GROUP BY destination, kind"
            )
            return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

        return await self._db.run_read("federation_pending_counts", _txn)

    async def destinations_with_pending(self) -> list[str]:
        def _txn(txn: Transaction) -> list[str]:
            return [
                str(r[0])
                for r in txn.select_all("SELECT DISTINCT destination FROM federation_outbox")
            ]

        return await self._db.run_interaction("federation_pending_destinations", _txn)

    # Backoff -------------------------------------------------------------------------

    async def get_retry(self, destination: str) -> tuple[int, int] | None:
        """(retry_last_ts, retry_interval_ms) while the destination is backed off."""
        found = await self.get_destination(destination)
        if found is None or not found.retry_last_ts:
            return None
        return found.retry_last_ts, found.retry_interval_ms

    async def set_retry(self, destination: str, last_ts: int, interval_ms: int) -> None:
        """Record a failed attempt (``interval_ms`` > 0: retry after that long; the run
        of failures began at its first one) or a success (0: the destination answers)."""

        def _txn(txn: Transaction) -> None:
            row = txn.select_one(
                "SELECT failure_ts FROM destinations WHERE destination = ?", (destination,)
            )
            failing = interval_ms > 0
            failure_ts = (row[0] if row and row[0] is not None else last_ts) if failing else None
            values = (last_ts if failing else 0, interval_ms if failing else 0, failure_ts)
            if row is None:
                txn.execute(
                    "INSERT INTO destinations"
                    " (destination, retry_last_ts, retry_interval_ms, failure_ts)"
                    " VALUES (?, ?, ?, ?)",
                    (destination, *values),
                )
            else:
                txn.execute(
                    "UPDATE destinations SET retry_last_ts = ?, retry_interval_ms = ?,"
                    " failure_ts = ? WHERE destination = ?",
                    (*values, destination),
                )

        await self._db.run_interaction("set_retry", _txn)

    async def get_destination(self, destination: str) -> Destination | None:
        def _txn(txn: Transaction) -> Destination | None:
            row = txn.select_one(
                f"SELECT {_DESTINATION_COLUMNS} FROM destinations WHERE destination = ?",
                (destination,),
            )
            return _destination(row) if row is not None else None

        return await self._db.run_interaction("get_destination", _txn)

    async def page_destinations(
        self, start: int, limit: int, search: str | None, order_by: str, backwards: bool
    ) -> tuple[list[Destination], int]:
        """A page of known destinations (``search``: part of the name, any case), sorted
        by ``order_by`` (a column of ``DESTINATION_ORDERS``) then by name."""
        column = DESTINATION_ORDERS[order_by]
        where, args = "", []
        if search:
            where = " WHERE LOWER(destination) LIKE ? ESCAPE '\\'"
            args.append("%" + like_escape(search.lower()) + "%")

        def _txn(txn: Transaction) -> tuple[list[Destination], int]:
            count = txn.select_one("SELECT COUNT(*) FROM destinations" + where, args)
            order = "DESC" if backwards else "ASC"
            rows = txn.select_all(
                f"SELECT {_DESTINATION_COLUMNS} FROM destinations{where}"
                f" ORDER BY {column} {order}, destination ASC LIMIT ? OFFSET ?",
                [*args, limit, start],
            )
            return [_destination(r) for r in rows], int(count[0]) if count else 0

        return await self._db.run_interaction("page_destinations", _txn)

    # Inbound transactions ------------------------------------------------------------

    async def get_received_transaction(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        def _txn(txn: Transaction) -> dict[str, Any] | None:
            row = txn.select_one(
                "SELECT response_json FROM received_transactions WHERE origin = ?"
                " AND transaction_id = ?",
                (origin, txn_id),
            )
            return json.loads(row[0]) if row else None  # type: ignore[no-any-return]

        return await self._db.run_interaction("get_received_txn", _txn)

    async def set_received_transaction(
        self, origin: str, txn_id: str, response: dict[str, Any], now_ms: int
    ) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM received_transactions WHERE origin = ? AND transaction_id = ?",
                (origin, txn_id),
            )
            txn.execute(
                "INSERT INTO received_transactions (origin, transaction_id, response_json,"
                " received_ts) VALUES (?, ?, ?, ?)",
                (origin, txn_id, json.dumps(response), now_ms),
            )

        await self._db.run_interaction("set_received_txn", _txn)
