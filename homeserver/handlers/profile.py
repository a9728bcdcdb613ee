"""Profiles: reading and changing fields, with the spec's size limits.

Other parts of the server subscribe to ``on_change`` (the rooms layer writes new
membership events when a display name or avatar changes).

Profiles of other servers' users are asked of their server (``remote``). Those of
users who share a room with one of ours are kept in ``RemoteProfileCache`` (below).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

from homeserver.appservice.handler import AppServiceHandler
from homeserver.bus import Bus, ProfileChanged
from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.events.format import is_valid_user_id
from homeserver.handlers.restrictions import UserRestrictions
from homeserver.requester import Requester
from storage.storage import Storage

MAX_PROFILE_BYTES = 64 * 1024
MAX_KEY_BYTES = 255
MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000

REMOTE_PROFILE_MAX_AGE_S = 24 * 60 * 60
REMOTE_PROFILE_CACHE_SIZE = 10_000
# Larger profiles (custom fields allow 64 KiB) are not kept: the cache stays under 40 MB.
REMOTE_PROFILE_MAX_CACHED_BYTES = 4096


class RemoteProfiles(Protocol):
    async def query_profile(self, user_id: str, field: str | None) -> dict[str, Any]:
        """``user_id``'s profile (or only ``field``) from their server, checked; a
        ``MatrixError`` (404, 403, 502, 504) when it cannot be had."""
        ...


class RemoteProfileCache:
    """Whole profiles of remote users who share a room with one of our users.

    Invariants: an entry is dropped as soon as a membership event of its user is
    persisted (their server sends a new one to every shared room when their name or
    avatar changes, and a leave may end the sharing), and none is served older than
    ``max_age_s``. At most ``max_entries`` profiles of at most 4 KiB each are kept
    (least recently used go first). A fetch that started before any drop is not stored, so an answer
    from before a change never replaces the news of it.
    """

    def __init__(
        self,
        clock: Clock,
        max_age_s: float = REMOTE_PROFILE_MAX_AGE_S,
        max_entries: int = REMOTE_PROFILE_CACHE_SIZE,
    ) -> None:
        self._clock = clock
        self._max_age_s = max_age_s
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.epoch = 0  # bumped by every drop

    def get(self, user_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        if self._clock.seconds() - entry[0] > self._max_age_s:
            del self._entries[user_id]
            return None
        self._entries.move_to_end(user_id)
        return dict(entry[1])

    def put(self, user_id: str, profile: dict[str, Any], epoch: int) -> None:
        if epoch != self.epoch:
            return
        if len(json.dumps(profile).encode("utf-8")) > REMOTE_PROFILE_MAX_CACHED_BYTES:
            return
        self._entries[user_id] = (self._clock.seconds(), dict(profile))
        self._entries.move_to_end(user_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def drop(self, user_ids: Iterable[str]) -> None:
        self.epoch += 1
        for user_id in user_ids:
            self._entries.pop(user_id, None)


class ProfileHandler:
    def __init__(
        self,
        storage: Storage,
        server_name: str,
        bus: Bus,
        appservices: AppServiceHandler | None = None,
        clock: Clock | None = None,
        restrictions: UserRestrictions | None = None,
    ) -> None:
        self._storage = storage
        self._restrictions = restrictions
        self._server_name = server_name
        self._appservices = appservices
        self._bus = bus
        self.remote: RemoteProfiles | None = None
        self._remote_cache = RemoteProfileCache(clock) if clock is not None else None

    def is_mine(self, user_id: str) -> bool:
        return user_id.endswith(f":{self._server_name}")

    def on_events(self, events: list[Event]) -> None:
        """Persisted events: a remote user's membership event drops their cached profile."""
        if self._remote_cache is None:
            return
        users = [
            ev.state_key
            for ev in events
            if ev.membership is not None and ev.state_key and not self.is_mine(ev.state_key)
        ]
        if users:
            self._remote_cache.drop(users)

    async def check_profile_query_allowed(self, target: str, requester: str | None) -> None:
        """``limit_profile_requests_to_users_who_share_rooms``: a requester may only
        read the profiles of users they share a room with (and their own)."""
        if requester is None or requester == target:
            return
        if not await self._storage.user_directory.share_a_room(requester, target):
            raise MatrixError(403, Codes.FORBIDDEN, "Profile isn't available")

    async def lookup_profile(self, user_id: str) -> dict[str, Any]:
        """Anyone's profile: ours from the database, others' from their server."""
        if self.is_mine(user_id):
            return await self.get_profile(user_id)
        remote = self._remote_for(user_id)
        cache = self._remote_cache
        cached = cache.get(user_id) if cache is not None else None
        if cached is not None:
            return cached
        epoch = cache.epoch if cache is not None else 0
        profile = await remote.query_profile(user_id, None)
        if cache is not None and await self._storage.user_directory.shares_room_with_local_user(
            user_id
        ):
            cache.put(user_id, profile, epoch)
        return profile

    async def lookup_field(self, user_id: str, name: str) -> Any:
        """One field of anyone's profile; 404 when it is not set."""
        if len(name.encode("utf-8")) > MAX_KEY_BYTES:
            raise MatrixError(400, "M_KEY_TOO_LARGE", "Profile key exceeds 255 bytes")
        if self.is_mine(user_id):
            return await self.get_field(user_id, name)
        remote = self._remote_for(user_id)
        cached = self._remote_cache.get(user_id) if self._remote_cache is not None else None
        profile = cached if cached is not None else await remote.query_profile(user_id, name)
        if name not in profile:
            raise MatrixError(404, Codes.NOT_FOUND, f"Profile field {name} not set")
        return profile[name]

    def _remote_for(self, user_id: str) -> RemoteProfiles:
        if not is_valid_user_id(user_id):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user id")
        if self.remote is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Profile not found")
        return self.remote

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        """One of our users' profile; 404 for anyone else."""
        if not self.is_mine(user_id):
            raise MatrixError(404, Codes.NOT_FOUND, "Profile not found")
        user = await self._storage.users.get_user(user_id)
        # A bridge may create a user of its namespace when asked.
        if user is None and self._appservices and await self._appservices.query_user(user_id):
            user = await self._storage.users.get_user(user_id)
        profile = await self._storage.profiles.get_profile(user_id)
        if user is None or profile is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Profile not found")
        return profile.as_dict()

    async def get_field(self, user_id: str, name: str) -> Any:
        profile = await self.get_profile(user_id)
        if name not in profile:
            raise MatrixError(404, Codes.NOT_FOUND, f"Profile field {name} not set")
        return profile[name]

    async def set_field(self, requester: Requester, user_id: str, name: str, value: Any) -> None:
        self._check_may_edit(requester, user_id)
        if len(name.encode("utf-8")) > MAX_KEY_BYTES:
            raise MatrixError(400, "M_KEY_TOO_LARGE", "Profile key exceeds 255 bytes")
        if name == "displayname":
            if not isinstance(value, str):
                raise MatrixError(400, Codes.BAD_JSON, "displayname must be a string")
            if len(value) > MAX_DISPLAYNAME_LEN:
                raise MatrixError(
                    400,
                    Codes.BAD_JSON,
                    f"displayname is longer than {MAX_DISPLAYNAME_LEN} characters",
                )
            value = value or None  # an empty name clears it, as Synapse does
        elif name == "avatar_url":
            if not isinstance(value, str):
                raise MatrixError(400, Codes.BAD_JSON, "avatar_url must be a string")
            if len(value) > MAX_AVATAR_URL_LEN:
                raise MatrixError(400, Codes.BAD_JSON, "avatar_url is too long")
            value = value or None
        elif name == "m.tz" and not isinstance(value, str):
            raise MatrixError(400, Codes.BAD_JSON, "m.tz must be a string")
        profile = await self.get_profile(user_id)
        profile[name] = value
        if len(json.dumps(profile).encode("utf-8")) > MAX_PROFILE_BYTES:
            raise MatrixError(400, "M_PROFILE_TOO_LARGE", "The profile would exceed 64 KiB")
        await self._storage.profiles.set_field(user_id, name, value)
        await self._bus.publish_and_wait(ProfileChanged(user_id, name, value))

    async def delete_field(self, requester: Requester, user_id: str, name: str) -> None:
        self._check_may_edit(requester, user_id)
        await self.get_profile(user_id)
        await self._storage.profiles.set_field(user_id, name, None)
        await self._bus.publish_and_wait(ProfileChanged(user_id, name, None))

    def _check_may_edit(self, requester: Requester, user_id: str) -> None:
        if requester.user_id != user_id and not requester.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You cannot change another user's profile")
        if self._restrictions is not None:
            self._restrictions.check_not_suspended(requester.user_id)
