"""What the E2EE handlers need from other servers, as protocols.

``homeserver.e2ee`` never imports the federation package: the federation module
implements these and the composition root plugs it in (``federation/e2ee.py``). Without
it, remote users are answered with ``failures`` and nothing leaves the server.
"""

from __future__ import annotations

from typing import Any, Protocol

JsonDict = dict[str, Any]


class RemoteKeys(Protocol):
    async def query(self, device_keys: dict[str, list[str]], timeout_ms: int) -> JsonDict:
        """``device_keys`` / ``master_keys`` / ``self_signing_keys`` / ``failures`` for
        remote users, as /keys/query answers them."""
        ...

    async def claim(self, one_time_keys: dict[str, dict[str, str]], timeout_ms: int) -> JsonDict:
        """``one_time_keys`` / ``failures`` for remote users, as /keys/claim answers."""
        ...


class RemoteToDevice(Protocol):
    async def send_to_device(
        self, sender: str, event_type: str, messages: dict[str, dict[str, JsonDict]]
    ) -> None:
        """Queue ``m.direct_to_device`` EDUs for remote users (``messages`` holds only
        remote users: user id -> device id or ``*`` -> content)."""
        ...


class DeviceListPublisher(Protocol):
    """Told of every change to a local user's devices or cross-signing keys."""

    async def devices_changed(
        self, user_id: str, device_ids: list[str], deleted: bool, *, wait_sent: bool = False
    ) -> None:
        """``wait_sent``: return only once the change is with the servers it goes to
        (or a bounded wait ran out)."""
        ...

    async def signing_keys_changed(self, user_id: str) -> None: ...
