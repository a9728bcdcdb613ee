"""Server notices: messages from the server to one local user, in a room of their own
(Synapse's ``ServerNoticesManager``), sent through the admin API.

Invariants:
- A user's notices room is the room where they are invited or joined and the system
  user is joined (as Synapse finds it; no table remembers it). It is created once: one
  user's lookups and creations run one at a time, so concurrent notices share a room.
  A user who left gets a new room with the next notice, as on Synapse.
- The room is created by the system user (registered on first use, no password) as a
  private chat with ``users_default`` -10, so the user can read but never send; it is
  tagged ``m.server_notice`` in the user's account data when created. Each later
  notice first brings the room's name, avatar, topic and the system user's profile in
  it up to the configuration.
- Nothing here is rate limited: the admin API is the only caller.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.config import ServerNoticesConfig
from homeserver.ephemeral.locks import KeyedLock
from homeserver.ephemeral.tags import TagsHandler
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.handlers.register import RegistrationHandler
from homeserver.requester import Requester
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.memberships import MembershipCache
from storage.profiles import ProfileStore
from storage.users import UserStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

SERVER_NOTICE_TAG = "m.server_notice"


class ServerNoticesHandler:
    def __init__(
        self,
        config: ServerNoticesConfig | None,
        server_name: str,
        users: UserStore,
        profiles: ProfileStore,
        registration: RegistrationHandler,
        rooms: RoomHandler,
        memberships: MembershipCache,
        tags: TagsHandler,
    ) -> None:
        self._config = config
        self._users = users
        self._profiles = profiles
        self._registration = registration
        self._rooms = rooms
        self._memberships = memberships
        self._tags = tags
        self._lock = KeyedLock()
        self.system_user_id = (
            f"@{config.system_mxid_localpart}:{server_name}" if config is not None else None
        )

    @property
    def enabled(self) -> bool:
        return self._config is not None

    def _system(self, device_id: str | None = None) -> Requester:
        assert self.system_user_id is not None
        return Requester(self.system_user_id, device_id, None, ratelimited=False)

    async def send_notice(
        self,
        user_id: str,
        content: JsonDict,
        event_type: str = "m.room.message",
        state_key: str | None = None,
        *,
        txn: tuple[str, str] | None = None,
    ) -> Event:
        """Send ``content`` to ``user_id`` (a local user) in their notices room.

        ``txn`` is (the sending admin's device, transaction id): a retry answers the
        first event.
        """
        if self._config is None:
            raise MatrixError(400, Codes.UNKNOWN, "Server notices are not enabled on this server")
        async with self._lock(user_id):
            await self._ensure_system_user()
            room_id = await self._notice_room(user_id)
            if room_id is None:
                room_id = await self._create_room(user_id)
            else:
                await self._update_room(room_id)
            await self._invite(user_id, room_id)
        logger.info("Sending a server notice to %s in %s", user_id, room_id)
        if state_key is not None:
            return await self._rooms.send_state(
                self._system(), room_id, event_type, state_key, content
            )
        device, txn_id = txn if txn is not None else (None, None)
        return await self._rooms.send_message(
            self._system(device), room_id, event_type, content, txn_id
        )

    async def _ensure_system_user(self) -> None:
        config = self._config
        assert config is not None and self.system_user_id is not None
        if await self._users.get_user(self.system_user_id) is None:
            try:
                await self._registration.register_user(
                    config.system_mxid_localpart,
                    None,
                    displayname=config.system_mxid_display_name,
                )
                logger.info("Registered the server notices user %s", self.system_user_id)
            except MatrixError as e:
                if e.errcode != Codes.USER_IN_USE:
                    raise
        # The member events of the notices rooms take the system user's profile.
        profile = await self._profiles.get_profile(self.system_user_id)
        for name, wanted in (
            ("displayname", config.system_mxid_display_name),
            ("avatar_url", config.system_mxid_avatar_url),
        ):
            if wanted is not None and getattr(profile, name, None) != wanted:
                await self._profiles.set_field(self.system_user_id, name, wanted)

    async def _notice_room(self, user_id: str) -> str | None:
        assert self.system_user_id is not None
        mine = await self._memberships.rooms_for_user(user_id)
        system = await self._memberships.rooms_for_user(self.system_user_id)
        for room_id, row in sorted(mine.items()):
            if row.membership not in ("invite", "join"):
                continue
            theirs = system.get(room_id)
            if theirs is not None and theirs.membership == "join":
                return room_id
        return None

    async def _create_room(self, user_id: str) -> str:
        config = self._config
        assert config is not None
        body: JsonDict = {
            "preset": "private_chat",
            "power_level_content_override": {"users_default": -10},
        }
        if config.room_name:
            body["name"] = config.room_name
        if config.room_topic:
            body["topic"] = config.room_topic
        if config.room_avatar_url:
            body["initial_state"] = [
                {
                    "type": "m.room.avatar",
                    "state_key": "",
                    "content": {"url": config.room_avatar_url},
                }
            ]
        room_id, _alias = await self._rooms.create_room(self._system(), body)
        await self._tags.add_tag(user_id, room_id, SERVER_NOTICE_TAG, {})
        logger.info("Created the server notices room %s for %s", room_id, user_id)
        return room_id

    async def _update_room(self, room_id: str) -> None:
        """Bring an existing notices room up to the configuration (as Synapse): the
        system user's name and avatar in it, the room's name, avatar and topic."""
        config = self._config
        assert config is not None and self.system_user_id is not None
        system = self._system()
        if config.system_mxid_display_name or config.system_mxid_avatar_url:
            # A repeat join with an unchanged profile sends nothing.
            await self._rooms.update_membership(system, room_id, self.system_user_id, "join")
        room = await self._rooms.get_room(room_id)
        for event_type, key, wanted in (
            ("m.room.name", "name", config.room_name),
            ("m.room.avatar", "url", config.room_avatar_url),
            ("m.room.topic", "topic", config.room_topic),
        ):
            current = room.state_content(event_type).get(key)
            if current == wanted or (not current and not wanted):
                continue
            await self._rooms.send_state(system, room_id, event_type, "", {key: wanted or ""})

    async def _invite(self, user_id: str, room_id: str) -> None:
        row = (await self._memberships.rooms_for_user(user_id)).get(room_id)
        if row is not None and row.membership in ("invite", "join"):
            return
        await self._rooms.update_membership(self._system(), room_id, user_id, "invite")
        if self._config is not None and self._config.auto_join:
            user = Requester(user_id, None, None, ratelimited=False)
            await self._rooms.update_membership(user, room_id, user_id, "join")
