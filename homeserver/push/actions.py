"""Push actions for new events: push rules evaluated for every local member of the room.

Invariants:
- Runs as an ``EventFanout`` listener: batches are handled one at a time in stream
  order. For each event (not outliers, not rejected) the rules of every joined local
  member except the sender — plus the local invitee of an invite — are evaluated with
  the event flattened once; rule sets and display names come from memory (one query
  for rule sets not cached), and the notifying actions of a whole batch are counted
  and stored with one insert (``UnreadCounts.record``).
- The thread of an event (for per-thread counts) is the root of an ``m.thread``
  relation, found by following relations at most ``MAX_RELATION_HOPS`` up (from
  memory when the parents are recent, else one query); ``main`` otherwise.
- Durable: ``push_actions_position`` (``storage.push``) is stored in the transaction
  that stores a batch's actions, so position and rows move together; a batch that
  notified nobody moves it lazily (``POSITION_FLUSH_S``, and at stop). At ``start``
  the events in (stored position, events stream position] are read back from the
  database in pages of ``CATCH_UP_PAGE`` and evaluated like live ones, before the live
  batches queued meanwhile (which only hold events after that range). A crash
  between an event's commit and its evaluation thus delays its counts and pushes,
  never loses them.
- Idempotent: an event whose actions are already stored (a stale position after a
  crash) is skipped by the catch-up, so nothing is counted twice in memory; the rows
  are unique per (user, event) in the database as well.
- ``caught_up()`` fires once every event at or below the events stream's current
  position has been counted, so a /sync can wait until the counts cover the events it
  serves; until the catch-up is done that includes the events it re-reads.
- Evaluation uses the room's current state (power levels, member count, display
  names), not the state at the event (also for events evaluated by the catch-up).
- Out-of-band invites (an outlier invite of a local user to a room we do not hold,
  received over federation) are evaluated for the invitee alone, with the stripped
  state the inviting server sent as the room (``out_of_band_room``), as Synapse does:
  that is all we know of the room, and it is the sender's word, so it never makes
  anyone else a target.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer

from homeserver.clock import Clock, DelayedCall, now_ms
from homeserver.events.auth_rules import get_user_power_level
from homeserver.events.event import Event
from homeserver.push.counts import UnreadCounts
from homeserver.push.evaluator import (
    PreparedEvent,
    PushContext,
    actions_highlight,
    actions_notify,
    evaluate,
)
from homeserver.push.rules import Action
from homeserver.push.rules_handler import PushRulesHandler
from homeserver.rooms.room_cache import LiveRoom, RoomCache, pdu_with_id
from storage.events import EventsStore
from storage.id_generator import IdGenerator
from storage.memberships import MembershipStore
from storage.push import PushActionRow, PushStore
from storage.relations import MAIN_THREAD, THREAD, RelationsStore, relation_of

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_RELATION_HOPS = 3
CAUGHT_UP_TIMEOUT_S = 5.0
CATCH_UP_PAGE = 200
POSITION_FLUSH_S = 5.0
CATCH_UP_RETRY_S = 1.0
_HIDDEN_KEYS = frozenset(("auth_events", "prev_events", "hashes", "signatures", "depth", "origin"))

# (event, room, notifying rows) for each event that notified somebody.
NotificationListener = Callable[[Event, LiveRoom, list[PushActionRow]], None]


def is_out_of_band_invite(ev: Event) -> bool:
    return ev.outlier and ev.membership == "invite" and ev.rejected_reason is None


async def out_of_band_room(memberships: MembershipStore, ev: Event) -> LiveRoom | None:
    """A read-only stand-in for a room we do not hold, built from the stripped state
    stored with the out-of-band invite ``ev``; None when ``ev`` is not (or no longer) the
    invitee's out-of-band membership, e.g. an invite fetched as an auth event."""
    if not is_out_of_band_invite(ev) or ev.state_key is None:
        return None
    stripped = await memberships.get_out_of_band_invite_state(ev.state_key, ev.room_id, ev.event_id)
    if stripped is None:
        return None
    state: dict[tuple[str, str], Event] = {}
    for item in stripped:
        kind, key = item.get("type"), item.get("state_key")
        if not (isinstance(kind, str) and isinstance(key, str)):
            continue
        if not isinstance(item.get("content"), dict) or not isinstance(item.get("sender"), str):
            continue
        pdu = {k: item[k] for k in ("type", "state_key", "sender", "content")}
        pdu["room_id"] = ev.room_id
        state[(kind, key)] = Event(event_id="", pdu=pdu, room_version=ev.room_version, outlier=True)
    state[("m.room.member", ev.state_key)] = ev
    return LiveRoom(
        room_id=ev.room_id,
        room_version=ev.room_version,
        state=state,
        extremities=[],
        max_depth=0,
        state_group=-1,
        state_group_delta_depth=0,
    )


def push_view(ev: Event) -> JsonDict:
    """What push rule conditions look at: the event as a client sees it."""
    view = {k: v for k, v in ev.pdu.items() if k not in _HIDDEN_KEYS}
    view["event_id"] = ev.event_id
    view["room_id"] = ev.room_id
    return view


class PushActionGenerator:
    def __init__(
        self,
        server_name: str,
        clock: Clock,
        rooms: RoomCache,
        rules: PushRulesHandler,
        relations: RelationsStore,
        counts: UnreadCounts,
        events_stream: IdGenerator,
        store: PushStore,
        events: EventsStore,
        memberships: MembershipStore,
    ) -> None:
        self._suffix = f":{server_name}"
        self._clock = clock
        self._rooms = rooms
        self._rules = rules
        self._relations = relations
        self._counts = counts
        self._queue: deque[tuple[int, list[Event]]] = deque()
        self._running = False
        self._events_stream = events_stream
        self._store = store
        self._events = events
        self._memberships = memberships
        # Until ``start`` has read the stored position, nothing counts as applied.
        self._queued_upto = self._applied_upto = 0
        self._started = self._stopping = False
        self._boundary = 0  # end of the catch-up range: live events come after it
        self._catching_up = False
        self._stored_upto = 0  # push_actions_position as written (or queued)
        self._flush_call: DelayedCall | None = None
        self._waiters: list[tuple[int, defer.Deferred[None]]] = []
        self._idle: list[defer.Deferred[None]] = []
        self.listeners: list[NotificationListener] = []

    # The pipeline ------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the stored position; catch up on what was persisted after it."""
        self._stored_upto = self._applied_upto = await self._store.get_push_actions_position()
        self._boundary = max(self._applied_upto, self._events_stream.current_position)
        self._queued_upto = max(self._queued_upto, self._boundary)
        # Live batches queued before start may overlap the catch-up range: drop that part.
        queued, self._queue = self._queue, deque()
        for top, events in queued:
            if top > self._boundary:
                self._queue.append((top, [e for e in events if e.stream_ordering > self._boundary]))
        self._catching_up = self._boundary > self._applied_upto
        if self._catching_up:
            logger.info("Push actions: catching up on (%d, %d]", self._applied_upto, self._boundary)
        self._started = True
        if not self._running:
            self._running = True
            defer.ensureDeferred(self._run())

    async def stop(self) -> None:
        """Stop catching up, wait for the batch in hand, store the position."""
        self._stopping = True
        await self.wait_idle()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_position()

    def on_persisted(self, events: list[Event]) -> None:
        if not events:
            return
        top = max(ev.stream_ordering for ev in events)
        if self._started and top <= self._boundary:
            return  # the catch-up reads these from the database
        self._queued_upto = max(self._queued_upto, top)
        wanted = [
            ev
            for ev in events
            if (not ev.outlier or is_out_of_band_invite(ev))
            and ev.rejected_reason is None
            and ev.stream_ordering > self._boundary
        ]
        self._queue.append((top, wanted))
        if self._started and not self._running:
            self._running = True
            defer.ensureDeferred(self._run())

    async def _run(self) -> None:
        try:
            while self._catching_up and not self._stopping:
                try:
                    await self._catch_up_page()
                except Exception:
                    logger.exception("Push actions catch-up failed: retrying")
                    await self._sleep(CATCH_UP_RETRY_S)
            while self._queue and not self._catching_up:
                top, events = self._queue.popleft()
                await self._apply(top, events)
        finally:
            self._running = False
            self._wake_waiters()
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def _catch_up_page(self) -> None:
        rows, done = await self._store.get_push_catch_up(
            self._applied_upto, self._boundary, CATCH_UP_PAGE
        )
        todo = [event_id for _, event_id in rows if event_id not in done]
        loaded = await self._events.get_events(todo) if todo else {}
        events = [
            ev
            for ev in (loaded.get(event_id) for event_id in todo)
            if ev is not None
            and (not ev.outlier or is_out_of_band_invite(ev))
            and ev.rejected_reason is None
        ]
        last = len(rows) < CATCH_UP_PAGE
        await self._apply(self._boundary if last else rows[-1][0], events)
        if last:
            self._catching_up = False
            logger.info("Push actions: caught up to %d", self._boundary)

    async def _apply(self, top: int, events: list[Event]) -> None:
        try:
            stored = await self._handle_batch(events, top)
        except Exception:
            logger.exception("Computing push actions failed")
            stored = False
        self._applied_upto = max(self._applied_upto, top)
        if stored:
            self._stored_upto = max(self._stored_upto, top)
        elif self._flush_call is None or not self._flush_call.active():
            self._flush_call = self._clock.callLater(POSITION_FLUSH_S, self._flush_position)
        self._wake_waiters()

    def _flush_position(self) -> None:
        """Store the position of batches that notified nobody (after the queued inserts)."""
        if self._applied_upto > self._stored_upto:
            self._stored_upto = self._applied_upto
            self._counts.record([], self._applied_upto)

    async def _sleep(self, seconds: float) -> None:
        d: defer.Deferred[None] = defer.Deferred()
        self._clock.callLater(seconds, d.callback, None)
        await d

    def _wake_waiters(self) -> None:
        ready = [d for target, d in self._waiters if target <= self._applied_upto]
        self._waiters = [(t, d) for t, d in self._waiters if d not in ready]
        for d in ready:
            if not d.called:
                d.callback(None)

    def caught_up(self) -> defer.Deferred[None]:
        """Fires once every event visible now is counted (or after a timeout).

        The events stream advances just before the fanout calls its listeners, and a
        sync woken by that fanout may get here first: so the target is the stream's
        position, not only what was handed over so far.
        """
        target = max(self._queued_upto, self._events_stream.current_position)
        if self._applied_upto >= target:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((target, d))

        def _give_up() -> None:
            if not d.called:
                logger.warning("Push actions are late: serving counts without them")
                d.callback(None)

        timer = self._clock.callLater(CAUGHT_UP_TIMEOUT_S, _give_up)

        def _stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(_stop_timer)
        return d

    async def wait_idle(self) -> None:
        """Wait until no batch is queued or being handled."""
        if self._running:
            d: defer.Deferred[None] = defer.Deferred()
            self._idle.append(d)
            await d

    # One batch ---------------------------------------------------------------------------

    async def _handle_batch(self, events: list[Event], top: int) -> bool:
        """Count the batch and store its actions with position ``top``; whether any
        were stored (if not, the position is left for ``_flush_position``)."""
        rows: list[PushActionRow] = []
        notified: list[tuple[Event, LiveRoom, list[PushActionRow]]] = []
        by_id = {ev.event_id: ev for ev in events}
        for ev in events:
            room = await self._room_for(ev)
            if room is None:
                continue
            event_rows = await self.actions_for_event(ev, room, by_id)
            if event_rows:
                rows += event_rows
                notified.append((ev, room, event_rows))
        if rows:
            self._counts.record(rows, top)
        for ev, room, event_rows in notified:
            for listener in self.listeners:
                try:
                    listener(ev, room, event_rows)
                except Exception:
                    logger.exception("A push listener failed")
        return bool(rows)

    async def _room_for(self, ev: Event) -> LiveRoom | None:
        if ev.outlier:
            return await out_of_band_room(self._memberships, ev)
        return self._rooms.get_if_loaded(ev.room_id) or await self._rooms.get(ev.room_id)

    def _targets(self, ev: Event, room: LiveRoom) -> list[str]:
        if ev.outlier:
            # An out-of-band invite: the invitee is the only local user we know of.
            target = ev.state_key or ""
            return [target] if target.endswith(self._suffix) and target != ev.sender else []
        targets = [u for u in room.joined_members() if u.endswith(self._suffix) and u != ev.sender]
        invitee = ev.state_key
        if (
            ev.membership == "invite"
            and invitee is not None
            and invitee.endswith(self._suffix)
            and invitee not in targets
            and invitee != ev.sender
        ):
            targets.append(invitee)
        return targets

    async def actions_for_event(
        self, ev: Event, room: LiveRoom, batch: Mapping[str, Event] | None = None
    ) -> list[PushActionRow]:
        """The notifying push actions of ``ev`` for each local user it concerns."""
        targets = self._targets(ev, room)
        if not targets:
            return []
        rulesets = await self._rules.get_rulesets(targets)
        prepared = PreparedEvent(push_view(ev))
        power_levels = room.state_content("m.room.power_levels") or None
        sender_level = self._sender_level(ev, room)
        member_count = len(room.joined_members())
        thread_id: str | None = None
        received = now_ms(self._clock)
        rows: list[PushActionRow] = []
        mentions = ev.content.get("m.mentions")
        mentioned = mentions.get("user_ids") if isinstance(mentions, dict) else None
        mentioned_ids = (
            frozenset(u for u in mentioned if isinstance(u, str))
            if isinstance(mentioned, list)
            else frozenset()
        )
        # Users with only the server-default rules get the same actions unless the event
        # names them: the defaults' only user-dependent conditions are "state_key is the
        # user" (.m.rule.invite_for_me) and "m.mentions.user_ids holds the user"
        # (.m.rule.is_user_mention). Evaluated once per answer to those two questions.
        by_defaults: dict[tuple[bool, bool], tuple[list[Action] | None, bool]] = {}
        for user_id in targets:
            ruleset = rulesets[user_id]
            key = (ev.state_key == user_id, user_id in mentioned_ids)
            shares = ruleset.only_server_defaults()
            known = by_defaults.get(key) if shares else None
            if known is not None:
                actions, highlight = known
            else:
                member = room.state.get(("m.room.member", user_id))
                name = member.content.get("displayname") if member is not None else None
                ctx = PushContext(
                    user_id=user_id,
                    room_member_count=member_count,
                    user_display_name=name if isinstance(name, str) else None,
                    power_levels=power_levels,
                    sender_power_level=sender_level,
                )
                actions = evaluate(ruleset, prepared, ctx)
                highlight = actions_notify(actions) and actions_highlight(actions or [])
                if shares:
                    by_defaults[key] = (actions, highlight)
            if not actions_notify(actions):
                continue
            assert actions is not None
            if thread_id is None:
                thread_id = await self._thread_id(ev, room, batch or {})
            rows.append(
                PushActionRow(
                    user_id=user_id,
                    room_id=ev.room_id,
                    event_id=ev.event_id,
                    stream_ordering=ev.stream_ordering,
                    thread_id=thread_id,
                    highlight=highlight,
                    actions=actions,  # shared between rows: never mutated
                    received_ts=received,
                )
            )
        return rows

    @staticmethod
    def _sender_level(ev: Event, room: LiveRoom) -> int | float:
        auth_state: dict[tuple[str, str], dict[str, object]] = {}
        for key in (("m.room.create", ""), ("m.room.power_levels", "")):
            state_event = room.state.get(key)
            if state_event is not None:
                auth_state[key] = pdu_with_id(state_event)
        create = room.create_event
        return get_user_power_level(
            ev.sender,
            auth_state,
            room.room_version,
            create_event=pdu_with_id(create) if create is not None else None,
        )

    async def _thread_id(self, ev: Event, room: LiveRoom, batch: Mapping[str, Event]) -> str:
        current: Event | None = ev
        parent_id = ""
        for hop in range(MAX_RELATION_HOPS):
            assert current is not None
            relation = relation_of(current.content)
            if relation is None:
                return MAIN_THREAD
            if relation.rel_type == THREAD:
                return relation.parent_id
            parent_id = relation.parent_id
            current = batch.get(parent_id) or next(
                (e for e in room.recent if e.event_id == parent_id), None
            )
            if current is None:
                remaining = MAX_RELATION_HOPS - hop - 1
                if remaining <= 0:
                    return MAIN_THREAD
                return await self._relations.get_thread_id(parent_id, remaining)
        return MAIN_THREAD
