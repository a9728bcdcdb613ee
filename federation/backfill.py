"""Client-side backfill: older history of a room, fetched from another server.

When /messages runs out of events before a gap (a backward extremity: a prev event we do
not hold in the timeline, typically everything before our join), ``RoomHistory`` asks
``FederationBackfiller.backfill``. It asks the other servers in the room, one at a time
and each within ``timeout_s``, for ``GET /_matrix/federation/v1/backfill``, and stores
what comes back as history.

Invariants:
- Each PDU passes the checks of any other ingested event: format, signatures, hashes
  (``check_pdu``), then the auth rules against its auth events and against the state
  before it (failing either: stored rejected, never shown). There is no soft-fail check:
  the current state says nothing about history.
- Backfilled events get negative stream orderings and go straight to the store
  (``RoomWriter.persist_backfilled``), not through the persister: no /sync window ever
  includes them, nothing is fanned out (push, application services, federation), and
  the room's current state, forward extremities and ``LiveRoom`` are never touched.
- An event we already hold as an outlier (state from our send_join) is moved into the
  timeline, so /messages shows it too.
- Work on a room's graph happens under ``RoomCache.lock(room_id)``, like inbound PDUs;
  no request to another server is made while that lock is held (local sends and
  inbound PDUs of the room wait on it). Everything remote — the ``/backfill`` itself,
  signature keys, ``/state_ids`` at a gap below the batch, auth chains — is fetched
  first (``_prefetch``); under the lock it is checked again against what we hold by
  then (a gap filled meanwhile uses our own state) and stored. An event whose state
  could not be fetched is left for a later backfill (the gap stays).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from crypto.event_hashing import compute_event_id
from federation.acl import server_allowed_by_acl
from federation.event_auth_checks import PduRejected, auth_failure, check_pdu, redact_power_at
from federation.interfaces import FederationClient, FederationRequestError
from federation.room_events import (
    FederationEventHandler,
    RemoteState,
    quote,
    server_of_sender,
)
from homeserver.clock import Clock
from homeserver.events.auth_rules import auth_types_for_event
from homeserver.events.event import Event
from homeserver.events.format import event_reference_ids
from homeserver.events.room_versions import RoomVersion
from homeserver.events.state_res import StateResolutionError
from homeserver.rooms.room_cache import LiveRoom, RoomCache, pdu_with_id
from homeserver.rooms.writer import RoomWriter
from storage.events import EventsStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
StateKey = tuple[str, str]
StateIds = dict[StateKey, str]

MAX_BACKFILL = 100
MIN_BACKFILL = 20
MAX_SERVERS_TRIED = 3
# After a backfill of a room that got nothing, /messages does not ask again for this
# long: a page at an unfillable gap must not wait on remote servers every time.
FAILURE_BACKOFF_S = 60.0


@dataclass
class _Prefetched:
    """What was fetched from the other server before taking the room lock."""

    # Gap (prev event neither in the batch nor held) -> the state after it, as told.
    states: dict[str, RemoteState] = field(default_factory=dict)
    # Event id -> its auth chain, for events whose auth events we lacked.
    auth_chains: dict[str, list[JsonDict]] = field(default_factory=dict)
    # Gaps whose state is stored already in this run (by store_remote_state).
    stored_states: dict[str, StateIds] = field(default_factory=dict)


class FederationBackfiller:
    def __init__(
        self,
        server_name: str,
        clock: Clock,
        rooms: RoomCache,
        events: EventsStore,
        writer: RoomWriter,
        handler: FederationEventHandler,
        client: FederationClient,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._server_name = server_name
        self._clock = clock
        self._rooms = rooms
        self._events = events
        self._writer = writer
        # Read only: waiting for accepted events to commit.
        self._persister = writer.persister
        self._handler = handler
        self._client = client
        self._timeout_s = timeout_s
        # One backfill per room at a time; a second caller waits, then finds the gap
        # filled (or tries again).
        self._locks: dict[str, defer.DeferredLock] = {}
        self._failed_at: dict[str, float] = {}

    async def backfill(self, room_id: str, extremities: list[str], limit: int) -> bool:
        lock = self._locks.setdefault(room_id, defer.DeferredLock())
        await lock.acquire()
        try:
            held = await self._events.have_timeline_events(extremities)
            if held:
                # Filled while we waited for another caller's backfill.
                return True
            failed_at = self._failed_at.get(room_id)
            if failed_at is not None and self._clock.seconds() - failed_at < FAILURE_BACKOFF_S:
                return False
            if await self._backfill(room_id, extremities, limit):
                self._failed_at.pop(room_id, None)
                return True
            self._failed_at[room_id] = self._clock.seconds()
            return False
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(room_id, None)

    def servers_to_try(self, room: LiveRoom) -> list[str]:
        """Other servers with joined users, the longest in the room first (as Synapse:
        they are the likeliest to hold old history)."""
        first_join: dict[str, int] = {}
        for (etype, user_id), ev in room.state.items():
            if etype != "m.room.member" or ev.membership != "join" or ":" not in user_id:
                continue
            server = user_id.split(":", 1)[1]
            if server != self._server_name:
                first_join[server] = min(first_join.get(server, ev.depth), ev.depth)
        return sorted(first_join, key=lambda s: (first_join[s], s))[:MAX_SERVERS_TRIED]

    async def _backfill(self, room_id: str, extremities: list[str], limit: int) -> bool:
        room = await self._rooms.get(room_id)
        if room is None:
            return False
        wanted = min(max(limit, MIN_BACKFILL), MAX_BACKFILL)
        for server in self.servers_to_try(room):
            try:
                resp = await self._client.get_json(
                    server,
                    f"/_matrix/federation/v1/backfill/{quote(room_id)}",
                    {"v": list(extremities), "limit": str(wanted)},
                    timeout_s=self._timeout_s,
                )
            except FederationRequestError as e:
                logger.info("Backfill of %s from %s failed: %s", room_id, server, e)
                continue
            except Exception as e:  # timeouts, connection errors
                logger.info("Backfill of %s from %s failed: %r", room_id, server, e)
                continue
            pdus = resp.get("pdus") if isinstance(resp, dict) else None
            if not isinstance(pdus, list) or not pdus:
                continue
            pdus = [p for p in pdus if isinstance(p, dict)][:MAX_BACKFILL]
            checked = await self._check(server, room, pdus)
            prefetched = await self._prefetch(server, room.room_version, room_id, checked)
            lock = self._rooms.lock(room_id)
            await lock.acquire()
            try:
                room = self._rooms.get_if_loaded(room_id) or room
                stored = await self._ingest(room, checked, prefetched)
            finally:
                lock.release()
            if stored:
                logger.info("Backfilled %d events of %s from %s", stored, room_id, server)
                return True
        return False

    async def _check(
        self, origin: str, room: LiveRoom, pdus: list[JsonDict]
    ) -> dict[str, JsonDict]:
        """The PDUs of this room that pass format, signature and hash checks, by id
        (signature keys may be fetched: no lock held)."""
        version = room.room_version
        acl = room.state_content("m.room.server_acl")
        checked: dict[str, JsonDict] = {}
        for pdu in pdus:
            # A room version 12 create event has no room_id (checked by its id below).
            if pdu.get("room_id", room.room_id) != room.room_id:
                continue
            if not server_allowed_by_acl(server_of_sender(pdu), acl):
                continue
            try:
                ok = await check_pdu(pdu, version, self._handler.keyring)
            except PduRejected as e:
                logger.info("Dropping backfilled event from %s: %s", origin, e)
                continue
            event_id = compute_event_id(ok, version)
            if "room_id" not in ok and "!" + event_id[1:] != room.room_id:
                continue
            checked[event_id] = ok
        return checked

    async def _prefetch(
        self, origin: str, version: RoomVersion, room_id: str, checked: dict[str, JsonDict]
    ) -> _Prefetched:
        """Fetch, before taking the room lock, the state at each gap below the batch
        and the auth chains we lack. Requests and reads only: nothing is stored."""
        out = _Prefetched()
        held = await self._events.have_timeline_events(checked)
        todo = [eid for eid in checked if eid not in held]
        prevs = {p for eid in todo for p in _prev_ids(checked[eid]) if p not in checked}
        # A prev a purge took out of the timeline keeps its state: no need to ask.
        held_prevs = await self._events.have_state_after(prevs) if prevs else set()
        held_prevs |= await self._events.have_timeline_events(prevs - held_prevs)
        for prev in sorted(prevs - held_prevs):
            remote = await self._handler.fetch_remote_state(origin, room_id, prev)
            if remote is not None:
                out.states[prev] = remote
        # Auth events we will hold once the batch and the chains fetched so far are
        # stored: events of one batch mostly share theirs, one request covers them.
        auth_ids = {a for eid in todo for a in _auth_ids(checked[eid])}
        covered = set(checked) | (await self._events.have_events(auth_ids) if auth_ids else set())
        for remote in out.states.values():
            covered |= _ids_of(remote.pdus, version)
        for eid in sorted(todo, key=lambda e: (_depth(checked[e]), e)):
            if all(a in covered for a in _auth_ids(checked[eid])):
                continue
            chain = await self._handler.fetch_auth_chain(origin, room_id, eid, checked[eid])
            if chain:
                out.auth_chains[eid] = chain
                covered |= _ids_of(chain, version)
        return out

    async def _ingest(
        self, room: LiveRoom, checked: dict[str, JsonDict], prefetched: _Prefetched
    ) -> int:
        """Store the checked PDUs as history, oldest first; the room lock is held."""
        version = room.room_version
        # Outlier copies (e.g. from our join) must be committed before we replace them.
        await self._persister.wait_idle()
        held = await self._events.have_timeline_events(checked)  # again: under the lock
        todo = sorted(
            (eid for eid in checked if eid not in held),
            key=lambda e: (_depth(checked[e]), e),
        )
        # State groups of the events stored in this run: a chain of history reuses
        # them as deltas instead of writing the whole state for every event.
        groups: dict[str, tuple[int, int, StateIds]] = {}
        stored = 0
        for eid in todo:
            if await self._store_one(version, room, eid, checked[eid], groups, prefetched):
                stored += 1
        return stored

    async def _state_before(
        self,
        version: RoomVersion,
        room_id: str,
        prevs: list[str],
        groups: dict[str, tuple[int, int, StateIds]],
        prefetched: _Prefetched,
    ) -> StateIds | None:
        if not prevs:
            return {}  # the create event
        unseen = [p for p in prevs if p not in groups]
        held = await self._events.have_state_after(unseen)
        held |= await self._events.have_timeline_events(p for p in unseen if p not in held)
        sets: list[StateIds] = []
        for prev in prevs:
            state: StateIds | None
            if prev in groups:
                state = groups[prev][2]
            elif prev in held:
                # Ours (also when the gap was filled since the prefetch, or a purge
                # took it out of the timeline but kept its state).
                try:
                    state = await self._handler.state_after_event(room_id, prev)
                except StateResolutionError:
                    return None
            elif prev in prefetched.stored_states:
                state = prefetched.stored_states[prev]
            elif prev in prefetched.states:
                # Still a gap below this event: the state there, as fetched.
                state = await self._handler.store_remote_state(version, prefetched.states[prev])
                prefetched.stored_states[prev] = state
            else:
                state = None  # not fetched (failed, or a batch event left unstored)
            if state is not None:
                sets.append(state)
        if not sets:
            return None
        try:
            return await self._handler.resolve(version, room_id, sets)
        except StateResolutionError:
            return None  # left for a later backfill, like an event without state

    async def _store_one(
        self,
        version: RoomVersion,
        room: LiveRoom,
        event_id: str,
        pdu: JsonDict,
        groups: dict[str, tuple[int, int, StateIds]],
        prefetched: _Prefetched,
    ) -> bool:
        room_id = room.room_id
        prevs = _prev_ids(pdu)
        state_before = await self._state_before(version, room_id, prevs, groups, prefetched)
        if state_before is None:
            logger.info("No state before backfilled %s; dropping it", event_id)
            return False
        chain = prefetched.auth_chains.get(event_id)
        if chain:
            await self._handler.store_outliers(version, chain)  # what is held is skipped
        auth_ids = _auth_ids(pdu)
        loaded = await self._handler.get_events([*state_before.values(), *auth_ids])
        create = room.create_event
        create_json = pdu_with_id(create) if create is not None else None
        full = {**pdu, "event_id": event_id}
        auth_state: dict[StateKey, JsonDict] = {}
        for auth_id in auth_ids:
            auth = loaded.get(auth_id)
            if auth is not None and auth.is_state():
                auth_state[auth.state_tuple] = pdu_with_id(auth)
        reason = auth_failure(full, auth_state, version, create_json)
        redact_power = False
        if reason is None:
            wanted = auth_types_for_event(pdu, version)
            before = {
                key: pdu_with_id(loaded[eid])
                for key, eid in state_before.items()
                if key in wanted and eid in loaded
            }
            reason = auth_failure(full, before, version, create_json)
            redact_power = redact_power_at(full, (auth_state, before), version, create_json)
        event = Event(
            event_id=event_id,
            pdu=pdu,
            room_version=version,
            rejected_reason=reason,
            sender_had_redact_power=redact_power,
        )
        reuse = groups.get(prevs[0]) if len(prevs) == 1 else None
        groups[event_id] = await self._writer.persist_backfilled(event, state_before, reuse)
        return reason is None


def _ids_of(pdus: list[JsonDict], version: RoomVersion) -> set[str]:
    """Ids of fetched (not yet checked) PDUs; one too malformed for an id is skipped."""
    ids = set()
    for pdu in pdus:
        try:
            ids.add(compute_event_id(pdu, version))
        except Exception:
            continue
    return ids


def _auth_ids(pdu: JsonDict) -> list[str]:
    return event_reference_ids(pdu.get("auth_events"))


def _prev_ids(pdu: JsonDict) -> list[str]:
    return event_reference_ids(pdu.get("prev_events"))


def _depth(pdu: JsonDict) -> int:
    depth = pdu.get("depth")
    return depth if isinstance(depth, int) else 0
