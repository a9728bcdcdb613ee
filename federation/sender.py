"""The outbound federation queue: PDUs and EDUs per destination, sent as transactions.

Invariants:
- Items are written to ``federation_outbox`` before any attempt to send them, and
  removed only after the destination accepted the transaction carrying them, so a
  restart loses nothing queued (it resumes every destination with pending items).
- A local event's PDUs are written by the event's own transaction (``prepare`` names
  the destinations when the event is queued for persistence; ``on_persisted`` only
  wakes them after the commit), so a crash right after the commit loses no send.
- One transaction in flight per destination, at most 50 PDUs and 100 EDUs, in queue
  order.
- A failing destination is retried with exponential backoff (min interval × multiplier,
  capped), and its queue keeps growing meanwhile: when it comes back it gets what it
  missed, in order.
- An EDU queued with a time to live (typing, receipts, presence) is dropped instead of
  sent once it is older than that: after a long outage it would only show stale state.
  Other EDUs and PDUs never expire.
- ``wait_sent`` lets a caller wait (bounded) until the destinations it queued for are
  done sending: each one's queue was emptied (all accepted) or its sending stopped for
  a retry. A destination backing off is not waited for.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from federation.interfaces import FederationRequestError
from homeserver.clock import Clock, now_ms
from homeserver.events.event import Event
from homeserver.rooms.room_cache import RoomCache
from storage.events import PersistItem
from storage.federation import FederationStore, OutboundPdu

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_PDUS = 50
MAX_EDUS = 100
# Key of a queued EDU's payload holding its expiry; removed before sending.
_EXPIRES = "expires_ts"


@dataclass(frozen=True)
class RetrySettings:
    min_interval_ms: int = 10 * 60 * 1000 // 60  # 10 s
    multiplier: float = 2.0
    max_interval_ms: int = 24 * 3600 * 1000


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


class FederationSender:
    def __init__(
        self,
        server_name: str,
        clock: Clock,
        store: FederationStore,
        client: Any,
        rooms: RoomCache,
        retry: RetrySettings,
    ) -> None:
        self._server_name = server_name
        self._clock = clock
        self._store = store
        self._client = client
        self._rooms = rooms
        self._retry = retry
        self._running: set[str] = set()
        self._look_again: set[str] = set()
        self._wakeups: dict[str, Any] = {}
        self._backoff: dict[str, int] = {}
        self._stopped = False
        # destination -> callers of wait_sent, told when its sending loop ends
        self._idle_waiters: dict[str, list[defer.Deferred[None]]] = {}
        # Destinations of events queued for persistence with an outbound PDU, in queue
        # order (the persister commits in that order): woken once the event commits.
        self._uncommitted: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    async def start(self) -> None:
        """Resume every destination that still has queued items."""
        for destination in await self._store.destinations_with_pending():
            self._kick(destination)

    def stop(self) -> None:
        self._stopped = True
        for call in self._wakeups.values():
            if call.active():
                call.cancel()
        self._wakeups.clear()

    # Queueing -----------------------------------------------------------------------

    def destinations_for_room(self, room_id: str, extra: Iterable[str] = ()) -> set[str]:
        room = self._rooms.get_if_loaded(room_id)
        servers = set(extra)
        if room is not None:
            servers |= {server_of(u) for u in room.joined_members()}
        servers.discard(self._server_name)
        servers.discard("")
        return servers

    def prepare(self, item: PersistItem) -> None:
        """Name the servers our new event goes to, so its persistence queues the sends.

        Runs when the event is queued for persistence, after the room cache has applied
        it: the joined servers are those of the state at the event.
        """
        ev = item.event
        if ev.outlier or ev.rejected_reason is not None or item.backfilled:
            return
        if server_of(ev.sender) != self._server_name:
            return
        extra = []
        if ev.membership is not None and ev.state_key:
            if ev.membership == "invite":
                return  # sent through /invite, not /send
            extra.append(server_of(ev.state_key))  # a kicked/banned remote user's server
        destinations = tuple(sorted(self.destinations_for_room(ev.room_id, extra)))
        if destinations:
            item.outbound = OutboundPdu(destinations, now_ms(self._clock))
            self._uncommitted[ev.event_id] = destinations

    def on_persisted(self, events: list[Event]) -> None:
        """Wake the destinations of our newly committed events."""
        committed = {ev.event_id for ev in events if ev.event_id in self._uncommitted}
        to_wake: set[str] = set()
        while committed and self._uncommitted:
            # FIFO commits: an entry queued before one of these that is still here
            # belonged to a batch that failed (nothing was queued; waking is harmless).
            event_id, destinations = self._uncommitted.popitem(last=False)
            committed.discard(event_id)
            to_wake.update(destinations)
        for destination in to_wake:
            self._kick(destination)

    async def send_edu(
        self,
        destinations: Iterable[str],
        edu_type: str,
        content: JsonDict,
        *,
        ttl_ms: int | None = None,
    ) -> None:
        """Queue an EDU; with ``ttl_ms`` it is dropped unsent once older than that."""
        edu: JsonDict = {"edu_type": edu_type, "content": content}
        if ttl_ms is not None:
            edu[_EXPIRES] = now_ms(self._clock) + ttl_ms
        await self._enqueue([(d, "edu", edu) for d in destinations if d and d != self._server_name])

    async def _enqueue(self, items: list[tuple[str, str, JsonDict]]) -> None:
        if not items:
            return
        await self._store.enqueue(items, now_ms(self._clock))
        for destination in {d for d, _, _ in items}:
            self._kick(destination)

    # Sending ------------------------------------------------------------------------

    def _kick(self, destination: str) -> None:
        if self._stopped or destination in self._wakeups:
            return
        if destination in self._running:
            # Its loop may have looked at the queue just before this item committed:
            # make it look once more before it stops.
            self._look_again.add(destination)
            return
        self._running.add(destination)
        defer.ensureDeferred(self._run(destination))

    async def wait_sent(self, destinations: Iterable[str], timeout_s: float) -> None:
        """Wait, at most ``timeout_s``, until every one of ``destinations`` that is
        sending now has emptied its queue or stopped for a retry: what the caller queued
        before is then with its destination (unless that one failed)."""
        waits: list[defer.Deferred[None]] = []
        wanted = sorted(set(destinations))
        for destination in wanted:
            if destination in self._running:
                d: defer.Deferred[None] = defer.Deferred()
                self._idle_waiters.setdefault(destination, []).append(d)
                waits.append(d)
        if not waits:
            return
        all_done = defer.gatherResults(waits, consumeErrors=True)
        all_done.addTimeout(timeout_s, self._clock)  # type: ignore[arg-type]
        try:
            await all_done
        except (defer.TimeoutError, defer.CancelledError, defer.FirstError):
            logger.info("Still sending to %s after %.1f s; not waiting longer", wanted, timeout_s)

    def _wake_waiters(self, destination: str) -> None:
        for d in self._idle_waiters.pop(destination, []):
            if not d.called:  # a waiter that timed out was cancelled
                d.callback(None)

    def backoff_intervals_ms(self) -> dict[str, int]:
        """The current retry interval of every destination backed off (for metrics)."""
        return dict(self._backoff)

    def retry_now(self, destination: str) -> None:
        """Forget the destination's backoff and send what is queued for it now."""
        call = self._wakeups.pop(destination, None)
        if call is not None and call.active():
            call.cancel()
        self._backoff.pop(destination, None)
        self._kick(destination)

    async def _run(self, destination: str) -> None:
        try:
            while not self._stopped:
                self._look_again.discard(destination)
                pdus = await self._store.peek(destination, "pdu", MAX_PDUS)
                edus = await self._store.peek(destination, "edu", MAX_EDUS)
                if not pdus and not edus:
                    if destination in self._look_again:
                        continue
                    return
                now = now_ms(self._clock)
                expired = {e.item_id for e in edus if e.payload.get(_EXPIRES, now) < now}
                if expired:
                    await self._store.ack(list(expired))
                    edus = [e for e in edus if e.item_id not in expired]
                    if not pdus and not edus:
                        continue
                txn_id = f"{now_ms(self._clock)}{secrets.token_hex(4)}"
                body = {
                    "origin": self._server_name,
                    "origin_server_ts": now_ms(self._clock),
                    "pdus": [p.payload for p in pdus],
                    "edus": [{k: v for k, v in e.payload.items() if k != _EXPIRES} for e in edus],
                }
                try:
                    await self._client.put_json(
                        destination,
                        f"/_matrix/federation/v1/send/{txn_id}",
                        body,
                        timeout_s=60.0,
                    )
                except FederationRequestError as e:
                    if 400 <= e.code < 500 and e.code not in (401, 403, 408, 429):
                        # The destination refuses these for good: drop them, keep going.
                        logger.warning("%s refused a transaction (%s); dropping it", destination, e)
                        await self._store.ack([i.item_id for i in pdus + edus])
                        continue
                    interval = self._schedule_retry(destination, e)
                    await self._store.set_retry(destination, now_ms(self._clock), interval)
                    return
                self._backoff.pop(destination, None)
                # Acknowledged first: what the destination holds leaves the outbox at once.
                await self._store.ack([i.item_id for i in pdus + edus])
                await self._store.set_retry(destination, 0, 0)
        except Exception:
            logger.exception("Federation sender for %s failed", destination)
        finally:
            self._running.discard(destination)
            self._wake_waiters(destination)

    def _schedule_retry(self, destination: str, error: Exception) -> int:
        """Wake the destination again after its next backoff interval (returned, in ms)."""
        previous = self._backoff.get(destination)
        interval = (
            self._retry.min_interval_ms
            if previous is None
            else min(int(previous * self._retry.multiplier), self._retry.max_interval_ms)
        )
        self._backoff[destination] = interval
        logger.info("Sending to %s failed (%s); retrying in %d ms", destination, error, interval)

        def _wake() -> None:
            self._wakeups.pop(destination, None)
            self._kick(destination)

        self._wakeups[destination] = self._clock.callLater(interval / 1000.0, _wake)
        return interval
