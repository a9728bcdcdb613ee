"""Joins, invites and leaves across servers at their edges, as SyTest's 30room-join,
35room-invite and 36state check them: a room server's refusal reaches the client, a
server without /v2/send_join is joined over /v1, an invite whose server is gone can still
be rejected, /state without ``event_id`` is a 400 and a malformed PDU is 400 M_BAD_JSON."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from crypto.event_hashing import compute_event_id, hash_and_sign_event
from crypto.signing_key import load_or_generate_signing_key
from federation.http_client import error_from_response
from federation.interfaces import FederationRequestError
from federation.x_matrix import sign_request
from homeserver.events.room_versions import get_room_version
from tests.federation.test_input_validation import signed_get
from tests.federation.test_two_servers import sleep, wait_for_invite
from tests.rooms.helpers import create_room, user
from tests.support.client import Client, q
from tests.support.federation import federation_request
from tests.support.server import RunningServer


async def join_via(client: Client, room_id: str, server: RunningServer) -> Any:
    return await client.post(
        f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": server.hs.server_name}
    )


@pytest_twisted.ensureDeferred
async def test_make_join_refusal_reaches_the_client(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    bob = await user(b, "bob")
    # A room that does not federate: A's make_join says 403 M_FORBIDDEN, and so do we.
    resp = await alice.post(
        "/_matrix/client/v3/createRoom",
        {"preset": "public_chat", "creation_content": {"m.federate": False}},
    )
    assert resp.code == 200, resp
    resp = await join_via(bob, resp.json["room_id"], a)
    assert (resp.code, resp.json["errcode"]) == (403, "M_FORBIDDEN"), resp.json

    # B offers no version of the room's: A's M_INCOMPATIBLE_ROOM_VERSION, with the
    # room_version it names, is passed on (it was a 502 M_UNKNOWN).
    room_id = await create_room(alice, preset="public_chat")
    assert b.hs.federation is not None
    client = b.hs.federation.client
    real_get_json = client.get_json

    async def offering_old_versions(
        destination: str, path: str, args: Any = None, **kw: Any
    ) -> Any:
        if "/make_join/" in path:
            args = {"ver": ["10"]}
        return await real_get_json(destination, path, args, **kw)

    client.get_json = offering_old_versions  # type: ignore[method-assign]
    resp = await join_via(bob, room_id, a)
    assert (resp.code, resp.json["errcode"]) == (400, "M_INCOMPATIBLE_ROOM_VERSION"), resp.json
    assert resp.json["room_version"] == "12"


def test_incompatible_room_version_answer_keeps_its_room_version() -> None:
    error = error_from_response(
        "x.example", 400, b'{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "room_version": "9"}'
    )
    assert error.room_version == "9"
    long = b'{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "room_version": "' + b"9" * 65 + b'"}'
    assert error_from_response("x.example", 400, long).room_version is None


@pytest_twisted.ensureDeferred
async def test_join_falls_back_to_v1_send_join(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """A resident answering 404 to /v2/send_join (an older server) is joined over /v1,
    whose answer has the ``[200, {...}]`` wrapper."""
    a, b = two_servers
    alice = await user(a, "alice")
    bob = await user(b, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert b.hs.federation is not None
    client = b.hs.federation.client
    real_put_json = client.put_json
    paths: list[str] = []

    async def without_v2(destination: str, path: str, body: Any, *args: Any, **kw: Any) -> Any:
        paths.append(path)
        if "/v2/send_join/" in path:
            raise FederationRequestError(destination, 404, None, "Not found")
        return await real_put_json(destination, path, body, *args, **kw)

    client.put_json = without_v2  # type: ignore[method-assign]
    resp = await join_via(bob, room_id, a)
    assert resp.code == 200, resp.json
    assert [p.split("/")[3] for p in paths if "send_join" in p] == ["v2", "v1"]
    resp = await bob.get(f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members")
    assert resp.code == 200, resp.json
    assert set(resp.json["joined"]) == {alice.user_id, bob.user_id}


async def invited_over_federation(a: RunningServer, b: RunningServer) -> tuple[Client, str]:
    """carol (on B), invited by alice (on A) to a room of A; the invite synced on B."""
    alice = await user(a, "alice")
    carol = await user(b, "carol")
    resp = await alice.post("/_matrix/client/v3/createRoom", {"invite": [carol.user_id]})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    await wait_for_invite(carol, room_id)
    return carol, room_id


@pytest_twisted.ensureDeferred
async def test_invite_is_rejected_even_when_its_server_refuses_the_leave(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """The inviting server unreachable or refusing make_leave: the rejection still
    happens, with a leave of B's own (as Synapse), shown in /sync's leave section."""
    a, b = two_servers
    carol, room_id = await invited_over_federation(a, b)
    resp = await carol.get("/_matrix/client/v3/sync")
    since = resp.json["next_batch"]
    assert b.hs.federation is not None
    client = b.hs.federation.client
    real_get_json = client.get_json
    asked: list[str] = []

    async def refusing(destination: str, path: str, *args: Any, **kw: Any) -> Any:
        if "/make_leave/" in path:
            asked.append(path)
            raise FederationRequestError(destination, 403, None, "{}")
        return await real_get_json(destination, path, *args, **kw)

    client.get_json = refusing  # type: ignore[method-assign]
    resp = await carol.post(f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {})
    assert resp.code == 200, resp.json
    assert asked, "make_leave was never tried"

    resp = await carol.get("/_matrix/client/v3/sync", params={"since": since})
    assert resp.code == 200, resp.json
    assert room_id not in resp.json["rooms"]["invite"]
    left = resp.json["rooms"]["leave"][room_id]
    (event,) = [e for e in left["timeline"]["events"] if e["type"] == "m.room.member"]
    assert event["sender"] == event["state_key"] == carol.user_id
    assert event["content"]["membership"] == "leave"
    # And no more invite: a fresh sync does not list the room as invited.
    resp = await carol.get("/_matrix/client/v3/sync")
    assert room_id not in resp.json["rooms"]["invite"]


@pytest_twisted.ensureDeferred
async def test_v1_invite_is_served_and_signed(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """PUT /v1/invite exists (it was M_UNRECOGNIZED): it authenticates its caller."""
    a, _ = two_servers
    code, body = await federation_request(
        a, "PUT", "/_matrix/federation/v1/invite/!r:x.example/$e", body={}
    )
    assert (code, body["errcode"]) == (401, "M_UNAUTHORIZED"), body


@pytest_twisted.ensureDeferred
async def test_state_without_event_id_is_400_before_the_room_is_looked_up(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    for endpoint in ("state", "state_ids"):
        code, body = await signed_get(b, a, f"/_matrix/federation/v1/{endpoint}/notaroom")
        assert (code, body["errcode"]) == (400, "M_MISSING_PARAM"), body
        # With the parameter, an unknown room is still 404.
        code, body = await signed_get(
            b, a, f"/_matrix/federation/v1/{endpoint}/notaroom?event_id=%24e"
        )
        assert (code, body["errcode"]) == (404, "M_NOT_FOUND"), body


@pytest_twisted.ensureDeferred
async def test_invite_with_a_float_is_400_bad_json(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """A float in a v6+ event a server hands us is its malformed request: 400 M_BAD_JSON
    (as Synapse), not 403; the same event without it is accepted."""
    a, b = two_servers
    alice = await user(a, "alice")
    version = get_room_version("10")
    assert version is not None
    key = load_or_generate_signing_key(b.hs.config.signing_key_path)
    origin, dest = b.hs.server_name, a.hs.server_name
    room_id = f"!room:{origin}"

    async def invite(content: dict[str, Any]) -> tuple[int, Any]:
        pdu = hash_and_sign_event(
            {
                "type": "m.room.member",
                "room_id": room_id,
                "sender": f"@bob:{origin}",
                "state_key": alice.user_id,
                "content": content,
                "auth_events": [],
                "prev_events": [],
                "depth": 3,
                "origin_server_ts": 1,
            },
            origin,
            key,
            version,
        )
        path = f"/_matrix/federation/v2/invite/{q(room_id)}/{q(compute_event_id(pdu, version))}"
        body = {"event": pdu, "room_version": "10", "invite_room_state": []}
        auth = sign_request(key, "PUT", path, origin, dest, body)
        return await federation_request(a, "PUT", path, body=body, auth=auth)

    code, body = await invite({"membership": "invite", "bad_val": 1.1})
    assert (code, body.get("errcode")) == (400, "M_BAD_JSON"), body
    code, body = await invite({"membership": "invite"})
    assert code == 200, body


@pytest_twisted.ensureDeferred
async def test_invite_out_when_v2_is_unknown_or_the_copy_is_malformed(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """The invitee's server without /v2/invite: /v1 is only for rooms of versions 1 and
    2, so a newer room's invite is 400 M_UNSUPPORTED_ROOM_VERSION (it was a 404 passed
    on); a returned copy with a float is 400 M_BAD_JSON (it was 502)."""
    a, b = two_servers
    alice = await user(a, "alice")
    carol = await user(b, "carol")
    room_id = await create_room(alice, preset="private_chat")
    assert a.hs.federation is not None
    client = a.hs.federation.client
    real_put_json = client.put_json
    mode = ["no v2"]

    async def invitee(destination: str, path: str, body: Any, *args: Any, **kw: Any) -> Any:
        if "/invite/" in path:
            if mode[0] == "no v2":
                raise FederationRequestError(destination, 404, None, "Not found")
            answer = await real_put_json(destination, path, body, *args, **kw)
            answer["event"]["content"]["bad_val"] = 1.1
            return answer
        return await real_put_json(destination, path, body, *args, **kw)

    client.put_json = invitee  # type: ignore[method-assign]
    path = f"/_matrix/client/v3/rooms/{q(room_id)}/invite"
    resp = await alice.post(path, {"user_id": carol.user_id})
    assert (resp.code, resp.json["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION"), resp.json
    mode[0] = "float"
    resp = await alice.post(path, {"user_id": carol.user_id})
    assert (resp.code, resp.json["errcode"]) == (400, "M_BAD_JSON"), resp.json
    client.put_json = real_put_json  # type: ignore[method-assign]
    resp = await alice.post(path, {"user_id": carol.user_id})
    assert resp.code == 200, resp.json


@pytest_twisted.ensureDeferred
async def test_pdu_listing_a_prev_event_twice_is_accepted(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """A PDU whose prev_events names one event twice (SyTest's server sends such after a
    join it saw twice): one edge, not a UNIQUE violation that lost the PDU (500)."""
    a, b = two_servers
    alice = await user(a, "alice")
    bob = await user(b, "bob")
    room_id = await create_room(alice, preset="public_chat", room_version="10")
    resp = await join_via(bob, room_id, a)
    assert resp.code == 200, resp.json
    for _ in range(50):
        state = (await alice.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state")).json
        ids = {(e["type"], e["state_key"]): e["event_id"] for e in state}
        if ("m.room.member", bob.user_id) in ids:
            break
        await sleep(0.1)
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t1",
        {"msgtype": "m.text", "body": "before"},
    )
    assert resp.code == 200, resp.json
    latest = resp.json["event_id"]
    version = get_room_version("10")
    assert version is not None
    key = load_or_generate_signing_key(b.hs.config.signing_key_path)
    origin, dest = b.hs.server_name, a.hs.server_name
    pdu = hash_and_sign_event(
        {
            "type": "m.room.message",
            "room_id": room_id,
            "sender": bob.user_id,
            "content": {"msgtype": "m.text", "body": "twice"},
            "auth_events": [
                ids[("m.room.create", "")],
                ids[("m.room.power_levels", "")],
                ids[("m.room.member", bob.user_id)],
            ],
            "prev_events": [latest, latest],
            "depth": 50,
            "origin_server_ts": 1,
        },
        origin,
        key,
        version,
    )
    event_id = compute_event_id(pdu, version)
    path = "/_matrix/federation/v1/send/dup-prev-1"
    body = {"origin": origin, "origin_server_ts": 1, "pdus": [pdu], "edus": []}
    auth = sign_request(key, "PUT", path, origin, dest, body)
    code, answer = await federation_request(a, "PUT", path, body=body, auth=auth)
    assert code == 200, answer
    assert answer["pdus"][event_id] == {}, answer
    resp = await alice.get(f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(event_id)}")
    assert resp.code == 200, resp.json
    assert resp.json["content"]["body"] == "twice"
