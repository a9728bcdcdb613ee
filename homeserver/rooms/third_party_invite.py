"""Third-party invites: inviting an email address (or other 3PID) to a room.

- ``invite``: ``POST /rooms/{roomId}/invite`` with ``id_server``/``medium``/``address``
  (and ``createRoom``'s ``invite_3pid``). The identity server is asked whether the
  address is bound to a Matrix ID: if so, that user is invited; if not, it stores the
  invite and answers a token and its public keys, which we put in an
  ``m.room.third_party_invite`` state event (state key: the token).
- ``exchange``: once the address is bound, the identity server calls the invitee's
  homeserver (``/_matrix/federation/v1/3pid/onbind``) with the invite ``signed`` by its
  key; a join with ``third_party_signed`` carries the same. A server in the room turns it
  into an ``m.room.member`` invite from the original inviter, with
  ``content.third_party_invite``; a server not in the room forwards it
  (``PUT /_matrix/federation/v1/exchange_third_party_invite/{roomId}``) to the servers
  of the room and the inviter.

Before an exchanged invite is sent, the signature must match one of the public keys of
the ``m.room.third_party_invite`` event (the auth rules check this too) and the identity
server must still vouch for that key at its ``key_validity_url`` (revoked keys, or an
identity server that cannot be reached, refuse the invite), as Synapse does.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from twisted.internet import defer

from federation.interfaces import FederationClient
from homeserver.errors import Codes, MatrixError
from homeserver.events.auth_rules import verify_third_party_invite_signed
from homeserver.events.event import Event
from homeserver.events.format import is_valid_room_id, is_valid_user_id
from homeserver.handlers.identity import IdentityServerClient, IdentityServerError
from homeserver.requester import Requester
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.room_cache import LiveRoom

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
THIRD_PARTY_INVITE = "m.room.third_party_invite"
EXCHANGE_PATH = "/_matrix/federation/v1/exchange_third_party_invite/"


def parse_3pid_invite(body: Any) -> tuple[str, str, str, str]:
    """(id_server, id_access_token, medium, address) of a 3PID invite, validated."""
    if not isinstance(body, dict):
        raise MatrixError(400, Codes.BAD_JSON, "A third-party invite must be an object")
    values = []
    for key in ("id_server", "id_access_token", "medium", "address"):
        value = body.get(key)
        if value is None:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {key}")
        if not isinstance(value, str) or not value:
            raise MatrixError(400, Codes.INVALID_PARAM, f"{key} must be a non-empty string")
        values.append(value)
    IdentityServerClient.check_id_server(values[0])
    return values[0], values[1], values[2], values[3]


def parse_signed(signed: Any) -> JsonDict:
    """A ``signed`` block (``mxid``, ``sender``, ``token``, ``signatures``), validated."""
    if not isinstance(signed, dict):
        raise MatrixError(400, Codes.BAD_JSON, "third_party_signed must be an object")
    for key in ("mxid", "token"):
        if not isinstance(signed.get(key), str):
            raise MatrixError(400, Codes.BAD_JSON, f"third_party_signed.{key} must be a string")
    if not isinstance(signed.get("signatures"), dict):
        raise MatrixError(400, Codes.BAD_JSON, "third_party_signed.signatures must be an object")
    return signed


class ThirdPartyInviteHandler:
    def __init__(
        self,
        server_name: str,
        rooms: RoomHandler,
        identity: IdentityServerClient,
        federation: FederationClient | None = None,
    ) -> None:
        self._server_name = server_name
        self._rooms = rooms
        self._identity = identity
        self._federation = federation

    def _is_mine(self, user_id: str) -> bool:
        return self._rooms.is_mine(user_id)

    # Inviting ---------------------------------------------------------------------

    async def invite(
        self,
        requester: Requester,
        room_id: str,
        id_server: str,
        id_access_token: str,
        medium: str,
        address: str,
        *,
        txn: tuple[str, str] | None = None,
    ) -> None:
        room = await self._rooms.get_room(room_id)
        # Checked before the identity server hears of the room (as the auth rules would).
        if room.membership_of(requester.user_id) != "join":
            raise MatrixError(403, Codes.FORBIDDEN, "You are not in this room")
        if medium == "email":
            address = address.strip().lower() if "@" in address else address
        mxid = await self._identity.lookup_3pid(id_server, id_access_token, medium, address)
        if mxid is not None and is_valid_user_id(mxid):
            await self._rooms.update_membership(requester, room_id, mxid, "invite", txn=txn)
            return
        await self._store_and_send(requester, room, id_server, id_access_token, medium, address)

    async def _store_and_send(
        self,
        requester: Requester,
        room: LiveRoom,
        id_server: str,
        id_access_token: str,
        medium: str,
        address: str,
    ) -> Event:
        sender = requester.user_id
        member = room.state_content("m.room.member", sender)
        request: JsonDict = {
            "medium": medium,
            "address": address,
            "room_id": room.room_id,
            "sender": sender,
            "sender_display_name": member.get("displayname") or "",
            "sender_avatar_url": member.get("avatar_url") or "",
            "room_alias": room.state_content("m.room.canonical_alias").get("alias") or "",
            "room_avatar_url": room.state_content("m.room.avatar").get("url") or "",
            "room_join_rules": room.state_content("m.room.join_rules").get("join_rule") or "",
            "room_name": room.state_content("m.room.name").get("name") or "",
            "room_type": room.state_content("m.room.create").get("type") or "",
        }
        data = await self._identity.store_invite(id_server, id_access_token, request)
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise IdentityServerError(502, Codes.UNKNOWN, "Identity server gave no invite token")
        public_keys = [
            {"public_key": k["public_key"], "key_validity_url": k["key_validity_url"]}
            for k in data.get("public_keys") or []
            if isinstance(k, dict)
            and isinstance(k.get("public_key"), str)
            and isinstance(k.get("key_validity_url"), str)
        ]
        if public_keys:
            fallback = public_keys[0]
        elif isinstance(data.get("public_key"), str):
            fallback = {
                "public_key": data["public_key"],
                "key_validity_url": f"https://{id_server}/_matrix/identity/v2/pubkey/isvalid",
            }
            public_keys = [fallback]
        else:
            raise IdentityServerError(502, Codes.UNKNOWN, "Identity server gave no public key")
        display_name = data.get("display_name")
        content: JsonDict = {
            "display_name": display_name if isinstance(display_name, str) else "",
            "key_validity_url": fallback["key_validity_url"],
            "public_key": fallback["public_key"],
            "public_keys": public_keys,
        }
        return await self._rooms.send_state(
            requester, room.room_id, THIRD_PARTY_INVITE, token, content
        )

    # Exchanging a bound invite -------------------------------------------------------

    async def exchange(
        self,
        sender: str,
        target: str,
        room_id: str,
        signed: JsonDict,
        *,
        forward_in_background: bool = False,
    ) -> None:
        """Turn a signed third-party invite into an invite of ``target`` from ``sender``.

        With ``forward_in_background`` (an identity server's ``onbind``), a room we are
        in whose inviter is on another server is handed to that server without waiting
        for it: the invite then reaches us over federation, as in Synapse, where the
        invitee's server builds it and sends it on."""
        if not is_valid_user_id(sender) or not is_valid_user_id(target):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid sender or mxid")
        if not is_valid_room_id(room_id):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room ID")
        if signed.get("mxid") != target:
            raise MatrixError(400, Codes.INVALID_PARAM, "signed.mxid is not the invitee")
        room = await self._rooms.get_room_if_held(room_id)
        if room is not None and self._is_mine(sender) and self._host_in_room(room):
            await self.exchange_locally(room, sender, target, signed)
            return
        if forward_in_background and room is not None and self._host_in_room(room):
            forwarding = defer.ensureDeferred(self._forward(sender, target, room_id, signed))
            forwarding.addErrback(
                lambda f: logger.info("Forwarding a third-party invite failed: %s", f.value)
            )
            return
        await self._forward(sender, target, room_id, signed)

    def _host_in_room(self, room: LiveRoom) -> bool:
        return any(self._is_mine(u) for u in room.joined_members())

    async def exchange_locally(
        self, room: LiveRoom, sender: str, target: str, signed: JsonDict
    ) -> Event:
        token = signed.get("token")
        invite_event = (
            room.state.get((THIRD_PARTY_INVITE, token)) if isinstance(token, str) else None
        )
        if invite_event is None:
            raise MatrixError(403, Codes.FORBIDDEN, "No third-party invite for this token")
        if invite_event.sender != sender:
            raise MatrixError(403, Codes.FORBIDDEN, "The third-party invite has another sender")
        await self._check_signature(signed, invite_event)
        display_name = invite_event.content.get("display_name")
        third_party_invite: JsonDict = {"signed": signed}
        if isinstance(display_name, str):
            third_party_invite["display_name"] = display_name
        inviter = Requester(user_id=sender, device_id=None, access_token_id=None, ratelimited=False)
        return await self._rooms.update_membership(
            inviter,
            room.room_id,
            target,
            "invite",
            extra_content={"third_party_invite": third_party_invite},
        )

    async def _check_signature(self, signed: JsonDict, invite_event: Event) -> None:
        """A signature by one of the invite's keys which its identity server still vouches
        for (``key_validity_url``); 403 otherwise."""
        content = invite_event.content
        keys: list[JsonDict] = [k for k in content.get("public_keys") or [] if isinstance(k, dict)]
        if isinstance(content.get("public_key"), str):
            keys.append(
                {
                    "public_key": content["public_key"],
                    "key_validity_url": content.get("key_validity_url"),
                }
            )
        for key in keys:
            public_key = key.get("public_key")
            if not isinstance(public_key, str):
                continue
            if not verify_third_party_invite_signed(
                dict(signed), {"content": {"public_key": public_key}}
            ):
                continue
            url = key.get("key_validity_url")
            if isinstance(url, str) and not await self._identity.key_is_valid(url, public_key):
                logger.info("Third-party invite key %s is no longer valid", public_key)
                continue
            return
        raise MatrixError(403, Codes.FORBIDDEN, "No valid signature for the third-party invite")

    async def _forward(self, sender: str, target: str, room_id: str, signed: JsonDict) -> None:
        if self._federation is None:
            raise MatrixError(403, Codes.FORBIDDEN, "Federation is not enabled")
        destinations = [
            d
            for d in dict.fromkeys(x.split(":", 1)[1] for x in (room_id, sender) if ":" in x)
            if d != self._server_name
        ]
        if not destinations:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        body: JsonDict = {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": sender,
            "state_key": target,
            "content": {"membership": "invite", "third_party_invite": {"signed": signed}},
        }
        last: Exception | None = None
        for destination in destinations:
            try:
                await self._federation.put_json(
                    destination, EXCHANGE_PATH + quote(room_id, safe=""), body
                )
                return
            except Exception as e:  # try the next server
                logger.info("exchange_third_party_invite via %s failed: %s", destination, e)
                last = e
        raise MatrixError(502, Codes.UNKNOWN, f"Could not exchange the invite: {last}")

    async def on_exchange_request(self, origin: str, room_id: str, event: Any) -> None:
        """``PUT /_matrix/federation/v1/exchange_third_party_invite/{roomId}``."""
        if not isinstance(event, dict):
            raise MatrixError(400, Codes.BAD_JSON, "Expected an event")
        content = event.get("content")
        sender = event.get("sender")
        target = event.get("state_key")
        if (
            event.get("type") != "m.room.member"
            or event.get("room_id", room_id) != room_id
            or not isinstance(content, dict)
            or content.get("membership") != "invite"
            or not isinstance(sender, str)
            or not isinstance(target, str)
        ):
            raise MatrixError(400, Codes.BAD_JSON, "Expected an m.room.member invite")
        tpi = content.get("third_party_invite")
        signed = parse_signed(tpi.get("signed") if isinstance(tpi, dict) else None)
        if signed.get("mxid") != target or not is_valid_user_id(target):
            raise MatrixError(400, Codes.INVALID_PARAM, "signed.mxid is not the invitee")
        # We can only make (and sign) events for our own users, in rooms we are in.
        if not self._is_mine(sender):
            raise MatrixError(403, Codes.FORBIDDEN, "The inviter is not on this server")
        room = await self._rooms.get_room_if_held(room_id)
        if room is None or not self._host_in_room(room):
            raise MatrixError(404, Codes.NOT_FOUND, "This server is not in the room")
        await self.exchange_locally(room, sender, target, signed)

    async def on_bind(self, body: Any) -> None:
        """``POST /_matrix/federation/v1/3pid/onbind`` from an identity server: every
        invite is tried; if any failed, the last failure is the answer (as Synapse)."""
        if not isinstance(body, dict):
            raise MatrixError(400, Codes.BAD_JSON, "Expected an object")
        invites = body.get("invites")
        if invites is None:
            return
        if not isinstance(invites, list):
            raise MatrixError(400, Codes.BAD_JSON, "invites must be a list")
        last: MatrixError | None = None
        for invite in invites[:20]:  # bounded: each may cost requests to other servers
            try:
                if not isinstance(invite, dict):
                    raise MatrixError(400, Codes.BAD_JSON, "An invite must be an object")
                signed = parse_signed(invite.get("signed"))
                sender, room_id = invite.get("sender"), invite.get("room_id")
                if not isinstance(sender, str) or not isinstance(room_id, str):
                    raise MatrixError(400, Codes.BAD_JSON, "An invite needs sender and room_id")
                if not self._is_mine(signed["mxid"]):
                    raise MatrixError(400, Codes.INVALID_PARAM, "The invitee is not ours")
                await self.exchange(
                    sender, signed["mxid"], room_id, signed, forward_in_background=True
                )
            except MatrixError as e:
                logger.info("Third-party invite from onbind not exchanged: %s", e.message)
                last = e
        if last is not None:
            raise last
