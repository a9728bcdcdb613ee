"""Building, authorising and sending local events.

The part from building an event to handing it to the room writer runs without yielding
to the reactor, so two local events of one room can never be built on the same
extremities: the room's event graph stays a line for local traffic, and the stream
order equals the order in which events were authorised.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from signedjson.types import SigningKey
from twisted.internet import defer

from crypto.event_hashing import compute_event_id, hash_and_sign_event
from homeserver.async_utils import observe
from homeserver.bus import Bus, LocalEventAccepted
from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, MatrixError
from homeserver.events.auth_rules import AuthError, auth_types_for_event, check_auth_rules
from homeserver.events.event import Event
from homeserver.events.format import EventFormatError, validate_pdu_format
from homeserver.events.redaction import has_redact_power
from homeserver.events.room_versions import RoomVersion
from homeserver.rooms.room_cache import LiveRoom, RoomCache, pdu_with_id
from homeserver.rooms.writer import RoomWriter
from storage.events import EventsStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_PREV_EVENTS = 10

TxnKey = tuple[str, str, str, str]  # room, user, device, txn id
RECENT_TXNS = 10_000
PrePersist = Callable[[LiveRoom, Event], Awaitable[JsonDict]]


class EventCreator:
    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        clock: Clock,
        rooms: RoomCache,
        events: EventsStore,
        writer: RoomWriter,
        bus: Bus,
    ) -> None:
        self.server_name = server_name
        self._signing_key = signing_key
        self._clock = clock
        self._rooms = rooms
        self._events = events
        self._writer = writer
        self._txns_in_flight: dict[TxnKey, defer.Deferred[Event]] = {}
        # Recently completed transactions: a quick retry needs no query.
        self._recent_txns: OrderedDict[TxnKey, Event] = OrderedDict()
        # Every accepted local event is published (synchronously) before it is queued.
        self._bus = bus
        self._accepted_hooks = (lambda ev: bus.publish(LocalEventAccepted(ev)),)
        # The newest origin_server_ts given to a create event: where the room id is the
        # create event's hash, two rooms created in the same millisecond by one user with
        # the same content would otherwise get the same id.
        self._last_create_ts = 0

    def _sign(self, pdu: JsonDict, room_version: RoomVersion) -> tuple[JsonDict, str]:
        signed = hash_and_sign_event(pdu, self.server_name, self._signing_key, room_version)
        return signed, compute_event_id(signed, room_version)

    def build_create_event(
        self, room_version: RoomVersion, sender: str, content: JsonDict, room_id: str | None
    ) -> Event:
        pdu: JsonDict = {
            "type": "m.room.create",
            "state_key": "",
            "sender": sender,
            "content": content,
            "origin_server_ts": self._create_ts(),
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
        }
        if not room_version.room_id_is_create_event_hash:
            assert room_id is not None
            pdu["room_id"] = room_id
        signed, event_id = self._sign(pdu, room_version)
        event = Event(event_id=event_id, pdu=signed, room_version=room_version)
        self._validate(event)
        try:
            check_auth_rules(pdu_with_id(event), {}, room_version, create_event=pdu_with_id(event))
        except AuthError as e:
            raise MatrixError(400, Codes.BAD_JSON, f"Invalid m.room.create: {e.message}") from None
        return event

    def _create_ts(self) -> int:
        self._last_create_ts = max(now_ms(self._clock), self._last_create_ts + 1)
        return self._last_create_ts

    async def persist_create_event(self, event: Event, creator: str) -> LiveRoom:
        """Start a room with its create event; the room enters the cache at once."""
        room, persisted = self._writer.create_room(event, creator)
        await persisted
        return room

    async def send(
        self,
        room_id: str,
        event_dict: JsonDict,
        *,
        txn: tuple[str, str] | None = None,
        room: LiveRoom | None = None,
        pre_persist: PrePersist | None = None,
    ) -> Event:
        """Build, authorise and persist an event; return it once committed.

        ``pre_persist`` runs after the event is built and authorised, before it is
        applied (an invite of a remote user is co-signed by their server there); it
        runs under the room lock.

        ``event_dict`` has type, sender, content and (for state) state_key, plus any
        extra top-level keys (``redacts`` for pre-v11 rooms). ``txn`` is (device id,
        transaction id): a retry with the same pair returns the first event.
        """
        if txn is not None:
            key = (room_id, event_dict["sender"], txn[0], txn[1])
            recent = self._recent_txns.get(key)
            if recent is not None:
                return recent
            in_flight = self._txns_in_flight.get(key)
            if in_flight is not None:
                return await observe(in_flight)
            # Registered before the first await, so a concurrent retry always finds it.
            done: defer.Deferred[Event] = defer.Deferred()
            self._txns_in_flight[key] = done
            try:
                event = await self._event_for_txn(key) or await self._send(
                    room_id, event_dict, txn, room, pre_persist
                )
            except BaseException as e:
                self._txns_in_flight.pop(key, None)
                done.errback(e)
                done.addErrback(lambda _: None)
                raise
            self._txns_in_flight.pop(key, None)
            self._recent_txns[key] = event
            if len(self._recent_txns) > RECENT_TXNS:
                self._recent_txns.popitem(last=False)
            done.callback(event)
            return event
        return await self._send(room_id, event_dict, None, room, pre_persist)

    async def _event_for_txn(self, key: TxnKey) -> Event | None:
        event_id = await self._events.get_event_id_for_txn(*key)
        if event_id is None:
            return None
        return await self._events.get_event(event_id)

    async def _send(
        self,
        room_id: str,
        event_dict: JsonDict,
        txn: tuple[str, str] | None,
        room: LiveRoom | None,
        pre_persist: PrePersist | None = None,
    ) -> Event:
        if room is None:
            room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        lock = self._rooms.lock(room_id)
        await lock.acquire()
        try:
            # Under the lock, from build to enqueue: no awaits (see module docstring).
            room = self._rooms.get_if_loaded(room_id) or room
            event = self._build(room, event_dict)
            if pre_persist is not None:
                event.pdu = await pre_persist(room, event)
                room = self._rooms.get_if_loaded(room_id) or room
            if txn is not None:
                event.txn_device_id, event.txn_id = txn
            persisted = self._writer.persist_local(room, event, self._accepted_hooks)
        finally:
            lock.release()
        await persisted
        return event

    def _build(self, room: LiveRoom, event_dict: JsonDict) -> Event:
        version = room.room_version
        pdu: JsonDict = dict(event_dict)
        pdu["room_id"] = room.room_id
        # Kept when given: an application service's timestamp massaging.
        pdu.setdefault("origin_server_ts", now_ms(self._clock))
        pdu["prev_events"] = room.references(room.extremities[:MAX_PREV_EVENTS])
        pdu["depth"] = room.max_depth + 1
        auth_keys = auth_types_for_event(pdu, version)
        pdu["auth_events"] = room.references(
            sorted(room.state[k].event_id for k in auth_keys if k in room.state)
        )
        signed, event_id = self._sign(pdu, version)
        if "state_key" in pdu:
            # What clients read as unsigned.prev_content (membership changes, renames).
            # `unsigned` is covered by neither the hashes nor the signatures.
            replaced = room.state.get((str(pdu["type"]), str(pdu["state_key"])))
            if replaced is not None:
                signed["unsigned"] = {
                    "replaces_state": replaced.event_id,
                    "prev_content": replaced.content,
                    "prev_sender": replaced.sender,
                }
        event = Event(event_id=event_id, pdu=signed, room_version=version)
        self._validate(event)
        create = room.create_event
        create_json = pdu_with_id(create) if create is not None else None
        auth_state = {k: pdu_with_id(room.state[k]) for k in auth_keys if k in room.state}
        try:
            check_auth_rules(pdu_with_id(event), auth_state, version, create_event=create_json)
        except AuthError as e:
            raise MatrixError(403, Codes.FORBIDDEN, e.message) from None
        event.sender_had_redact_power = has_redact_power(
            pdu_with_id(event), auth_state, version, create_json
        )
        return event

    def _validate(self, event: Event) -> None:
        # The size limit is the sender's content, not our own unsigned additions.
        pdu = {k: v for k, v in event.pdu.items() if k != "unsigned"}
        try:
            validate_pdu_format(pdu, event.room_version)
        except EventFormatError as e:
            raise MatrixError(
                413 if e.errcode == Codes.TOO_LARGE else 400, e.errcode, e.message
            ) from None
