"""Send-to-device messaging: PUT /sendToDevice/{eventType}/{txnId}.

Invariants:
- A send is idempotent per (sender, sender's device, txn id): the transaction id is
  recorded in the same database transaction as the messages, so a retried request
  (even a concurrent one) queues nothing twice.
- Messages for local users are queued in each target device's inbox at one to-device
  stream position, then the recipients' syncs are woken. Messages for remote users go
  to ``remote`` (federation: one ``m.direct_to_device`` EDU per server, through the
  durable outbox) only when the transaction id is new, so a retried send is not
  delivered twice remotely either; without ``remote`` they are dropped with a log line.
- Inbound EDUs (``receive_federated``) are deduplicated by (origin, message id) in the
  transaction that queues them, and only accepted from the sender's own server.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.bus import Bus, ToDeviceQueued
from homeserver.clock import Clock, now_ms
from homeserver.e2ee.locality import Locality
from homeserver.e2ee.remote import RemoteToDevice
from homeserver.errors import Codes, MatrixError
from homeserver.requester import Requester
from homeserver.sync.notifier import Notifier
from storage.e2ee import E2eeStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


class ToDeviceHandler:
    def __init__(
        self, store: E2eeStore, notifier: Notifier, locality: Locality, clock: Clock, bus: Bus
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._locality = locality
        self._clock = clock
        self.remote: RemoteToDevice | None = None
        # Told of every batch queued for local devices (application services).
        self._bus = bus

    async def send(self, requester: Requester, event_type: str, txn_id: str, messages: Any) -> None:
        if not isinstance(messages, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'messages' must be an object")
        local: dict[str, dict[str, JsonDict]] = {}
        remote: dict[str, dict[str, JsonDict]] = {}
        for user_id, by_device in messages.items():
            if not isinstance(by_device, dict) or not all(
                isinstance(c, dict) for c in by_device.values()
            ):
                raise MatrixError(
                    400, Codes.BAD_JSON, "'messages' must map user ids to devices to objects"
                )
            if not self._locality.is_mine(user_id):
                remote[user_id] = by_device
                continue
            local[user_id] = {
                device_id: {"type": event_type, "sender": requester.user_id, "content": content}
                for device_id, content in by_device.items()
            }
        recipients = await self._store.add_to_device_messages(
            requester.user_id,
            requester.device_id or "",
            txn_id,
            now_ms(self._clock),
            local,
        )
        if recipients is None:
            return  # a retry of a send already done
        if recipients:
            self._notifier.notify_users(recipients)
            self._tell_listeners(local)
        if remote:
            if self.remote is None:
                logger.info("Dropping to-device messages for %d remote users", len(remote))
            else:
                await self.remote.send_to_device(requester.user_id, event_type, remote)

    async def receive_federated(self, origin: str, content: JsonDict) -> None:
        """An ``m.direct_to_device`` EDU: queue its messages for our users' devices."""
        sender = content.get("sender")
        event_type = content.get("type")
        message_id = content.get("message_id")
        messages = content.get("messages")
        if not (
            isinstance(sender, str)
            and isinstance(event_type, str)
            and isinstance(message_id, str)
            and isinstance(messages, dict)
        ):
            logger.info("Ignoring a malformed m.direct_to_device EDU from %s", origin)
            return
        try:
            sender_server = self._locality.server_of(sender)
        except MatrixError:
            sender_server = None
        if sender_server != origin:
            logger.warning("%s sent to-device messages as %s; ignored", origin, sender)
            return
        local: dict[str, dict[str, JsonDict]] = {}
        for user_id, by_device in messages.items():
            try:
                mine = self._locality.is_mine(user_id)
            except MatrixError:
                continue
            if not mine or not isinstance(by_device, dict):
                continue
            local[user_id] = {
                device_id: {"type": event_type, "sender": sender, "content": message}
                for device_id, message in by_device.items()
                if isinstance(message, dict)
            }
        recipients = await self._store.add_to_device_messages(
            sender, "", message_id, now_ms(self._clock), local, origin=origin
        )
        if recipients:
            self._notifier.notify_users(recipients)
            self._tell_listeners(local)

    def _tell_listeners(self, local: dict[str, dict[str, JsonDict]]) -> None:
        self._bus.publish(ToDeviceQueued(local))
