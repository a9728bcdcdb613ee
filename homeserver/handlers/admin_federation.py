"""The federation sender's destinations as a server admin sees them (Synapse's
``/_synapse/admin/v1/federation/destinations``): backoff state, the rooms shared with
each, and resetting a destination's backoff."""

from __future__ import annotations

from typing import Any, Protocol

from homeserver.errors import Codes, MatrixError
from storage.federation import Destination
from storage.storage import Storage

JsonDict = dict[str, Any]


class Waker(Protocol):
    def retry_now(self, destination: str) -> None: ...


def destination_json(found: Destination) -> JsonDict:
    return {
        "destination": found.destination,
        "retry_last_ts": found.retry_last_ts,
        "retry_interval": found.retry_interval_ms,
        "failure_ts": found.failure_ts,
        "last_successful_stream_ordering": None,  # not kept
    }


class DestinationsAdmin:
    def __init__(self, storage: Storage, sender: Waker) -> None:
        self._storage = storage
        self._sender = sender

    async def page(
        self, start: int, limit: int, search: str | None, order_by: str, backwards: bool
    ) -> tuple[list[JsonDict], int]:
        found, total = await self._storage.federation.page_destinations(
            start, limit, search, order_by, backwards
        )
        return [destination_json(d) for d in found], total

    async def _known(self, destination: str) -> Destination:
        found = await self._storage.federation.get_destination(destination)
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown destination")
        return found

    async def get(self, destination: str) -> JsonDict:
        return destination_json(await self._known(destination))

    async def rooms(
        self, destination: str, start: int, limit: int, backwards: bool
    ) -> tuple[list[JsonDict], int]:
        await self._known(destination)
        shared = await self._storage.room_stats.rooms_shared_with(destination)
        if backwards:
            shared.reverse()
        page = shared[start : start + limit]
        return [{"room_id": r, "stream_ordering": s} for r, s in page], len(shared)

    async def reset_connection(self, destination: str) -> None:
        found = await self._known(destination)
        if not found.retry_last_ts:
            raise MatrixError(
                400,
                Codes.UNKNOWN,
                "The retry timing does not need to be reset for this destination.",
            )
        await self._storage.federation.set_retry(destination, 0, 0)
        self._sender.retry_now(destination)
