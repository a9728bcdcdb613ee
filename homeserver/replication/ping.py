"""``ping``: an instance's name and stream positions, for health checks between
instances and for readers (workers) catching up with the writer's positions."""

from __future__ import annotations

from homeserver.replication.endpoints import EndpointSpec, InternalEndpoint, JsonDict
from storage.id_generator import IdGenerator
from storage.storage import Storage

PING = EndpointSpec("ping", "GET")


def stream_generators(storage: Storage) -> dict[str, IdGenerator]:
    """Every stream /sync reads whose positions the main process allocates, by name.

    The writer hands out its ``current_position`` (never past an id still in flight); a
    reader ``advance_to``s it, so it shows only what the writer has committed."""
    return {
        "events": storage.events.stream,
        "account_data": storage.account_data.stream,
        "receipts": storage.receipts.stream,
        "presence": storage.presence.stream,
        "to_device": storage.e2ee.to_device,
        "device_lists": storage.e2ee.device_lists,
    }


def ping_endpoint(instance_name: str, storage: Storage) -> InternalEndpoint:
    generators = stream_generators(storage)

    async def handle(body: JsonDict, params: dict[str, str]) -> tuple[int, JsonDict]:
        return 200, {
            "instance_name": instance_name,
            "positions": {name: gen.current_position for name, gen in generators.items()},
        }

    return InternalEndpoint(PING, handle)
