"""Devices' ``last_seen_ts``, ``last_seen_ip`` and ``last_seen_user_agent``.

Every authenticated request reports its device here; the database is written in
batches (at most every ``FLUSH_INTERVAL_S``), and a device's row only when its address
or user agent changed or ``GRANULARITY_MS`` passed since the last write, so a busy
client costs no query per request. What is pending at shutdown is flushed by ``stop``.
"""

from __future__ import annotations

import logging

from twisted.internet import defer, task

from homeserver.clock import Clock, now_ms
from storage.users import UserStore

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 5.0
GRANULARITY_MS = 60_000

DeviceKey = tuple[str, str]
Seen = tuple[int, str, str | None]  # ts, ip, user agent


class ClientIpTracker:
    def __init__(self, store: UserStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._written: dict[DeviceKey, Seen] = {}
        self._pending: dict[DeviceKey, Seen] = {}
        self._loop: task.LoopingCall | None = None
        self._flushing: defer.Deferred[None] | None = None

    def start(self) -> None:
        self._loop = task.LoopingCall(self._flush_in_background)
        self._loop.clock = self._clock  # type: ignore[assignment]
        self._loop.start(FLUSH_INTERVAL_S, now=False)

    def record(self, user_id: str, device_id: str | None, ip: str, user_agent: str | None) -> None:
        if device_id is None:
            return
        key = (user_id, device_id)
        now = now_ms(self._clock)
        last = self._pending.get(key) or self._written.get(key)
        if last is not None and last[1:] == (ip, user_agent) and now - last[0] < GRANULARITY_MS:
            return
        self._pending[key] = (now, ip, user_agent)

    def last_seen(self, user_id: str, device_id: str) -> Seen | None:
        """What is known in memory (newer than the database while unflushed)."""
        key = (user_id, device_id)
        return self._pending.get(key) or self._written.get(key)

    def _flush_in_background(self) -> None:
        if self._flushing is None and self._pending:
            d = defer.ensureDeferred(self.flush())
            d.addErrback(lambda f: logger.error("Writing devices' last seen: %s", f.value))

    async def flush(self) -> None:
        if self._flushing is not None:
            await self._flushing
        batch, self._pending = self._pending, {}
        if not batch:
            return
        self._flushing = defer.Deferred()
        try:
            await self._store.update_devices_last_seen(
                [(u, d, ts, ip, ua) for (u, d), (ts, ip, ua) in batch.items()]
            )
            self._written.update(batch)
            if len(self._written) > 100_000:  # bounded: forgetting costs one extra write
                self._written.clear()
        except Exception:
            for key, seen in batch.items():  # retried with the next flush
                self._pending.setdefault(key, seen)
            raise
        finally:
            flushing, self._flushing = self._flushing, None
            flushing.callback(None)

    async def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        try:
            await self.flush()
        except Exception as e:  # shutdown goes on: the next request records them again
            logger.error("Writing devices' last seen at shutdown: %s", e)
