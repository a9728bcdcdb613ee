"""Pushing events to application services: one durable transaction queue per service.

Invariants:
- Events reach a service in events-stream order. A transaction is recorded (id, events,
  ephemeral data) in the database before it is sent, together with the stream position
  it covers; a retry sends the same id with the same body; the next transaction is built
  only after the previous one was accepted (2xx). So at most one transaction per
  service is in flight and none is altered or skipped.
- A failed send backs off exponentially (``BACKOFF_INITIAL_S`` doubling up to
  ``BACKOFF_MAX_S``); ``retry_now`` (after a successful ping) ends the wait at once.
- Nothing is lost across a restart: at start-up the oldest recorded transactions are
  sent first, then every event after the recorded stream position is read back from
  the database (catch-up) before the live events that arrive meanwhile.
- The recorded stream position never passes an event that is neither in a recorded
  transaction nor judged of no interest. Ephemeral data (typing, receipts, presence) is
  held in memory until it is put into a transaction; it is not replayed after a crash.
- Services with ``url: null`` get no queue.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.appservice.api import AppServiceApi
from homeserver.appservice.interest import ServiceInterest
from homeserver.appservice.registration import ApplicationService
from homeserver.clock import Clock, DelayedCall, now_ms
from homeserver.events.event import Event
from storage.appservice import AppServiceStore, AppServiceTxn
from storage.events import EventsStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

# Module constants so tests can shorten them before a server starts.
BACKOFF_INITIAL_S = 2.0
BACKOFF_MAX_S = 300.0
MAX_EVENTS_PER_TXN = 100
MAX_EPHEMERAL_PER_TXN = 100
CATCH_UP_PAGE = 200
POSITION_FLUSH_S = 10.0


@dataclass(slots=True)
class _Pending:
    event: Event
    interested: bool | None  # None: decided when the transaction is built


class ServiceQueue:
    """The transaction pipeline of one application service."""

    def __init__(
        self,
        service: ApplicationService,
        interest: ServiceInterest,
        store: AppServiceStore,
        events: EventsStore,
        api: AppServiceApi,
        clock: Clock,
    ) -> None:
        self.service = service
        self.interest = interest
        self._store = store
        self._events = events
        self._api = api
        self._clock = clock
        self._pending: deque[_Pending] = deque()
        self._ephemeral: list[JsonDict] = []
        self._to_device: list[JsonDict] = []
        self._position = 0  # recorded in the database
        self._seen = 0  # every event up to here is in _pending or was of no interest
        self._catching_up = True
        self._boundary: int | None = None  # end of the catch-up range
        self._live: list[_Pending] = []  # events arriving during catch-up
        self._live_seen = 0
        self._has_unsent = True  # recorded transactions may be waiting in the database
        self._inflight: AppServiceTxn | None = None
        self._started = False
        self._stopped = False
        self._running = False
        self._tasks: set[defer.Deferred[None]] = set()
        self._http: defer.Deferred[None] | None = None
        self._retry_call: DelayedCall | None = None
        self._flush_call: DelayedCall | None = None
        self._failures_in_a_row = 0
        self.sent_count = 0
        self.failure_count = 0

    # Life cycle --------------------------------------------------------------------

    async def start(self, boundary: int) -> None:
        """Load the recorded state; catch up on (recorded position, ``boundary``]."""
        state = await self._store.get_or_create_state(self.service.id, boundary)
        self._position = self._seen = state.stream_position
        self._boundary = boundary
        self._started = True
        self.poke()

    async def stop(self) -> None:
        self._stopped = True
        for call in (self._retry_call, self._flush_call):
            if call is not None and call.active():
                call.cancel()
        if self._http is not None:
            self._http.cancel()
        for task in list(self._tasks):
            try:
                await task
            except Exception:
                pass

    def _spawn(self, coro: Any) -> None:
        d: defer.Deferred[None] = defer.ensureDeferred(coro)
        self._tasks.add(d)

        def _done(result: Any) -> None:
            self._tasks.discard(d)
            if isinstance(result, Failure):
                logger.error("Application service %s: %s", self.service.id, result.value)

        d.addBoth(_done)

    # Input ---------------------------------------------------------------------------

    def on_events(self, events: list[Event]) -> None:
        """Persisted events, in stream order (called after their commit)."""
        items = []
        highest = 0
        for event in events:
            self.interest.invalidate(event)
            highest = max(highest, event.stream_ordering)
            decided = self.interest.event_interest(event, self.interest.loaded_room(event.room_id))
            if decided is not False:
                items.append(_Pending(event, decided))
        if self._catching_up:
            self._live.extend(items)
            self._live_seen = max(self._live_seen, highest)
        else:
            self._pending.extend(i for i in items if i.event.stream_ordering > self._seen)
            self._seen = max(self._seen, highest)
        self.poke()

    def on_ephemeral(self, edu: JsonDict) -> None:
        self._ephemeral.append(edu)
        self.poke()

    def on_to_device(self, message: JsonDict) -> None:
        self._to_device.append(message)
        self.poke()

    def retry_now(self) -> None:
        """End a backoff wait now (the service answered a ping)."""
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        self._failures_in_a_row = 0
        self.poke()

    @property
    def backing_off(self) -> bool:
        return self._retry_call is not None and self._retry_call.active()

    # The loop ------------------------------------------------------------------------

    def poke(self) -> None:
        if self._stopped or self._running or not self._started or self.backing_off:
            return
        work = (
            self._pending
            or self._ephemeral
            or self._to_device
            or self._catching_up
            or self._has_unsent
            or self._inflight
        )
        if not work:
            self._schedule_flush()
            return
        self._running = True
        self._spawn(self._run())

    async def _run(self) -> None:
        try:
            while not self._stopped:
                txn = self._inflight
                if txn is None and self._has_unsent:
                    txn = await self._store.get_oldest_txn(self.service.id)
                    if txn is None:
                        self._has_unsent = False
                if txn is None:
                    txn = await self._create_txn()
                    if txn is None:
                        break
                self._inflight = txn
                if not await self._send(txn):
                    return
                await self._store.complete_txn(self.service.id, txn.txn_id)
                self._inflight = None
        except Exception:
            if not self._stopped:
                logger.exception(
                    "Application service %s: transaction queue failed", self.service.id
                )
                self._schedule_retry()
        finally:
            self._running = False
            self._schedule_flush()

    async def _send(self, txn: AppServiceTxn) -> bool:
        d = defer.ensureDeferred(self._api.push_transaction(self.service, txn.txn_id, txn.body))
        self._http = d
        try:
            await d
        except Exception as e:
            if self._stopped:
                return False
            self.failure_count += 1
            delay = self._schedule_retry()
            logger.warning(
                "Application service %s: transaction %d failed (%s); retrying in %.1fs",
                self.service.id,
                txn.txn_id,
                e,
                delay,
            )
            return False
        finally:
            self._http = None
        self.sent_count += 1
        self._failures_in_a_row = 0
        return True

    def _schedule_retry(self) -> float:
        """Wait BACKOFF_INITIAL_S, doubled for each failure in a row, at most BACKOFF_MAX_S."""
        doubling: float = 2.0 ** min(self._failures_in_a_row, 30)
        delay = min(BACKOFF_INITIAL_S * doubling, BACKOFF_MAX_S)
        self._failures_in_a_row += 1
        if not self._stopped:
            self._retry_call = self._clock.callLater(delay, self._retry_fired)
        return delay

    def _retry_fired(self) -> None:
        self._retry_call = None
        self.poke()

    # Building transactions -------------------------------------------------------------

    async def _create_txn(self) -> AppServiceTxn | None:
        events = await self._next_events()
        ephemeral = self._ephemeral[:MAX_EPHEMERAL_PER_TXN]
        del self._ephemeral[:MAX_EPHEMERAL_PER_TXN]
        to_device = self._to_device[:MAX_EPHEMERAL_PER_TXN]
        del self._to_device[:MAX_EPHEMERAL_PER_TXN]
        if not events and not ephemeral and not to_device:
            return None
        body: JsonDict = {"events": [ev.client_dict() for ev in events]}
        if ephemeral:
            body["ephemeral"] = ephemeral
            body["de.sorunome.msc2409.ephemeral"] = ephemeral
        if to_device:  # MSC4203 (stable name) and MSC2409's unstable one, as bridges read
            body["to_device"] = to_device
            body["de.sorunome.msc2409.to_device"] = to_device
        position = self._safe_position()
        try:
            txn = await self._store.create_txn(self.service.id, body, position, now_ms(self._clock))
        except Exception:
            # Not recorded: put everything back, in order, for the next attempt.
            self._pending.extendleft(_Pending(ev, True) for ev in reversed(events))
            self._ephemeral[:0] = ephemeral
            self._to_device[:0] = to_device
            raise
        self._position = max(self._position, position)
        return txn

    async def _next_events(self) -> list[Event]:
        events: list[Event] = []
        while len(events) < MAX_EVENTS_PER_TXN and not self._stopped:
            if not self._pending:
                if not self._catching_up:
                    break
                await self._catch_up_page()
                continue
            head = self._pending[0]
            interested = head.interested
            if interested is None:
                interested = await self.interest.event_interest_async(head.event)
            self._pending.popleft()
            if interested:
                events.append(head.event)
        return events

    async def _catch_up_page(self) -> None:
        assert self._boundary is not None
        rows = await self._store.get_event_ids_in_range(self._seen, self._boundary, CATCH_UP_PAGE)
        if rows:
            loaded = await self._events.get_events(eid for _, eid in rows)
            for _, event_id in rows:
                event = loaded.get(event_id)
                if event is not None:
                    self._pending.append(_Pending(event, None))
            self._seen = rows[-1][0]
        if len(rows) < CATCH_UP_PAGE:
            self._catching_up = False
            self._seen = max(self._seen, self._boundary)
            live, self._live = self._live, []
            self._pending.extend(i for i in live if i.event.stream_ordering > self._seen)
            self._seen = max(self._seen, self._live_seen)

    def _safe_position(self) -> int:
        position = self._seen
        if self._pending:
            position = min(position, self._pending[0].event.stream_ordering - 1)
        return position

    # Recording the position while idle ----------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._stopped or self._catching_up:
            return
        if self._flush_call is not None and self._flush_call.active():
            return
        if self._safe_position() > self._position:
            self._flush_call = self._clock.callLater(
                POSITION_FLUSH_S, lambda: self._spawn(self._flush())
            )

    async def _flush(self) -> None:
        self._flush_call = None
        if self._stopped:
            return
        if self._running:
            self._schedule_flush()
            return
        position = self._safe_position()
        if position <= self._position:
            return
        try:
            await self._store.set_stream_position(self.service.id, position)
            self._position = max(self._position, position)
        except Exception as e:
            logger.warning(
                "Application service %s: recording position failed: %s", self.service.id, e
            )


class AppServiceSender:
    """Every service's queue; fed by the event fanout and the ephemeral sources."""

    def __init__(
        self,
        services: list[ApplicationService],
        interests: dict[str, ServiceInterest],
        store: AppServiceStore,
        events: EventsStore,
        api: AppServiceApi,
        clock: Clock,
    ) -> None:
        self._events = events
        self.queues = {
            s.id: ServiceQueue(s, interests[s.id], store, events, api, clock)
            for s in services
            if s.url is not None
        }

    async def start(self) -> None:
        boundary = self._events.stream.current_position
        for queue in self.queues.values():
            await queue.start(boundary)

    async def stop(self) -> None:
        for queue in self.queues.values():
            await queue.stop()

    def on_events(self, events: list[Event]) -> None:
        for queue in self.queues.values():
            try:
                queue.on_events(events)
            except Exception:
                logger.exception("Application service %s: queuing events failed", queue.service.id)

    def on_ephemeral(self, service_id: str, edu: JsonDict) -> None:
        queue = self.queues.get(service_id)
        if queue is not None and queue.service.receive_ephemeral:
            queue.on_ephemeral(edu)

    def on_to_device(self, service_id: str, message: JsonDict) -> None:
        queue = self.queues.get(service_id)
        if queue is not None and queue.service.receive_ephemeral:
            queue.on_to_device(message)

    def retry_now(self, service_id: str) -> None:
        queue = self.queues.get(service_id)
        if queue is not None:
            queue.retry_now()
