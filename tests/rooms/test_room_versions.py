"""Rooms of every version we support (1 to 12), over HTTP: created, joined, written,
redacted and read, with each version's event format (ids, references, hashes)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import pytest_twisted
from signedjson.key import get_verify_key

from crypto.event_hashing import check_content_hash, compute_event_id, verify_event_signature
from crypto.signing_key import load_or_generate_signing_key
from homeserver.events.room_versions import ROOM_VERSIONS
from tests.rooms.helpers import (
    V3,
    all_events,
    assert_error,
    bodies,
    create_room,
    get_state,
    invite,
    join,
    put_state,
    room_path,
    send,
    sync,
    user,
)
from tests.support.client import q
from tests.support.server import RunningServer

ALL_VERSIONS = [str(v) for v in range(1, 13)]

_V1_ID = re.compile(r"\$[^:]+:test\.local")
_V3_ID = re.compile(r"\$[A-Za-z0-9+/]{43}")
_V4_ID = re.compile(r"\$[A-Za-z0-9_\-]{43}")


def _id_pattern(version: str) -> re.Pattern[str]:
    if version in ("1", "2"):
        return _V1_ID
    if version == "3":
        return _V3_ID
    return _V4_ID


async def _pdus(client: Any, room_id: str) -> list[dict[str, Any]]:
    fed = await sync(
        client, filter={"event_format": "federation", "room": {"timeline": {"limit": 50}}}
    )
    return list(fed["rooms"]["join"][room_id]["timeline"]["events"])


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest_twisted.ensureDeferred
async def test_room_of_each_version_works(server: RunningServer, version: str) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice, room_version=version, preset="public_chat", room_alias_name=f"v{version}"
    )
    create = await get_state(alice, room_id, "m.room.create")
    assert create.code == 200, create
    assert create.json["room_version"] == version
    # v1-v10 create events name the creator; v11+ do not.
    assert ("creator" in create.json) == (int(version) <= 10)

    resp = await join(bob, f"#v{version}:test.local")
    assert resp.code == 200, resp
    hello = await send(alice, room_id, "hello")
    reply = await send(bob, room_id, "hi alice")
    assert _id_pattern(version).fullmatch(hello), hello
    assert _id_pattern(version).fullmatch(reply), reply

    # Both read the same timeline; events are found by their ids.
    for client in (alice, bob):
        assert bodies(await all_events(client, room_id)) == ["hello", "hi alice"]
        resp = await client.get(room_path(room_id, f"/event/{q(hello)}"))
        assert resp.code == 200, resp
        assert resp.json["event_id"] == hello
        assert "prev_events" not in resp.json and "hashes" not in resp.json

    # A redaction by the sender, then by the room admin of another user's event.
    resp = await alice.put(room_path(room_id, f"/redact/{q(reply)}/r1"), {"reason": "no"})
    assert resp.code == 200, resp
    redaction_id = resp.json["event_id"]
    resp = await bob.get(room_path(room_id, f"/event/{q(reply)}"))
    assert resp.code == 200, resp
    assert resp.json["content"] == {}
    assert resp.json["unsigned"]["redacted_because"]["event_id"] == redaction_id

    # The PDUs: ids, references and hashes in this version's format, signed by us.
    key = load_or_generate_signing_key(server.hs.config.signing_key_path)
    verify_key = get_verify_key(key)
    room_version = ROOM_VERSIONS[version]
    pdus = await _pdus(alice, room_id)
    assert [p["type"] for p in pdus][:2] == ["m.room.create", "m.room.member"]
    ids = [p["event_id"] for p in pdus]
    for prev, pdu in zip(pdus, pdus[1:], strict=False):
        raw = {k: v for k, v in pdu.items() if k not in ("unsigned",)}
        if version in ("1", "2"):
            assert pdu["prev_events"][0][0] == prev["event_id"], pdu
            assert all(isinstance(r, list) and len(r) == 2 for r in pdu["auth_events"])
            assert compute_event_id(raw, room_version) == pdu["event_id"]
        else:
            assert pdu["prev_events"] == [prev["event_id"]], pdu
            raw.pop("event_id")
            assert compute_event_id(raw, room_version) == pdu["event_id"]
        if pdu["event_id"] != reply:  # the redacted event's content is gone
            assert check_content_hash(raw)
        verify_event_signature(raw, "test.local", verify_key, room_version)
    assert hello in ids and redaction_id in ids


@pytest.mark.parametrize("version", ["1", "2", "5"])
@pytest_twisted.ensureDeferred
async def test_aliases_event_state_key_is_the_server_in_v1_to_v5(
    server: RunningServer, version: str
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, room_version=version)
    content = {"aliases": ["#a:test.local"]}
    resp = await put_state(alice, room_id, "m.room.aliases", content, state_key="other.server")
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await put_state(alice, room_id, "m.room.aliases", content, state_key="test.local")
    assert resp.code == 200, resp


@pytest.mark.parametrize("version", ["1", "9"])
@pytest_twisted.ensureDeferred
async def test_string_power_levels_are_accepted_before_v10(
    server: RunningServer, version: str
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, room_version=version)
    pl = (await get_state(alice, room_id, "m.room.power_levels")).json
    pl["users"][alice.user_id] = "100"
    pl["users"]["@carol:test.local"] = "50"
    resp = await put_state(alice, room_id, "m.room.power_levels", pl)
    assert resp.code == 200, resp
    resp = await send(alice, room_id, "still here")
    assert resp


@pytest_twisted.ensureDeferred
async def test_v2_room_invite_and_upgrade_to_v11(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, room_version="2", name="Old")
    resp = await invite(alice, room_id, bob.user_id)
    assert resp.code == 200, resp
    resp = await join(bob, room_id)
    assert resp.code == 200, resp
    resp = await alice.post(room_path(room_id, "/upgrade"), {"new_version": "11"})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]
    create = (await get_state(alice, new, "m.room.create")).json
    assert create["room_version"] == "11"
    assert create["predecessor"]["room_id"] == room_id
    tombstone = (await get_state(alice, room_id, "m.room.tombstone")).json
    assert tombstone["replacement_room"] == new
    # And back down to version 1.
    resp = await alice.post(room_path(new, "/upgrade"), {"new_version": "1"})
    assert resp.code == 200, resp
    newest = resp.json["replacement_room"]
    assert (await get_state(alice, newest, "m.room.create")).json["room_version"] == "1"
    assert (await get_state(alice, newest, "m.room.name")).json == {"name": "Old"}


@pytest_twisted.ensureDeferred
async def test_capabilities_list_versions_1_to_12(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(f"{V3}/capabilities")
    assert resp.code == 200, resp
    versions = resp.json["capabilities"]["m.room_versions"]
    assert versions["default"] == "12"
    assert versions["available"] == {v: "stable" for v in ALL_VERSIONS}
