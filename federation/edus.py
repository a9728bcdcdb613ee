"""Ephemeral events over federation: ``m.typing``, ``m.receipt`` and ``m.presence``.

Outbound, this listens to the local typing, receipt and presence changes and queues the
EDUs in Synapse's format for the other servers concerned; inbound, it parses the EDUs of
a ``/send`` transaction and applies them to the same handlers local changes go through,
so local clients see remote users in /sync exactly as local ones.

Invariants:
- Only our own users' changes go out; a remote change applied here is never echoed.
- ``m.read.private`` never leaves this server (only ``m.read`` is sent or accepted).
- An inbound EDU is applied only for a user of the server that sent it (user id domain ==
  origin); typing and receipts only in a room one of our users is joined to, only
  for a user joined to it, and only if the room's server ACL allows the origin. Anything else is dropped silently (EDUs get no answer).
  Presence is taken for any user of the origin: only their room-mates are shown it.
- These EDUs are queued with a time to live (``TYPING_TTL_MS``, ``EPHEMERAL_TTL_MS``):
  after a long outage a destination is not sent stale typing or presence.
- Presence goes to every server sharing a room with the user, and nothing flows either
  way when presence is disabled. When a user joins a room, the servers that now share
  it learn the presence they had no reason to be sent before: a remote joiner's server
  gets our members' states, the room's servers get a local joiner's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from federation.acl import server_allowed_by_acl
from federation.sender import FederationSender, server_of
from federation.transport_server import EduHandlerFn
from homeserver.clock import Clock, now_ms
from homeserver.ephemeral.presence import OFFLINE, PRESENCE_STATES, PresenceHandler
from homeserver.ephemeral.receipts import READ, ReceiptsHandler
from homeserver.ephemeral.typing import TypingHandler
from homeserver.events.event import Event
from homeserver.events.format import is_valid_room_id, is_valid_user_id
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from storage.presence import PresenceState
from storage.receipts import Receipt

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

TYPING = "m.typing"
RECEIPT = "m.receipt"
PRESENCE = "m.presence"

# A queued typing notice older than this is stale (the receiver forgets it after 60 s).
TYPING_TTL_MS = 60_000
# Receipts and presence: still worth delivering after a short outage, not a long one.
EPHEMERAL_TTL_MS = 5 * 60_000
# While a user keeps typing, their ``typing: true`` is re-sent at most this often, so the
# receiving servers (which forget it after 60 s) keep showing it.
TYPING_RESEND_MS = 40_000


# Inbound parsing: pure functions -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TypingUpdate:
    room_id: str
    user_id: str
    typing: bool


@dataclass(frozen=True, slots=True)
class RemoteReceipt:
    room_id: str
    user_id: str
    event_id: str
    thread_id: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class PresenceUpdate:
    user_id: str
    presence: str
    last_active_ago: int
    currently_active: bool
    status_msg: str | None


def _from_origin(user_id: Any, origin: str) -> bool:
    return is_valid_user_id(user_id) and server_of(user_id) == origin


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_typing(origin: str, content: JsonDict) -> TypingUpdate | None:
    """The ``m.typing`` content, or None if malformed or not for a user of ``origin``."""
    room_id = content.get("room_id")
    user_id = content.get("user_id")
    typing = content.get("typing")
    if not isinstance(room_id, str) or not is_valid_room_id(room_id):
        return None
    if not isinstance(typing, bool) or not isinstance(user_id, str):
        return None
    if not _from_origin(user_id, origin):
        return None
    return TypingUpdate(room_id, user_id, typing)


def parse_receipts(origin: str, content: JsonDict) -> list[RemoteReceipt]:
    """The ``m.read`` receipts of users of ``origin``; anything else is left out.

    ``event_ids`` should hold one id; if it holds several, each is kept (the store keeps
    only the latest in the room's order).
    """
    out: list[RemoteReceipt] = []
    for room_id, by_type in content.items():
        if not is_valid_room_id(room_id) or not isinstance(by_type, dict):
            continue
        users = by_type.get(READ)  # m.read.private must never arrive; other types unknown
        if not isinstance(users, dict):
            continue
        for user_id, receipt in users.items():
            if not _from_origin(user_id, origin) or not isinstance(receipt, dict):
                continue
            event_ids = receipt.get("event_ids")
            data = receipt.get("data")
            if not isinstance(event_ids, list) or not isinstance(data, dict):
                continue
            raw_ts = data.get("ts")
            ts = raw_ts if isinstance(raw_ts, int) and not isinstance(raw_ts, bool) else 0
            thread_id = data.get("thread_id")
            if not isinstance(thread_id, str) or not thread_id:
                thread_id = None  # invalid counts as missing, as Synapse does
            for event_id in event_ids:
                if isinstance(event_id, str) and event_id.startswith("$"):
                    out.append(RemoteReceipt(room_id, user_id, event_id, thread_id, ts))
    return out


def parse_presence(origin: str, content: JsonDict) -> list[PresenceUpdate]:
    """The ``push`` entries for users of ``origin`` with a known state."""
    push = content.get("push")
    if not isinstance(push, list):
        return []
    out: list[PresenceUpdate] = []
    for item in push:
        if not isinstance(item, dict) or not _from_origin(item.get("user_id"), origin):
            continue
        presence = item.get("presence")
        if presence not in PRESENCE_STATES:
            continue
        ago = item.get("last_active_ago", 0)
        status_msg = item.get("status_msg")
        out.append(
            PresenceUpdate(
                user_id=item["user_id"],
                presence=presence,
                last_active_ago=ago if _is_int(ago) and ago >= 0 else 0,
                currently_active=item.get("currently_active") is True,
                status_msg=status_msg if isinstance(status_msg, str) else None,
            )
        )
    return out


# Outbound formats ---------------------------------------------------------------------


def typing_content(room_id: str, user_id: str, typing: bool) -> JsonDict:
    return {"room_id": room_id, "user_id": user_id, "typing": typing}


def receipt_edu_content(receipt: Receipt) -> JsonDict:
    data: JsonDict = {"ts": receipt.data.get("ts", 0)}
    if receipt.thread_id is not None:
        data["thread_id"] = receipt.thread_id
    return {
        receipt.room_id: {
            receipt.receipt_type: {receipt.user_id: {"event_ids": [receipt.event_id], "data": data}}
        }
    }


def presence_push_item(state: PresenceState, now: int) -> JsonDict:
    item: JsonDict = {
        "user_id": state.user_id,
        "presence": state.state,
        "currently_active": state.currently_active and state.state == "online",
    }
    if state.last_active_ts:
        item["last_active_ago"] = max(0, now - state.last_active_ts)
    if state.status_msg is not None:
        item["status_msg"] = state.status_msg
    return item


# The service ---------------------------------------------------------------------------


class FederationEdus:
    def __init__(
        self,
        server_name: str,
        clock: Clock,
        sender: FederationSender,
        rooms: RoomCache,
        memberships: MembershipCache,
        typing: TypingHandler,
        receipts: ReceiptsHandler,
        presence: PresenceHandler,
    ) -> None:
        self._server_name = server_name
        self._clock = clock
        self._sender = sender
        self._rooms = rooms
        self._memberships = memberships
        self._typing = typing
        self._receipts = receipts
        self._presence = presence
        # (room, user) -> when their ``typing: true`` was last queued for federation.
        self._typing_sent: dict[tuple[str, str], int] = {}

    def handlers(self) -> dict[str, EduHandlerFn]:
        """The inbound handlers, by EDU type, for the transaction servlet."""
        return {TYPING: self.on_typing, RECEIPT: self.on_receipt, PRESENCE: self.on_presence}

    def _is_mine(self, user_id: str) -> bool:
        return server_of(user_id) == self._server_name

    def _background(self, work: Any, what: str) -> None:
        d = defer.ensureDeferred(work)
        d.addErrback(lambda f: logger.error("%s failed: %s", what, f.value))

    # Outbound ---------------------------------------------------------------------------

    def on_local_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        """TypingHandler listener: starts, renewals, stops and expiries."""
        if not self._is_mine(user_id):
            return
        key = (room_id, user_id)
        now = now_ms(self._clock)
        if typing:
            last = self._typing_sent.get(key)
            if last is not None and now - last < TYPING_RESEND_MS:
                return  # a renewal the other servers do not need yet
            self._typing_sent[key] = now
        else:
            self._typing_sent.pop(key, None)
        destinations = self._sender.destinations_for_room(room_id)
        if destinations:
            self._background(
                self._sender.send_edu(
                    destinations,
                    TYPING,
                    typing_content(room_id, user_id, typing),
                    ttl_ms=TYPING_TTL_MS,
                ),
                "Queueing a typing EDU",
            )

    def on_local_receipt(self, receipt: Receipt) -> None:
        """ReceiptsStore listener: every stored receipt; only our public ones go out."""
        if receipt.receipt_type != READ or not self._is_mine(receipt.user_id):
            return
        destinations = self._sender.destinations_for_room(receipt.room_id)
        if destinations:
            self._background(
                self._sender.send_edu(
                    destinations, RECEIPT, receipt_edu_content(receipt), ttl_ms=EPHEMERAL_TTL_MS
                ),
                "Queueing a receipt EDU",
            )

    def on_local_presence(self, state: PresenceState) -> None:
        """PresenceHandler listener: every visible change; only our users' go out."""
        if not self._is_mine(state.user_id):
            return
        self._background(self._send_presence(state), "Queueing a presence EDU")

    async def _send_presence(self, state: PresenceState) -> None:
        destinations: set[str] = set()
        for room_id in await self._joined_rooms(state.user_id):
            destinations |= self._sender.destinations_for_room(room_id)
        if destinations:
            item = presence_push_item(state, now_ms(self._clock))
            await self._sender.send_edu(
                destinations, PRESENCE, {"push": [item]}, ttl_ms=EPHEMERAL_TTL_MS
            )

    def on_persisted(self, events: list[Event]) -> None:
        """EventFanout listener: joins open new presence audiences."""
        for ev in events:
            joined = ev.membership == "join" and ev.state_key and not ev.outlier
            if joined and ev.state_key and ev.rejected_reason is None:
                self._background(
                    self._presence_for_join(ev.room_id, ev.state_key),
                    "Sending presence to a room's new member",
                )

    async def _presence_for_join(self, room_id: str, user_id: str) -> None:
        if not self._presence.enabled:
            return
        room = await self._rooms.get(room_id)
        if room is None:
            return
        if self._is_mine(user_id):
            destinations = self._sender.destinations_for_room(room_id)
            users = [user_id]
        else:
            destinations = {server_of(user_id)}
            users = [u for u in room.joined_members() if self._is_mine(u)]
        # Offline is what a server assumes of users it has heard nothing about.
        states = [
            s
            for s in await self._presence.current_states(users)
            if s.stream_id and s.state != OFFLINE
        ]
        if destinations and states:
            now = now_ms(self._clock)
            await self._sender.send_edu(
                destinations,
                PRESENCE,
                {"push": [presence_push_item(s, now) for s in states]},
                ttl_ms=EPHEMERAL_TTL_MS,
            )

    async def _joined_rooms(self, user_id: str) -> Iterable[str]:
        rooms = await self._memberships.rooms_for_user(user_id)
        joined = [room_id for room_id, row in rooms.items() if row.membership == "join"]
        for room_id in joined:
            await self._rooms.get(room_id)  # so destinations_for_room sees its members
        return joined

    # Inbound ----------------------------------------------------------------------------

    async def _room_with_member(self, origin: str, room_id: str, user_id: str) -> LiveRoom | None:
        """The room, if one of our users and ``user_id`` are both joined to it and its
        server ACL lets ``origin`` take part."""
        room = await self._rooms.get(room_id)
        if room is None or room.membership_of(user_id) != "join":
            return None
        if not server_allowed_by_acl(origin, room.state_content("m.room.server_acl")):
            return None
        if not any(self._is_mine(u) for u in room.joined_members()):
            return None
        return room

    async def on_typing(self, origin: str, content: JsonDict) -> None:
        update = parse_typing(origin, content)
        if update is None:
            logger.info("Dropped an m.typing EDU from %s: malformed or forged", origin)
            return
        if await self._room_with_member(origin, update.room_id, update.user_id) is None:
            logger.info(
                "Dropped typing of %s in %s: not joined or ACL", update.user_id, update.room_id
            )
            return
        self._typing.set_remote_typing(update.room_id, update.user_id, update.typing)

    async def on_receipt(self, origin: str, content: JsonDict) -> None:
        for r in parse_receipts(origin, content):
            if await self._room_with_member(origin, r.room_id, r.user_id) is None:
                logger.info(
                    "Dropped a receipt of %s in %s: not joined or ACL", r.user_id, r.room_id
                )
                continue
            await self._receipts.store_remote_receipt(
                r.user_id, r.room_id, r.event_id, r.thread_id, r.ts
            )

    async def on_presence(self, origin: str, content: JsonDict) -> None:
        if not self._presence.enabled:
            return
        # Not limited to users sharing a room with ours (as Synapse): the update that
        # follows a join can arrive before our copy of the join is stored. /sync and
        # GET /presence still show it only to room-mates.
        for p in parse_presence(origin, content):
            await self._presence.apply_remote(
                p.user_id, p.presence, p.last_active_ago, p.currently_active, p.status_msg
            )
