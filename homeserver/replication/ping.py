"""``ping``: an instance's name and stream positions, for health checks between
instances (the first user of the internal API; forwarded writes come later)."""

from __future__ import annotations

from homeserver.replication.endpoints import EndpointSpec, InternalEndpoint, JsonDict
from storage.storage import Storage

PING = EndpointSpec("ping", "GET")


def ping_endpoint(instance_name: str, storage: Storage) -> InternalEndpoint:
    async def handle(body: JsonDict, params: dict[str, str]) -> tuple[int, JsonDict]:
        return 200, {
            "instance_name": instance_name,
            "positions": {"events": storage.events.stream.current_position},
        }

    return InternalEndpoint(PING, handle)
