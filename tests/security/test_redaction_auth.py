"""Issue #14 item 3: a redaction takes effect only when the spec allows it.

Client path: ``PUT /send/m.room.redaction`` (and ``/state``) is refused like ``/redact``
unless the sender has the ``redact`` level or it is their own event. Every read path
(/event, /messages, /sync, /state, /members) is checked for the untouched targets.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted

from homeserver.events.room_versions import ROOM_VERSIONS
from tests.rooms.helpers import (
    all_events,
    assert_error,
    create_room,
    join,
    put_state,
    room_path,
    send,
    send_raw,
    state_events,
    sync,
    timeline,
    user,
)
from tests.support.client import Client, q
from tests.support.malicious_server import Joined, MaliciousServer
from tests.support.server import RunningServer

REDACTION = "m.room.redaction"
MESSAGE = "m.room.message"


def redaction_content(target: str) -> dict[str, Any]:
    """What a client sends through /send (v11+ name the target in content)."""
    return {"redacts": target, "reason": "gone"}


async def state_ids(client: Client, room_id: str) -> dict[tuple[str, str], str]:
    resp = await client.get(room_path(room_id, "/state"))
    assert resp.code == 200, resp
    return {(e["type"], e["state_key"]): e["event_id"] for e in resp.json}


async def message_and_state_of(
    owner: Client, room_id: str
) -> tuple[str, dict[str, dict[str, Any]]]:
    """A new message of ``owner`` and their reaction to it, and the room's name, topic,
    join rules, power levels and ``owner``'s membership: each event id with its content
    as clients see it."""
    msg = await send(owner, room_id, "owner's words")
    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg, "key": "+1"}}
    state = await state_ids(owner, room_id)
    targets: dict[str, dict[str, Any]] = {
        msg: {"msgtype": "m.text", "body": "owner's words"},
        await send(owner, room_id, event_type="m.reaction", content=reaction): reaction,
    }
    for key in [
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.join_rules", ""),
        ("m.room.power_levels", ""),
        ("m.room.member", str(owner.user_id)),
    ]:
        resp = await owner.get(room_path(room_id, f"/event/{q(state[key])}"))
        targets[state[key]] = resp.json["content"]
    return msg, targets


async def assert_intact(
    client: Client, room_id: str, targets: dict[str, dict[str, Any]], since: str | None = None
) -> None:
    """Every target shows its full content on every read path, with no redacted_because."""

    def check(ev: dict[str, Any]) -> None:
        want = targets[ev["event_id"]]
        assert ev["content"] == want, ev
        assert "redacted_because" not in ev.get("unsigned", {}), ev

    for event_id in targets:
        resp = await client.get(room_path(room_id, f"/event/{q(event_id)}"))
        assert resp.code == 200, resp
        check(resp.json)
    seen = [e for e in await all_events(client, room_id) if e["event_id"] in targets]
    assert {e["event_id"] for e in seen} == set(targets)
    for ev in seen:
        check(ev)
    # /state, /state/{type}/{key} and /members: state as clients see it.
    resp = await client.get(room_path(room_id, "/state"))
    for ev in resp.json:
        if ev["event_id"] in targets:
            check(ev)
    resp = await client.get(room_path(room_id, "/members"))
    assert resp.code == 200, resp
    for ev in resp.json["chunk"]:
        if ev["event_id"] in targets:
            check(ev)
    for ev in resp.json["chunk"]:
        assert ev["content"].get("membership") == "join", ev
    # Search still finds the messages, and relations still hold.
    resp = await client.post(
        "/_matrix/client/v3/search",
        {"search_categories": {"room_events": {"search_term": "words"}}},
    )
    assert resp.code == 200, resp
    found = {
        r["result"]["event_id"] for r in resp.json["search_categories"]["room_events"]["results"]
    }
    assert {e for e, c in targets.items() if "body" in c} <= found, resp
    for event_id, content in targets.items():
        parent = content.get("m.relates_to", {}).get("event_id")
        if parent is not None:
            resp = await client.get(f"/_matrix/client/v1/rooms/{q(room_id)}/relations/{q(parent)}")
            assert resp.code == 200, resp
            assert event_id in {e["event_id"] for e in resp.json["chunk"]}, resp
    # /sync: an initial sync's state and timeline, and an incremental one's timeline.
    body = await sync(client, filter={"room": {"timeline": {"limit": 50}}})
    for ev in state_events(body, room_id) + timeline(body, room_id)["events"]:
        if ev["event_id"] in targets:
            check(ev)
    if since is not None:
        body = await sync(client, since, filter={"room": {"timeline": {"limit": 50}}})
        for ev in timeline(body, room_id)["events"]:
            if ev["event_id"] in targets:
                check(ev)


async def assert_redacted(client: Client, room_id: str, event_id: str, by: str) -> None:
    resp = await client.get(room_path(room_id, f"/event/{q(event_id)}"))
    assert resp.code == 200, resp
    assert resp.json["content"] == {}, resp
    assert resp.json["unsigned"]["redacted_because"]["event_id"] == by
    seen = {e["event_id"]: e for e in await all_events(client, room_id)}
    assert seen[event_id]["content"] == {}
    body = await sync(client, filter={"room": {"timeline": {"limit": 50}}})
    tl = {e["event_id"]: e for e in timeline(body, room_id)["events"]}
    assert tl[event_id]["content"] == {}


async def assert_withheld(client: Client, room_id: str, event_id: str) -> None:
    """A redaction that does not take effect is not given to clients (as Synapse)."""
    resp = await client.get(room_path(room_id, f"/event/{q(event_id)}"))
    assert_error(resp, 404, "M_NOT_FOUND")
    assert event_id not in {e["event_id"] for e in await all_events(client, room_id)}
    body = await sync(client, filter={"room": {"timeline": {"limit": 50}}})
    assert event_id not in {e["event_id"] for e in timeline(body, room_id)["events"]}


async def room_with_member(server: RunningServer, room_version: str) -> tuple[Client, Client, str]:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice, preset="public_chat", room_version=room_version, name="Room", topic="Topic"
    )
    resp = await join(bob, room_id)
    assert resp.code == 200, resp
    return alice, bob, room_id


@pytest.mark.parametrize("room_version", ["11", "12"])
@pytest_twisted.ensureDeferred
async def test_power_zero_user_cannot_redact_others_events_through_send(
    server: RunningServer, room_version: str
) -> None:
    alice, bob, room_id = await room_with_member(server, room_version)
    since = (await sync(bob))["next_batch"]
    msg, targets = await message_and_state_of(alice, room_id)

    for target in targets:
        resp = await send_raw(bob, room_id, event_type=REDACTION, content=redaction_content(target))
        assert_error(resp, 403, "M_FORBIDDEN")
    # Nor as a state event of that type, nor through /redact.
    resp = await put_state(bob, room_id, REDACTION, {"redacts": msg}, state_key="x")
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await bob.put(room_path(room_id, f"/redact/{q(msg)}/r1"), {})
    assert_error(resp, 403, "M_FORBIDDEN")

    await assert_intact(alice, room_id, targets, since)
    await assert_intact(bob, room_id, targets, since)
    resp = await bob.get(room_path(room_id, "/state/m.room.name"))
    assert resp.json == {"name": "Room"}
    resp = await bob.get(room_path(room_id, "/state/m.room.join_rules"))
    assert resp.json["join_rule"] == "public"
    resp = await bob.get(room_path(room_id, "/state/m.room.power_levels"))
    assert resp.json in targets.values()


@pytest.mark.parametrize("room_version", ["11", "12"])
@pytest_twisted.ensureDeferred
async def test_own_event_redaction_through_send_is_allowed(
    server: RunningServer, room_version: str
) -> None:
    alice, bob, room_id = await room_with_member(server, room_version)
    mine = await send(bob, room_id, "bob's words")
    resp = await send_raw(bob, room_id, event_type=REDACTION, content=redaction_content(mine))
    assert resp.code == 200, resp
    await assert_redacted(alice, room_id, mine, resp.json["event_id"])
    # An unknown target cannot be checked against its sender: not found, as Synapse.
    resp = await send_raw(bob, room_id, event_type=REDACTION, content=redaction_content("$nope"))
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest.mark.parametrize("room_version", ["11", "12"])
@pytest_twisted.ensureDeferred
async def test_moderator_redaction_through_send_is_allowed(
    server: RunningServer, room_version: str
) -> None:
    alice, bob, room_id = await room_with_member(server, room_version)
    carol = await user(server, "carol")
    assert (await join(carol, room_id)).code == 200
    pl = (await alice.get(room_path(room_id, "/state/m.room.power_levels"))).json
    pl["users"][bob.user_id] = 50  # the default redact level
    assert (await put_state(alice, room_id, "m.room.power_levels", pl)).code == 200
    theirs = await send(carol, room_id, "carol's words")
    resp = await send_raw(bob, room_id, event_type=REDACTION, content=redaction_content(theirs))
    assert resp.code == 200, resp
    await assert_redacted(carol, room_id, theirs, resp.json["event_id"])
    # Carol (power 0) still may not redact bob's or alice's.
    other = await send(bob, room_id, "bob's words")
    resp = await send_raw(carol, room_id, event_type=REDACTION, content=redaction_content(other))
    assert_error(resp, 403, "M_FORBIDDEN")
    await assert_intact(carol, room_id, {other: {"msgtype": "m.text", "body": "bob's words"}})


@pytest_twisted.ensureDeferred
async def test_room_v10_content_redacts_is_no_redaction(server: RunningServer) -> None:
    """v10 names the target at the top level only: ``content.redacts`` redacts nothing,
    even from the room's creator (who may redact anything through /redact)."""
    alice, bob, room_id = await room_with_member(server, "10")
    theirs = await send(bob, room_id, "bob's words")
    resp = await send_raw(alice, room_id, event_type=REDACTION, content={"redacts": theirs})
    assert resp.code == 200, resp
    await assert_withheld(bob, room_id, resp.json["event_id"])  # it names no target
    # Bob (power 0) likewise: stored, redacts nothing.
    mine = await send(alice, room_id, "alice's words")
    resp = await send_raw(bob, room_id, event_type=REDACTION, content={"redacts": mine})
    assert resp.code == 200, resp
    await assert_intact(
        bob,
        room_id,
        {
            theirs: {"msgtype": "m.text", "body": "bob's words"},
            mine: {"msgtype": "m.text", "body": "alice's words"},
        },
    )
    # The top-level form still works for those allowed.
    resp = await alice.put(room_path(room_id, f"/redact/{q(theirs)}/r"), {})
    assert resp.code == 200, resp
    await assert_redacted(bob, room_id, theirs, resp.json["event_id"])


# --- remote PDUs: a malicious server (tests/support/malicious_server.py) ---------------

FED = "/_matrix/federation/v1"
StateIds = dict[tuple[str, str], str]


@dataclass(frozen=True)
class RemoteUser:
    """A user of a malicious server joined to one of our rooms, forging its PDUs."""

    server: MaliciousServer
    joined: Joined

    @property
    def user_id(self) -> str:
        return self.joined.user_id

    def event(
        self,
        state: StateIds,
        prev: dict[str, Any],
        event_type: str,
        content: dict[str, Any],
        redacts: str | None = None,
    ) -> dict[str, Any]:
        """A signed PDU on top of ``prev``, authorised by ``state`` (the room's state as
        our users see it); a redaction names ``redacts`` in its room version's field
        (top level in v10, content from v11)."""
        version = ROOM_VERSIONS[self.joined.room_version]
        auth_keys = [("m.room.power_levels", ""), ("m.room.member", self.user_id)]
        if not version.room_id_is_create_event_hash:
            auth_keys.append(("m.room.create", ""))
        event: dict[str, Any] = {
            "room_id": self.joined.event["room_id"],
            "sender": self.user_id,
            "type": event_type,
            "content": dict(content),
            "prev_events": [prev["event_id"]],
            "auth_events": [state[key] for key in auth_keys],
            "depth": int(prev["depth"]) + 1,
            "origin_server_ts": int(time.time() * 1000),
        }
        if redacts is not None and version.updated_redaction_rules:
            event["content"]["redacts"] = redacts
        elif redacts is not None:
            event["redacts"] = redacts
        return self.server.sign_pdu(event, self.joined.room_version)

    def message(self, state: StateIds, prev: dict[str, Any], body: str) -> dict[str, Any]:
        return self.event(state, prev, MESSAGE, {"msgtype": "m.text", "body": body})

    def redaction(self, state: StateIds, prev: dict[str, Any], target: str) -> dict[str, Any]:
        return self.event(state, prev, REDACTION, {"reason": "gone"}, redacts=target)

    async def send(self, ours: RunningServer, *pdus: dict[str, Any]) -> None:
        status, body = await self.server.send_pdus(ours, list(pdus))
        assert status == 200, (status, body)
        for pdu in pdus:
            assert body["pdus"].get(pdu["event_id"], {}) == {}, body

    async def pdu(self, ours: RunningServer, event_id: str) -> dict[str, Any]:
        """An event of the room as our server serves it over federation."""
        status, body = await self.server.request(ours, "GET", f"{FED}/event/{q(event_id)}")
        assert status == 200, (status, body)
        return {**body["pdus"][0], "event_id": event_id}


async def remote_user(
    server: MaliciousServer, ours: RunningServer, room_id: str, localpart: str = "mallory"
) -> RemoteUser:
    return RemoteUser(server, await server.join(ours, room_id, localpart))


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
@pytest_twisted.ensureDeferred
async def test_remote_power_zero_redaction_of_a_local_users_events_is_stored_not_applied(
    ours: RunningServer, attacker: MaliciousServer, room_version: str
) -> None:
    alice = await user(ours, "alice")
    room_id = await create_room(
        alice, preset="public_chat", room_version=room_version, name="Room", topic="Topic"
    )
    mallory = await remote_user(attacker, ours, room_id)
    msg, targets = await message_and_state_of(alice, room_id)
    state = await state_ids(alice, room_id)

    prev = await mallory.pdu(ours, msg)
    redactions = []
    for target in targets:
        prev = mallory.redaction(state, prev, target)
        redactions.append(prev)
    await mallory.send(ours, *redactions)

    # Stored (they passed the auth rules), but withheld from clients as Synapse does...
    for pdu in redactions:
        assert await mallory.pdu(ours, pdu["event_id"])
        await assert_withheld(alice, room_id, pdu["event_id"])
    # ... and applied to nothing, in memory and in the database.
    await assert_intact(alice, room_id, targets)
    resp = await alice.get(room_path(room_id, "/state/m.room.name"))
    assert resp.json == {"name": "Room"}
    resp = await alice.get(room_path(room_id, "/state/m.room.power_levels"))
    assert resp.json in targets.values()
    # The database agrees with memory: the same after a restart.
    await restart(ours, alice)
    await assert_intact(alice, room_id, targets)
    await assert_withheld(alice, room_id, redactions[0]["event_id"])


async def restart(ours: RunningServer, *clients: Client) -> None:
    """Restart ``ours`` (nothing in memory survives) and re-point ``clients`` at it."""
    await ours.restart()
    for client in clients:
        client.base_url = ours.base_url


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
@pytest_twisted.ensureDeferred
async def test_remote_server_redacting_its_own_users_event_applies_even_before_the_target(
    ours: RunningServer, attacker: MaliciousServer, room_version: str
) -> None:
    """The same-server rule: @eve (power 0) redacts @mallory's message of her server.
    Once after the target, once arriving before it (applied when the target comes)."""
    alice = await user(ours, "alice")
    room_id = await create_room(alice, preset="public_chat", room_version=room_version)
    mallory = await remote_user(attacker, ours, room_id)
    eve = await remote_user(attacker, ours, room_id, "eve")
    state = await state_ids(alice, room_id)
    base = await eve.pdu(ours, eve.joined.event["event_id"])

    # After its target.
    first = mallory.message(state, base, "first")
    first_redaction = eve.redaction(state, first, first["event_id"])
    await eve.send(ours, first, first_redaction)
    await assert_redacted(alice, room_id, first["event_id"], first_redaction["event_id"])

    # Before its target: both on top of the first redaction (a fork), the redaction sent
    # in an earlier transaction than the message it redacts.
    second = mallory.message(state, first_redaction, "second")
    early = eve.redaction(state, first_redaction, second["event_id"])
    await eve.send(ours, early)
    await assert_withheld(alice, room_id, early["event_id"])  # its target is unknown
    await mallory.send(ours, second)
    await assert_redacted(alice, room_id, second["event_id"], early["event_id"])
    seen = {e["event_id"] for e in await all_events(alice, room_id)}
    assert early["event_id"] in seen  # shown once it took effect
    await restart(ours, alice)
    await assert_redacted(alice, room_id, first["event_id"], first_redaction["event_id"])
    await assert_redacted(alice, room_id, second["event_id"], early["event_id"])


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
@pytest_twisted.ensureDeferred
async def test_remote_redaction_before_another_servers_target_is_checked_when_it_arrives(
    ours: RunningServer, attacker: MaliciousServer, tmp_path: Any, room_version: str
) -> None:
    """@mallory (power 0) redacts a message of a third server before it arrives: stored,
    not applied once the message comes. Once alice gives her the redact level, her next
    early redaction of that server's message applies on arrival."""
    alice = await user(ours, "alice")
    room_id = await create_room(alice, preset="public_chat", room_version=room_version)
    mallory = await remote_user(attacker, ours, room_id)
    os.makedirs(str(tmp_path / "third"))
    async with MaliciousServer.running(str(tmp_path / "third")) as third:
        victim = await remote_user(third, ours, room_id, "victim")
        state = await state_ids(alice, room_id)
        base = await mallory.pdu(ours, victim.joined.event["event_id"])

        target = victim.message(state, base, "victim's words")
        early = mallory.redaction(state, base, target["event_id"])
        await mallory.send(ours, early)
        await victim.send(ours, target)
        words = {"msgtype": "m.text", "body": "victim's words"}
        await assert_intact(alice, room_id, {target["event_id"]: words})
        await assert_withheld(alice, room_id, early["event_id"])

        pl = (await alice.get(room_path(room_id, "/state/m.room.power_levels"))).json
        pl.setdefault("users", {})[mallory.user_id] = 50
        resp = await put_state(alice, room_id, "m.room.power_levels", pl)
        assert resp.code == 200, resp
        state = await state_ids(alice, room_id)
        latest = await mallory.pdu(ours, resp.json["event_id"])
        second = victim.message(state, latest, "more words")
        late = mallory.redaction(state, latest, second["event_id"])
        await mallory.send(ours, late)
        await victim.send(ours, second)
        await assert_redacted(alice, room_id, second["event_id"], late["event_id"])


@pytest.mark.parametrize("room_version", ["11", "12"])
@pytest_twisted.ensureDeferred
async def test_remote_top_level_redacts_is_no_redaction_from_v11(
    ours: RunningServer, attacker: MaliciousServer, room_version: str
) -> None:
    """v11 dropped the top-level ``redacts``: even with the redact level, a redaction
    naming its target only there redacts nothing (and is withheld); one naming another
    target in content redacts that one, and clients are shown only that one."""
    alice = await user(ours, "alice")
    room_id = await create_room(alice, preset="public_chat", room_version=room_version)
    mallory = await remote_user(attacker, ours, room_id)
    pl = (await alice.get(room_path(room_id, "/state/m.room.power_levels"))).json
    pl.setdefault("users", {})[mallory.user_id] = 50
    assert (await put_state(alice, room_id, "m.room.power_levels", pl)).code == 200
    msg = await send(alice, room_id, "alice's words")
    state = await state_ids(alice, room_id)
    prev = await mallory.pdu(ours, msg)

    def with_top_level_redacts(pdu: dict[str, Any]) -> dict[str, Any]:
        unsigned = {k: v for k, v in pdu.items() if k not in ("event_id", "hashes", "signatures")}
        return mallory.server.sign_pdu({**unsigned, "redacts": msg}, room_version)

    stray = with_top_level_redacts(mallory.event(state, prev, REDACTION, {}))
    own = mallory.message(state, stray, "mallory's words")
    both = with_top_level_redacts(mallory.redaction(state, own, own["event_id"]))
    await mallory.send(ours, stray, own, both)
    await assert_withheld(alice, room_id, stray["event_id"])
    await assert_redacted(alice, room_id, own["event_id"], both["event_id"])
    resp = await alice.get(room_path(room_id, f"/event/{q(both['event_id'])}"))
    assert resp.code == 200, resp
    assert resp.json["redacts"] == own["event_id"], resp
    await assert_intact(alice, room_id, {msg: {"msgtype": "m.text", "body": "alice's words"}})
