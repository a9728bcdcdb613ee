"""Pushers and delivery to push gateways (``POST /_matrix/push/v1/notify``).

Invariants:
- Every pusher is held in memory (loaded at start, changed through ``set_pusher`` /
  ``remove_pusher`` after the database), so deciding whom to push costs no query.
- A user is not pushed while they are syncing: from the start of a /sync until
  ``active_grace_s`` after the last one ended (an online client sees the event itself).
- Each pusher sends its notifications one at a time, in order. A failure (no answer,
  a timeout, a non-2xx status) is retried after 1 s, doubling up to
  ``max_backoff_s``; a notification still failing then is dropped and the next one is
  tried. Pushkeys the gateway lists in ``rejected`` lose their pushers at once.
- Delivery is in memory: a pusher queues at most ``max_queue`` notifications (the
  oldest are dropped beyond that) and a restart forgets what was queued.
- The ``data`` given to the gateway is the pusher's ``data`` without ``url``; with
  ``format: event_id_only`` only the event id, room id, counts, prio and devices go.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool

from homeserver.clock import Clock, DelayedCall
from homeserver.events.event import Event
from homeserver.push.counts import UnreadCounts
from homeserver.push.evaluator import actions_tweaks
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import LiveRoom
from storage.push import PushActionRow, PusherRecord, PushStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
REQUEST_TIMEOUT_S = 30.0
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 3600.0
MAX_QUEUE = 1000
ACTIVE_GRACE_S = 10.0


@dataclass
class PushSettings:
    """Knobs of delivery (tests shorten them through ``HomeServer.push``)."""

    initial_backoff_s: float = INITIAL_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S
    max_queue: int = MAX_QUEUE
    request_timeout_s: float = REQUEST_TIMEOUT_S
    active_grace_s: float = ACTIVE_GRACE_S
    include_content: bool = True


class GatewayError(Exception):
    pass


class GatewayClient:
    """POSTs JSON to push gateways; the parsed answer of a 2xx, else ``GatewayError``."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.retryAutomatically = False
        agent: Any = Agent(reactor, pool=self._pool)
        self._client = HTTPClient(agent)

    async def post(self, url: str, body: JsonDict, timeout_s: float) -> Any:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
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
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
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


class HttpPusher:
    """One pusher's queue of notifications and its delivery loop."""

    def __init__(
        self,
        record: PusherRecord,
        client: GatewayClient,
        clock: Clock,
        settings: PushSettings,
        on_rejected: Callable[[PusherRecord], None],
    ) -> None:
        self.record = record
        self._client = client
        self._clock = clock
        self._settings = settings
        self._on_rejected = on_rejected
        self._queue: deque[JsonDict] = deque()
        self._running = False
        self._stopped = False
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
        if self._stopped:
            return
        self._queue.append(notification)
        while len(self._queue) > self._settings.max_queue:
            self._queue.popleft()
            logger.warning("Push queue of %s full: dropped a notification", self.record.pushkey)
        if not self._running:
            self._running = True
            defer.ensureDeferred(self._run())

    async def _run(self) -> None:
        backoff = self._settings.initial_backoff_s
        try:
            while self._queue and not self._stopped:
                body = self._queue[0]
                sent = await self._send(body)
                if self._stopped:
                    return
                if sent or backoff > self._settings.max_backoff_s:
                    if not sent:
                        logger.warning("Giving up on a push to %s", self.record.data.get("url"))
                    if self._queue and self._queue[0] is body:
                        self._queue.popleft()
                    backoff = self._settings.initial_backoff_s
                    continue
                await self._wait(backoff)
                backoff *= 2
        finally:
            self._running = False

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


def _room_name(room: LiveRoom) -> str | None:
    name = room.state_content("m.room.name").get("name")
    return name if isinstance(name, str) and name else None


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
        "counts": {"unread": badge} if badge else {},
        "devices": [pusher.device(tweaks)],
    }
    if pusher.record.data.get("format") == "event_id_only":
        return {"notification": note}
    note["type"] = ev.type
    note["sender"] = ev.sender
    member = room.state.get(("m.room.member", ev.sender))
    display_name = member.content.get("displayname") if member is not None else None
    if isinstance(display_name, str) and display_name:
        note["sender_display_name"] = display_name
    room_name = _room_name(room)
    if room_name is not None:
        note["room_name"] = room_name
    alias = room.state_content("m.room.canonical_alias").get("alias")
    if isinstance(alias, str) and alias:
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
    ) -> None:
        self._store = store
        self._counts = counts
        self._memberships = memberships
        self._clock = clock
        self._client = client
        self.settings = settings or PushSettings()
        self._pushers: dict[str, dict[tuple[str, str], HttpPusher]] = {}
        self._syncing: dict[str, int] = {}
        self._last_sync_end: dict[str, float] = {}

    async def start(self) -> None:
        for record in await self._store.get_all_pushers():
            self._install(record)

    async def stop(self) -> None:
        for pushers in self._pushers.values():
            for pusher in pushers.values():
                pusher.stop()
        await self._client.close()

    # Pushers ----------------------------------------------------------------------------

    def _install(self, record: PusherRecord) -> None:
        previous = self._pushers.get(record.user_id, {}).get((record.app_id, record.pushkey))
        if previous is not None:
            previous.stop()
        pusher = HttpPusher(record, self._client, self._clock, self.settings, self._rejected)
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
            if row.user_id in self._pushers and not self.is_active(row.user_id):
                d = defer.ensureDeferred(self._dispatch(ev, room, row))
                d.addErrback(lambda f: logger.error("Dispatching a push failed: %s", f.value))

    async def _joined_rooms(self, user_id: str) -> Iterable[str]:
        rooms = await self._memberships.rooms_for_user(user_id)
        return [r for r, row in rooms.items() if row.membership == "join"]

    async def _dispatch(self, ev: Event, room: LiveRoom, row: PushActionRow) -> None:
        badge = await self._counts.badge(row.user_id, await self._joined_rooms(row.user_id))
        for pusher in list(self._pushers.get(row.user_id, {}).values()):
            pusher.enqueue(
                notification_body(pusher, ev, room, row, badge, self.settings.include_content)
            )

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
