"""Who changed membership in a set of rooms between two events-stream positions.

Used to tell a syncing user about users who joined or left rooms they share (device
lists). Rooms whose in-memory ``recent`` window covers the range are answered from
memory; older ranges compare the room's member state at both positions in the database.
"""

from __future__ import annotations

from collections.abc import Iterable

from homeserver.rooms.room_cache import RoomCache
from storage.events import EventsStore
from storage.state_groups import StateGroupStore

MembershipChange = tuple[str, str, str]  # (room_id, user_id, membership)


async def membership_changes(
    rooms: RoomCache,
    events: EventsStore,
    state_groups: StateGroupStore,
    room_ids: Iterable[str],
    since: int,
    now: int,
) -> tuple[MembershipChange, ...]:
    """Membership changes in (since, now], in stream order per room.

    From memory every member event counts (a rejoin or profile change too); from the
    database, only users whose membership event differs between the two positions.
    """
    out: list[MembershipChange] = []
    if since >= now:
        return ()
    for room_id in room_ids:
        room = await rooms.get(room_id)
        if room is None:
            continue
        if room.recent and room.recent[-1].stream_ordering <= since and since >= room.recent_floor:
            continue  # nothing new in this room
        recent = room.events_after(since)
        if recent is not None:
            out.extend(
                (room_id, ev.state_key, ev.membership)
                for ev in recent
                if ev.stream_ordering <= now
                and ev.type == "m.room.member"
                and ev.state_key is not None
                and ev.membership is not None
            )
            continue
        before = await state_groups.get_state_ids_at_stream(room_id, since)
        after = await state_groups.get_state_ids_at_stream(room_id, now)
        changed = {
            key[1]: event_id
            for key, event_id in after.items()
            if key[0] == "m.room.member" and before.get(key) != event_id
        }
        found = await events.get_events(changed.values())
        for user_id, event_id in sorted(changed.items()):
            ev = found.get(event_id)
            if ev is not None and ev.membership is not None:
                out.append((room_id, user_id, ev.membership))
    return tuple(out)
