"""Send-to-device messaging: PUT /sendToDevice/{eventType}/{txnId}.

Invariants:
- A send is idempotent per (sender, sender's device, txn id): the transaction id is
  recorded in the same database transaction as the messages, so a retried request
  (even a concurrent one) queues nothing twice.
- Messages for local users are queued in each target device's inbox at one to-device
  stream position, then the recipients' syncs are woken. Messages for remote users are
  dropped with a log line until federation exists (``Locality.is_mine`` decides).
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.clock import Clock, now_ms
from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import Requester
from homeserver.sync.notifier import Notifier
from storage.e2ee import E2eeStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


class ToDeviceHandler:
    def __init__(
        self, store: E2eeStore, notifier: Notifier, locality: Locality, clock: Clock
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._locality = locality
        self._clock = clock

    async def send(self, requester: Requester, event_type: str, txn_id: str, messages: Any) -> None:
        if not isinstance(messages, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'messages' must be an object")
        local: dict[str, dict[str, JsonDict]] = {}
        for user_id, by_device in messages.items():
            if not isinstance(by_device, dict) or not all(
                isinstance(c, dict) for c in by_device.values()
            ):
                raise MatrixError(
                    400, Codes.BAD_JSON, "'messages' must map user ids to devices to objects"
                )
            if not self._locality.is_mine(user_id):
                logger.info("Dropping to-device messages for remote user %s", user_id)
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
        if recipients:
            self._notifier.notify_users(recipients)
