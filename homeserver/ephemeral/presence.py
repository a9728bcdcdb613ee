"""Presence: each local user's state, status message and activity; the ``presence``
/sync source.

Invariants:
- Memory holds the current state of every user touched since start-up (and of every
  user not offline, loaded at start-up); the database holds the last *visible* state
  of each user, written in change order behind memory, so a restart keeps states and
  status messages. An explicit ``PUT /status`` returns only once it is written.
- A change is visible (takes the next presence stream position, is persisted, wakes
  the user and everyone sharing a room with them) only when ``should_notify`` says
  so: the state, the status message or ``currently_active`` changed, or the last
  active time moved by more than ``last_active_granularity`` while not currently
  active. Heartbeats in between (each /sync marks the user active) change memory only,
  so syncing users do not wake each other in a loop.
- Timers run on the injected clock, one per user at most: ``currently_active`` ends
  ``last_active_granularity`` after the last activity; a user with no /sync in flight
  goes from online to unavailable ``sync_online_timeout`` after their last sync,
  activity or ``PUT /status`` (or start-up, for states loaded then), and offline
  ``offline_timeout`` after it. A sync that starts again within the grace period
  cancels the timer and changes nothing visible.
- Activity (a message sent, typing, a receipt) moves the last active time and brings
  an unavailable user back online, but never makes an offline user online, as in
  Synapse: only a sync or ``PUT /status`` does. Other events (creating or joining a
  room) are not activity.
- An incremental sync also carries, as in Synapse, the state (offline or never set
  included) of everyone in a room joined in its window and of everyone who joined, was
  invited to or knocked on one of the user's rooms in it.
- A sync asks for ``set_presence`` (default online) for its device; the user's state
  is the most present state asked by any device syncing now or within
  ``sync_online_timeout``, so two devices asking differently do not flip-flop.
- With presence disabled nothing is tracked, stored or sent; the stream stays at 0.
- Remote users' states (``apply_remote``, from federation) are kept, published and
  persisted the same way; their own server tells us of changes. Their one timer: a
  remote user held as online or unavailable from whose server we have heard nothing
  about them for ``federation_timeout_ms`` (Synapse's 30 min ``FEDERATION_TIMEOUT``;
  since start-up, for states loaded then) goes offline, as their server may be gone.
- The other side of that: a local user who is not offline and whose state has not
  gone out for ``federation_ping_interval_ms`` (Synapse's 25 min
  ``FEDERATION_PING_INTERVAL``; a minute after start-up, for states loaded then) is
  published unchanged as a ``PresencePing``, to be re-sent so that other servers do not
  time them out. Every visible change of a local user counts as sent.
  Every visible change is published as ``PresenceChanged``; the federation side sends
  on only ours.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.async_utils import observe
from homeserver.bus import Bus, PresenceChanged, PresencePing
from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import RoomCache
from homeserver.sync.notifier import Notifier
from homeserver.sync.sources import SyncContext, SyncFragment
from storage.presence import PresenceState, PresenceStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
PRESENCE_STATES = (ONLINE, UNAVAILABLE, OFFLINE)
LAST_ACTIVE_GRANULARITY_MS = 60_000
FEDERATION_TIMEOUT_MS = 30 * 60_000
FEDERATION_PING_INTERVAL_MS = 25 * 60_000
# After a restart we do not know when a local user's state last went out: re-send it
# this long after start-up (the federation sender is wired and running by then).
STARTUP_PING_DELAY_MS = 60_000
_PRIORITY = {ONLINE: 2, UNAVAILABLE: 1, OFFLINE: 0}


def should_notify(old: PresenceState, new: PresenceState, granularity_ms: int) -> bool:
    if old.state != new.state or old.status_msg != new.status_msg:
        return True
    if old.currently_active != new.currently_active:
        return True
    # Last-active bumps are news only for users not shown as currently active.
    return new.last_active_ts - old.last_active_ts > granularity_ms and not new.currently_active


def format_presence(state: PresenceState, now: int) -> JsonDict:
    """The ``m.presence`` content (also the GET /status body)."""
    content: JsonDict = {"presence": state.state}
    if state.last_active_ts:
        content["last_active_ago"] = max(0, now - state.last_active_ts)
    if state.status_msg is not None:
        content["status_msg"] = state.status_msg
    if state.state == ONLINE:
        content["currently_active"] = state.currently_active
    return content


def _noop() -> None:
    pass


class PresenceHandler:
    def __init__(
        self,
        store: PresenceStore,
        rooms: RoomCache,
        memberships: MembershipCache,
        notifier: Notifier,
        clock: Clock,
        bus: Bus,
        *,
        enabled: bool = True,
        sync_online_timeout_ms: int = 30_000,
        offline_timeout_ms: int = 300_000,
        include_offline_users_on_sync: bool = False,
        last_active_granularity_ms: int = LAST_ACTIVE_GRANULARITY_MS,
        server_name: str | None = None,
        federation_timeout_ms: int = FEDERATION_TIMEOUT_MS,
        federation_ping_interval_ms: int = FEDERATION_PING_INTERVAL_MS,
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._memberships = memberships
        self._notifier = notifier
        self._clock = clock
        self.enabled = enabled
        self._sync_online_timeout = sync_online_timeout_ms
        self._offline_timeout = offline_timeout_ms
        self._include_offline = include_offline_users_on_sync
        self._granularity = last_active_granularity_ms
        # None: every user is ours (no federation).
        self._local_suffix = f":{server_name}" if server_name is not None else None
        # Told of every visible change (local and remote users) and of each local
        # user's unchanged state other servers should hear again (module docstring).
        self._bus = bus
        self.federation_timeout_ms = federation_timeout_ms
        self.federation_ping_interval_ms = federation_ping_interval_ms
        # remote user -> when their server last told us their state (ms)
        self._federation_seen: dict[str, int] = {}
        # local user -> when their state last went to other servers (ms)
        self._federation_sent: dict[str, int] = {}
        # user id -> how many explicit PUT /status changes this process has seen
        self._explicit_changes: dict[str, int] = {}
        # user id -> when their state was last held without a sync or activity (ms): a
        # PUT /status, or start-up for states loaded then (Synapse's per-device last
        # active time and start-up pseudo-device). Counted by the timeouts like a sync,
        # without showing as activity to others.
        self._held_at: dict[str, int] = {}
        self._states: dict[str, PresenceState] = {}
        # user -> device -> number of its /sync requests in flight
        self._syncing: dict[str, dict[str | None, int]] = {}
        # user -> device -> (state its syncs ask for, when it last synced)
        self._device_requests: dict[str, dict[str | None, tuple[str, int]]] = {}
        self._timers: dict[str, Any] = {}
        # user -> position of their last visible change, in position order.
        self._changes: OrderedDict[str, int] = OrderedDict()
        # Every visible change after this position is in `_changes`.
        self._floor = store.stream.current_position
        self._dirty: dict[str, PresenceState] = {}
        self._flushing: defer.Deferred[None] | None = None
        self._stopped = False
        # Work started in the background (bumps, notifications): awaited by stop().
        self._background: set[defer.Deferred[None]] = set()

    def is_local(self, user_id: str) -> bool:
        return self._local_suffix is None or user_id.endswith(self._local_suffix)

    @property
    def _federates(self) -> bool:
        return self._local_suffix is not None

    # Lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load users who are not offline and restart their timers."""
        if not self.enabled:
            return
        now = now_ms(self._clock)
        for state in await self._store.get_not_offline():
            self._states.setdefault(state.user_id, state)
            if self.is_local(state.user_id):
                self._held_at.setdefault(state.user_id, now)
                self._federation_sent.setdefault(
                    state.user_id, now - self.federation_ping_interval_ms + STARTUP_PING_DELAY_MS
                )
            else:
                self._federation_seen.setdefault(state.user_id, now)
            self._schedule_timer(state.user_id)

    async def stop(self) -> None:
        """Cancel timers, let background work finish and write what is pending."""
        self._stopped = True
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        while self._background:
            await observe(next(iter(self._background)))
        await self.flush()

    def _in_background(self, work: Coroutine[Any, Any, None], what: str) -> None:
        d = defer.ensureDeferred(work)
        if d.called:
            d.addErrback(lambda f: logger.error("%s failed: %s", what, f.value))
            return
        self._background.add(d)

        def _done(result: Any) -> None:
            self._background.discard(d)
            if isinstance(result, Failure):
                logger.error("%s failed: %s", what, result.value)

        d.addBoth(_done)

    @property
    def position(self) -> int:
        return self._store.stream.current_position if self.enabled else 0

    # Reading ------------------------------------------------------------------------

    async def _get(self, user_id: str) -> PresenceState:
        state = self._states.get(user_id)
        if state is not None:
            return state
        stored = (await self._store.get_states([user_id])).get(user_id)
        return self._states.setdefault(user_id, stored or PresenceState.default(user_id))

    async def _joined_rooms(self, user_id: str) -> set[str]:
        rooms = await self._memberships.rooms_for_user(user_id)
        return {room_id for room_id, row in rooms.items() if row.membership == "join"}

    async def shares_room(self, user_id: str, other: str) -> bool:
        if user_id == other:
            return True
        return bool(await self._joined_rooms(user_id) & await self._joined_rooms(other))

    async def current_states(self, user_ids: Iterable[str]) -> list[PresenceState]:
        """The users' states as they stand (empty when presence is disabled)."""
        if not self.enabled:
            return []
        return [await self._get(user_id) for user_id in user_ids]

    async def get_presence(self, observer: str, target: str) -> JsonDict:
        if not await self.shares_room(observer, target):
            raise MatrixError(403, Codes.FORBIDDEN, "You are not allowed to see their presence")
        if not self.enabled:
            return {"presence": OFFLINE}
        state = self._states.get(target)
        if state is None:
            stored = (await self._store.get_states([target])).get(target)
            state = stored or PresenceState.default(target)
        return format_presence(state, now_ms(self._clock))

    # Changing -----------------------------------------------------------------------

    async def set_state(self, user_id: str, presence: str, status_msg: str | None) -> None:
        """An explicit ``PUT /status`` (it replaces the status message too)."""
        if not self.enabled:
            return
        self._explicit_changes[user_id] = self._explicit_changes.get(user_id, 0) + 1
        self._held_at[user_id] = now_ms(self._clock)
        state = await self._get(user_id)
        new = dataclasses.replace(state, state=presence, status_msg=status_msg)
        if presence == ONLINE:
            new = dataclasses.replace(new, last_active_ts=now_ms(self._clock))
        self._update(new)
        await self.flush()

    async def user_syncing(
        self, user_id: str, device_id: str | None, set_presence: str | None
    ) -> Callable[[], None]:
        """A /sync starts (a heartbeat); the returned callable is called when it ends."""
        if not self.enabled or set_presence == OFFLINE:
            return _noop
        state = await self._get(user_id)
        devices = self._syncing.setdefault(user_id, {})
        devices[device_id] = devices.get(device_id, 0) + 1
        now = now_ms(self._clock)
        presence = self._combined(user_id, device_id, set_presence or ONLINE, now)
        # Built directly (not dataclasses.replace): this runs once per /sync request.
        new = PresenceState(
            user_id,
            presence,
            state.status_msg,
            now if presence == ONLINE else state.last_active_ts,
            now,
            state.currently_active,
            state.stream_id,
        )
        self._update(new)

        def _ended() -> None:
            syncing = self._syncing.get(user_id, {})
            count = syncing.get(device_id, 0) - 1
            if count > 0:
                syncing[device_id] = count
            else:
                syncing.pop(device_id, None)
                if not syncing:
                    self._syncing.pop(user_id, None)
            end = now_ms(self._clock)
            requested = self._device_requests.get(user_id, {})
            if device_id in requested:
                requested[device_id] = (requested[device_id][0], end)
            current = self._states.get(user_id)
            if current is None or self._stopped:
                return
            self._states[user_id] = PresenceState(
                current.user_id,
                current.state,
                current.status_msg,
                current.last_active_ts,
                end,
                current.currently_active,
                current.stream_id,
            )
            self._schedule_timer(user_id)

        return _ended

    def _combined(self, user_id: str, device_id: str | None, requested: str, now: int) -> str:
        """The state a sync leads to: the most present one any live device asks for.

        A device counts while it syncs and for ``sync_online_timeout`` after, so one
        device syncing as ``unavailable`` does not flip a user who is online on another
        device (each flip would wake every room-mate).
        """
        devices = self._device_requests.setdefault(user_id, {})
        devices[device_id] = (requested, now)
        syncing = self._syncing.get(user_id, {})
        best = requested
        for device, (state, seen) in list(devices.items()):
            if device not in syncing and now - seen > self._sync_online_timeout:
                del devices[device]  # gone quiet: no longer counts
            elif _PRIORITY[state] > _PRIORITY[best]:
                best = state
        return best

    def bump_active(self, user_id: str, explicit_seen: int | None = None) -> None:
        """The user did something (sent a message, typed, read): active now.

        As in Synapse, activity moves the last active time and brings an
        ``unavailable`` user back ``online``, but does not make an ``offline`` user
        online: only a sync (or ``PUT /status``) does that. (A user whose syncs ask for
        ``set_presence=offline`` stays offline while sending.)

        ``explicit_seen``: the user's count of explicit status changes when the action
        happened; if a ``PUT /status`` came after it, that choice stands (the action
        only counts as activity).
        """
        if not self.enabled or self._stopped:
            return
        if explicit_seen is None:
            explicit_seen = self._explicit_changes.get(user_id, 0)

        async def _bump() -> None:
            await self._get(user_id)
            state = self._states.get(user_id) or PresenceState.default(user_id)  # current
            now = now_ms(self._clock)
            if self._explicit_changes.get(user_id, 0) != explicit_seen or state.state == OFFLINE:
                self._update(dataclasses.replace(state, last_active_ts=now))
            else:
                self._update(dataclasses.replace(state, state=ONLINE, last_active_ts=now))

        self._in_background(_bump(), f"Presence bump for {user_id}")

    def on_persisted(self, events: list[Event]) -> None:
        """After events commit: a local user who sent a message is active.

        Only ``m.room.message`` counts, as in Synapse: creating, joining or changing a
        room's state is not a sign of someone at the keyboard. After the commit and on
        the next reactor turn, so the syncs the message wakes carry the message (its
        sender's presence news, if any, follows), rather than waking first for presence.
        """
        if not self.enabled or self._stopped:
            return
        for event in events:
            if event.type != "m.room.message" or event.outlier or not self.is_local(event.sender):
                continue
            seen = self._explicit_changes.get(event.sender, 0)
            self._clock.callLater(0, self.bump_active, event.sender, seen)

    def _update(self, new: PresenceState) -> PresenceState:
        """Make ``new`` current (synchronously); publish it if it is news."""
        user_id = new.user_id
        old = self._states.get(user_id) or PresenceState.default(user_id)
        now = now_ms(self._clock)
        active = new.state == ONLINE and now - new.last_active_ts < self._granularity
        new = PresenceState(
            user_id,
            new.state,
            new.status_msg,
            new.last_active_ts,
            new.last_user_sync_ts,
            active,
            old.stream_id,
        )
        if should_notify(old, new, self._granularity):
            new = self._publish(new)
        else:
            self._states[user_id] = new
        self._schedule_timer(user_id)
        return new

    def _publish(self, new: PresenceState) -> PresenceState:
        """A visible change: next stream position, persist, wake room-mates, publish it."""
        user_id = new.user_id
        if self._federates and self.is_local(user_id):
            self._federation_sent[user_id] = now_ms(self._clock)  # the bus hands it on
        position = self._store.stream.next_id()
        new = dataclasses.replace(new, stream_id=position)
        self._states[user_id] = new
        self._changes[user_id] = position
        self._changes.move_to_end(user_id)
        self._dirty[user_id] = new
        self._start_flush()
        self._in_background(self._notify(user_id), "Presence notification")
        self._bus.publish(PresenceChanged(new))
        return new

    def mirror(self, state: PresenceState) -> None:
        """A reader process: a change the main process published (with its position),
        made current here and told to room-mates; nothing is written or sent."""
        if not self.enabled:
            return
        # The position comes with the change (not from ``ping``): a sync never sees a
        # position whose change has not been applied here.
        self._store.stream.advance_to(state.stream_id)
        self._states[state.user_id] = state
        self._changes[state.user_id] = state.stream_id
        self._changes.move_to_end(state.user_id)
        self._in_background(self._notify(state.user_id), "Presence notification")

    async def sync_heartbeat(
        self, user_id: str, device_id: str | None, set_presence: str | None
    ) -> None:
        """A /sync started on a reader process: one heartbeat, as if a sync here began
        and ended (``sync_online_timeout`` keeps the user online between two). A reader
        that dies leaves no sync held open here."""
        ended = await self.user_syncing(user_id, device_id, set_presence)
        ended()

    async def apply_remote(
        self,
        user_id: str,
        presence: str,
        last_active_ago: int,
        currently_active: bool,
        status_msg: str | None,
    ) -> None:
        """A remote user's state from their server (the caller checked the origin)."""
        if not self.enabled or self._stopped or self.is_local(user_id):
            return
        old = await self._get(user_id)
        now = now_ms(self._clock)
        self._federation_seen[user_id] = now
        new = dataclasses.replace(
            old,
            state=presence,
            status_msg=status_msg,
            last_active_ts=now - max(0, last_active_ago),
            currently_active=currently_active and presence == ONLINE,
        )
        if should_notify(old, new, self._granularity):
            self._publish(new)
        else:
            self._states[user_id] = new
        self._schedule_timer(user_id)

    async def _notify(self, user_id: str) -> None:
        users = {user_id}
        for room_id in await self._joined_rooms(user_id):
            room = await self._rooms.get(room_id)
            if room is not None:
                users |= room.joined_members()
        self._notifier.notify_users(users)

    # Timers -------------------------------------------------------------------------

    def _deadline(self, state: PresenceState) -> int | None:
        if not self.is_local(state.user_id):
            if state.state == OFFLINE:
                return None
            seen = self._federation_seen.get(state.user_id, now_ms(self._clock))
            return seen + self.federation_timeout_ms
        deadlines = []
        if self._federates and state.state != OFFLINE:
            sent = self._federation_sent.get(state.user_id, 0)
            deadlines.append(sent + self.federation_ping_interval_ms)
        if state.currently_active:
            deadlines.append(state.last_active_ts + self._granularity)
        if state.user_id not in self._syncing and state.state != OFFLINE:
            base = self._seen_at(state)
            if state.state == ONLINE:
                deadlines.append(base + self._sync_online_timeout)
            deadlines.append(base + self._offline_timeout)
        return min(deadlines) if deadlines else None

    def _seen_at(self, state: PresenceState) -> int:
        """When the user last synced, was active or set their status (ms)."""
        held = self._held_at.get(state.user_id, 0)
        return max(state.last_user_sync_ts, state.last_active_ts, held)

    def _schedule_timer(self, user_id: str) -> None:
        state = self._states.get(user_id)
        deadline = None
        if state is not None and not self._stopped:
            deadline = self._deadline(state)
        timer = self._timers.get(user_id)
        if timer is not None and timer.active():
            # Every sync and send moves the deadline later: an earlier timer is kept
            # (it re-evaluates and reschedules when it fires) rather than replaced.
            if deadline is not None and timer.getTime() <= deadline / 1000.0 + 0.001:
                return
            timer.cancel()
        self._timers.pop(user_id, None)
        if deadline is None:
            return
        delay = max(0, deadline - now_ms(self._clock)) / 1000.0 + 0.001
        self._timers[user_id] = self._clock.callLater(delay, self._on_timer, user_id)

    def _on_timer(self, user_id: str) -> None:
        self._timers.pop(user_id, None)
        state = self._states.get(user_id)
        if state is None or self._stopped:
            return
        now = now_ms(self._clock)
        if not self.is_local(user_id):
            seen = self._federation_seen.get(user_id, now)
            if state.state != OFFLINE and now - seen >= self.federation_timeout_ms:
                # Their server has gone quiet about them: it may be down, and would
                # never tell us they left.
                self._publish(dataclasses.replace(state, state=OFFLINE, currently_active=False))
            self._schedule_timer(user_id)
            return
        new = state
        if user_id not in self._syncing and state.state != OFFLINE:
            idle = now - self._seen_at(state)
            if idle >= self._offline_timeout:
                new = dataclasses.replace(state, state=OFFLINE)
            elif state.state == ONLINE and idle >= self._sync_online_timeout:
                new = dataclasses.replace(state, state=UNAVAILABLE)
        sent = self._federation_sent.get(user_id, 0)
        ping = self._federates and now - sent >= self.federation_ping_interval_ms
        if ping:
            self._federation_sent[user_id] = now  # before _update schedules the next timer
        result = self._update(new)
        if ping and result.stream_id == state.stream_id and result.state != OFFLINE:
            # Nothing visible changed (a change would have gone out by itself).
            self._bus.publish(PresencePing(result))

    # Persisting ---------------------------------------------------------------------

    def _start_flush(self) -> None:
        if self._flushing is None and self._dirty:
            flushing = defer.ensureDeferred(self._flush())
            if not flushing.called:  # it resets _flushing itself when done
                self._flushing = flushing

    async def _flush(self) -> None:
        try:
            while self._dirty:
                batch = list(self._dirty.values())
                self._dirty.clear()
                await self._store.upsert_states(batch)
        except Exception:
            logger.exception("Could not persist presence states")
        finally:
            self._flushing = None

    async def flush(self) -> None:
        """Wait until every visible change so far is written."""
        while self._flushing is not None or self._dirty:
            self._start_flush()
            if self._flushing is not None:
                await observe(self._flushing)

    # For /sync ----------------------------------------------------------------------

    async def _room_mates(self, room_ids: frozenset[str]) -> set[str]:
        users: set[str] = set()
        for room_id in room_ids:
            room = await self._rooms.get(room_id)
            if room is not None:
                users |= room.joined_members()
        return users

    async def states_for_sync(self, ctx: SyncContext, since: int, now: int) -> list[PresenceState]:
        """States the user should be sent for the window (since, now], oldest change first."""
        if ctx.initial or since < self._floor:
            mates = await self._room_mates(ctx.joined_room_ids) | {ctx.user_id}
            states = await self._store.get_states(u for u in mates if u not in self._states)
            states.update({u: self._states[u] for u in mates if u in self._states})
            if ctx.initial:
                out = [
                    s
                    for s in states.values()
                    if s.stream_id and (s.state != OFFLINE or self._include_offline)
                ]
            else:
                out = [s for s in states.values() if since < s.stream_id <= now]
        else:
            out = []
            window: list[str] = []
            for user_id, position in reversed(self._changes.items()):  # no awaits here
                if position <= since:
                    break
                if position <= now:
                    window.append(user_id)
            for user_id in window:
                if user_id == ctx.user_id or (
                    await self._joined_rooms(user_id) & ctx.joined_room_ids
                ):
                    out.append(self._states[user_id])
        if not ctx.initial:
            out += await self._newcomer_states(ctx, {s.user_id for s in out})
        out.sort(key=lambda s: s.stream_id)
        return out

    async def _newcomer_states(self, ctx: SyncContext, seen: set[str]) -> list[PresenceState]:
        """For an incremental sync, as in Synapse: the state (offline, or never set,
        included) of everyone in a room the user joined in the window, and of everyone
        who joined, or was invited to or knocked on, one of the user's rooms in it."""
        users = await self._room_mates(ctx.newly_joined_room_ids)
        users.update(
            user_id
            for room_id, user_id, membership in ctx.membership_changes
            if membership in ("join", "invite", "knock") and room_id in ctx.joined_room_ids
        )
        users -= seen | {ctx.user_id}
        if not users:
            return []
        known = await self._store.get_states(u for u in users if u not in self._states)
        known.update({u: self._states[u] for u in users if u in self._states})
        return [known.get(u) or PresenceState.default(u) for u in sorted(users)]


class PresenceSource:
    name = "presence"
    quiet_when_still = True

    def __init__(self, handler: PresenceHandler, clock: Clock) -> None:
        self._handler = handler
        self._clock = clock

    def current_position(self) -> int:
        return self._handler.position

    async def get_updates(self, ctx: SyncContext, since: int, now: int) -> SyncFragment:
        fragment = SyncFragment()
        if not self._handler.enabled or ctx.filters.blocks_all_presence():
            return fragment
        if (
            since >= now
            and not ctx.initial
            and not ctx.newly_joined_room_ids
            and not ctx.membership_changes
        ):
            return fragment
        at = now_ms(self._clock)
        events = [
            {"type": "m.presence", "sender": s.user_id, "content": format_presence(s, at)}
            for s in await self._handler.states_for_sync(ctx, since, now)
        ]
        events = ctx.filters.filter_presence(events)
        if events:
            fragment.top_level["presence"] = {"events": events}
            fragment.has_updates = True
        return fragment
