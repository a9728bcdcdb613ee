"""Simplified sliding sync (MSC4186): a window of the user's rooms, by recency.

Invariants:
- A response covers the events up to ``now`` (the stream token taken before anything is
  read), and its ``pos`` names that token and the connection's position: the stream
  token bounds the extensions' streams, the position what each room was sent up to.
- What a connection holds (``SentRoom`` per room: the events position it was sent up to,
  the membership and the room config it was sent with) is in the database
  (``storage/sliding_sync.py``); a response that changes it gets a new position. A room
  is sent again only with what it lacks: events after its position (``limited`` when
  more than ``timeline_limit``), state that changed since (``required_state``), or all
  of it again (``initial``) after a change of membership from invite, knock or leave.
- A room leaving every range keeps its position: when it comes back, it gets the events
  it missed (up to its limit) as an incremental update.
- Rooms are ordered by ``bump_stamp``, newest first, and filtered by ``RoomLists``
  (``sliding_lists.py``).
- Timelines, history visibility, unread counts and the extensions' streams are /sync's
  own pieces (``SyncHandler``, its sources): this module only decides what to ask them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from homeserver.clock import Clock
from homeserver.errors import MatrixError
from homeserver.events.event import Event
from homeserver.events.filtering import FilterCollection
from homeserver.rooms.ignored import NOBODY
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.sync.handler import (
    SyncHandler,
    SyncToken,
    client_event,
    room_heroes,
)
from homeserver.sync.notifier import Notifier
from homeserver.sync.sliding_config import (
    NO_LIST_FILTERS,
    RequiredState,
    RoomConfig,
    SlidingSyncRequest,
)
from homeserver.sync.sliding_extensions import ExtensionsBuilder
from homeserver.sync.sliding_lists import RecencyIndex, RoomLists, windows
from homeserver.sync.sources import SyncContext
from storage.memberships import MembershipRow
from storage.sliding_sync import ConnectionState, SentRoom
from storage.storage import Storage

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

UNKNOWN_POS = "M_UNKNOWN_POS"

# Users per room whose lazily loaded member events a connection remembers sending.
MAX_LAZY_MEMBERS_PER_ROOM = 200
_NO_FILTERS = FilterCollection.from_json({})


def unknown_pos(message: str = "Unknown position") -> MatrixError:
    return MatrixError(400, UNKNOWN_POS, message)


@dataclass(slots=True)
class Built:
    """A response before its ``pos``: the body, what the connection will hold that
    differs (``changes``), whether it holds news, and whether to answer it now."""

    body: JsonDict
    changes: dict[str, SentRoom] = field(default_factory=dict)
    has_updates: bool = False
    ready: bool = False
    # A new connection's rows, written while the rest of the response is built.
    persisting: defer.Deferred[int | None] | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A request with what its connection held at its ``pos`` (``base``: None for a
    new connection) and the stream token of that ``pos``."""

    req: SlidingSyncRequest
    base: ConnectionState | None
    since: SyncToken | None


@dataclass(frozen=True, slots=True)
class _Timeline:
    """A room's timeline events until the response's timelines are serialised together."""

    events: list[Event]
    bundled: bool


class SlidingSyncHandler:
    def __init__(
        self,
        storage: Storage,
        rooms: RoomCache,
        memberships: MembershipCache,
        sync: SyncHandler,
        clock: Clock,
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._memberships = memberships
        self._sync = sync
        self._clock = clock
        self._extensions = ExtensionsBuilder(storage, rooms, sync)
        self._lists = RoomLists(storage, rooms)
        # Fed by the server's bus subscriptions (EventsPersisted, RoomsInvalidated).
        self.recency = RecencyIndex(self._lists, memberships)

    @property
    def notifier(self) -> Notifier:
        return self._sync.notifier

    def current_token(self) -> SyncToken:
        return self._sync.current_token()

    async def sync(self, req: SlidingSyncRequest) -> JsonDict:
        """The response for ``req``; with a ``pos`` and a ``timeout``, waits on the
        notifier (as /sync) until there is something to say or the time is up. (The
        servlet parks long-polls without a coroutine instead: ``open``, ``build``,
        ``answer``.)"""
        session = await self.open(req)
        deadline = self._clock.seconds() + req.timeout_ms / 1000.0
        while True:
            now = self.current_token()
            built = await self.build(session, now)
            if built.ready:
                break
            if self.current_token() != now:
                continue  # something arrived while building: look again at once
            remaining = deadline - self._clock.seconds()
            if remaining <= 0:
                break
            await self.notifier.wait(req.user_id, remaining)
            if self._clock.seconds() >= deadline and self.current_token() == now:
                break
        return await self.answer(session, built, now)

    async def open(self, req: SlidingSyncRequest) -> Session:
        """Check ``pos`` and load what the connection holds at it (400
        ``M_UNKNOWN_POS`` when it holds no such position)."""
        base: ConnectionState | None = None
        since: SyncToken | None = None
        if req.pos is not None:
            since = SyncToken.parse(req.pos.token)
            current = self.current_token()
            if since.events > current.events or since.account_data > current.account_data:
                raise unknown_pos("The position is ahead of the server")
            base = await self._storage.sliding_sync.load(
                req.user_id,
                req.device_id,
                req.conn_id,
                req.pos.connection_position,
                self._ms(),
            )
            if base is None:
                raise unknown_pos()
        return Session(req, base, since)

    async def build(self, session: Session, now: SyncToken) -> Built:
        """The response up to ``now`` (``ready``: worth answering before a timeout)."""
        built = Built(body={})
        try:
            await self._build(session.req, session.base, session.since, now, built)
        except BaseException:
            if built.persisting is not None:
                built.persisting.addErrback(lambda _: None)  # the build's error is the one
            raise
        built.ready = built.has_updates or session.base is None or bool(built.changes)
        return built

    async def answer(self, session: Session, built: Built, now: SyncToken) -> JsonDict:
        """``built``'s body with its ``pos``, recording what the connection now holds."""
        req, base = session.req, session.base
        position = base.position if base is not None else 0
        if built.persisting is not None:
            persisted = await built.persisting
            if persisted is None:
                raise unknown_pos("The connection went on from another position")
            position = persisted
        elif base is None or built.changes:
            persisted = await self._storage.sliding_sync.persist(
                req.user_id, req.device_id, req.conn_id, base, built.changes, self._ms()
            )
            if persisted is None:
                raise unknown_pos("The connection went on from another position")
            position = persisted
        built.body["pos"] = f"{position}/{now}"
        return built.body

    async def on_devices_changed(self, user_id: str, device_ids: list[str], created: bool) -> None:
        """Connections die with their device."""
        if not created:
            for device_id in device_ids:
                await self._storage.sliding_sync.delete_for_device(user_id, device_id)

    def _ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # Building ------------------------------------------------------------------

    async def _build(
        self,
        req: SlidingSyncRequest,
        base: ConnectionState | None,
        since: SyncToken | None,
        now: SyncToken,
        built: Built,
    ) -> None:
        user_id = req.user_id
        memberships = await self._memberships.rooms_for_user(user_id)
        ignored = (
            await self._sync.ignored.get(user_id) if self._sync.ignored is not None else NOBODY
        )
        recency = await self.recency.rooms(
            user_id, memberships, ignored, since.events if since is not None else None, now.events
        )
        candidates, bumps, keyed = recency.candidates, recency.bumps, recency.keyed

        lists_out: JsonDict = {}
        wanted: dict[str, RoomConfig] = {}
        in_lists: dict[str, list[str]] = {}
        facts = self._lists.facts(user_id, candidates, now)
        for name, lst in req.lists.items():
            members = (
                keyed
                if lst.filters == NO_LIST_FILTERS
                else [k for k in keyed if await facts.matches(k[1], lst.filters)]
            )
            window, ops = windows(members, lst)
            for room_id in window:
                cfg = wanted.get(room_id)
                wanted[room_id] = lst.room if cfg is None else cfg.combine(lst.room)
                in_lists.setdefault(name, []).append(room_id)
            lists_out[name] = {"count": len(members), "ops": ops}
        for room_id, cfg in req.room_subscriptions.items():
            if room_id in candidates:
                held = wanted.get(room_id)
                wanted[room_id] = cfg if held is None else held.combine(cfg)

        rooms_out: JsonDict = {}
        for room_id in sorted(wanted, key=lambda r: (bumps[r], r), reverse=True):
            sent = base.rooms.get(room_id) if base is not None else None
            section, new_sent = await self._room(
                req, candidates[room_id], wanted[room_id], sent, since, now, bumps[room_id]
            )
            if section is not None:
                rooms_out[room_id] = section
            if new_sent is not None and new_sent != sent:
                built.changes[room_id] = new_sent
        if base is None:
            # Always answered at once (``build``): what it holds is known from here,
            # and the write overlaps the reads below. The body (and its ``pos``) leaves
            # only once the write is done (``answer``).
            built.persisting = defer.ensureDeferred(
                self._storage.sliding_sync.persist(
                    req.user_id, req.device_id, req.conn_id, None, built.changes, self._ms()
                )
            )
        if rooms_out:
            # As Synapse: ``is_dm`` on the rooms of the user's ``m.direct``, absent on others.
            dms = await self._lists.direct_rooms(user_id, now)
            for room_id, section in rooms_out.items():
                if room_id in dms:
                    section["is_dm"] = True
        await self._serialise_timelines(req, rooms_out)
        await self._add_counts(req, candidates, rooms_out, now)
        extensions, ext_updates = await self._extensions.build(
            req, candidates, in_lists, rooms_out, since, now
        )
        # A membership change moves a list's count even outside its ranges.
        moved = since is not None and any(
            row.stream_ordering > since.events for row in candidates.values()
        )
        built.has_updates = bool(rooms_out) or ext_updates or moved
        built.body = {"lists": lists_out, "rooms": rooms_out, "extensions": extensions}

    async def _room(
        self,
        req: SlidingSyncRequest,
        row: MembershipRow,
        cfg: RoomConfig,
        sent: SentRoom | None,
        since: SyncToken | None,
        now: SyncToken,
        bump: int,
    ) -> tuple[JsonDict | None, SentRoom | None]:
        """A room's section (None: nothing new) and what the connection then holds."""
        room_id = row.room_id
        membership = row.membership
        key = cfg.key()
        initial = sent is None or (sent.membership != "join" and sent.membership != membership)
        if membership in ("invite", "knock"):
            if not initial:
                return None, None
            state = await self._lists.stripped_state(req.user_id, row)
            section: JsonDict = {
                "initial": True,
                "invite_state": state,
                "bump_stamp": bump,
                "notification_count": 0,
                "highlight_count": 0,
            }
            name = next(
                (
                    s.get("content", {}).get("name")
                    for s in state
                    if s.get("type") == "m.room.name" and s.get("state_key") == ""
                ),
                None,
            )
            if isinstance(name, str) and name:
                section["name"] = name
            return section, SentRoom(now.events, membership, key)

        to_stream = now.events if membership == "join" else row.stream_ordering
        prev = None if sent is None or initial else RoomConfig.from_key(sent.config)
        state_config_changed = prev is not None and prev.required_state != cfg.required_state
        # As Synapse (for Element X): a larger timeline_limit for a room already sent
        # sends that much history again, marked ``unstable_expanded_timeline``.
        expanded = prev is not None and cfg.timeline_limit > prev.timeline_limit
        if (
            sent is not None
            and not initial
            and sent.stream >= to_stream
            and not (state_config_changed or expanded)
        ):
            return None, None
        from_stream = 0 if initial or sent is None else sent.stream
        limit = cfg.timeline_limit
        events, limited = await self._sync.visible_timeline(
            req.user_id, row, 0 if expanded else from_stream, to_stream, limit
        )
        room = await self._rooms.get(room_id)
        if room is None and not events and row.stream_ordering > from_stream:
            # A room we do not hold (a rejected remote invite): the membership alone,
            # as /sync shows an out-of-band leave.
            own = await self._storage.events.get_event(row.event_id)
            if own is not None:
                events, limited = [own], False
        wants = RequiredState.of(cfg, req.user_id)
        if room is not None and membership == "join" and not initial:
            # The live path: the keys sent are read from the current state in memory
            # (any newer than ``to_stream`` are left for the next response, see below).
            state_now: Mapping[tuple[str, str], Event] = room.state
        else:
            state_now = await self._state_at(room, room_id, membership, to_stream)
        if initial:
            keys = {k for k in state_now if wants.wants(k)}
        else:
            keys = await self._changed_state_keys(
                room_id, events, limited or expanded, from_stream, state_now
            )
            keys = {k for k in keys if wants.wants(k)}
            if prev is not None and state_config_changed:
                # What the wider config asks for that the old one did not.
                before = RequiredState.of(prev, req.user_id)
                keys |= {k for k in state_now if wants.wants(k) and not before.wants(k)}
        lazy_sent: tuple[str, ...] = () if sent is None or initial else sent.lazy_members
        if wants.lazy:
            # The members of the timeline's senders and targets, less those the
            # connection holds unchanged since the room was last sent.
            held = set(lazy_sent)
            users = {ev.sender for ev in events} | {
                ev.state_key for ev in events if ev.type == "m.room.member" and ev.state_key
            }
            for user in users:
                member = state_now.get(("m.room.member", user))
                if member is None or (user in held and member.stream_ordering <= from_stream):
                    continue
                keys.add(("m.room.member", user))
            held |= users
            if len(held) > MAX_LAZY_MEMBERS_PER_ROOM:
                held = users  # forgetting means a redundant resend, nothing worse
            lazy_sent = tuple(sorted(held))
        required = [
            state_now[k]
            for k in sorted(keys)
            if k in state_now and state_now[k].stream_ordering <= to_stream
        ]
        if (
            prev is not None
            and cfg.timeline_limit < prev.timeline_limit
            and not limited
            and not state_config_changed
        ):
            # The client holds the larger timeline still: a later larger limit up to
            # the old one has nothing more to send (as Synapse).
            key = RoomConfig(cfg.required_state, prev.timeline_limit).key()
        new_sent = SentRoom(to_stream, membership, key, lazy_sent)
        if not (initial or state_config_changed or expanded or events or required):
            return None, new_sent
        section = {
            "bump_stamp": bump,
            "limited": limited,
            "num_live": 0
            if since is None
            else sum(1 for ev in events if ev.stream_ordering > since.events),
            "prev_batch": (
                f"t{events[0].depth}-{events[0].stream_ordering - 1}" if events else f"s{to_stream}"
            ),
        }
        if initial:
            section["initial"] = True
        if expanded:
            section["unstable_expanded_timeline"] = True
        if events:
            # Serialised by ``_serialise_timelines``, with the bundled aggregations of
            # every room read at once (as /sync: events just sent have none yet).
            section["timeline"] = _Timeline(events, bundled=initial or limited)
        if required:
            section["required_state"] = [
                client_event(ev, req.user_id, req.device_id) for ev in required
            ]
        members_moved = any(ev.type == "m.room.member" for ev in (*events, *required))
        if (
            room is not None
            and membership == "join"
            and (initial or state_config_changed or members_moved)
        ):
            section["joined_count"] = len(room.joined_members())
            section["invited_count"] = len(room.members_with("invite"))
        if initial or state_config_changed or any(ev.is_state() for ev in events) or required:
            self._add_names(section, state_now, room, req.user_id)
        return section, new_sent

    @staticmethod
    def _add_names(
        section: JsonDict,
        state: Mapping[tuple[str, str], Event],
        room: LiveRoom | None,
        user_id: str,
    ) -> None:
        name_ev = state.get(("m.room.name", ""))
        name = name_ev.content.get("name") if name_ev is not None else None
        if isinstance(name, str) and name:
            section["name"] = name
        avatar_ev = state.get(("m.room.avatar", ""))
        avatar = avatar_ev.content.get("url") if avatar_ev is not None else None
        if isinstance(avatar, str) and avatar:
            section["avatar"] = avatar
        heroes = room_heroes(room, user_id) if room is not None else None
        if heroes:
            out = []
            for hero in heroes:
                entry: JsonDict = {"user_id": hero}
                member = state.get(("m.room.member", hero))
                if member is not None:
                    if isinstance(member.content.get("displayname"), str):
                        entry["displayname"] = member.content["displayname"]
                    if isinstance(member.content.get("avatar_url"), str):
                        entry["avatar_url"] = member.content["avatar_url"]
                out.append(entry)
            section["heroes"] = out

    async def _state_at(
        self, room: LiveRoom | None, room_id: str, membership: str, stream: int
    ) -> Mapping[tuple[str, str], Event]:
        """The room's state at ``stream``: memory while it is the current state."""
        if (
            room is not None
            and membership == "join"
            and all(ev.stream_ordering <= stream for ev in room.state.values())
        ):
            return room.state
        ids = await self._storage.state_groups.get_state_ids_at_stream(room_id, stream)
        events = await self._storage.events.get_events(ids.values())
        return {k: events[e] for k, e in ids.items() if e in events}

    async def _changed_state_keys(
        self,
        room_id: str,
        events: list[Event],
        limited: bool,
        from_stream: int,
        state_now: Mapping[tuple[str, str], Event],
    ) -> set[tuple[str, str]]:
        """State keys whose event changed since ``from_stream``: from the timeline when
        it holds every event since, else by comparing with the state then."""
        if not limited:
            return {ev.state_tuple for ev in events if ev.is_state()}
        before = await self._storage.state_groups.get_state_ids_at_stream(room_id, from_stream)
        return {
            k
            for k, ev in state_now.items()
            if before.get(k) != ev.event_id  # (removed keys cannot be sent as state)
        }

    async def _serialise_timelines(self, req: SlidingSyncRequest, rooms_out: JsonDict) -> None:
        timelines = [
            section["timeline"]
            for section in rooms_out.values()
            if isinstance(section.get("timeline"), _Timeline)
        ]
        bundles: dict[str, JsonDict] = {}
        wanted = [ev for t in timelines if t.bundled for ev in t.events]
        if wanted and self._sync.bundler is not None:
            bundles = await self._sync.bundler(wanted, req.user_id)
        for section in rooms_out.values():
            timeline = section.get("timeline")
            if isinstance(timeline, _Timeline):
                section["timeline"] = [
                    client_event(ev, req.user_id, req.device_id, bundles.get(ev.event_id))
                    for ev in timeline.events
                ]

    async def _add_counts(
        self,
        req: SlidingSyncRequest,
        candidates: dict[str, MembershipRow],
        rooms_out: JsonDict,
        now: SyncToken,
    ) -> None:
        """``notification_count`` / ``highlight_count`` of the joined rooms sent, from
        /sync's unread counts source."""
        joined = frozenset(r for r in rooms_out if candidates[r].membership == "join")
        for section in rooms_out.values():
            section.setdefault("notification_count", 0)
            section.setdefault("highlight_count", 0)
        if not joined:
            return
        ctx = SyncContext(
            user_id=req.user_id,
            device_id=req.device_id,
            joined_room_ids=joined,
            filters=_NO_FILTERS,
            initial=True,
        )
        fragment = await self._sync.source_updates("unread_counts", ctx, now, now)
        if fragment is None:
            return
        for room_id, fields in fragment.room_fields.items():
            counts = fields.get("unread_notifications", {})
            if room_id in rooms_out:
                rooms_out[room_id]["notification_count"] = counts.get("notification_count", 0)
                rooms_out[room_id]["highlight_count"] = counts.get("highlight_count", 0)
