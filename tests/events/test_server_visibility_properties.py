"""Properties of what a remote server may see (``server_may_see_event``,
``filter_events_for_server``), over random room histories.

A history is a line of events: history visibility changes, membership changes of users
of the server asking (``evil.example``) and of others, and messages. The state before
each event is replayed exactly as the server-side filter is given it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.events.visibility import (
    HISTORY_VISIBILITY_VALUES,
    filter_events_for_server,
    server_may_see_event,
)

SERVER = "evil.example"
OURS = ["@m1:evil.example", "@m2:evil.example"]
OTHERS = ["@alice:good.example", "@bob:evil.example.org"]  # the latter only looks alike
MEMBERSHIPS = ["join", "invite", "leave", "ban", "knock"]
# From least to most permissive, as the spec orders them.
ORDER = ["joined", "invited", "shared", "world_readable"]

JsonDict = dict[str, Any]

steps = st.one_of(
    st.tuples(st.just("hv"), st.sampled_from(HISTORY_VISIBILITY_VALUES)),
    st.tuples(st.just("member"), st.sampled_from(OURS + OTHERS), st.sampled_from(MEMBERSHIPS)),
    st.tuples(st.just("message")),
)


def replay(
    history: list[tuple[Any, ...]],
) -> tuple[list[JsonDict], dict[str, tuple[str | None, Mapping[str, str | None]]]]:
    """The events of ``history`` and, for each, the state before it as the filter
    gets it: (history visibility, memberships)."""
    hv: str | None = None
    members: dict[str, str | None] = {}
    events: list[JsonDict] = []
    before: dict[str, tuple[str | None, Mapping[str, str | None]]] = {}
    for i, step in enumerate(history):
        event: JsonDict = {"event_id": f"${i}", "room_id": "!r:good.example"}
        if step[0] == "hv":
            event.update(
                type="m.room.history_visibility",
                state_key="",
                sender=OTHERS[0],
                content={"history_visibility": step[1]},
            )
        elif step[0] == "member":
            event.update(
                type="m.room.member",
                state_key=step[1],
                sender=step[1],
                content={"membership": step[2]},
            )
        else:
            event.update(type="m.room.message", sender=OTHERS[0], content={"body": str(i)})
        events.append(event)
        before[event["event_id"]] = (hv, dict(members))
        if step[0] == "hv":
            hv = step[1]
        elif step[0] == "member":
            members[step[1]] = step[2]
    return events, before


def ours_at(memberships: Mapping[str, str | None]) -> set[str | None]:
    return {m for user, m in memberships.items() if user.endswith(":" + SERVER)}


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, max_size=25))
def test_messages_are_visible_exactly_as_the_spec_says(history: list[tuple[Any, ...]]) -> None:
    events, before = replay(history)
    for event in events:
        if event["type"] != "m.room.message":
            continue
        hv, memberships = before[event["event_id"]]
        setting = hv or "shared"
        ours = ours_at(memberships)
        expected = (
            setting in ("world_readable", "shared")
            or "join" in ours
            or (setting == "invited" and "invite" in ours)
        )
        seen = server_may_see_event(event, SERVER, history_visibility=hv, memberships=memberships)
        assert seen == expected, (setting, memberships)


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, max_size=25))
def test_under_joined_a_server_without_a_joined_user_sees_nothing_unredacted(
    history: list[tuple[Any, ...]],
) -> None:
    events, before = replay(history)
    served = filter_events_for_server(
        events, SERVER, lambda eid: before[eid], redact=lambda e: {**e, "content": {}}
    )
    assert len(served) == len(events)  # redacted, never dropped, in order
    for event, out in zip(events, served, strict=True):
        hv, memberships = before[event["event_id"]]
        own_member_event = event["type"] == "m.room.member" and event["state_key"] in OURS
        hv_event = event["type"] == "m.room.history_visibility"
        loosened = hv_event and event["content"]["history_visibility"] != "joined"
        exempt = own_member_event or loosened  # seen by the before-or-after rule
        if hv == "joined" and "join" not in ours_at(memberships) and not exempt:
            assert out["content"] == {}, (event, memberships)


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, max_size=25))
def test_world_readable_is_always_visible(history: list[tuple[Any, ...]]) -> None:
    events, before = replay(history)
    for event in events:
        hv, memberships = before[event["event_id"]]
        if hv == "world_readable":
            assert server_may_see_event(
                event, SERVER, history_visibility=hv, memberships=memberships
            )


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ORDER),
    st.sampled_from(ORDER),
    st.dictionaries(st.sampled_from(OURS + OTHERS), st.sampled_from([*MEMBERSHIPS, None])),
    st.sampled_from(OURS),
)
def test_more_permissive_settings_and_a_joined_user_never_hide_an_event(
    a: str, b: str, memberships: dict[str, str | None], newcomer: str
) -> None:
    message = {"event_id": "$m", "type": "m.room.message", "sender": OTHERS[0], "content": {}}
    looser, stricter = (a, b) if ORDER.index(a) >= ORDER.index(b) else (b, a)
    if server_may_see_event(message, SERVER, history_visibility=stricter, memberships=memberships):
        assert server_may_see_event(
            message, SERVER, history_visibility=looser, memberships=memberships
        )
    if server_may_see_event(message, SERVER, history_visibility=a, memberships=memberships):
        assert server_may_see_event(
            message, SERVER, history_visibility=a, memberships={**memberships, newcomer: "join"}
        )


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(HISTORY_VISIBILITY_VALUES),
    st.dictionaries(st.sampled_from(OURS), st.sampled_from([*MEMBERSHIPS, None])),
    st.dictionaries(st.sampled_from(OTHERS), st.sampled_from([*MEMBERSHIPS, None])),
)
def test_other_servers_users_never_change_what_a_server_sees(
    hv: str, ours: dict[str, str | None], others: dict[str, str | None]
) -> None:
    message = {"event_id": "$m", "type": "m.room.message", "sender": OTHERS[0], "content": {}}
    alone = server_may_see_event(message, SERVER, history_visibility=hv, memberships=ours)
    assert alone == server_may_see_event(
        message, SERVER, history_visibility=hv, memberships={**ours, **others}
    )


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(HISTORY_VISIBILITY_VALUES), st.sampled_from(OURS))
def test_a_server_always_sees_its_own_users_join(hv: str, user_id: str) -> None:
    join = {
        "event_id": "$j",
        "type": "m.room.member",
        "state_key": user_id,
        "sender": user_id,
        "content": {"membership": "join"},
    }
    assert server_may_see_event(join, SERVER, history_visibility=hv, memberships={})
