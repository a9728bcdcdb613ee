"""Joins, leaves, knocks and invites across servers, both directions.

Resident side (a remote user joins one of our rooms): ``make_membership`` builds an
unsigned template from our current extremities; ``send_membership`` checks the signed
event like any inbound PDU and answers with the state and auth chain before it.

Joining side (our user joins a remote room): make_join on a resident server, sign the
template, send_join, then store the room's state and our join
(``FederationEventHandler.persist_joined_room``).
"""

from __future__ import annotations

import logging
from typing import Any

from signedjson.types import SigningKey

from crypto.event_hashing import compute_event_id, hash_and_sign_event, sign_event
from federation.event_auth_checks import (
    PduFormatRejected,
    PduRejected,
    auth_failure,
    check_pdu,
    server_of,
    strip_unsigned,
)
from federation.interfaces import FederationClient, FederationRequestError
from federation.room_events import FederationEventHandler, quote
from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, LimitExceededError, MatrixError
from homeserver.events.auth_rules import auth_types_for_event
from homeserver.events.event import Event, oldest_first
from homeserver.events.format import (
    EventFormatError,
    references_for_version,
    validate_pdu_format,
)
from homeserver.events.room_versions import ROOM_VERSIONS, RoomVersion, get_room_version
from homeserver.events.state_res import StateResolutionError
from homeserver.http.ratelimit import InviteRatelimiter
from homeserver.rooms.room_cache import LiveRoom, RoomCache, pdu_with_id
from storage.events import EventsStore
from storage.rooms import RoomsStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

ALIAS_TIMEOUT_S = 15.0
ALIAS_MAX_BYTES = 64 * 1024

STRIPPED_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)


class FederationMembership:
    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        clock: Clock,
        rooms: RoomCache,
        events: EventsStore,
        rooms_store: RoomsStore,
        handler: FederationEventHandler,
        client: FederationClient,
        *,
        invite_limiter: InviteRatelimiter | None = None,
    ) -> None:
        self.server_name = server_name
        self._invite_limiter = invite_limiter
        self._signing_key = signing_key
        self._clock = clock
        self._rooms = rooms
        self._events = events
        self._rooms_store = rooms_store
        self._handler = handler
        self._client = client

    # Resident side -------------------------------------------------------------------

    async def make_membership(
        self, origin: str, room_id: str, user_id: str, membership: str, versions: list[str]
    ) -> JsonDict:
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        if server_of(user_id) != origin:
            raise MatrixError(403, Codes.FORBIDDEN, "User is not from the requesting server")
        version = room.room_version
        if membership in ("join", "knock") and version.identifier not in versions:
            raise MatrixError(
                400,
                Codes.INCOMPATIBLE_ROOM_VERSION,
                "Your homeserver does not support the features required to join this room",
                {"room_version": version.identifier},
            )
        content: JsonDict = {"membership": membership}
        if membership == "join":
            self._maybe_authorise(room, user_id, content)
        template: JsonDict = {
            "type": "m.room.member",
            "state_key": user_id,
            "sender": user_id,
            "content": content,
            "room_id": room_id,
            "origin_server_ts": now_ms(self._clock),
            "prev_events": room.references(room.extremities[:10]),
            "depth": room.max_depth + 1,
        }
        keys = auth_types_for_event(template, version)
        template["auth_events"] = room.references(
            sorted(room.state[k].event_id for k in keys if k in room.state)
        )
        create = room.create_event
        reason = auth_failure(
            {**template, "event_id": "$template"},
            {k: pdu_with_id(room.state[k]) for k in keys if k in room.state},
            version,
            pdu_with_id(create) if create is not None else None,
        )
        if reason is not None:
            raise MatrixError(
                403, Codes.FORBIDDEN, f"You are not allowed to {membership}: {reason}"
            )
        return {"event": template, "room_version": version.identifier}

    def _maybe_authorise(self, room: LiveRoom, user_id: str, content: JsonDict) -> None:
        rule = room.state_content("m.room.join_rules").get("join_rule")
        if rule not in ("restricted", "knock_restricted"):
            return
        if room.membership_of(user_id) in ("join", "invite"):
            return
        from homeserver.events.auth_rules import get_user_power_level

        invite_level = room.state_content("m.room.power_levels").get("invite", 0)
        create = room.create_event
        for member in sorted(room.joined_members()):
            if server_of(member) != self.server_name:
                continue
            level = get_user_power_level(
                member,
                room.auth_state(),
                room.room_version,
                create_event=pdu_with_id(create) if create else None,
            )
            if isinstance(invite_level, int) and level >= invite_level:
                content["join_authorised_via_users_server"] = member
                return

    async def send_membership(
        self, origin: str, room_id: str, event_id: str, pdu: JsonDict, membership: str
    ) -> JsonDict:
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        version = room.room_version
        if (
            pdu.get("type") != "m.room.member"
            or (pdu.get("content") or {}).get("membership") != membership
            or pdu.get("room_id") != room_id
            or pdu.get("state_key") != pdu.get("sender")
            or server_of(str(pdu.get("sender", ""))) != origin
        ):
            raise MatrixError(400, Codes.BAD_JSON, f"Not a {membership} event for this room")
        if compute_event_id(pdu, version) != event_id:
            raise MatrixError(400, Codes.BAD_JSON, "Event ID does not match the event")
        authoriser = (pdu.get("content") or {}).get("join_authorised_via_users_server")
        if isinstance(authoriser, str) and server_of(authoriser) == self.server_name:
            pdu = sign_event(pdu, self.server_name, self._signing_key, version)
        try:
            checked = await check_pdu(pdu, version, self._handler.keyring)
        except PduFormatRejected as e:
            raise MatrixError(400, Codes.BAD_JSON, str(e)) from None
        except PduRejected as e:
            raise MatrixError(403, Codes.FORBIDDEN, str(e)) from None
        lock = self._rooms.lock(room_id)
        await lock.acquire()
        try:
            state_before = await self._handler.state_before_prevs(room_id, checked)
            event = await self._handler.process_locked(origin, version, event_id, checked)
        except StateResolutionError:
            event = None  # postponed: nothing persisted on an arbitrary state
        finally:
            lock.release()
        if event is None or event.rejected_reason is not None:
            reason = event.rejected_reason if event is not None else "could not be processed"
            raise MatrixError(403, Codes.FORBIDDEN, f"The {membership} was rejected: {reason}")
        if membership != "join":
            return {}
        state_events = await self._events.get_events(state_before.values())
        chain_ids = await self._events.get_auth_chain_ids(
            [*state_before.values(), event_id], include_given=False
        )
        chain = await self._events.get_events(chain_ids)
        servers = sorted({server_of(u) for u in room.joined_members()} | {self.server_name})
        return {
            "event": checked,
            "state": [ev.pdu for ev in oldest_first(state_events.values())],
            "auth_chain": [ev.pdu for ev in oldest_first(chain.values())],
            "members_omitted": False,
            "servers_in_room": servers,
            "origin": self.server_name,
        }

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: JsonDict) -> JsonDict:
        """A remote server invites one of our users: co-sign and remember the invite."""
        version = get_room_version(str(body.get("room_version", "")))
        if version is None:
            raise MatrixError(
                400,
                Codes.INCOMPATIBLE_ROOM_VERSION,
                "Unsupported room version",
                {"room_version": body.get("room_version")},
            )
        pdu = body.get("event")
        if not isinstance(pdu, dict):
            raise MatrixError(400, Codes.BAD_JSON, "Missing event")
        target = str(pdu.get("state_key", ""))
        if (
            pdu.get("type") != "m.room.member"
            or (pdu.get("content") or {}).get("membership") != "invite"
            or server_of(target) != self.server_name
            or pdu.get("room_id") != room_id
        ):
            raise MatrixError(400, Codes.BAD_JSON, "Not an invite for a user of this server")
        if await self._rooms_store.is_blocked(room_id):
            raise MatrixError(403, Codes.FORBIDDEN, "This room has been blocked on this server")
        if compute_event_id(pdu, version) != event_id:
            raise MatrixError(400, Codes.BAD_JSON, "Event ID does not match the event")
        try:
            await check_pdu(pdu, version, self._handler.keyring)
        except PduFormatRejected as e:
            raise MatrixError(400, Codes.BAD_JSON, str(e)) from None
        except PduRejected as e:
            raise MatrixError(403, Codes.FORBIDDEN, str(e)) from None
        if self._invite_limiter is not None:
            # Per invited user and per (signature-checked) sender; the room is left to
            # the sending server, as Synapse does.
            self._invite_limiter.ratelimit(None, target, str(pdu.get("sender")))
        signed = sign_event(pdu, self.server_name, self._signing_key, version)
        room_state = body.get("invite_room_state", [])
        stripped = (
            [s for s in room_state if isinstance(s, dict)] if isinstance(room_state, list) else []
        )
        await self._handler.store_remote_invite(version, signed, stripped)
        return {"event": signed}

    # Joining side ------------------------------------------------------------------------

    async def remote_join(
        self, user_id: str, room_id: str, servers: list[str], content: JsonDict | None = None
    ) -> str:
        errors = []
        for server in [s for s in servers if s != self.server_name]:
            try:
                await self._remote_join_via(server, user_id, room_id, content or {})
                return room_id
            except FederationRequestError as e:
                logger.info("Join of %s via %s failed: %s", room_id, server, e)
                if 400 <= e.code < 500 and e.errcode != Codes.NOT_FOUND:
                    # The resident refused (not allowed, incompatible room version...):
                    # passed on to the client as Synapse does, not tried elsewhere.
                    raise remote_refusal(e, "Failed to join the room") from None
                errors.append(str(e))
        raise MatrixError(
            404 if not errors else 502,
            Codes.NOT_FOUND if not errors else Codes.UNKNOWN,
            "No known servers" if not errors else f"Failed to join the room: {errors[-1]}",
        )

    async def _remote_join_via(
        self, server: str, user_id: str, room_id: str, content: JsonDict
    ) -> None:
        versions = list(ROOM_VERSIONS)
        resp = await self._client.get_json(
            server,
            f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(user_id)}",
            {"ver": versions},
        )
        version = get_room_version(str(resp.get("room_version", "1")))
        template = resp.get("event")
        if version is None or not isinstance(template, dict):
            raise FederationRequestError(server, 502, None, "Bad make_join response")
        pdu = self._sign_template(template, version, content)
        event_id = compute_event_id(pdu, version)
        path = f"{quote(room_id)}/{quote(event_id)}"
        try:
            result = await self._client.put_json(
                server, f"/_matrix/federation/v2/send_join/{path}", pdu
            )
        except FederationRequestError as e:
            if not _unknown_endpoint(e):
                raise
            # A server without the v2 API: the v1 one answers [200, body] (as Synapse).
            reply = await self._client.put_json(
                server, f"/_matrix/federation/v1/send_join/{path}", pdu
            )
            result = reply[1] if isinstance(reply, list) and len(reply) == 2 else None
        if not isinstance(result, dict):
            raise FederationRequestError(server, 502, None, "Bad send_join response")
        # A resident may have co-signed a restricted join: prefer its copy.
        returned = result.get("event")
        if isinstance(returned, dict) and compute_event_id(returned, version) == event_id:
            pdu = returned
        state = [p for p in result.get("state", []) if isinstance(p, dict)]
        chain = [p for p in result.get("auth_chain", []) if isinstance(p, dict)]
        await self._handler.persist_joined_room(version, pdu, state, chain)

    def _sign_template(
        self, template: JsonDict, version: RoomVersion, content: JsonDict
    ) -> JsonDict:
        # v1/v2: the event id is ours to make (a resident's template may carry its own).
        dropped = ("signatures", "hashes", "unsigned", "event_id")
        pdu = {k: v for k, v in template.items() if k not in dropped}
        pdu["content"] = {**(pdu.get("content") or {}), **content}
        pdu["origin_server_ts"] = now_ms(self._clock)
        if not version.room_id_is_create_event_hash or pdu.get("type") != "m.room.create":
            pdu.setdefault("room_id", template.get("room_id"))
        return hash_and_sign_event(pdu, self.server_name, self._signing_key, version)

    async def query_alias(self, alias: str) -> tuple[str, list[str]]:
        server = alias.split(":", 1)[-1]
        try:
            resp = await self._client.get_json(
                server,
                "/_matrix/federation/v1/query/directory",
                {"room_alias": alias},
                timeout_s=ALIAS_TIMEOUT_S,
                max_body_bytes=ALIAS_MAX_BYTES,
            )
        except FederationRequestError as e:
            if e.code == 404:
                raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {alias} not found") from None
            status = 504 if e.code == 504 else 502
            raise MatrixError(status, Codes.UNKNOWN, f"Could not resolve {alias}: {e}") from None
        room_id = resp.get("room_id")
        listed = resp.get("servers")
        servers = [s for s in listed if isinstance(s, str)] if isinstance(listed, list) else []
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise MatrixError(502, Codes.UNKNOWN, f"Bad directory answer for {alias}")
        return room_id, servers or [server]

    async def remote_leave(
        self, user_id: str, room_id: str, servers: list[str], invite_id: str | None = None
    ) -> None:
        """Leave (or reject an invite to) a room we do not hold, via make_leave/send_leave.

        An invite (``invite_id``) no server lets us reject is rejected here alone, as
        Synapse does: a leave of our own, after the invite, so the user is rid of it.
        """
        last: Exception | None = None
        for server in [s for s in servers if s != self.server_name]:
            try:
                resp = await self._client.get_json(
                    server, f"/_matrix/federation/v1/make_leave/{quote(room_id)}/{quote(user_id)}"
                )
                version = get_room_version(str(resp.get("room_version", "1")))
                if version is None or not isinstance(resp.get("event"), dict):
                    raise FederationRequestError(server, 502, None, "Bad make_leave response")
                pdu = self._sign_template(resp["event"], version, {})
                event_id = compute_event_id(pdu, version)
                await self._client.put_json(
                    server,
                    f"/_matrix/federation/v2/send_leave/{quote(room_id)}/{quote(event_id)}",
                    pdu,
                )
                await self._handler.record_remote_leave(version, pdu)
                return
            except FederationRequestError as e:
                last = e
        if invite_id is not None:
            invite = await self._events.get_event(invite_id)
            if invite is not None and invite.room_id == room_id:
                logger.info("Rejecting the invite to %s locally: %s", room_id, last)
                await self._local_reject(invite)
                return
        raise MatrixError(502, Codes.UNKNOWN, f"Could not leave the room: {last}")

    async def _local_reject(self, invite: Event) -> None:
        """A leave built on the invite alone (an out-of-band membership, as Synapse's)."""
        version = invite.room_version
        refs = references_for_version(
            [invite.event_id], version, {invite.event_id: invite.pdu.get("hashes") or {}}
        )
        user_id = str(invite.state_key)
        pdu: JsonDict = {
            "type": "m.room.member",
            "state_key": user_id,
            "sender": user_id,
            "content": {"membership": "leave"},
            "room_id": invite.room_id,
            "origin_server_ts": now_ms(self._clock),
            "depth": invite.depth + 1,
            "prev_events": refs,
            "auth_events": refs,
        }
        signed = hash_and_sign_event(pdu, self.server_name, self._signing_key, version)
        await self._handler.record_remote_leave(version, signed)

    async def send_invite(self, room: LiveRoom, pdu: JsonDict, version: RoomVersion) -> JsonDict:
        """Ask the invitee's server to co-sign an invite we built; return its copy."""
        target = str(pdu["state_key"])
        event_id = compute_event_id(pdu, version)
        stripped = [
            {"type": ev.type, "state_key": ev.state_key, "content": ev.content, "sender": ev.sender}
            for t in STRIPPED_TYPES
            if (ev := room.state.get((t, ""))) is not None
        ]
        # The inviter's membership too (as Synapse), so the invitee sees who invited.
        inviter = room.state.get(("m.room.member", str(pdu.get("sender"))))
        if inviter is not None:
            stripped.append(
                {
                    "type": inviter.type,
                    "state_key": inviter.state_key,
                    "content": inviter.content,
                    "sender": inviter.sender,
                }
            )
        path = f"{quote(room.room_id)}/{quote(event_id)}"
        try:
            resp = await self._client.put_json(
                server_of(target),
                f"/_matrix/federation/v2/invite/{path}",
                {"event": pdu, "room_version": version.identifier, "invite_room_state": stripped},
            )
        except FederationRequestError as e:
            if not _unknown_endpoint(e):
                raise remote_refusal(e, "The invitee's server refused the invite") from None
            if not version.event_id_in_event:
                raise MatrixError(
                    400,
                    Codes.UNSUPPORTED_ROOM_VERSION,
                    "The invitee's server does not support this room version",
                ) from None
            # A server without the v2 API (as Synapse, only in v1/v2 rooms): the v1 one,
            # with the stripped state in the event's unsigned and a [200, body] reply.
            unsigned = {**(pdu.get("unsigned") or {}), "invite_room_state": stripped}
            try:
                reply = await self._client.put_json(
                    server_of(target),
                    f"/_matrix/federation/v1/invite/{path}",
                    {**pdu, "unsigned": unsigned},
                )
            except FederationRequestError as e1:
                raise remote_refusal(e1, "The invitee's server refused the invite") from None
            resp = reply[1] if isinstance(reply, list) and len(reply) == 2 else None
        signed = resp.get("event") if isinstance(resp, dict) else None
        if not isinstance(signed, dict):
            raise MatrixError(502, Codes.UNKNOWN, "The invitee's server returned a bad invite")
        try:
            validate_pdu_format(strip_unsigned(signed), version)
        except EventFormatError as e:
            raise MatrixError(400, Codes.BAD_JSON, f"Bad invite returned: {e.message}") from None
        if compute_event_id(signed, version) != event_id:
            raise MatrixError(502, Codes.UNKNOWN, "The invitee's server returned a bad invite")
        try:
            await check_pdu(signed, version, self._handler.keyring)
        except PduRejected as e:
            raise MatrixError(
                502, Codes.UNKNOWN, f"Bad signature on the returned invite: {e}"
            ) from None
        return signed


def _unknown_endpoint(error: FederationRequestError) -> bool:
    """The remote does not serve the endpoint (as Synapse's ``_is_unknown_endpoint``)."""
    return (error.code == 404 and error.errcode in (None, Codes.UNRECOGNIZED)) or (
        error.code in (400, 405) and error.errcode == Codes.UNRECOGNIZED
    )


def remote_refusal(error: FederationRequestError, what: str) -> MatrixError:
    """A remote server's refusal, passed on to our client as Synapse does: its 4xx status
    and errcode (a 429 with its ``retry_after_ms``); anything else is 502."""
    if error.code == 429:
        return LimitExceededError(error.retry_after_ms or 1000)
    if 400 <= error.code < 500:
        extra = None
        if error.errcode == Codes.INCOMPATIBLE_ROOM_VERSION and error.room_version is not None:
            extra = {"room_version": error.room_version}
        return MatrixError(
            error.code, error.errcode or Codes.UNKNOWN, f"{what}: {error.message}", extra
        )
    return MatrixError(502, Codes.UNKNOWN, f"{what}: {error.message}")
