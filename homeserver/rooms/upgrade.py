"""Room upgrades: ``POST /rooms/{roomId}/upgrade`` (the spec's server behaviour, in
Synapse's order).

1. The tombstone for the old room is built and authorised first: that is the power
   check (the upgrader must be allowed to send ``m.room.tombstone``).
2. While it holds the old room's lock (``EventCreator.send``'s ``pre_persist``), the new
   room is created: ``m.room.create`` with ``predecessor`` (``room_id``, and before v12
   the tombstone's ``event_id``), the upgrader's join, power levels with the upgrader
   raised enough to copy everything, the transferable state and the bans. Nothing can
   be sent to the old room in between, so the tombstone is its next event.
3. The tombstone is sent; local aliases and the directory listing move to the new room
   (with the canonical alias); the old room's power levels are raised so only moderators
   may speak or invite; the new room gets the old power levels back (the upgrader's
   temporary level undone).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from homeserver.ephemeral.tags import TAG_TYPE
from homeserver.errors import Codes, MatrixError
from homeserver.events.auth_rules import room_creators
from homeserver.events.event import Event
from homeserver.events.format import is_valid_user_id
from homeserver.events.room_versions import RoomVersion, get_room_version
from homeserver.push.rules import PushRule, PushRuleSet
from homeserver.push.rules_handler import PushRulesHandler
from homeserver.requester import Requester
from homeserver.rooms.event_creation import EventCreator
from homeserver.rooms.handler import PRESETS, RoomHandler
from homeserver.rooms.room_cache import LiveRoom, RoomCache, pdu_with_id
from homeserver.rooms.spaces import SPACE_ROOM_TYPE
from storage.account_data import GLOBAL
from storage.storage import Storage

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

# Copied to the new room as they are (the spec's recommended list, as Synapse).
TRANSFERRED_STATE = (
    "m.room.join_rules",
    "m.room.name",
    "m.room.topic",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
)


# Pure rules ------------------------------------------------------------------------


def upgraded_create_content(
    old_create: Mapping[str, Any],
    old_room_id: str,
    version: RoomVersion,
    upgrader: str,
    tombstone_id: str | None,
    additional_creators: list[str] | None,
) -> JsonDict:
    """The new room's ``m.room.create`` content."""
    predecessor: JsonDict = {"room_id": old_room_id}
    if tombstone_id is not None:
        predecessor["event_id"] = tombstone_id
    content: JsonDict = {"room_version": version.identifier, "predecessor": predecessor}
    if not version.implicit_room_creator:
        content["creator"] = upgrader
    if version.room_id_is_create_event_hash and additional_creators:
        content["additional_creators"] = list(additional_creators)
    if old_create.get("m.federate", True) is False:
        content["m.federate"] = False
    if "type" in old_create:
        content["type"] = old_create["type"]
    return content


def transferred_state(room: LiveRoom) -> list[tuple[str, str, JsonDict]]:
    """(type, state key, content) of the old room's state the new room starts with."""
    out = [
        (t, "", dict(room.state[(t, "")].content))
        for t in TRANSFERRED_STATE
        if (t, "") in room.state
    ]
    is_space = room.state_content("m.room.create").get("type") == SPACE_ROOM_TYPE
    for (event_type, key), ev in sorted(room.state.items()):
        if ev.content and (
            (event_type == "m.space.child" and is_space) or event_type == "m.space.parent"
        ):
            out.append((event_type, key, dict(ev.content)))
    return out


def _as_int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def raised_power_levels(power_levels: Mapping[str, Any], user_id: str) -> JsonDict:
    """The power levels with ``user_id`` raised to what sending every copied state event
    and ban needs (as Synapse: the highest of ``state_default``, ``ban`` and ``events``)."""
    content = copy.deepcopy(dict(power_levels))
    events = content.get("events") if isinstance(content.get("events"), dict) else {}
    assert isinstance(events, dict)
    needed = max(
        _as_int(content.get("state_default"), 50),
        _as_int(content.get("ban"), 50),
        max((_as_int(v, 0) for v in events.values()), default=0),
    )
    users = content.get("users") if isinstance(content.get("users"), dict) else {}
    assert isinstance(users, dict)
    current = _as_int(users.get(user_id, content.get("users_default", 0)), 0)
    if current < needed:
        users[user_id] = needed
    content["users"] = users
    return content


def without_creators(power_levels: Mapping[str, Any], creators: list[str]) -> JsonDict:
    """v12: creators may not be listed in ``users``."""
    content = dict(power_levels)
    users = content.get("users")
    if isinstance(users, dict):
        content["users"] = {u: v for u, v in users.items() if u not in creators}
    return content


def restricted_power_levels(power_levels: Mapping[str, Any]) -> JsonDict | None:
    """The old room's power levels with ``events_default`` and ``invite`` raised to the
    greater of 50 and ``users_default + 1``; None when they already are."""
    content = dict(power_levels)
    level = max(_as_int(content.get("users_default"), 0) + 1, 50)
    changed = False
    for key in ("invite", "events_default"):
        if _as_int(content.get(key), 0) < level:
            content[key] = level
            changed = True
    return content if changed else None


def split_canonical_alias(
    content: Mapping[str, Any], server_name: str
) -> tuple[JsonDict, JsonDict]:
    """(old room's, new room's) canonical alias contents: our aliases move."""

    def mine(alias: Any) -> bool:
        return isinstance(alias, str) and alias.split(":", 1)[-1] == server_name

    old = dict(content)
    new: JsonDict = {}
    if mine(content.get("alias")):
        new["alias"] = old.pop("alias")
    alt = content.get("alt_aliases")
    if isinstance(alt, list):
        moved = [a for a in alt if mine(a)]
        kept = [a for a in alt if not mine(a)]
        if moved:
            new["alt_aliases"] = moved
        if kept:
            old["alt_aliases"] = kept
        else:
            old.pop("alt_aliases", None)
    return old, new


def with_successor_in_direct(
    direct: Mapping[str, Any], old_room_id: str, new_room_id: str
) -> JsonDict | None:
    """``m.direct`` with the new room listed wherever the old one is; None if unchanged."""
    updated = dict(direct)
    changed = False
    for user_id, rooms in direct.items():
        if isinstance(rooms, list) and old_room_id in rooms and new_room_id not in rooms:
            updated[user_id] = [*rooms, new_room_id]
            changed = True
    return updated if changed else None


def _about_room(rule: PushRule, room_id: str) -> bool:
    if rule.kind == "room":
        return rule.rule_id == room_id
    return any(c.get("key") == "room_id" and c.get("pattern") == room_id for c in rule.conditions)


def copy_room_push_rules(ruleset: PushRuleSet, old_room_id: str, new_room_id: str) -> None:
    """As Synapse: each enabled rule of the user about the old room gets a copy about the
    new one (a rule already there is left alone)."""
    for kind in ("override", "room", "underride"):
        for rule in ruleset.rules(kind):
            if rule.default or not rule.enabled or not _about_room(rule, old_room_id):
                continue
            body: JsonDict = {"actions": list(rule.actions)}
            if kind == "room":
                rule_id = new_room_id
            else:
                rule_id = (
                    rule.rule_id.replace(old_room_id, new_room_id)
                    if old_room_id in rule.rule_id
                    else f"{rule.rule_id}-{new_room_id}"
                )
                body["conditions"] = [
                    {**c, "pattern": new_room_id}
                    if c.get("key") == "room_id" and c.get("pattern") == old_room_id
                    else dict(c)
                    for c in rule.conditions
                ]
            if not any(r.rule_id == rule_id for r in ruleset.rules(kind)):
                ruleset.add_rule(kind, rule_id, body)


# The operation ---------------------------------------------------------------------


class RoomUpgrader:
    def __init__(
        self,
        server_name: str,
        storage: Storage,
        rooms: RoomCache,
        creator: EventCreator,
        handler: RoomHandler,
        push_rules: PushRulesHandler,
    ) -> None:
        self._server_name = server_name
        self._push_rules = push_rules
        self._storage = storage
        self._rooms = rooms
        self._creator = creator
        self._handler = handler
        self._in_progress: set[str] = set()

    async def upgrade(
        self,
        requester: Requester,
        room_id: str,
        new_version: str,
        additional_creators: list[str] | None = None,
    ) -> str:
        version = get_room_version(new_version)
        if version is None:
            raise MatrixError(
                400, Codes.UNSUPPORTED_ROOM_VERSION, f"Room version {new_version} is not supported"
            )
        if additional_creators is not None and not all(
            isinstance(u, str) and is_valid_user_id(u) for u in additional_creators
        ):
            raise MatrixError(
                400, Codes.INVALID_PARAM, "additional_creators must be a list of user IDs"
            )
        old = await self._handler.require_joined(requester, room_id)
        if room_id in self._in_progress:
            raise MatrixError(
                400, Codes.UNKNOWN, "An upgrade for this room is currently in progress"
            )
        self._in_progress.add(room_id)
        try:
            return await self._upgrade(requester.user_id, old, version, additional_creators)
        finally:
            self._in_progress.discard(room_id)

    async def _upgrade(
        self,
        user_id: str,
        old: LiveRoom,
        version: RoomVersion,
        additional_creators: list[str] | None,
    ) -> str:
        old_create = old.state_content("m.room.create")

        def create_event(tombstone_id: str | None, room_id: str | None) -> Event:
            content = upgraded_create_content(
                old_create, old.room_id, version, user_id, tombstone_id, additional_creators
            )
            return self._creator.build_create_event(version, user_id, content, room_id)

        # v12: the room id is the create event's hash, so the create event comes first
        # and names no tombstone (the spec lets it omit `event_id`).
        v12_create = create_event(None, None) if version.room_id_is_create_event_hash else None
        new_room_id = v12_create.room_id if v12_create else self._handler.new_room_id()

        async def populate(live: LiveRoom, tombstone: Event) -> JsonDict:
            create = v12_create or create_event(tombstone.event_id, new_room_id)
            await self._populate(live, create, user_id, additional_creators)
            return tombstone.pdu

        await self._creator.send(
            old.room_id,
            {
                "type": "m.room.tombstone",
                "state_key": "",
                "sender": user_id,
                "content": {"body": "This room has been replaced", "replacement_room": new_room_id},
            },
            room=old,
            pre_persist=populate,
        )
        await self.transfer_room_state(old.room_id, new_room_id)
        await self._move_canonical_alias(old, new_room_id, user_id)
        await self._settle_power_levels(old, new_room_id, user_id, additional_creators)
        return new_room_id

    async def transfer_room_state(self, old_room_id: str, new_room_id: str) -> None:
        """What follows a room to its replacement on this server (as Synapse): local
        aliases and the directory listing, and each local member's tags, ``m.direct``
        entry and push rules about the room."""
        await self._storage.room_directory.move_room(old_room_id, new_room_id)
        old = await self._rooms.get(old_room_id)
        if old is None:
            return
        for user_id in sorted(u for u in old.joined_members() if self._handler.is_mine(u)):
            try:
                await self._copy_user_state(user_id, old_room_id, new_room_id)
            except Exception:
                # As Synapse: one user's settings do not undo the upgrade.
                logger.exception("Settings of %s not copied to %s", user_id, new_room_id)

    async def _copy_user_state(self, user_id: str, old_room_id: str, new_room_id: str) -> None:
        account_data = self._storage.account_data
        tags = (await account_data.get(user_id, old_room_id, TAG_TYPE) or {}).get("tags")
        if isinstance(tags, dict) and tags:
            current = await account_data.get(user_id, new_room_id, TAG_TYPE) or {}
            merged = {**tags, **(current.get("tags") or {})}
            await account_data.put(user_id, new_room_id, TAG_TYPE, {"tags": merged})
        direct = await account_data.get(user_id, GLOBAL, "m.direct")
        updated = with_successor_in_direct(direct or {}, old_room_id, new_room_id)
        if updated is not None:
            await account_data.put(user_id, GLOBAL, "m.direct", updated)
        rules = await self._push_rules.get(user_id)
        if any(_about_room(r, old_room_id) for r in rules.ordered_rules() if not r.default):
            await self._push_rules.change(
                user_id, lambda r: copy_room_push_rules(r, old_room_id, new_room_id)
            )

    async def on_remote_join(self, room_id: str) -> None:
        """Our server just joined ``room_id`` through another: if it replaces a room we are
        in, and that room's tombstone agrees, carry our side over (as Synapse)."""
        room = await self._rooms.get(room_id)
        predecessor = room.state_content("m.room.create").get("predecessor") if room else None
        old_room_id = predecessor.get("room_id") if isinstance(predecessor, dict) else None
        if not isinstance(old_room_id, str):
            return
        old = await self._rooms.get(old_room_id)
        if old is None or not any(self._handler.is_mine(u) for u in old.joined_members()):
            return
        if old.state_content("m.room.tombstone").get("replacement_room") != room_id:
            logger.info("Ignoring unverified predecessor %s of %s", old_room_id, room_id)
            return
        await self.transfer_room_state(old_room_id, room_id)

    async def _send(
        self, room_id: str, sender: str, event_type: str, key: str, content: JsonDict
    ) -> None:
        await self._creator.send(
            room_id, {"type": event_type, "state_key": key, "sender": sender, "content": content}
        )

    async def _populate(
        self, old: LiveRoom, create: Event, user_id: str, additional_creators: list[str] | None
    ) -> None:
        """The new room's first events, from the old room's state (held under its lock)."""
        version = create.room_version
        await self._creator.persist_create_event(create, user_id)
        room_id = create.room_id
        profile = await self._handler.profile_content(user_id)
        await self._send(
            room_id, user_id, "m.room.member", user_id, {"membership": "join", **profile}
        )
        power_levels = raised_power_levels(old.state_content("m.room.power_levels"), user_id)
        if version.room_id_is_create_event_hash:
            power_levels = without_creators(power_levels, [user_id, *(additional_creators or [])])
        await self._send(room_id, user_id, "m.room.power_levels", "", power_levels)
        state = transferred_state(old)
        given = {t for t, _, _ in state}
        defaults = PRESETS["private_chat"]
        for event_type, field_name, value in (
            ("m.room.join_rules", "join_rule", defaults["join_rule"]),
            ("m.room.history_visibility", "history_visibility", defaults["history"]),
            ("m.room.guest_access", "guest_access", defaults["guest"]),
        ):
            if event_type not in given:
                state.insert(0, (event_type, "", {field_name: value}))
        for event_type, key, content in state:
            await self._send(room_id, user_id, event_type, key, content)
        for banned in sorted(old.members_with("ban")):
            ban = old.state[("m.room.member", banned)].content
            await self._send(room_id, user_id, "m.room.member", banned, dict(ban))

    async def _move_canonical_alias(self, old: LiveRoom, new_room_id: str, user_id: str) -> None:
        current = old.state_content("m.room.canonical_alias")
        if not current:
            return
        old_content, new_content = split_canonical_alias(current, self._server_name)
        for room_id, content, changed in (
            (old.room_id, old_content, old_content != current),
            (new_room_id, new_content, bool(new_content)),
        ):
            if not changed:
                continue
            try:
                await self._send(room_id, user_id, "m.room.canonical_alias", "", content)
            except MatrixError as e:
                # As Synapse: the upgrade stands; the alias event is cosmetic.
                logger.warning("Canonical alias not updated in %s: %s", room_id, e.message)

    async def _settle_power_levels(
        self, old: LiveRoom, new_room_id: str, user_id: str, additional_creators: list[str] | None
    ) -> None:
        original = old.state_content("m.room.power_levels")
        if not original:
            logger.warning("Upgraded %s has no power levels; none restored", old.room_id)
            return
        restricted = restricted_power_levels(original)
        if restricted is not None:
            try:
                await self._send(old.room_id, user_id, "m.room.power_levels", "", restricted)
            except MatrixError as e:
                logger.warning("Could not restrict power levels in %s: %s", old.room_id, e.message)
        new_room = await self._rooms.get(new_room_id)
        assert new_room is not None
        restored = dict(original)
        if new_room.room_version.room_id_is_create_event_hash:
            restored = without_creators(restored, [user_id, *(additional_creators or [])])
        elif old.room_version.room_id_is_create_event_hash:
            # Out of a v12 room, whose creators are not listed in its power levels: they
            # would have no power left at all. They keep what the upgrader was raised to.
            create = old.create_event
            creators = room_creators(pdu_with_id(create), old.room_version) if create else set()
            for creator in sorted(creators):
                restored = raised_power_levels(restored, creator)
        if restored != new_room.state_content("m.room.power_levels"):
            await self._send(new_room_id, user_id, "m.room.power_levels", "", restored)
