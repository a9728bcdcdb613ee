"""Room endpoints: create, membership, send, state, redact and reading history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths, client_v1_paths
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.events.filtering import EventFilter, FilterError, validate_room_event_filter
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.restrictions import fake_event_id
from homeserver.http.ratelimit import Ratelimiter
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_integer, parse_json_body, parse_string
from homeserver.relations.bundles import with_relations
from homeserver.requester import Requester
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.third_party_invite import (
    ThirdPartyInviteHandler,
    parse_3pid_invite,
    parse_signed,
)
from homeserver.untrusted import decode_json

JsonDict = dict[str, Any]
# (events, viewer) -> event id -> bundled aggregations (``unsigned.m.relations``)
Bundler = Callable[[Sequence[Event], str], Awaitable[dict[str, JsonDict]]]


def serialize(ev: Event, requester: Requester | None = None) -> JsonDict:
    out = ev.client_dict()
    if (
        requester is not None
        and ev.txn_id is not None
        and ev.sender == requester.user_id
        and ev.txn_device_id == requester.device_id
    ):
        out = dict(out)
        out["unsigned"] = {**out.get("unsigned", {}), "transaction_id": ev.txn_id}
    return out


def parse_event_filter(request: Request) -> EventFilter | None:
    raw = parse_string(request, "filter")
    if raw is None:
        return None
    try:
        data = decode_json(raw, forbid_nul=True)
    except MatrixError as e:  # M_BAD_JSON for any bad filter here, as before
        raise MatrixError(400, Codes.BAD_JSON, f"Invalid filter: {e.message}") from None
    try:
        validate_room_event_filter(data)
    except FilterError as e:
        raise MatrixError(400, Codes.BAD_JSON, f"Invalid filter: {e}") from None
    return EventFilter.from_json(data)


def massaged_timestamp(request: Request, requester: Requester) -> int | None:
    """The ``ts`` query parameter: honoured for application services only (the spec's
    timestamp massaging), ignored for everyone else as Synapse does."""
    if requester.app_service_id is None:
        return None
    return parse_integer(request, "ts", minimum=0)


class RoomServlets:
    def __init__(
        self,
        auth: AuthHandler,
        rooms: RoomHandler,
        history: RoomHistory,
        message_limiter: Ratelimiter,
        bundler: Bundler | None = None,
    ) -> None:
        self._auth = auth
        self._rooms = rooms
        self._history = history
        self._limiter = message_limiter
        self._bundler = bundler
        # Set by the composition root: invites of email addresses (identity servers).
        self.third_party_invites: ThirdPartyInviteHandler | None = None

    def _tpi(self) -> ThirdPartyInviteHandler:
        if self.third_party_invites is None:
            raise MatrixError(400, Codes.UNRECOGNIZED, "Third-party invites are not supported")
        return self.third_party_invites

    async def _serialize_all(self, events: list[Event], requester: Requester) -> list[JsonDict]:
        """Client events with their bundled aggregations, for this requester."""
        bundles: dict[str, JsonDict] = {}
        if self._bundler is not None and events:
            bundles = await self._bundler(events, requester.user_id)
        return [with_relations(serialize(ev, requester), bundles.get(ev.event_id)) for ev in events]

    def register(self, r: JsonResource) -> None:
        r.register_many("POST", client_paths("/createRoom"), self.on_create_room)
        r.register_many("POST", client_paths("/join/{roomIdOrAlias}"), self.on_join_by_alias)
        r.register_many("POST", client_paths("/rooms/{roomId}/join"), self.on_join_room)
        r.register_many("POST", client_paths("/knock/{roomIdOrAlias}"), self.on_knock)
        for action in ("invite", "leave", "kick", "ban", "unban"):
            r.register_many(
                "POST",
                client_paths(f"/rooms/{{roomId}}/{action}"),
                self._membership_action(action),
            )
        r.register_many("POST", client_paths("/rooms/{roomId}/forget"), self.on_forget)
        r.register_many("GET", client_paths("/joined_rooms"), self.on_joined_rooms)
        r.register_many(
            "PUT", client_paths("/rooms/{roomId}/send/{eventType}/{txnId}"), self.on_send
        )
        # Not in the spec, but Synapse serves it: a send without a transaction id.
        r.register_many("POST", client_paths("/rooms/{roomId}/send/{eventType}"), self.on_send)
        r.register_many(
            "PUT", client_paths("/rooms/{roomId}/state/{eventType}/{stateKey}"), self.on_put_state
        )
        r.register_many("PUT", client_paths("/rooms/{roomId}/state/{eventType}"), self.on_put_state)
        # An empty state key leaves a trailing slash (clients build ".../{type}/{key}").
        r.register_many(
            "PUT", client_paths("/rooms/{roomId}/state/{eventType}/"), self.on_put_state
        )
        r.register_many(
            "GET", client_paths("/rooms/{roomId}/state/{eventType}/"), self.on_get_state
        )
        r.register_many(
            "GET", client_paths("/rooms/{roomId}/state/{eventType}/{stateKey}"), self.on_get_state
        )
        r.register_many("GET", client_paths("/rooms/{roomId}/state/{eventType}"), self.on_get_state)
        r.register_many("GET", client_paths("/rooms/{roomId}/state"), self.on_get_all_state)
        r.register_many(
            "PUT", client_paths("/rooms/{roomId}/redact/{eventId}/{txnId}"), self.on_redact
        )
        # Not in the spec, but Synapse serves it (and SyTest uses it): without a txn id.
        r.register_many("POST", client_paths("/rooms/{roomId}/redact/{eventId}"), self.on_redact)
        r.register_many("GET", client_paths("/rooms/{roomId}/messages"), self.on_messages)
        r.register_many("GET", client_paths("/rooms/{roomId}/context/{eventId}"), self.on_context)
        r.register_many("GET", client_paths("/rooms/{roomId}/event/{eventId}"), self.on_event)
        r.register_many("GET", client_paths("/rooms/{roomId}/members"), self.on_members)
        r.register_many(
            "GET", client_paths("/rooms/{roomId}/joined_members"), self.on_joined_members
        )
        r.register_many(
            "GET", client_v1_paths("/rooms/{roomId}/timestamp_to_event"), self.on_timestamp
        )

    # Creating and membership --------------------------------------------------------

    async def on_create_room(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        raw_3pids = body.get("invite_3pid")
        if raw_3pids is not None and not isinstance(raw_3pids, list):
            raise MatrixError(400, Codes.BAD_JSON, "invite_3pid must be a list")
        invites_3pid = [parse_3pid_invite(i) for i in raw_3pids or []]
        if requester.shadow_banned:
            # As Synapse: the room is made, its invites are silently dropped.
            body = {k: v for k, v in body.items() if k not in ("invite", "invite_3pid")}
            invites_3pid = []
        if invites_3pid:
            self._tpi()
        self._limiter.ratelimit_requester(requester)
        room_id, alias = await self._rooms.create_room(requester, body)
        for id_server, id_access_token, medium, address in invites_3pid:
            await self._tpi().invite(
                requester, room_id, id_server, id_access_token, medium, address
            )
        result: JsonDict = {"room_id": room_id}
        if alias is not None:
            result["room_alias"] = alias
        return 200, result

    async def on_join_by_alias(self, request: Request, roomIdOrAlias: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        body = parse_json_body(request, allow_empty=True)
        reason = field(body, "reason", str)
        # `via` is the current name; `server_name` the deprecated one (still sent by clients).
        args = request.args or {}
        servers = [v.decode() for key in (b"via", b"server_name") for v in args.get(key, [])]
        await self._exchange_signed(requester, roomIdOrAlias, body)
        room_id = await self._rooms.join(
            requester, roomIdOrAlias, reason=reason, servers=servers, extra_content=body
        )
        return 200, {"room_id": room_id}

    async def _exchange_signed(
        self, requester: Requester, room_id_or_alias: str, body: JsonDict
    ) -> None:
        """A join with ``third_party_signed``: the signed third-party invite becomes an
        invite first (as Synapse), so the join is then allowed."""
        raw = body.get("third_party_signed")
        if raw is None:
            return
        signed = parse_signed(raw)
        sender = signed.get("sender")
        if not isinstance(sender, str):
            raise MatrixError(400, Codes.BAD_JSON, "third_party_signed.sender must be a string")
        if signed["mxid"] != requester.user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "third_party_signed is for another user")
        room_id = await self._rooms.resolve_room_id_or_alias(room_id_or_alias)
        room = await self._rooms.get_room_if_held(room_id)
        if room is not None and room.membership_of(requester.user_id) in ("invite", "join"):
            return
        await self._tpi().exchange(sender, requester.user_id, room_id, signed)

    async def on_join_room(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        body = parse_json_body(request, allow_empty=True)
        reason = field(body, "reason", str)
        await self._exchange_signed(requester, roomId, body)
        room_id = await self._rooms.join(requester, roomId, reason=reason, extra_content=body)
        return 200, {"room_id": room_id}

    async def on_knock(self, request: Request, roomIdOrAlias: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request, allow_empty=True)
        reason = field(body, "reason", str)
        room_id = await self._rooms.resolve_room_id_or_alias(roomIdOrAlias)
        await self._rooms.update_membership(
            requester, room_id, requester.user_id, "knock", reason=reason
        )
        return 200, {"room_id": room_id}

    def _membership_action(self, action: str) -> Any:
        membership = {
            "invite": "invite",
            "leave": "leave",
            "kick": "leave",
            "ban": "ban",
            "unban": "leave",
        }[action]

        async def handler(request: Request, roomId: str) -> tuple[int, Any]:
            # Guests may leave, nothing else here (as Synapse).
            requester = await self._auth.get_user_by_req(request, allow_guest=action == "leave")
            body = parse_json_body(request, allow_empty=(action == "leave"))
            reason = field(body, "reason", str)
            if (
                action == "invite"
                and "user_id" not in body
                and ("medium" in body or "address" in body or "id_server" in body)
            ):
                id_server, id_access_token, medium, address = parse_3pid_invite(body)
                self._limiter.ratelimit_requester(requester)
                await self._tpi().invite(
                    requester, roomId, id_server, id_access_token, medium, address
                )
                return 200, {}
            if action == "leave":
                target = requester.user_id
            else:
                target = field(body, "user_id", str, required=True)
            if action == "invite" and requester.shadow_banned:
                return 200, {}  # as Synapse: the invite looks sent and is not
            if action == "unban":
                room = await self._rooms.get_room(roomId)
                if room.membership_of(target) != "ban":
                    raise MatrixError(403, Codes.FORBIDDEN, f"{target} is not banned")
            if action == "kick":
                room = await self._rooms.get_room(roomId)
                if room.membership_of(target) not in ("join", "invite", "knock"):
                    raise MatrixError(403, Codes.FORBIDDEN, f"{target} is not in the room")
            if action == "leave":
                held = await self._rooms.get_room_if_held(roomId)
                # A room we do not hold: an invite from another server to reject (the
                # handler leaves through that server, or answers 404).
                if held is not None and held.membership_of(target) in (None, "leave"):
                    raise MatrixError(403, Codes.FORBIDDEN, "You are not in this room")
            await self._rooms.update_membership(
                requester,
                roomId,
                target,
                membership,
                reason=reason,
                is_direct=bool(body.get("is_direct")) if action == "invite" else False,
            )
            return 200, {}

        return handler

    async def on_forget(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        await self._rooms.forget(requester, roomId)
        return 200, {}

    async def on_joined_rooms(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        return 200, {"joined_rooms": await self._rooms.joined_room_ids(requester.user_id)}

    # Sending -----------------------------------------------------------------------

    async def on_send(
        self, request: Request, roomId: str, eventType: str, txnId: str | None = None
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        content = parse_json_body(request)
        ts = massaged_timestamp(request, requester)
        return 200, {
            "event_id": await self.send_event(requester, roomId, eventType, content, txnId, ts)
        }

    async def on_put_state(
        self, request: Request, roomId: str, eventType: str, stateKey: str = ""
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        content = parse_json_body(request)
        ts = massaged_timestamp(request, requester)
        return 200, {
            "event_id": await self.put_state(requester, roomId, eventType, stateKey, content, ts)
        }

    # Shared with the WebSocket transport, so both do exactly the same.

    async def send_event(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        content: JsonDict,
        txn_id: str | None,
        origin_server_ts: int | None = None,
    ) -> str:
        """PUT /rooms/{roomId}/send/{eventType}/{txnId} once authenticated and parsed
        (``txn_id`` None: the POST form, never deduplicated)."""
        if requester.shadow_banned:
            return fake_event_id()  # as Synapse: looks sent, nothing is persisted
        self._limiter.ratelimit_requester(requester)
        event = await self._rooms.send_message(
            requester, room_id, event_type, content, txn_id, origin_server_ts
        )
        return event.event_id

    async def put_state(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        state_key: str,
        content: JsonDict,
        origin_server_ts: int | None = None,
    ) -> str:
        """PUT /rooms/{roomId}/state/{eventType}/{stateKey} once authenticated and parsed."""
        if requester.shadow_banned:
            return fake_event_id()
        self._limiter.ratelimit_requester(requester)
        event = await self._rooms.send_state(
            requester, room_id, event_type, state_key, content, origin_server_ts
        )
        return event.event_id

    async def on_redact(
        self, request: Request, roomId: str, eventId: str, txnId: str | None = None
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request, allow_empty=True)
        reason = field(body, "reason", str)
        if requester.shadow_banned:
            return 200, {"event_id": fake_event_id()}
        event = await self._rooms.redact(requester, roomId, eventId, reason, txnId)
        return 200, {"event_id": event.event_id}

    # Reading -----------------------------------------------------------------------

    async def on_get_state(
        self, request: Request, roomId: str, eventType: str, stateKey: str = ""
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        state = await self._state_for(requester, roomId)
        ev = state.get((eventType, stateKey))
        if ev is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found.")
        fmt = parse_string(request, "format", default="content", allowed=("content", "event"))
        # Through serialize, so a redacted state event shows its redacted content.
        return 200, (serialize(ev)["content"] if fmt == "content" else serialize(ev))

    async def on_get_all_state(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        state = await self._state_for(requester, roomId)
        return 200, [serialize(ev) for ev in state.values()]

    async def _state_for(self, requester: Requester, room_id: str) -> dict[tuple[str, str], Event]:
        return await self._rooms.visible_state(requester.user_id, room_id)

    async def on_messages(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        direction = parse_string(request, "dir", default="b", allowed=("b", "f"))
        limit = parse_integer(request, "limit", default=10, minimum=0)
        from_token = parse_string(request, "from")
        to_token = parse_string(request, "to")
        event_filter = parse_event_filter(request)
        assert direction is not None and limit is not None
        if event_filter is not None and event_filter.limit is not None:
            limit = min(limit, event_filter.limit)
        chunk, start, end, lazy_state = await self._history.messages(
            requester.user_id, roomId, from_token, to_token, direction, limit, event_filter
        )
        result: JsonDict = {"chunk": await self._serialize_all(chunk, requester), "start": start}
        if end is not None:
            result["end"] = end
        if lazy_state:
            result["state"] = [serialize(ev) for ev in lazy_state]
        return 200, result

    async def on_context(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        limit = parse_integer(request, "limit", default=10, minimum=0, maximum=100)
        assert limit is not None
        ctx = await self._history.context(
            requester.user_id, roomId, eventId, limit, parse_event_filter(request)
        )
        before, after = ctx["events_before"], ctx["events_after"]
        served = await self._serialize_all([ctx["event"], *before, *after], requester)
        return 200, {
            "event": served[0],
            "events_before": served[1 : 1 + len(before)],
            "events_after": served[1 + len(before) :],
            "state": [serialize(e) for e in ctx["state"]],
            "start": ctx["start"],
            "end": ctx["end"],
        }

    async def on_event(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        try:
            ev = await self._history.get_event(requester.user_id, roomId, eventId)
        except MatrixError as e:
            if e.status != 403:
                raise
            # As Synapse: an event one may not see is not found (not in the room too).
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found.") from None
        return 200, (await self._serialize_all([ev], requester))[0]

    async def on_members(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        allowed = ("join", "invite", "knock", "leave", "ban")
        events = await self._history.members(
            requester.user_id,
            roomId,
            parse_string(request, "at"),
            parse_string(request, "membership", allowed=allowed),
            parse_string(request, "not_membership", allowed=allowed),
        )
        return 200, {"chunk": [serialize(ev) for ev in events]}

    async def on_joined_members(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        return 200, {"joined": await self._history.joined_members(requester.user_id, roomId)}

    async def on_timestamp(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        ts = parse_integer(request, "ts", required=True)
        direction = parse_string(request, "dir", required=True, allowed=("f", "b"))
        assert ts is not None and direction is not None
        event_id, origin_ts = await self._history.timestamp_to_event(
            requester.user_id, roomId, ts, direction
        )
        return 200, {"event_id": event_id, "origin_server_ts": origin_ts}
