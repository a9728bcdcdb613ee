"""Events from other servers into our copy of a room's graph.

Invariants:
- Every change to a room's graph (extremities, current state) happens while holding
  ``RoomCache.lock(room_id)``; this module decides (auth, soft-fail, state) and the
  room writer (``homeserver/rooms/writer.py``) updates the in-memory ``LiveRoom`` and
  queues the event in one synchronous step, as for local events.
- A PDU is checked in the spec's order: format, signatures, hashes (bad hash: keep the
  redacted form), auth against its auth events (fail: rejected), against the state
  before it (fail: rejected), against the current state (fail: soft-failed — stored,
  usable as a prev event, but not shown and not part of current state).
- State before an event is the state after its prev events, resolved with the room
  version's state resolution when there are several.
- A resolution sees every event it needs that we hold: committed, still queued in the
  persister, or in hand (the event being processed). If it fails, the event is
  postponed: nothing of it is applied or queued; one side is never kept at random.
- Only events in the timeline (committed or queued) are prev events with a state; an
  event held as an outlier is still processed when it arrives live, replacing the
  outlier copy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from crypto.event_hashing import compute_event_id
from federation.acl import server_allowed_by_acl
from federation.event_auth_checks import PduRejected, auth_failure, check_pdu, redact_power_at
from federation.interfaces import FederationClient, FederationRequestError, Keyring
from homeserver.events.auth_rules import auth_types_for_event
from homeserver.events.event import Event
from homeserver.events.format import event_reference_ids
from homeserver.events.room_versions import RoomVersion, get_room_version
from homeserver.events.state_res import StateResolutionError, resolve_state
from homeserver.rooms.room_cache import LiveRoom, RoomCache, pdu_with_id
from homeserver.rooms.writer import RoomWriter
from storage.events import EventsStore
from storage.rooms import RoomsStore
from storage.state_groups import StateGroupStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
StateKey = tuple[str, str]
StateIds = dict[StateKey, str]

SOFT_FAILED = "soft_failed"
MAX_MISSING_EVENTS = 20


@dataclass(frozen=True, slots=True)
class RemoteState:
    """What another server said about the state after an event we do not hold
    (``/state_ids`` and ``/event``), fetched without holding any lock; nothing of it
    is stored until ``store_remote_state``."""

    prev_id: str
    pdu_ids: list[str]
    prev_pdu: JsonDict | None
    # The state and auth chain events we did not hold when fetching.
    pdus: list[JsonDict]


@dataclass(slots=True)
class Prefetched:
    """Answers fetched for an inbound PDU before its room lock is taken."""

    # Missing prev events (checked, oldest first) processed before the PDU.
    missing: list[tuple[str, JsonDict]] = field(default_factory=list)
    # The state after prev events below the fetched ones that we still lack.
    states: dict[str, RemoteState] = field(default_factory=dict)
    # Auth chains of events (the PDU's and the missing ones') whose auth events we lack.
    auth_chains: dict[str, list[JsonDict]] = field(default_factory=dict)


def quote(value: str) -> str:
    from urllib.parse import quote as _quote

    return _quote(value, safe="")


class FederationEventHandler:
    def __init__(
        self,
        server_name: str,
        rooms: RoomCache,
        events: EventsStore,
        state_groups: StateGroupStore,
        rooms_store: RoomsStore,
        writer: RoomWriter,
        client: FederationClient,
        keyring: Keyring,
    ) -> None:
        self.server_name = server_name
        self._rooms = rooms
        self._events = events
        self._state_groups = state_groups
        self._rooms_store = rooms_store
        self._writer = writer
        # Read only: what is accepted but not committed yet, and waiting for it.
        self._persister = writer.persister
        self._client = client
        self._keyring = keyring

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    # Reads that also see accepted events the persister has not committed yet.

    async def _have(self, event_ids: Iterable[str]) -> set[str]:
        ids = list(event_ids)
        pending = {e for e in ids if e in self._persister.pending}
        rest = [e for e in ids if e not in pending]
        return pending | (await self._events.have_events(rest) if rest else set())

    async def _in_timeline(self, event_ids: Iterable[str]) -> set[str]:
        """Those held in the room's timeline (committed or queued). An event held only
        as an outlier (from an auth chain or a remote state) has no state of its own:
        as a prev event it is missing, and it is still to be processed when it comes."""
        ids = list(event_ids)
        pending = {
            e
            for e in ids
            if e in self._persister.pending and not self._persister.pending[e].outlier
        }
        rest = [e for e in ids if e not in pending]
        held = await self._events.have_events(rest, timeline_only=True) if rest else set()
        return pending | held

    async def _get(self, event_ids: Iterable[str]) -> dict[str, Event]:
        ids = list(event_ids)
        found = {e: self._persister.pending[e] for e in ids if e in self._persister.pending}
        rest = [e for e in ids if e not in found]
        if rest:
            found.update(await self._events.get_events(rest))
        return found

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """Stored or accepted-but-uncommitted events, by id."""
        return await self._get(event_ids)

    async def _chain(self, event_ids: Iterable[str], include_given: bool = False) -> set[str]:
        """Auth chain, following pending events' auth events too."""
        given = set(event_ids)
        frontier = set(given)
        from_pending: set[str] = set()
        while True:
            pending = [self._persister.pending[e] for e in frontier if e in self._persister.pending]
            if not pending:
                break
            frontier = {a for ev in pending for a in ev.auth_event_ids} - from_pending - given
            from_pending |= frontier
        seeds = (given | from_pending) - set(self._persister.pending)
        chain = await self._events.get_auth_chain_ids(seeds, include_given=True) if seeds else set()
        chain |= from_pending
        return chain | given if include_given else chain - given

    async def process_locked(
        self, origin: str, version: RoomVersion, event_id: str, pdu: JsonDict
    ) -> Event | None:
        """Process a checked PDU; the caller holds the room lock."""
        if await self._in_timeline([event_id]):
            return (await self._get([event_id])).get(event_id)
        return await self._process(origin, version, event_id, pdu, depth_budget=MAX_MISSING_EVENTS)

    async def state_before_prevs(self, room_id: str, pdu: JsonDict) -> StateIds:
        """The resolved state after the PDU's prev events that we hold."""
        room = await self._rooms.get(room_id)
        assert room is not None
        prevs = event_reference_ids(pdu.get("prev_events"))
        known = await self._in_timeline(prevs)
        sets = [await self.state_after_event(room_id, p) for p in prevs if p in known]
        if not sets:
            return {key: ev.event_id for key, ev in room.state.items()}
        return await self.resolve(room.room_version, room_id, sets)

    async def store_remote_invite(
        self, version: RoomVersion, pdu: JsonDict, stripped: list[JsonDict]
    ) -> Event:
        """Remember an invite of a local user to a room we do not hold (or do)."""
        room_id = str(pdu["room_id"])
        event_id = compute_event_id(pdu, version)
        room = await self._rooms.get(room_id)
        if room is not None:
            lock = self._rooms.lock(room_id)
            await lock.acquire()
            try:
                event = await self._process(server_of_sender(pdu), version, event_id, pdu, 0)
            finally:
                lock.release()
            if event is not None:
                return event
        create = next((s for s in stripped if s.get("type") == "m.room.create"), None)
        await self._rooms_store.ensure(
            room_id, version.identifier, str(create.get("sender")) if create else None
        )
        event = Event(event_id=event_id, pdu=pdu, room_version=version, outlier=True)
        await self._writer.persist_outlier(
            event,
            out_of_band_stripped_state=[
                *stripped,
                {
                    "type": "m.room.member",
                    "state_key": pdu.get("state_key"),
                    "sender": pdu.get("sender"),
                    "content": pdu.get("content", {}),
                },
            ],
        )
        return event

    async def record_remote_leave(self, version: RoomVersion, pdu: JsonDict) -> None:
        """Our user left (rejected an invite to) a room we do not hold."""
        event = Event(
            event_id=compute_event_id(pdu, version), pdu=pdu, room_version=version, outlier=True
        )
        await self._writer.persist_outlier(event, out_of_band_stripped_state=[])

    # Inbound PDUs ---------------------------------------------------------------

    async def on_receive_pdu(self, origin: str, pdu: JsonDict) -> str | None:
        room_id = pdu.get("room_id")
        if not isinstance(room_id, str):
            return "PDU has no room_id"
        room = await self._rooms.get(room_id)
        if room is None:
            return f"Unknown room {room_id}"
        acl = room.state_content("m.room.server_acl")
        sender_server = server_of_sender(pdu)
        if not server_allowed_by_acl(origin, acl) or not server_allowed_by_acl(sender_server, acl):
            return "Server is banned from this room by its server ACL"
        version = room.room_version
        try:
            event_id = compute_event_id(pdu, version)
        except (ValueError, TypeError):
            return "PDU has no valid event id"
        if await self._in_timeline([event_id]):
            return None
        try:
            checked = await check_pdu(pdu, version, self._keyring)
        except PduRejected as e:
            return str(e)
        # Requests first, without the lock: sends and other servers' events in the room
        # go on while a gap is filled. Under the lock nothing is asked of anyone unless
        # the room moved meanwhile (then the old path asks, as a fallback).
        fetched = await self._prefetch(origin, version, room_id, event_id, checked)
        lock = self._rooms.lock(room_id)
        await lock.acquire()
        try:
            for missing_id, missing_pdu in fetched.missing:
                if not await self._in_timeline([missing_id]):
                    await self._process(origin, version, missing_id, missing_pdu, 0, fetched)
            await self._process(
                origin, version, event_id, checked, depth_budget=MAX_MISSING_EVENTS, fetched=fetched
            )
        finally:
            lock.release()
        return None

    async def _prefetch(
        self, origin: str, version: RoomVersion, room_id: str, event_id: str, pdu: JsonDict
    ) -> Prefetched:
        """What processing ``pdu`` will need from ``origin``, asked for now (no writes):
        its missing prev events (one /get_missing_events), the state at each prev event
        still unknown below them (/state_ids), and missing auth chains (/event_auth)."""
        fetched = Prefetched()
        prevs = event_reference_ids(pdu.get("prev_events"))
        known = await self._in_timeline(prevs)
        if any(p not in known for p in prevs):
            fetched.missing = await self._fetch_missing(origin, version, room_id, event_id, pdu)
        todo = [*fetched.missing, (event_id, pdu)]
        arriving = {eid for eid, _ in todo}
        for eid, one in todo:
            one_prevs = event_reference_ids(one.get("prev_events"))
            held = await self._in_timeline(one_prevs)
            for prev in one_prevs:
                if prev in held or prev in arriving or prev in fetched.states:
                    continue
                remote = await self.fetch_remote_state(origin, room_id, prev)
                if remote is not None:
                    fetched.states[prev] = remote
            chain = await self.fetch_auth_chain(origin, room_id, eid, one)
            if chain:
                fetched.auth_chains[eid] = chain
        return fetched

    async def _process(
        self,
        origin: str,
        version: RoomVersion,
        event_id: str,
        pdu: JsonDict,
        depth_budget: int,
        fetched: Prefetched | None = None,
    ) -> Event | None:
        """Process a checked PDU of a room we hold; the room lock must be held.

        What ``fetched`` holds is used instead of asking; without it (or for what it
        lacks) the requests are made here, under the lock."""
        room_id = str(pdu["room_id"])
        prevs = event_reference_ids(pdu.get("prev_events"))
        known = await self._in_timeline(prevs)
        missing = [p for p in prevs if p not in known]
        if missing and depth_budget > 0 and fetched is None:
            await self._fetch_missing_prevs(origin, version, room_id, event_id, pdu, depth_budget)
            known = await self._in_timeline(prevs)
            missing = [p for p in prevs if p not in known]
        try:
            state_sets: list[StateIds] = []
            for prev in prevs:
                state: StateIds | None
                if prev in known:
                    state = await self.state_after_event(room_id, prev)
                elif fetched is not None and prev in fetched.states:
                    state = await self.store_remote_state(version, fetched.states[prev])
                else:
                    state = await self.fetch_state_after(origin, version, room_id, prev)
                if state is not None:
                    state_sets.append(state)
            if not state_sets:
                logger.warning("No state for prev events of %s; dropping it", event_id)
                return None
            if fetched is not None and event_id in fetched.auth_chains:
                await self.store_outliers(version, fetched.auth_chains[event_id])
            await self.ensure_auth_events(origin, version, room_id, event_id, pdu)
            state_before = await self.resolve(version, room_id, state_sets)
            return await self._persist_event(version, event_id, pdu, state_before)
        except StateResolutionError:
            # Nothing was applied or queued: the event is postponed, not persisted on
            # an arbitrary state; a later event citing it fetches it again.
            logger.warning("Postponing %s: no state could be resolved for it", event_id)
            return None

    async def _fetch_missing(
        self, origin: str, version: RoomVersion, room_id: str, event_id: str, pdu: JsonDict
    ) -> list[tuple[str, JsonDict]]:
        """The events between our extremities and ``pdu`` (/get_missing_events, at most
        10), checked, oldest first; those we hold are left out."""
        room = await self._rooms.get(room_id)
        earliest = room.extremities if room is not None else []
        try:
            resp = await self._client.post_json(
                origin,
                f"/_matrix/federation/v1/get_missing_events/{quote(room_id)}",
                {
                    "earliest_events": earliest,
                    "latest_events": [event_id],
                    "limit": 10,
                    "min_depth": max(0, int(pdu.get("depth", 0)) - 20),
                },
            )
        except FederationRequestError as e:
            logger.info("get_missing_events from %s failed: %s", origin, e)
            return []
        events = resp.get("events", []) if isinstance(resp, dict) else []
        events = sorted(
            (m for m in events if isinstance(m, dict)), key=lambda m: int(m.get("depth", 0))
        )
        out: list[tuple[str, JsonDict]] = []
        for m in events:
            try:
                checked = await check_pdu(m, version, self._keyring)
            except PduRejected as e:
                logger.info("Dropping missing event from %s: %s", origin, e)
                continue
            mid = compute_event_id(checked, version)
            # Held as outliers: history from before our join, not to replay as live.
            if mid != event_id and not await self._have([mid]):
                out.append((mid, checked))
        return out

    async def _fetch_missing_prevs(
        self,
        origin: str,
        version: RoomVersion,
        room_id: str,
        event_id: str,
        pdu: JsonDict,
        budget: int,
    ) -> None:
        for missing_id, checked in await self._fetch_missing(
            origin, version, room_id, event_id, pdu
        ):
            if not await self._in_timeline([missing_id]):
                await self._process(origin, version, missing_id, checked, depth_budget=budget - 1)

    async def fetch_state_after(
        self, origin: str, version: RoomVersion, room_id: str, prev_id: str
    ) -> StateIds | None:
        """State after an event we do not have, asked from ``origin`` (/state_ids)."""
        remote = await self.fetch_remote_state(origin, room_id, prev_id)
        if remote is None:
            return None
        return await self.store_remote_state(version, remote)

    async def fetch_remote_state(
        self, origin: str, room_id: str, prev_id: str
    ) -> RemoteState | None:
        """Requests only (``/state_ids``, then ``/event`` for what we lack): no writes,
        so no lock is needed."""
        try:
            resp = await self._client.get_json(
                origin,
                f"/_matrix/federation/v1/state_ids/{quote(room_id)}",
                {"event_id": prev_id},
            )
            prev_pdu = await self._fetch_event(origin, prev_id)
        except FederationRequestError as e:
            logger.info("state_ids from %s failed: %s", origin, e)
            return None
        pdu_ids = [i for i in resp.get("pdu_ids", []) if isinstance(i, str)]
        auth_ids = [i for i in resp.get("auth_chain_ids", []) if isinstance(i, str)]
        pdus = await self.fetch_missing_events(origin, [*auth_ids, *pdu_ids])
        return RemoteState(prev_id, pdu_ids, prev_pdu, pdus)

    async def store_remote_state(self, version: RoomVersion, remote: RemoteState) -> StateIds:
        """Store what ``fetch_remote_state`` got (as outliers: each is checked, what is
        held by now is skipped) and return the state after ``remote.prev_id``."""
        await self.store_outliers(version, remote.pdus)
        state_events = await self._get(remote.pdu_ids)
        state: StateIds = {ev.state_tuple: ev.event_id for ev in state_events.values()}
        prev_pdu = remote.prev_pdu
        if prev_pdu is not None:
            await self.store_outliers(version, [prev_pdu])
            if "state_key" in prev_pdu:
                state[(str(prev_pdu["type"]), str(prev_pdu["state_key"]))] = remote.prev_id
        return state

    async def _fetch_event(self, origin: str, event_id: str) -> JsonDict | None:
        resp = await self._client.get_json(
            origin, f"/_matrix/federation/v1/event/{quote(event_id)}"
        )
        pdus = resp.get("pdus", [])
        return pdus[0] if pdus and isinstance(pdus[0], dict) else None

    async def fetch_missing_events(self, origin: str, event_ids: Iterable[str]) -> list[JsonDict]:
        """The events among ``event_ids`` we do not hold, fetched one by one (unchecked)."""
        wanted = list(dict.fromkeys(event_ids))
        have = await self._have(wanted)
        pdus = []
        for event_id in wanted:
            if event_id in have:
                continue
            try:
                pdu = await self._fetch_event(origin, event_id)
            except FederationRequestError as e:
                logger.info("Could not fetch %s from %s: %s", event_id, origin, e)
                continue
            if pdu is not None:
                pdus.append(pdu)
        return pdus

    async def fetch_and_store_outliers(
        self, origin: str, version: RoomVersion, room_id: str, event_ids: Iterable[str]
    ) -> None:
        await self.store_outliers(version, await self.fetch_missing_events(origin, event_ids))

    async def ensure_auth_events(
        self, origin: str, version: RoomVersion, room_id: str, event_id: str, pdu: JsonDict
    ) -> None:
        chain = await self.fetch_auth_chain(origin, room_id, event_id, pdu)
        if chain:
            await self.store_outliers(version, chain)

    async def fetch_auth_chain(
        self, origin: str, room_id: str, event_id: str, pdu: JsonDict
    ) -> list[JsonDict]:
        """The PDU's auth chain from ``origin`` if we lack any of its auth events (else
        nothing); a request only, no writes."""
        auth_ids = event_reference_ids(pdu.get("auth_events"))
        have = await self._have(auth_ids)
        if all(a in have for a in auth_ids):
            return []
        try:
            resp = await self._client.get_json(
                origin, f"/_matrix/federation/v1/event_auth/{quote(room_id)}/{quote(event_id)}"
            )
        except FederationRequestError as e:
            logger.info("event_auth from %s failed: %s", origin, e)
            return []
        return [p for p in resp.get("auth_chain", []) if isinstance(p, dict)]

    async def store_outliers(self, version: RoomVersion, pdus: list[JsonDict]) -> list[Event]:
        """Check and store events outside the timeline (auth chains, state from joins).

        Each must pass the signature checks and the auth rules against its own auth
        events (checked in depth order, so an event's auth events come first).
        """
        by_id: dict[str, JsonDict] = {}
        for pdu in pdus:
            try:
                checked = await check_pdu(pdu, version, self._keyring)
            except PduRejected as e:
                logger.info("Dropping outlier: %s", e)
                continue
            by_id[compute_event_id(checked, version)] = checked
        have = await self._have(by_id)
        stored: list[Event] = []
        pending = sorted(
            (eid for eid in by_id if eid not in have), key=lambda e: int(by_id[e].get("depth", 0))
        )
        known: dict[str, JsonDict] = {}
        if pending:
            needed = {a for e in pending for a in event_reference_ids(by_id[e].get("auth_events"))}
            for ev in (await self._get(needed)).values():
                known[ev.event_id] = pdu_with_id(ev)
        for eid in pending:
            pdu = by_id[eid]
            full = {**pdu, "event_id": eid}
            auth_state: dict[StateKey, JsonDict] = {}
            for auth_id in event_reference_ids(pdu.get("auth_events")):
                auth = known.get(auth_id) or (
                    {**by_id[auth_id], "event_id": auth_id} if auth_id in by_id else None
                )
                if auth is not None and "state_key" in auth:
                    auth_state[(str(auth["type"]), str(auth["state_key"]))] = auth
            create = auth_state.get(("m.room.create", ""))
            if create is None and pdu.get("type") == "m.room.create":
                create = full
            if create is None and version.room_id_is_create_event_hash:
                create_id = "$" + str(pdu.get("room_id", "!"))[1:]
                create = known.get(create_id) or (
                    {**by_id[create_id], "event_id": create_id} if create_id in by_id else None
                )
            reason = auth_failure(full, auth_state, version, create)
            ev = Event(
                event_id=eid,
                pdu=pdu,
                room_version=version,
                outlier=True,
                rejected_reason=reason,
                sender_had_redact_power=redact_power_at(full, (auth_state,), version, create),
            )
            known[eid] = full
            stored.append(ev)
        # Enqueued together, so the persister commits them in a few large batches.
        waits = [self._writer.persist_outlier(ev) for ev in stored]
        if waits:
            await defer.gatherResults(waits, consumeErrors=True)
        return stored

    # State -------------------------------------------------------------------------

    async def state_after_event(self, room_id: str, event_id: str) -> StateIds:
        room = self._rooms.get_if_loaded(room_id)
        if room is not None and room.extremities == [event_id]:
            return {key: ev.event_id for key, ev in room.state.items()}
        state = await self._state_groups.get_state_ids_at_event(event_id)
        if state is None:
            await self._persister.wait_idle()
            state = await self._state_groups.get_state_ids_at_event(event_id)
        if state is None:
            # Never an empty state set: that would conflict every key in a resolution.
            raise StateResolutionError(f"no state known after {event_id}", event_id)
        return dict(state)

    async def resolve(
        self,
        version: RoomVersion,
        room_id: str,
        state_sets: list[StateIds],
        in_hand: Iterable[Event] = (),
    ) -> StateIds:
        """Resolve ``state_sets`` over every event they need: stored, still queued in the
        persister, or ``in_hand`` (the event being processed, not queued yet).

        An event that cannot be had at all is left out, as Synapse does (an unknown
        event is not part of the conflicted set or the auth difference) and logged.
        Raises ``StateResolutionError`` when the resolution itself fails: the caller must
        then not persist anything built on it (never keep one side at random).
        """
        unique = [dict(s) for s in {tuple(sorted(s.items())): s for s in state_sets}.values()]
        if len(unique) == 1:
            return unique[0]
        extra = {ev.event_id: ev for ev in in_hand}
        ids = {eid for s in unique for eid in s.values()}
        seeds = (ids - extra.keys()) | {a for ev in extra.values() for a in ev.auth_event_ids}
        chain = await self._chain(seeds, include_given=True)
        events = await self._get((chain | ids) - extra.keys())
        events.update(extra)
        unavailable = (chain | ids) - events.keys()
        if unavailable:
            logger.warning(
                "State resolution in %s: %d events unavailable, left out as unknown: %s",
                room_id,
                len(unavailable),
                sorted(unavailable)[:10],
            )
        event_map = {eid: pdu_with_id(ev) for eid, ev in events.items()}
        create = None
        for s in unique:
            cid = s.get(("m.room.create", ""))
            if cid and cid in event_map:
                create = event_map[cid]
        rejected = frozenset(
            e
            for e, ev in events.items()
            if ev.rejected_reason and ev.rejected_reason != SOFT_FAILED
        )
        try:
            return dict(
                resolve_state(
                    version, unique, event_map, create_event=create, rejected_event_ids=rejected
                )
            )
        except StateResolutionError as e:
            logger.warning("State resolution in %s failed: %s", room_id, e)
            raise

    # Persisting ------------------------------------------------------------------------

    async def _persist_event(
        self,
        version: RoomVersion,
        event_id: str,
        pdu: JsonDict,
        state_before: StateIds,
        *,
        write_full_state: bool = False,
    ) -> Event:
        room_id = str(pdu["room_id"])
        room = await self._rooms.get(room_id)
        assert room is not None
        held_as_outlier = bool(await self._have([event_id]))
        needed = set(state_before.values()) | set(event_reference_ids(pdu.get("auth_events")))
        loaded = await self._get(needed)
        create = room.create_event
        create_json = pdu_with_id(create) if create is not None else None
        full = {**pdu, "event_id": event_id}

        auth_state: dict[StateKey, JsonDict] = {}
        for auth_id in event_reference_ids(pdu.get("auth_events")):
            ev = loaded.get(auth_id)
            if ev is not None and ev.is_state():
                auth_state[ev.state_tuple] = pdu_with_id(ev)
        reason = auth_failure(full, auth_state, version, create_json)
        redact_power = False
        if reason is None:
            before = {
                key: pdu_with_id(loaded[eid])
                for key, eid in state_before.items()
                if key in auth_types_for_event(pdu, version) and eid in loaded
            }
            reason = auth_failure(full, before, version, create_json)
            redact_power = redact_power_at(full, (auth_state, before), version, create_json)
        soft_failed = False
        if reason is None:
            current = {
                key: pdu_with_id(ev)
                for key, ev in room.state.items()
                if key in auth_types_for_event(pdu, version)
            }
            if auth_failure(full, current, version, create_json) is not None:
                soft_failed = True
        event = Event(
            event_id=event_id,
            pdu=pdu,
            room_version=version,
            rejected_reason=reason
            if reason is not None
            else (SOFT_FAILED if soft_failed else None),
            sender_had_redact_power=redact_power,
        )
        accepted = reason is None and not soft_failed
        # State after: the new event on top of the state before it.
        state_after = dict(state_before)
        if event.is_state() and reason is None:
            state_after[event.state_tuple] = event_id

        # New extremities and current state.
        room = self._rooms.get_if_loaded(room_id) or room
        extremities = list(room.extremities)
        new_current: StateIds | None = None
        if accepted:
            prevs = set(event.prev_event_ids)
            extremities = [e for e in extremities if e not in prevs] + [event_id]
            if extremities == [event_id]:
                new_current = state_after
            else:
                sets = [state_after]
                for other in extremities:
                    if other != event_id:
                        sets.append(await self.state_after_event(room_id, other))
                new_current = await self.resolve(version, room_id, sets, in_hand=[event])
        if new_current is not None:
            missing = [v for v in new_current.values() if v not in loaded and v != event_id]
            if missing:
                loaded.update(await self._get(missing))
        room = self._rooms.get_if_loaded(room_id) or room
        await self._writer.persist_remote(
            room,
            event,
            state_before,
            state_after,
            extremities=extremities,
            new_current=new_current,
            held=loaded,
            replaces_outlier=held_as_outlier,
            write_full_state=write_full_state,
        )
        return event

    # Joining a remote room ----------------------------------------------------------------

    async def persist_joined_room(
        self,
        version: RoomVersion,
        join_pdu: JsonDict,
        state_pdus: list[JsonDict],
        auth_chain: list[JsonDict],
    ) -> LiveRoom:
        """After send_join: store the room's state and auth chain, then our join on top."""
        room_id = str(join_pdu["room_id"])
        lock = self._rooms.lock(room_id)
        await lock.acquire()
        try:
            creates = [p for p in state_pdus if p.get("type") == "m.room.create"]
            if not creates:
                raise FederationRequestError("", 502, None, "send_join state has no create event")
            await self._rooms_store.ensure(
                room_id, version.identifier, str(creates[0].get("sender"))
            )
            await self.store_outliers(version, [*auth_chain, *state_pdus])
            await self._persister.wait_idle()
            state_ids: StateIds = {}
            for pdu in state_pdus:
                eid = compute_event_id(pdu, version)
                if "state_key" in pdu:
                    state_ids[(str(pdu["type"]), str(pdu["state_key"]))] = eid
            stored = await self._get(state_ids.values())
            if state_ids.get(("m.room.create", "")) not in stored:
                raise FederationRequestError("", 502, None, "send_join create event was invalid")
            join_id = compute_event_id(join_pdu, version)
            room = self._writer.add_joined_room(
                room_id,
                version,
                {key: stored[eid] for key, eid in state_ids.items() if eid in stored},
                event_reference_ids(join_pdu.get("prev_events")),
                max((ev.depth for ev in stored.values()), default=0),
            )
            # The join's prev events may be unknown to us: their state is what we were sent.
            event = await self._persist_event(
                version, join_id, join_pdu, state_ids, write_full_state=True
            )
            if event.rejected_reason is not None:
                raise FederationRequestError(
                    "", 403, "M_FORBIDDEN", f"Our join was rejected: {event.rejected_reason}"
                )
            return room
        finally:
            lock.release()


def server_of_sender(pdu: JsonDict) -> str:
    sender = str(pdu.get("sender", ""))
    return sender.split(":", 1)[1] if ":" in sender else ""


def room_version_of(identifier: Any) -> RoomVersion | None:
    return get_room_version(identifier) if isinstance(identifier, str) else None
