"""Pushers and delivery to push gateways (``POST /_matrix/push/v1/notify``).

Invariants:
- Every pusher is held in memory (loaded at start, changed through ``set_pusher`` /
  ``remove_pusher`` after the database), so deciding whom to push costs no query.
- A user is pushed whether or not a client of theirs is syncing, as Synapse does (the
  gateway or the app decides what to show). With ``skip_while_syncing`` (config
  ``push.skip_while_syncing``) they are not pushed from the start of a /sync until
  ``active_grace_s`` after the last one ended (an online client sees the event itself).
- Each pusher sends its notifications one at a time, in order. A failure (no answer,
  a timeout, a non-2xx status) is retried after 1 s, doubling up to
  ``max_backoff_s``; a notification still failing then is dropped and the next one is
  tried. Pushkeys the gateway lists in ``rejected`` lose their pushers at once.
- A pusher queues at most ``max_queue`` notifications (the oldest are dropped beyond
  that), in events stream order; the body (with the badge) is built when it is sent.
- Delivery survives a restart: each pusher's ``last_stream_ordering`` (``storage.push``)
  is moved past a notification once it was sent or given up on (and, lazily after
  ``POSITION_FLUSH_S``, past those skipped because the user was online). At start the
  unread notifying actions after it (the newest ``max_queue``) are queued again, so a
  restart re-sends at most what was in flight, never loses it. Badge-only updates are
  not replayed.
- The ``data`` given to the gateway is the pusher's ``data`` without ``url``; with
  ``format: event_id_only`` only the event id, room id, counts, prio and devices go.
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from homeserver.clock import Clock, DelayedCall
from homeserver.errors import MatrixError
from homeserver.events.event import Event
from homeserver.http.ip_filter import IpFilter
from homeserver.media.preview import filtering_agent
from homeserver.push.actions import out_of_band_room
from homeserver.push.counts import UnreadCounts
from homeserver.push.evaluator import actions_tweaks
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.untrusted import decode_json, utf8_json
from storage.events import EventsStore
from storage.id_generator import IdGenerator
from storage.memberships import MembershipStore
from storage.push import PushActionRow, PusherRecord, PushStore

logger = logging.getLogger(__name__)

ALIAS_SHAPE = re.compile(r"^#.*:.+$")

JsonDict = dict[str, Any]
REQUEST_TIMEOUT_S = 30.0
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 3600.0
MAX_QUEUE = 1000
ACTIVE_GRACE_S = 10.0
POSITION_FLUSH_S = 5.0
STOP_GRACE_S = 2.0


@dataclass
class PushSettings:
    """Knobs of delivery (tests shorten them through ``HomeServer.push``)."""

    initial_backoff_s: float = INITIAL_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S
    max_queue: int = MAX_QUEUE
    request_timeout_s: float = REQUEST_TIMEOUT_S
    active_grace_s: float = ACTIVE_GRACE_S
    include_content: bool = True
    skip_while_syncing: bool = False


class GatewayError(Exception):
    pass


class GatewayClient:
    """POSTs JSON to push gateways; the parsed answer of a 2xx, else ``GatewayError``.

    A gateway whose address ``ip_filter`` blocks (``ip_range_blacklist``, by default
    private, loopback and reserved ranges) is never connected to, as in Synapse: a
    pusher URL is chosen by any user and must not reach the server's own network.
    """

    def __init__(self, reactor: Any, ip_filter: IpFilter) -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.retryAutomatically = False
        agent: Any = filtering_agent(reactor, ip_filter, _blocked, pool=self._pool)
        self._client = HTTPClient(agent)

    async def post(self, url: str, body: JsonDict, timeout_s: float) -> Any:
        data = utf8_json(json.dumps(body, ensure_ascii=False, separators=(",", ":")))
        d = defer.ensureDeferred(self._exchange(url, data))
        timer = self._reactor.callLater(timeout_s, d.cancel)
        try:
            status, raw = await d
        except Exception as e:
            raise GatewayError(f"{type(e).__name__}: {e}") from None
        finally:
            if timer.active():
                timer.cancel()
        if not 200 <= status < 300:
            raise GatewayError(f"HTTP {status}")
        try:
            return decode_json(raw) if raw.strip() else {}
        except MatrixError:  # not JSON, or JSON no one could use (deep, lone surrogates)
            return {}

    async def _exchange(self, url: str, data: bytes) -> tuple[int, bytes]:
        headers: dict[bytes | str, bytes | str] = {"Content-Type": "application/json"}
        response = await self._client.request(
            "POST",
            url,
            data=data,
            headers=headers,
            allow_redirects=False,
        )
        raw = await treq.content(response)
        return int(response.code), raw[: 1024 * 1024]

    async def close(self) -> None:
        await self._pool.closeCachedConnections()


def _blocked() -> None:
    logger.info("Push gateway address blocked by ip_range_blacklist")


# Builds a notification's body when it is sent (None: the event is gone, skip it).
BodyMaker = Callable[["HttpPusher"], Awaitable[JsonDict | None]]


@dataclass(slots=True)
class _Item:
    stream_ordering: int | None  # None: a badge-only update
    body: JsonDict | None
    make: BodyMaker | None = None


class HttpPusher:
    """One pusher's queue of notifications and its delivery loop."""

    def __init__(
        self,
        record: PusherRecord,
        client: GatewayClient,
        clock: Clock,
        settings: PushSettings,
        on_rejected: Callable[[PusherRecord], None],
        store: PushStore | None = None,
    ) -> None:
        self.record = record
        self._client = client
        self._clock = clock
        self._settings = settings
        self._on_rejected = on_rejected
        self._store = store
        # Every notifying action at or below ``position`` was queued or skipped; at or
        # below ``_stored`` (the database's last_stream_ordering) it was handled.
        self.position = self._stored = record.last_stream_ordering
        self._save_call: DelayedCall | None = None
        self._queue: deque[_Item] = deque()
        self._running = False
        self._stopped = False
        self._closing = False  # no new sends: the server is stopping
        self._idle: list[defer.Deferred[None]] = []
        self._sleep: tuple[DelayedCall, defer.Deferred[None]] | None = None
        self.sent = 0
        # The badge the device was last told (badge-only updates are sent on change).
        self.last_badge: int | None = None

    def device(self, tweaks: JsonDict) -> JsonDict:
        data = {k: v for k, v in self.record.data.items() if k != "url"}
        return {
            "app_id": self.record.app_id,
            "pushkey": self.record.pushkey,
            "pushkey_ts": self.record.pushkey_ts // 1000,
            "data": data,
            "tweaks": tweaks,
        }

    def enqueue(self, notification: JsonDict) -> None:
        """Queue a ready body (a badge-only update: not replayed after a restart)."""
        self._push(_Item(None, notification))

    def offer(self, stream_ordering: int, make: BodyMaker) -> None:
        """Queue the notification of an action, unless one at or after it was queued."""
        if stream_ordering <= self.position or self._stopped or self._closing:
            return
        self.position = stream_ordering
        self._push(_Item(stream_ordering, None, make))

    def skip(self, stream_ordering: int) -> None:
        """An action not pushed (the user is online): store the position later."""
        if stream_ordering <= self.position or self._stopped:
            return
        self.position = stream_ordering
        if self._save_call is None or not self._save_call.active():
            self._save_call = self._clock.callLater(POSITION_FLUSH_S, self._save_later)

    def _push(self, item: _Item) -> None:
        if self._stopped or self._closing:
            return
        self._queue.append(item)
        while len(self._queue) > self._settings.max_queue:
            self._queue.popleft()
            logger.warning("Push queue of %s full: dropped a notification", self.record.pushkey)
        if not self._running:
            self._running = True
            defer.ensureDeferred(self._run())

    def safe_position(self) -> int:
        """Every action at or below this was sent, given up on, dropped or skipped."""
        for item in self._queue:
            if item.stream_ordering is not None:
                return min(self.position, item.stream_ordering - 1)
        return self.position

    async def save_position(self) -> None:
        position = self.safe_position()
        if self._store is None or position <= self._stored:
            return
        record = self.record
        try:
            await self._store.set_pusher_position(
                record.user_id, record.app_id, record.pushkey, position
            )
            self._stored = max(self._stored, position)
        except Exception as e:
            logger.warning("Recording the position of pusher %s failed: %s", record.pushkey, e)

    def _save_later(self) -> None:
        if not self._stopped:
            defer.ensureDeferred(self.save_position())

    async def _run(self) -> None:
        backoff = self._settings.initial_backoff_s
        try:
            while self._queue and not self._stopped and not self._closing:
                item = self._queue[0]
                if item.body is None and item.make is not None:
                    try:
                        item.body = await item.make(self)
                    except Exception:
                        logger.exception("Building a push for %s failed", self.record.pushkey)
                if self._stopped or self._closing:
                    return
                sent = False
                if item.body is not None:
                    sent = await self._send(item.body)
                    if self._stopped:
                        return
                if sent or item.body is None or backoff > self._settings.max_backoff_s:
                    if not sent and item.body is not None:
                        logger.warning("Giving up on a push to %s", self.record.data.get("url"))
                    if self._queue and self._queue[0] is item:
                        self._queue.popleft()
                    backoff = self._settings.initial_backoff_s
                    if item.stream_ordering is not None:
                        await self.save_position()
                    continue
                await self._wait(backoff)
                backoff *= 2
        finally:
            self._running = False
            idle, self._idle = self._idle, []
            for d in idle:
                if not d.called:
                    d.callback(None)

    async def close(self, grace_s: float) -> None:
        """Stop sending, but let a request in flight finish (up to ``grace_s``) so that
        a delivered notification is recorded as such; store the position; stop."""
        self._closing = True
        self._end_sleep()
        if self._running:
            d: defer.Deferred[None] = defer.Deferred()
            self._idle.append(d)

            def _give_up() -> None:
                if not d.called:
                    d.callback(None)

            timer = self._clock.callLater(grace_s, _give_up)
            await d
            if timer.active():
                timer.cancel()
        await self.save_position()
        self.stop()

    async def _send(self, body: JsonDict) -> bool:
        url = str(self.record.data.get("url"))
        try:
            answer = await self._client.post(url, body, self._settings.request_timeout_s)
        except GatewayError as e:
            logger.info("Push to %s failed: %s", url, e)
            return False
        self.sent += 1
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if isinstance(rejected, list) and self.record.pushkey in rejected:
            logger.info("Gateway rejected pushkey %s: removing the pusher", self.record.pushkey)
            self._on_rejected(self.record)
        return True

    async def _wait(self, seconds: float) -> None:
        d: defer.Deferred[None] = defer.Deferred()
        call = self._clock.callLater(seconds, d.callback, None)
        self._sleep = (call, d)
        try:
            await d
        finally:
            self._sleep = None

    def stop(self) -> None:
        self._stopped = True
        self._queue.clear()
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._end_sleep()

    def _end_sleep(self) -> None:
        if self._sleep is not None:
            call, d = self._sleep
            if call.active():
                call.cancel()
            if not d.called:
                d.callback(None)


def _priority(ev: Event, tweaks: JsonDict) -> str:
    if ev.type == "m.room.encrypted" or tweaks.get("highlight") or tweaks.get("sound"):
        return "high"
    return "low"


def _room_alias(room: LiveRoom) -> str | None:
    alias = room.state_content("m.room.canonical_alias").get("alias")
    return alias if isinstance(alias, str) and ALIAS_SHAPE.match(alias) else None


def _room_name(room: LiveRoom) -> str | None:
    """The room's name for a notification: its ``m.room.name``, else its canonical
    alias (as Synapse, which sends the alias as the name)."""
    name = room.state_content("m.room.name").get("name")
    return name if isinstance(name, str) and name else _room_alias(room)


def notification_body(
    pusher: HttpPusher,
    ev: Event,
    room: LiveRoom,
    row: PushActionRow,
    badge: int,
    include_content: bool,
) -> JsonDict:
    """The ``notification`` object of a notify request for one pusher."""
    tweaks = {k: v for k, v in actions_tweaks(row.actions).items() if v is not None}
    pusher.last_badge = badge
    note: JsonDict = {
        "event_id": ev.event_id,
        "room_id": ev.room_id,
        "prio": _priority(ev, tweaks),
        "counts": {"unread": badge},
        "devices": [pusher.device(tweaks)],
    }
    if pusher.record.data.get("format") == "event_id_only":
        return {"notification": note}
    note["id"] = ev.event_id  # the event id's old name, still read by gateways (Synapse)
    note["type"] = ev.type
    note["sender"] = ev.sender
    member = room.state.get(("m.room.member", ev.sender))
    display_name = member.content.get("displayname") if member is not None else None
    if isinstance(display_name, str) and display_name:
        note["sender_display_name"] = display_name
    room_name = _room_name(room)
    if room_name is not None:
        note["room_name"] = room_name
    alias = _room_alias(room)
    if alias is not None:
        note["room_alias"] = alias
    if ev.type == "m.room.member":
        note["user_is_target"] = ev.state_key == row.user_id
        note["membership"] = ev.membership
    if include_content and ev.content:
        note["content"] = ev.content
    return {"notification": note}


class PusherPool:
    def __init__(
        self,
        store: PushStore,
        counts: UnreadCounts,
        memberships: MembershipCache,
        clock: Clock,
        client: GatewayClient,
        settings: PushSettings | None = None,
        *,
        events: EventsStore,
        memberships_store: MembershipStore,
        rooms: RoomCache,
        events_stream: IdGenerator,
    ) -> None:
        self._store = store
        self._events = events
        self._memberships_store = memberships_store
        self._rooms = rooms
        self._events_stream = events_stream
        self._counts = counts
        self._memberships = memberships
        self._clock = clock
        self._client = client
        self.settings = settings or PushSettings()
        self._pushers: dict[str, dict[tuple[str, str], HttpPusher]] = {}
        self._syncing: dict[str, int] = {}
        self._last_sync_end: dict[str, float] = {}

    async def start(self) -> None:
        """Load the pushers; queue again what they owe from before the restart."""
        for record in await self._store.get_all_pushers():
            self._install(record)
        for pushers in list(self._pushers.values()):
            for pusher in list(pushers.values()):
                try:
                    await self._catch_up(pusher)
                except Exception:
                    logger.exception("Catching up pusher %s failed", pusher.record.pushkey)

    async def _catch_up(self, pusher: HttpPusher) -> None:
        record = pusher.record
        rows = await self._store.get_unread_push_actions_after(
            record.user_id, pusher.position, self.settings.max_queue
        )
        for row in rows:
            pusher.offer(row.stream_ordering, self._body_from_storage(row))
        if rows:
            logger.info("Pusher %s: %d notifications owed", record.pushkey, len(rows))

    async def stop(self) -> None:
        closing = [
            defer.ensureDeferred(pusher.close(STOP_GRACE_S))
            for pushers in self._pushers.values()
            for pusher in pushers.values()
        ]
        await defer.gatherResults(closing, consumeErrors=True)
        await self._client.close()

    # Pushers ----------------------------------------------------------------------------

    def _install(self, record: PusherRecord) -> None:
        previous = self._pushers.get(record.user_id, {}).get((record.app_id, record.pushkey))
        if previous is not None:
            previous.stop()
        pusher = HttpPusher(
            record, self._client, self._clock, self.settings, self._rejected, self._store
        )
        self._pushers.setdefault(record.user_id, {})[(record.app_id, record.pushkey)] = pusher

    def _uninstall(self, user_id: str, app_id: str, pushkey: str) -> None:
        pushers = self._pushers.get(user_id, {})
        pusher = pushers.pop((app_id, pushkey), None)
        if pusher is not None:
            pusher.stop()
        if not pushers:
            self._pushers.pop(user_id, None)

    def pushers_of(self, user_id: str) -> list[PusherRecord]:
        return [p.record for p in self._pushers.get(user_id, {}).values()]

    def pusher(self, user_id: str, app_id: str, pushkey: str) -> HttpPusher | None:
        return self._pushers.get(user_id, {}).get((app_id, pushkey))

    async def set_pusher(self, record: PusherRecord, *, append: bool) -> None:
        existing = self.pusher(record.user_id, record.app_id, record.pushkey)
        if existing is not None and existing.record.data == record.data:
            record = replace(record, pushkey_ts=existing.record.pushkey_ts)
        # A new pusher is owed nothing from before it existed.
        position = existing.position if existing is not None else None
        if position is None:
            position = self._events_stream.current_position
        record = replace(record, last_stream_ordering=position)
        removed = await self._store.add_pusher(record, append=append)
        for gone in removed:
            self._uninstall(gone.user_id, gone.app_id, gone.pushkey)
        self._install(record)

    async def remove_pusher(self, user_id: str, app_id: str, pushkey: str) -> None:
        await self._store.delete_pusher(user_id, app_id, pushkey)
        self._uninstall(user_id, app_id, pushkey)

    def _rejected(self, record: PusherRecord) -> None:
        self._uninstall(record.user_id, record.app_id, record.pushkey)
        d = defer.ensureDeferred(
            self._store.delete_pusher(record.user_id, record.app_id, record.pushkey)
        )
        d.addErrback(lambda f: logger.error("Removing a rejected pusher failed: %s", f.value))

    async def on_devices_changed(self, user_id: str, device_ids: list[str], created: bool) -> None:
        """Pushers die with the device (the access token) that created them."""
        if created or user_id not in self._pushers:
            return
        for app_id, pushkey in await self._store.delete_pushers_of_devices(user_id, device_ids):
            self._uninstall(user_id, app_id, pushkey)

    # Who is online ------------------------------------------------------------------------

    async def sync_hook(
        self, user_id: str, device_id: str | None, set_presence: str | None
    ) -> Callable[[], None]:
        self._syncing[user_id] = self._syncing.get(user_id, 0) + 1

        def _ended() -> None:
            left = self._syncing.get(user_id, 1) - 1
            if left > 0:
                self._syncing[user_id] = left
            else:
                self._syncing.pop(user_id, None)
            self._last_sync_end[user_id] = self._clock.seconds()

        return _ended

    def is_active(self, user_id: str) -> bool:
        if self._syncing.get(user_id):
            return True
        ended = self._last_sync_end.get(user_id)
        if ended is None:
            return False
        if self._clock.seconds() - ended < self.settings.active_grace_s:
            return True
        del self._last_sync_end[user_id]
        return False

    # Delivery ---------------------------------------------------------------------------

    def on_notifications(self, ev: Event, room: LiveRoom, rows: list[PushActionRow]) -> None:
        for row in rows:
            pushers = self._pushers.get(row.user_id)
            if not pushers:
                continue
            active = self.settings.skip_while_syncing and self.is_active(row.user_id)
            for pusher in list(pushers.values()):
                if active:
                    pusher.skip(row.stream_ordering)
                else:
                    pusher.offer(row.stream_ordering, self._body_maker(ev, room, row))

    async def _joined_rooms(self, user_id: str) -> Iterable[str]:
        rooms = await self._memberships.rooms_for_user(user_id)
        return [r for r, row in rooms.items() if row.membership == "join"]

    def _body_maker(self, ev: Event, room: LiveRoom, row: PushActionRow) -> BodyMaker:
        async def _make(pusher: HttpPusher) -> JsonDict:
            badge = await self._counts.badge(row.user_id, await self._joined_rooms(row.user_id))
            return notification_body(pusher, ev, room, row, badge, self.settings.include_content)

        return _make

    def _body_from_storage(self, row: PushActionRow) -> BodyMaker:
        async def _make(pusher: HttpPusher) -> JsonDict | None:
            ev = (await self._events.get_events([row.event_id])).get(row.event_id)
            if ev is None:
                return None
            if ev.outlier:
                room = await out_of_band_room(self._memberships_store, ev)
            else:
                room = self._rooms.get_if_loaded(row.room_id) or await self._rooms.get(row.room_id)
            if room is None:
                return None
            return await self._body_maker(ev, room, row)(pusher)

        return _make

    def on_receipt_applied(self, user_id: str) -> None:
        """Counts went down: tell the user's devices the new badge."""
        if user_id in self._pushers:
            d = defer.ensureDeferred(self._send_badge(user_id))
            d.addErrback(lambda f: logger.error("Sending a badge update failed: %s", f.value))

    async def _send_badge(self, user_id: str) -> None:
        badge = await self._counts.badge(user_id, await self._joined_rooms(user_id))
        for pusher in list(self._pushers.get(user_id, {}).values()):
            if pusher.last_badge == badge:
                continue
            pusher.last_badge = badge
            note = {
                "id": "",
                "type": None,
                "sender": "",
                "counts": {"unread": badge},
                "devices": [pusher.device({})],
            }
            pusher.enqueue({"notification": note})
