"""Room operations for local users: create, membership, send, state, redact, aliases.

Every change goes through ``EventCreator.send``, so auth rules are the single gate:
this module decides *what* event to send, the rules decide whether it is allowed.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from twisted.internet import defer

from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.events.auth_rules import get_user_power_level
from homeserver.events.event import Event
from homeserver.events.format import is_valid_room_id, is_valid_user_id
from homeserver.events.redaction import has_redact_power, redaction_target
from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, RoomVersion, get_room_version
from homeserver.handlers.restrictions import UserRestrictions
from homeserver.http.ratelimit import InviteRatelimiter
from homeserver.requester import Requester
from homeserver.rooms.event_creation import EventCreator
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import LiveRoom, RoomCache, pdu_with_id
from homeserver.sync.notifier import Notifier
from storage.aliases import RoomAlias
from storage.storage import Storage

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

PRESETS: dict[str, dict[str, str]] = {
    "private_chat": {"join_rule": "invite", "history": "shared", "guest": "can_join"},
    "trusted_private_chat": {"join_rule": "invite", "history": "shared", "guest": "can_join"},
    # guest_access "forbidden" is the default when the room has none: as Synapse, no
    # event is sent for it.
    "public_chat": {"join_rule": "public", "history": "shared", "guest": ""},
}

# Member content keys the server sets, never taken from a client's /join body.
_SERVER_MEMBER_KEYS = frozenset(
    {
        "membership",
        "join_authorised_via_users_server",
        "third_party_invite",
        "third_party_signed",
        "reason",
    }
)


def client_member_keys(body: JsonDict | None) -> JsonDict:
    """A client's keys for its own member event (a /join body, as Synapse), without the
    ones the server decides."""
    return {k: v for k, v in (body or {}).items() if k not in _SERVER_MEMBER_KEYS}


# Event types whose state clients may not set through createRoom's initial_state.
_CREATE_ROOM_RESERVED = {"m.room.create", "m.room.member", "m.room.power_levels"}


class RemoteMembership(Protocol):
    """Membership changes that need another server (rooms we do not hold)."""

    async def remote_join(
        self, user_id: str, room_id: str, servers: list[str], content: JsonDict | None = None
    ) -> str: ...

    async def remote_leave(
        self, user_id: str, room_id: str, servers: list[str], invite_id: str | None = None
    ) -> None: ...

    async def send_invite(
        self, room: LiveRoom, pdu: JsonDict, version: RoomVersion
    ) -> JsonDict: ...

    async def query_alias(self, alias: str) -> tuple[str, list[str]]: ...


class UpgradeFollower(Protocol):
    """Carries our side of a room over to its replacement once we join that."""

    async def on_remote_join(self, room_id: str) -> None: ...


class AliasNamespaces(Protocol):
    """Aliases reserved by application services (``AppServiceRegistry``)."""

    def check_alias_change(self, app_service_id: str | None, alias: str) -> bool: ...


class AppServices(Protocol):
    """What rooms ask of application services (``AppServiceHandler``)."""

    @property
    def registry(self) -> AliasNamespaces: ...

    async def user_exists(self, user_id: str) -> bool: ...

    async def query_alias(self, alias: str) -> RoomAlias | None: ...


class RoomHandler:
    def __init__(
        self,
        server_name: str,
        clock: Clock,
        storage: Storage,
        rooms: RoomCache,
        creator: EventCreator,
        notifier: Notifier,
        memberships: MembershipCache,
        appservices: AppServices | None = None,
        restrictions: UserRestrictions | None = None,
        *,
        invite_limiter: InviteRatelimiter | None = None,
    ) -> None:
        self.server_name = server_name
        self._restrictions = restrictions
        self._invite_limiter = invite_limiter
        self.appservices = appservices
        self._clock = clock
        self._storage = storage
        self._rooms = rooms
        self._creator = creator
        self._notifier = notifier
        self._memberships = memberships
        # Set by the composition root when federation is enabled.
        self.remote: RemoteMembership | None = None
        # Set by the composition root (room upgrades).
        self.upgrades: UpgradeFollower | None = None
        # Checks of a message before it is built (relations): (requester, room id, event
        # type, content, transaction id); each raises MatrixError to refuse it.
        self.message_checks: list[
            Callable[[Requester, str, str, JsonDict, str | None], Awaitable[None]]
        ] = []

    def _check_not_suspended(self, requester: Requester) -> None:
        if self._restrictions is not None:
            self._restrictions.check_not_suspended(requester.user_id)

    def is_mine(self, user_id: str) -> bool:
        return user_id.rsplit(":", 1)[-1] == self.server_name or user_id.endswith(
            f":{self.server_name}"
        )

    async def _user_exists(self, user_id: str) -> bool:
        """A local user exists (an application service may create it when asked)."""
        if self.appservices is not None:
            return await self.appservices.user_exists(user_id)
        return await self._storage.users.get_user(user_id) is not None

    def _check_alias_namespace(self, requester: Requester, alias: str) -> bool:
        """``M_EXCLUSIVE`` for an alias reserved by (or outside of) an application
        service; True when the requesting service manages the alias itself."""
        if self.appservices is None:
            return False
        return self.appservices.registry.check_alias_change(requester.app_service_id, alias)

    # Lookup ---------------------------------------------------------------------

    async def check_not_blocked(self, room_id: str) -> None:
        """403 for a room a server admin blocked (no joins, invites or knocks)."""
        if await self._storage.rooms.is_blocked(room_id):
            raise MatrixError(403, Codes.FORBIDDEN, "This room has been blocked on this server")

    async def get_room(self, room_id: str) -> LiveRoom:
        if not room_id.startswith("!"):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a valid room ID")
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        return room

    async def get_room_if_held(self, room_id: str) -> LiveRoom | None:
        """The room, if this server holds its state (None otherwise)."""
        if not room_id.startswith("!"):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a valid room ID")
        return await self._rooms.get(room_id)

    async def resolve_room_id_or_alias(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("!"):
            return room_id_or_alias
        if room_id_or_alias.startswith("#"):
            alias = await self._storage.aliases.get(room_id_or_alias)
            if alias is None and self.appservices is not None:
                alias = await self.appservices.query_alias(room_id_or_alias)
            if alias is None:
                raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {room_id_or_alias} not found")
            return alias.room_id
        raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id_or_alias} is not a room ID or alias")

    async def resolve_room(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """A room id, and for an alias of another server the servers it names."""
        if (
            room_id_or_alias.startswith("#")
            and self.remote is not None
            and not self._is_local_alias(room_id_or_alias)
        ):
            return await self.remote.query_alias(room_id_or_alias)
        return await self.resolve_room_id_or_alias(room_id_or_alias), []

    async def require_joined(self, requester: Requester, room_id: str) -> LiveRoom:
        room = await self.get_room(room_id)
        if room.membership_of(requester.user_id) != "join":
            raise MatrixError(
                403, Codes.FORBIDDEN, f"User {requester.user_id} not in room {room_id}"
            )
        return room

    async def joined_room_ids(self, user_id: str) -> list[str]:
        rooms = await self._memberships.rooms_for_user(user_id)
        return sorted(r for r, row in rooms.items() if row.membership == "join")

    async def visible_state(
        self, user_id: str, room_id: str, *, banned_may_read: bool = False
    ) -> dict[tuple[str, str], Event]:
        """Current state for members (and world-readable rooms); at the leave for leavers.

        A banned user may not read the room's state (403, as in Synapse, whose state
        endpoints let only users who left read it as it was then), unless
        ``banned_may_read`` (the legacy initial syncs, which list banned rooms).
        """
        room = await self.get_room(room_id)
        membership = room.membership_of(user_id)
        hv = room.state_content("m.room.history_visibility").get("history_visibility")
        if membership == "join" or hv == "world_readable":  # anyone may read the latter
            return dict(room.state)
        if membership == "leave" or (membership == "ban" and banned_may_read):
            own = room.state[("m.room.member", user_id)]
            ids = await self._storage.state_groups.get_state_ids_at_event(own.event_id) or {}
            events = await self._storage.events.get_events(ids.values())
            return {key: events[eid] for key, eid in ids.items() if eid in events}
        raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")

    async def profile_content(self, user_id: str) -> JsonDict:
        profile = await self._storage.profiles.get_profile(user_id)
        content: JsonDict = {}
        if profile is not None:
            if profile.displayname is not None:
                content["displayname"] = profile.displayname
            if profile.avatar_url is not None:
                content["avatar_url"] = profile.avatar_url
        return content

    # Create ---------------------------------------------------------------------

    async def create_room(self, requester: Requester, body: JsonDict) -> tuple[str, str | None]:
        self._check_not_suspended(requester)
        version_id = body.get("room_version", DEFAULT_ROOM_VERSION)
        if not isinstance(version_id, str):
            raise MatrixError(400, Codes.BAD_JSON, "room_version must be a string")
        version = get_room_version(version_id)
        if version is None:
            raise MatrixError(
                400, Codes.UNSUPPORTED_ROOM_VERSION, f"Room version {version_id} is not supported"
            )
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise MatrixError(400, Codes.BAD_JSON, "visibility must be public or private")
        preset = body.get("preset") or ("public_chat" if visibility == "public" else "private_chat")
        if preset not in PRESETS:
            raise MatrixError(400, Codes.BAD_JSON, f"Unknown preset {preset}")
        invitees = body.get("invite", [])
        if not isinstance(invitees, list) or not all(
            isinstance(u, str) and is_valid_user_id(u) for u in invitees
        ):
            raise MatrixError(400, Codes.INVALID_PARAM, "invite must be a list of user IDs")
        for key, kind in (
            ("name", str),
            ("topic", str),
            ("room_alias_name", str),
            ("creation_content", dict),
            ("initial_state", list),
            ("power_level_content_override", dict),
            ("is_direct", bool),
        ):
            if key in body and body[key] is not None and not isinstance(body[key], kind):
                raise MatrixError(400, Codes.BAD_JSON, f"{key} has the wrong type")
        initial_state = body.get("initial_state") or []
        for ev in initial_state:
            if (
                not isinstance(ev, dict)
                or not isinstance(ev.get("type"), str)
                or not isinstance(ev.get("content"), dict)
            ):
                raise MatrixError(
                    400, Codes.BAD_JSON, "initial_state entries need type and content"
                )

        for invitee in invitees:
            # Checked before anything is created, so a bad invite leaves no half-made room.
            if self.is_mine(invitee) and not await self._user_exists(invitee):
                raise MatrixError(404, Codes.NOT_FOUND, f"Unknown user {invitee}")

        alias: str | None = None
        if body.get("room_alias_name"):
            localpart = body["room_alias_name"]
            if ":" in localpart or "#" in localpart or any(c.isspace() for c in localpart):
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid characters in room alias")
            alias = f"#{localpart}:{self.server_name}"
            self._check_alias_namespace(requester, alias)
            if len(alias.encode()) > 255:
                raise MatrixError(400, Codes.INVALID_PARAM, "Room alias too long")
            if await self._storage.aliases.get(alias) is not None:
                raise MatrixError(400, Codes.ROOM_IN_USE, "Room alias already taken")

        user_id = requester.user_id
        creation_content = dict(body.get("creation_content") or {})
        creation_content["room_version"] = version.identifier
        if version.implicit_room_creator:
            creation_content.pop("creator", None)
        else:
            creation_content["creator"] = user_id
        if version.room_id_is_create_event_hash and preset == "trusted_private_chat":
            extra = list(creation_content.get("additional_creators") or [])
            creation_content["additional_creators"] = list(dict.fromkeys(extra + invitees))
        room_id = None if version.room_id_is_create_event_hash else self.new_room_id()
        create = self._creator.build_create_event(version, user_id, creation_content, room_id)
        # The alias is claimed atomically before the room exists, so concurrent requests
        # for one alias create one room (the check above only gives an early answer).
        if alias is not None and not await self._storage.aliases.create(
            RoomAlias(alias, create.room_id, user_id, [self.server_name])
        ):
            raise MatrixError(400, Codes.ROOM_IN_USE, "Room alias already taken")
        room = await self._creator.persist_create_event(create, user_id)
        room_id = room.room_id

        async def send_state(event_type: str, content: JsonDict, state_key: str = "") -> None:
            await self._creator.send(
                room_id,
                {"type": event_type, "state_key": state_key, "sender": user_id, "content": content},
                room=room,
            )

        await send_state(
            "m.room.member", {"membership": "join", **await self.profile_content(user_id)}, user_id
        )
        initial_keys = {(ev["type"], str(ev.get("state_key", ""))) for ev in initial_state}
        # Power levels given in initial_state replace the defaults (as Synapse); the
        # override still applies on top.
        given_pl = next(
            (
                dict(ev["content"])
                for ev in initial_state
                if (ev["type"], str(ev.get("state_key", ""))) == ("m.room.power_levels", "")
            ),
            None,
        )
        override = body.get("power_level_content_override")
        if given_pl is not None:
            given_pl.update(override or {})
        await send_state(
            "m.room.power_levels",
            given_pl
            if given_pl is not None
            else self._initial_power_levels(version, user_id, preset, invitees, override),
        )
        if alias is not None:
            await send_state("m.room.canonical_alias", {"alias": alias})
        settings = PRESETS[preset]
        if ("m.room.join_rules", "") not in initial_keys:
            await send_state("m.room.join_rules", {"join_rule": settings["join_rule"]})
        if ("m.room.history_visibility", "") not in initial_keys:
            await send_state(
                "m.room.history_visibility", {"history_visibility": settings["history"]}
            )
        if ("m.room.guest_access", "") not in initial_keys and settings["guest"]:
            await send_state("m.room.guest_access", {"guest_access": settings["guest"]})
        for ev in initial_state:
            if ev["type"] in _CREATE_ROOM_RESERVED:
                continue
            await send_state(ev["type"], ev["content"], str(ev.get("state_key", "")))
        if body.get("name") is not None:
            await send_state("m.room.name", {"name": body["name"]})
        if body.get("topic") is not None:
            # "with a text/plain mimetype" (spec v1.15+): the m.topic block too.
            topic = body["topic"]
            await send_state(
                "m.room.topic",
                {
                    "topic": topic,
                    "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]},
                },
            )
        for invitee in invitees:
            await self.update_membership(
                requester, room_id, invitee, "invite", is_direct=bool(body.get("is_direct"))
            )
        if visibility == "public":
            await self._storage.room_directory.set_public(room_id, True)
        return room_id, alias

    def new_room_id(self) -> str:
        local = "".join(secrets.choice(string.ascii_letters) for _ in range(18))
        return f"!{local}:{self.server_name}"

    @staticmethod
    def _initial_power_levels(
        version: RoomVersion,
        creator: str,
        preset: str,
        invitees: list[str],
        override: JsonDict | None,
    ) -> JsonDict:
        users: JsonDict = {}
        if not version.room_id_is_create_event_hash:
            users[creator] = 100
            if preset == "trusted_private_chat":
                for invitee in invitees:
                    users[invitee] = 100
        content: JsonDict = {
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                # v12: must be above state_default explicitly.
                "m.room.tombstone": 150 if version.room_id_is_create_event_hash else 100,
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 50 if preset == "public_chat" else 0,
            "notifications": {"room": 50},
        }
        if override:
            content.update(override)
        return content

    # Membership -------------------------------------------------------------------

    async def update_membership(
        self,
        requester: Requester,
        room_id: str,
        target: str,
        membership: str,
        *,
        reason: str | None = None,
        is_direct: bool = False,
        txn: tuple[str, str] | None = None,
        extra_content: JsonDict | None = None,
        servers: list[str] | None = None,
    ) -> Event:
        if not (membership == "leave" and target == requester.user_id):
            self._check_not_suspended(requester)  # as Synapse: leaving stays possible
        if not is_valid_user_id(target):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{target} is not a valid user ID")
        if membership in ("join", "invite", "knock"):
            await self.check_not_blocked(room_id)
        room = await self._rooms.get(room_id)
        if room is None:
            oob = await self._memberships.rooms_for_user(target)
            if (
                self.remote is not None
                and membership == "leave"
                and target == requester.user_id
                and room_id in oob
            ):
                # Rejecting an invite to (or leaving) a room we do not hold.
                servers = sorted({oob[room_id].sender.split(":", 1)[-1]} | set(servers or []))
                row = oob[room_id]
                invite_id = row.event_id if row.membership == "invite" else None
                await self.remote.remote_leave(target, room_id, servers, invite_id)
                event = await self._storage.events.get_event(oob[room_id].event_id)
                assert event is not None
                return event
            if membership == "join" and not room_id.startswith("!"):
                raise MatrixError(404, Codes.NOT_FOUND, "No known servers")
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        if membership == "join" and requester.is_guest and not guest_can_join(room):
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access not allowed")
        content: JsonDict = {"membership": membership}
        if membership in ("join", "knock") and target == requester.user_id:
            content.update(await self.profile_content(target))
        elif membership == "invite":
            if self.is_mine(target) and not await self._user_exists(target):
                raise MatrixError(404, Codes.NOT_FOUND, f"Unknown user {target}")
            if room.membership_of(target) == "join":
                raise MatrixError(403, Codes.FORBIDDEN, f"{target} is already in the room.")
            if self._invite_limiter is not None and requester.ratelimited:
                self._invite_limiter.ratelimit(room_id, target, requester.user_id)
            content.update(await self.profile_content(target))
            if is_direct:
                content["is_direct"] = True
        if membership == "join":
            await self._maybe_authorise_restricted_join(room, target, content)
        if reason is not None:
            content["reason"] = reason
        if extra_content:
            # Keys the caller decided: a client's are passed through client_member_keys.
            content.update(extra_content)
        current = room.state.get(("m.room.member", target))
        if (
            current is not None
            and current.sender == requester.user_id
            and current.membership == membership
            and current.content == content
        ):
            return current  # a repeat (a second /join...): no new event, as Synapse
        pre_persist = None
        if membership == "invite" and not self.is_mine(target):
            remote = self.remote
            if remote is None:
                raise MatrixError(403, Codes.FORBIDDEN, "Federation is not enabled")

            async def pre_persist(live: LiveRoom, ev: Event) -> JsonDict:
                assert remote is not None
                return await remote.send_invite(live, ev.pdu, live.room_version)

        return await self._creator.send(
            room_id,
            {
                "type": "m.room.member",
                "state_key": target,
                "sender": requester.user_id,
                "content": content,
            },
            txn=txn,
            room=room,
            pre_persist=pre_persist,
        )

    async def _maybe_authorise_restricted_join(
        self, room: LiveRoom, user_id: str, content: JsonDict
    ) -> None:
        """For restricted rooms, name a local member with invite power as authoriser."""
        rule = room.state_content("m.room.join_rules").get("join_rule")
        if rule not in ("restricted", "knock_restricted"):
            return
        if room.membership_of(user_id) in ("join", "invite"):
            return
        allow = room.state_content("m.room.join_rules").get("allow") or []
        allowed_rooms = [
            a.get("room_id")
            for a in allow
            if isinstance(a, dict) and a.get("type") == "m.room_membership"
        ]
        in_allowed = False
        for other_id in allowed_rooms:
            if isinstance(other_id, str):
                other = await self._rooms.get(other_id)
                if other is not None and other.membership_of(user_id) == "join":
                    in_allowed = True
                    break
        if not in_allowed:
            return  # the auth rules will refuse the join
        auth_state = room.auth_state()
        create = room.create_event
        invite_level = room.state_content("m.room.power_levels").get("invite", 0)
        for member in sorted(room.joined_members()):
            if not self.is_mine(member):
                continue
            level = get_user_power_level(
                member,
                auth_state,
                room.room_version,
                create_event=pdu_with_id(create) if create else None,
            )
            if isinstance(invite_level, int) and level >= invite_level:
                content["join_authorised_via_users_server"] = member
                return

    async def join(
        self,
        requester: Requester,
        room_id_or_alias: str,
        *,
        reason: str | None = None,
        txn: tuple[str, str] | None = None,
        servers: list[str] | None = None,
        extra_content: JsonDict | None = None,
    ) -> str:
        """``extra_content``: the client's keys for its member event (the /join body)."""
        self._check_not_suspended(requester)
        room_id, alias_servers = await self.resolve_room(room_id_or_alias)
        await self.check_not_blocked(room_id)
        servers = alias_servers + list(servers or [])
        room = await self._rooms.get(room_id)
        in_room = room is not None and any(self.is_mine(u) for u in room.joined_members())
        if requester.is_guest and not in_room:
            # Guests are a local concept: only rooms whose state we hold can say yes.
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access not allowed")
        if not in_room and self.remote is not None:
            if room_id.count(":") and room_id.split(":", 1)[1] != self.server_name:
                servers.append(room_id.split(":", 1)[1])
            rooms = await self._memberships.rooms_for_user(requester.user_id)
            if room_id in rooms:  # invited: the inviter's server is in the room
                servers.insert(0, rooms[room_id].sender.split(":", 1)[-1])
            content: JsonDict = await self.profile_content(requester.user_id)
            content.update(client_member_keys(extra_content))
            if reason is not None:
                content["reason"] = reason
            candidates = [s for s in dict.fromkeys(servers) if s != self.server_name]
            if candidates or room is None:
                await self.remote.remote_join(requester.user_id, room_id, candidates, content)
                if self.upgrades is not None:
                    try:
                        await self.upgrades.on_remote_join(room_id)
                    except Exception:
                        logger.exception("Carrying %s's predecessor over failed", room_id)
                return room_id
        await self.update_membership(
            requester,
            room_id,
            requester.user_id,
            "join",
            reason=reason,
            txn=txn,
            extra_content=client_member_keys(extra_content),
        )
        return room_id

    def _is_local_alias(self, alias: str) -> bool:
        return alias.split(":", 1)[-1] == self.server_name

    async def on_profile_changed(self, user_id: str, field: str, value: Any) -> None:
        """Write the new display name / avatar into the user's joined rooms."""
        if field not in ("displayname", "avatar_url"):
            return
        requester = Requester(user_id, None, None)
        for room_id in await self.joined_room_ids(user_id):
            room = await self._rooms.get(room_id)
            if room is None:
                continue
            current = room.state.get(("m.room.member", user_id))
            if current is None or current.membership != "join":
                continue
            content = dict(current.content)
            if value is None:
                content.pop(field, None)
            else:
                content[field] = value
            if content == current.content:
                continue
            try:
                await self._creator.send(
                    room_id,
                    {
                        "type": "m.room.member",
                        "state_key": user_id,
                        "sender": user_id,
                        "content": content,
                    },
                    room=room,
                )
            except MatrixError as e:
                logger.info("Profile update not sent to %s: %s", room_id, e.message)
        del requester

    async def forget(self, requester: Requester, room_id: str) -> None:
        room = await self.get_room(room_id)
        if room.membership_of(requester.user_id) in ("join", "invite", "knock"):
            raise MatrixError(400, Codes.UNKNOWN, "User is in the room; leave before forgetting")
        if room.membership_of(requester.user_id) is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Not a member of this room")
        await self._storage.memberships.forget_room(requester.user_id, room_id)
        self._memberships.forget(requester.user_id, room_id)

    # Messages and state -------------------------------------------------------------

    async def send_message(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        content: JsonDict,
        txn_id: str | None,
        origin_server_ts: int | None = None,
    ) -> Event:
        """``origin_server_ts``: an application service's timestamp massaging (``ts``)."""
        self._check_not_suspended(requester)
        room = await self.require_joined(requester, room_id)
        for check in self.message_checks:
            await check(requester, room_id, event_type, content, txn_id)
        txn = (requester.device_id or "", txn_id) if txn_id is not None else None
        event_dict: JsonDict = {"type": event_type, "sender": requester.user_id, "content": content}
        if origin_server_ts is not None:
            event_dict["origin_server_ts"] = origin_server_ts
        await self._check_may_redact(requester, room, event_dict)
        return await self._creator.send(room_id, event_dict, txn=txn)

    async def send_state(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        state_key: str,
        content: JsonDict,
        origin_server_ts: int | None = None,
    ) -> Event:
        self._check_not_suspended(requester)
        if (
            event_type == "m.room.member"
            and state_key == requester.user_id
            and content.get("membership") == "join"
        ):
            held = await self._rooms.get(room_id)
            if held is not None and held.membership_of(requester.user_id) != "join":
                # As Synapse: one's own member event with "join" joins (with its keys,
                # e.g. a displayname for this room), as POST /join would.
                return await self.update_membership(
                    requester, room_id, state_key, "join", extra_content=client_member_keys(content)
                )
        room = await self.require_joined(requester, room_id)
        event_dict: JsonDict = {
            "type": event_type,
            "state_key": state_key,
            "sender": requester.user_id,
            "content": content,
        }
        if origin_server_ts is not None:
            event_dict["origin_server_ts"] = origin_server_ts
        await self._check_may_redact(requester, room, event_dict)
        if event_type == "m.room.member":
            membership = content.get("membership")
            if not isinstance(membership, str):
                raise MatrixError(400, Codes.BAD_JSON, "membership must be a string")
            return await self._creator.send(room_id, event_dict, room=room)
        if event_type == "m.room.canonical_alias":
            await self._check_canonical_alias(room_id, content)
        existing = room.state.get((event_type, state_key))
        if (
            existing is not None
            and existing.content == content
            and existing.sender == requester.user_id
        ):
            return existing  # Synapse dedupes identical state from the same sender
        return await self._creator.send(room_id, event_dict, room=room)

    def on_persisted(self, events: list[Event]) -> None:
        """Every committed event, local or from federation: as Synapse, a new
        ``m.room.guest_access`` that is not ``can_join`` makes our guests leave the room.
        Run in the background so the persisting path never waits or fails for it."""
        for ev in events:
            if (
                ev.type == "m.room.guest_access"
                and ev.state_key == ""
                and not ev.outlier
                and ev.rejected_reason is None
                and ev.content.get("guest_access") != "can_join"
            ):
                defer.ensureDeferred(self._kick_guests(ev.room_id, ev.event_id))

    async def _kick_guests(self, room_id: str, event_id: str) -> None:
        """Our guests leave ``room_id`` if ``event_id`` (a guest access revocation) is
        still its current guest access state. Errors are logged, never raised."""
        try:
            await self._kick_guests_now(room_id, event_id)
        except Exception:
            logger.exception("Removing the guests of %s failed", room_id)

    async def _kick_guests_now(self, room_id: str, event_id: str) -> None:
        room = await self._rooms.get(room_id)
        if room is None:
            return
        current = room.state.get(("m.room.guest_access", ""))
        if current is None or current.event_id != event_id:
            return
        for user_id in sorted(room.members_with("join")):
            if not self.is_mine(user_id):
                continue
            record = await self._storage.users.get_user(user_id)
            if record is None or not record.is_guest:
                continue
            guest = Requester(user_id, None, None, is_guest=True, ratelimited=False)
            try:
                await self.update_membership(guest, room_id, user_id, "leave")
            except MatrixError as e:
                logger.warning("Could not remove guest %s from %s: %s", user_id, room_id, e)

    async def _check_canonical_alias(self, room_id: str, content: JsonDict) -> None:
        aliases: list[Any] = []
        if "alias" in content and content["alias"] is not None:
            aliases.append(content["alias"])
        alt = content.get("alt_aliases", [])
        if not isinstance(alt, list):
            raise MatrixError(400, Codes.BAD_JSON, "alt_aliases must be a list")
        aliases.extend(alt)
        for alias in aliases:
            if not isinstance(alias, str) or not alias.startswith("#") or ":" not in alias:
                raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid alias {alias!r}")
            if alias.rsplit(":", 1)[-1] != self.server_name and not alias.endswith(
                f":{self.server_name}"
            ):
                continue  # remote aliases cannot be checked without federation
            mapping = await self._storage.aliases.get(alias)
            if mapping is None or mapping.room_id != room_id:
                raise MatrixError(400, "M_BAD_ALIAS", f"Alias {alias} does not point to this room")

    async def redact(
        self,
        requester: Requester,
        room_id: str,
        event_id: str,
        reason: str | None,
        txn_id: str | None,
    ) -> Event:
        room = await self.require_joined(requester, room_id)
        content: JsonDict = {}
        if reason is not None:
            content["reason"] = reason
        event_dict: JsonDict = {
            "type": "m.room.redaction",
            "sender": requester.user_id,
            "content": content,
        }
        if room.room_version.updated_redaction_rules:
            content["redacts"] = event_id
        else:
            event_dict["redacts"] = event_id
        await self._check_may_redact(requester, room, event_dict, require_target=True)
        # Clients get a top-level `redacts` from v11 on too (Event.client_dict).
        txn = None if txn_id is None else (requester.device_id or "", f"redact:{txn_id}")
        return await self._creator.send(room_id, event_dict, txn=txn, room=room)

    async def _check_may_redact(
        self,
        requester: Requester,
        room: LiveRoom,
        event_dict: JsonDict,
        *,
        require_target: bool = False,
    ) -> None:
        """Refuse a local user's redaction (from /redact, or an m.room.redaction sent
        through /send or /state) as Synapse does: allowed with the room's ``redact``
        level, otherwise only for the user's own event. Create and server ACL events
        are never redacted; a target in another room is not found. ``require_target``
        (/redact): the target must be known even with the redact level."""
        version = room.room_version
        target_id = redaction_target(event_dict, version)
        if target_id is None:
            return  # names no target in this room version's field: redacts nothing
        target = await self._storage.events.get_event(target_id)
        if target is not None and target.room_id != room.room_id:
            if require_target:
                # As Synapse: named, but in another room (the sender need not see it).
                raise MatrixError(
                    400, Codes.UNKNOWN, "Cannot redact an event from a different room"
                )
            target = None
        if target is None and require_target:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        if target is not None and target.type in ("m.room.create", "m.room.server_acl"):
            raise MatrixError(403, Codes.FORBIDDEN, f"Redacting {target.type} is not permitted")
        create = room.create_event
        power_state = {
            key: pdu_with_id(room.state[key])
            for key in (("m.room.power_levels", ""), ("m.room.create", ""))
            if key in room.state
        }
        if has_redact_power(
            event_dict, power_state, version, pdu_with_id(create) if create else None
        ):
            return
        if target is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Could not find event {target_id}")
        if target.sender != requester.user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "You don't have permission to redact events")

    # Aliases and directory ------------------------------------------------------------

    async def create_alias(self, requester: Requester, alias: str, room_id: str) -> None:
        if not alias.startswith("#") or ":" not in alias:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room alias")
        if alias.split(":", 1)[1] != self.server_name:
            raise MatrixError(400, Codes.INVALID_PARAM, "Room alias must be on this server")
        if len(alias.encode()) > 255:
            raise MatrixError(400, Codes.INVALID_PARAM, "Room alias too long")
        if not is_valid_room_id(room_id):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room ID")
        room = await self.get_room(room_id)
        managed = self._check_alias_namespace(requester, alias)
        if room.membership_of(requester.user_id) != "join" and not (managed or requester.is_admin):
            # As Synapse: otherwise anyone could squat names on any room.
            raise MatrixError(
                403, Codes.FORBIDDEN, "You must be in the room to create an alias for it"
            )
        if not await self._storage.aliases.create(
            RoomAlias(alias, room_id, requester.user_id, [self.server_name])
        ):
            raise MatrixError(409, Codes.UNKNOWN, f"Room alias {alias} already exists")

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        mapping = await self._storage.aliases.get(alias)
        if mapping is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found")
        managed = self._check_alias_namespace(requester, alias)
        if not managed and mapping.creator != requester.user_id and not requester.is_admin:
            room = await self._rooms.get(mapping.room_id)
            allowed = False
            if room is not None:
                create = room.create_event
                level = get_user_power_level(
                    requester.user_id,
                    room.auth_state(),
                    room.room_version,
                    create_event=pdu_with_id(create) if create else None,
                )
                pl = room.state_content("m.room.power_levels")
                events: dict[str, Any] = pl.get("events") or {}
                needed = events.get("m.room.canonical_alias", pl.get("state_default", 50))
                allowed = isinstance(needed, int) and level >= needed
            if not allowed:
                raise MatrixError(
                    403, Codes.FORBIDDEN, "You don't have permission to delete the alias"
                )
        await self._storage.aliases.delete(alias)
        await self._drop_canonical_alias(requester, mapping.room_id, alias)

    async def _drop_canonical_alias(self, requester: Requester, room_id: str, alias: str) -> None:
        """As Synapse: a deleted alias leaves the room's ``m.room.canonical_alias``
        (``alias`` and ``alt_aliases``), by the deleting user if they may send it."""
        room = await self._rooms.get(room_id)
        if room is None:
            return
        content = room.state_content("m.room.canonical_alias")
        alt = content.get("alt_aliases")
        alts = alt if isinstance(alt, list) else []
        if content.get("alias") != alias and alias not in alts:
            return
        new: JsonDict = {k: v for k, v in content.items() if k != "alias"}
        if "alias" in content and content["alias"] != alias:
            new["alias"] = content["alias"]
        if isinstance(alt, list):
            new["alt_aliases"] = [a for a in alt if a != alias]
        try:
            await self.send_state(requester, room_id, "m.room.canonical_alias", "", new)
        except MatrixError as e:
            # Not joined, or without the power: the alias is gone all the same.
            logger.info("Could not update %s's canonical alias: %s", room_id, e.message)


def guest_can_join(room: LiveRoom) -> bool:
    """``m.room.guest_access`` is ``can_join`` (guests may join and take part)."""
    return room.state_content("m.room.guest_access").get("guest_access") == "can_join"
