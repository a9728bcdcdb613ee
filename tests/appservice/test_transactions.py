"""Homeserver -> application service: durable, ordered transactions with retries."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from homeserver.appservice import sender
from tests.appservice.fake_as import FakeAppService
from tests.appservice.helpers import (
    HS_TOKEN,
    V1,
    V3,
    as_client,
    as_request,
    puppet,
    register_puppet,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer, make_config_dict, start_server


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def bridged_room(server: RunningServer, fake_as: FakeAppService) -> tuple[Client, str, str]:
    """alice's room with a puppet of the bridge joined; (alice, room id, puppet id)."""
    alice = server.client()
    await alice.register("alice")
    resp = await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})
    room_id = resp.json["room_id"]
    puppet_id = await puppet(server, "_bridge_p")
    resp = await as_request(server, "POST", f"{V3}/join/{q(room_id)}", {}, user_id=puppet_id)
    assert resp.code == 200, resp
    await fake_as.wait_for_event(
        lambda e: e["type"] == "m.room.member" and e.get("state_key") == puppet_id
    )
    return alice, room_id, puppet_id


async def say(client: Client, room_id: str, body: str) -> str:
    resp = await client.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/{q(body)}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


def body_of(event: dict[str, Any]) -> Any:
    return event.get("content", {}).get("body")


@pytest_twisted.ensureDeferred
async def test_events_arrive_in_order_with_the_hs_token(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    alice, room_id, _ = await bridged_room(server, fake_as)
    ids = [await say(alice, room_id, f"m{i}") for i in range(5)]
    await fake_as.wait_for_event(lambda e: body_of(e) == "m4")
    received = [e for e in fake_as.received_events() if e["type"] == "m.room.message"]
    assert [e["event_id"] for e in received] == ids
    first = received[0]
    assert first["room_id"] == room_id
    assert first["sender"] == alice.user_id
    assert first["content"] == {"msgtype": "m.text", "body": "m0"}
    assert "origin_server_ts" in first
    assert "signatures" not in first and "hashes" not in first  # client format
    requests = fake_as.transaction_requests()
    assert all(r.method == "PUT" for r in requests)
    assert all(r.authorization == f"Bearer {HS_TOKEN}" for r in requests)
    txn_ids = [int(r.path.rsplit("/", 1)[-1]) for r in requests]
    assert txn_ids == sorted(set(txn_ids)), "one attempt per transaction, ids increasing"
    # The room's creation happened before a bridge user was in it: not sent.
    assert not any(e["type"] == "m.room.create" for e in fake_as.received_events())


@pytest_twisted.ensureDeferred
async def test_events_of_rooms_without_bridge_users_are_not_sent(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    alice, room_id, _ = await bridged_room(server, fake_as)
    other = await alice.post(f"{V3}/createRoom", {})
    await say(alice, other.json["room_id"], "private")
    await say(alice, room_id, "bridged")
    await fake_as.wait_for_event(lambda e: body_of(e) == "bridged")
    assert not any(body_of(e) == "private" for e in fake_as.received_events())


@pytest_twisted.ensureDeferred
async def test_an_invite_of_a_bridge_user_is_sent(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    alice = server.client()
    await alice.register("alice")
    room_id = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
    target = await puppet(server, "_bridge_q")
    resp = await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": target})
    assert resp.code == 200, resp
    invite = await fake_as.wait_for_event(
        lambda e: e["type"] == "m.room.member" and e.get("state_key") == target
    )
    assert invite["content"]["membership"] == "invite"


class TestAliasAndRoomNamespaces:
    @pytest.fixture
    def registration_overrides(self) -> dict[str, Any]:
        return {
            "namespaces": {
                "users": [],
                "aliases": [{"regex": "#shared_.*:test\\.local", "exclusive": False}],
                "rooms": [{"regex": "!bridged-never-matches", "exclusive": False}],
            }
        }

    @pytest_twisted.ensureDeferred
    async def test_a_room_whose_alias_matches_is_sent_without_members(
        self, server: RunningServer, fake_as: FakeAppService
    ) -> None:
        alice = server.client()
        await alice.register("alice")
        plain = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
        await say(alice, plain, "not yet")
        resp = await alice.put(
            f"{V3}/directory/room/{q('#shared_x:test.local')}", {"room_id": plain}
        )
        assert resp.code == 200, resp
        # Setting the canonical alias makes the room interesting from then on.
        resp = await alice.put(
            f"{V3}/rooms/{q(plain)}/state/m.room.canonical_alias",
            {"alias": "#shared_x:test.local"},
        )
        assert resp.code == 200, resp
        await say(alice, plain, "now")
        await fake_as.wait_for_event(lambda e: body_of(e) == "now")
        assert not any(body_of(e) == "not yet" for e in fake_as.received_events())

    @pytest_twisted.ensureDeferred
    async def test_a_directory_alias_in_the_namespace_makes_the_room_interesting(
        self, server: RunningServer, fake_as: FakeAppService
    ) -> None:
        """As Synapse: the room's local aliases count, with no canonical alias set."""
        alice = server.client()
        await alice.register("alice")
        plain = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
        await say(alice, plain, "before")
        alias_path = f"{V3}/directory/room/{q('#shared_dir:test.local')}"
        resp = await alice.put(alias_path, {"room_id": plain})
        assert resp.code == 200, resp
        await say(alice, plain, "aliased")
        await fake_as.wait_for_event(lambda e: body_of(e) == "aliased")
        await server.restart()  # the mapping is loaded again at start
        alice.base_url = server.base_url
        await say(alice, plain, "after restart")
        await fake_as.wait_for_event(lambda e: body_of(e) == "after restart")
        resp = await alice.delete(alias_path)
        assert resp.code == 200, resp
        await say(alice, plain, "unaliased")
        await say(alice, plain, "marker")
        await sleep(0.5)
        bodies = [body_of(e) for e in fake_as.received_events()]
        assert "before" not in bodies and "unaliased" not in bodies and "marker" not in bodies


@pytest_twisted.ensureDeferred
async def test_a_failed_transaction_is_retried_with_the_same_id_and_events(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    alice, room_id, _ = await bridged_room(server, fake_as)
    fake_as.state.transaction_failures = [500, 503, 500]
    before = len(fake_as.transaction_requests())
    await say(alice, room_id, "retry me")
    await fake_as.wait_for(
        lambda: any(
            body_of(e) == "retry me"
            for r in fake_as.accepted_transactions()
            for e in r.body["events"]
        )
    )
    attempts = fake_as.transaction_requests()[before:]
    assert [r.status for r in attempts[:4]] == [500, 503, 500, 200]
    assert len({r.path for r in attempts[:4]}) == 1
    assert all(r.body == attempts[0].body for r in attempts[:4])


@pytest_twisted.ensureDeferred
async def test_a_successful_ping_ends_the_backoff_at_once(
    server: RunningServer, fake_as: FakeAppService, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, room_id, _ = await bridged_room(server, fake_as)
    monkeypatch.setattr(sender, "BACKOFF_INITIAL_S", 60.0)
    monkeypatch.setattr(sender, "BACKOFF_MAX_S", 60.0)
    fake_as.state.transaction_failures = [500]
    before = len(fake_as.transaction_requests())
    await say(alice, room_id, "after ping")
    await fake_as.wait_for(lambda: len(fake_as.transaction_requests()) > before)
    await sleep(0.3)
    assert len(fake_as.transaction_requests()) == before + 1, "backing off for a minute"
    resp = await as_client(server).post(f"{V1}/appservice/bridge/ping", {})
    assert resp.code == 200, resp
    await fake_as.wait_for(
        lambda: any(
            body_of(e) == "after ping"
            for r in fake_as.accepted_transactions()
            for e in r.body["events"]
        ),
        timeout=3,
    )


@pytest_twisted.ensureDeferred
async def test_the_queue_survives_a_restart(
    database: dict[str, Any], tmp_path: Any, fake_as: FakeAppService, registration_files: list[str]
) -> None:
    config = make_config_dict(str(tmp_path), database, app_service_config_files=registration_files)
    first = await start_server(config, str(tmp_path))
    try:
        alice, room_id, _ = await bridged_room(first, fake_as)
        fake_as.state.fail_all_transactions = True
        before = len(fake_as.transaction_requests())
        await say(alice, room_id, "one")
        await fake_as.wait_for(lambda: len(fake_as.transaction_requests()) > before)
        failed = fake_as.transaction_requests()[before]
        assert [body_of(e) for e in failed.body["events"]] == ["one"]
        # Sent while the bridge is down: recorded only as events, not yet in a transaction.
        await say(alice, room_id, "two")
        await say(alice, room_id, "three")
    finally:
        await first.stop()

    fake_as.state.fail_all_transactions = False
    second = await start_server(config, str(tmp_path))
    try:
        await fake_as.wait_for(
            lambda: any(r.path == failed.path for r in fake_as.accepted_transactions())
        )
        resent = next(r for r in fake_as.accepted_transactions() if r.path == failed.path)
        assert resent.body == failed.body, "the same transaction, unchanged"
        alice.base_url = second.base_url
        await say(alice, room_id, "four")
        await fake_as.wait_for_event(lambda e: body_of(e) == "four")
        accepted = fake_as.accepted_transactions()
        bodies = [body_of(e) for r in accepted for e in r.body["events"] if body_of(e)]
        assert bodies[-4:] == ["one", "two", "three", "four"]
        assert bodies.count("two") == 1
        ids = [int(r.path.rsplit("/", 1)[-1]) for r in accepted]
        assert ids == sorted(ids)
    finally:
        await second.stop()


class TestEphemeral:
    @pytest.fixture
    def registration_overrides(self) -> dict[str, Any]:
        return {"receive_ephemeral": True}

    @pytest_twisted.ensureDeferred
    async def test_read_receipts_in_bridged_rooms_are_pushed(
        self, server: RunningServer, fake_as: FakeAppService
    ) -> None:
        alice, room_id, _ = await bridged_room(server, fake_as)
        event_id = await say(alice, room_id, "read me")
        resp = await alice.post(f"{V3}/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})
        assert resp.code == 200, resp

        def receipt() -> dict[str, Any] | None:
            for r in fake_as.transaction_requests():
                for edu in r.body.get("ephemeral", []):
                    if edu["type"] == "m.receipt":
                        return edu
            return None

        await fake_as.wait_for(lambda: receipt() is not None)
        edu = receipt()
        assert edu is not None
        assert edu["room_id"] == room_id
        assert alice.user_id in edu["content"][event_id]["m.read"]
        unstable = [r for r in fake_as.transaction_requests() if r.body.get("ephemeral")]
        assert unstable[0].body["de.sorunome.msc2409.ephemeral"] == unstable[0].body["ephemeral"]

    @pytest_twisted.ensureDeferred
    async def test_to_device_messages_for_its_users_are_pushed(
        self, server: RunningServer, fake_as: FakeAppService
    ) -> None:
        alice = server.client()
        await alice.register("alice")
        resp = await register_puppet(server, "_bridge_td", device_id="PUPPETDEV")
        assert resp.code == 200, resp
        puppet_id = resp.json["user_id"]
        messages = {
            puppet_id: {"PUPPETDEV": {"n": 1}},
            alice.user_id: {"*": {"n": 2}},  # not the service's user: never pushed
        }
        resp = await alice.put(f"{V3}/sendToDevice/m.test/txn1", {"messages": messages})
        assert resp.code == 200, resp
        resp = await alice.put(
            f"{V3}/sendToDevice/m.test/txn2", {"messages": {puppet_id: {"*": {"n": 3}}}}
        )
        assert resp.code == 200, resp

        def pushed() -> list[dict[str, Any]]:
            return [m for r in fake_as.transaction_requests() for m in r.body.get("to_device", [])]

        await fake_as.wait_for(lambda: len(pushed()) >= 2)
        assert pushed() == [
            {
                "type": "m.test",
                "sender": alice.user_id,
                "content": {"n": 1},
                "to_user_id": puppet_id,
                "to_device_id": "PUPPETDEV",
            },
            {
                "type": "m.test",
                "sender": alice.user_id,
                "content": {"n": 3},
                "to_user_id": puppet_id,
                "to_device_id": "PUPPETDEV",
            },
        ]
        unstable = [r for r in fake_as.transaction_requests() if r.body.get("to_device")]
        assert unstable[0].body["de.sorunome.msc2409.to_device"] == unstable[0].body["to_device"]

    @pytest_twisted.ensureDeferred
    async def test_typing_and_presence_in_bridged_rooms_are_pushed(
        self, server: RunningServer, fake_as: FakeAppService
    ) -> None:
        alice, room_id, _ = await bridged_room(server, fake_as)
        path = f"{V3}/rooms/{q(room_id)}/typing/{q(alice.user_id)}"
        resp = await alice.put(path, {"typing": True, "timeout": 30000})
        assert resp.code == 200, resp
        resp = await alice.put(path, {"typing": True, "timeout": 30000})  # a renewal
        resp = await alice.put(path, {"typing": False})
        assert resp.code == 200, resp
        resp = await alice.put(
            f"{V3}/presence/{q(alice.user_id)}/status",
            {"presence": "unavailable", "status_msg": "away"},
        )
        assert resp.code == 200, resp

        def edus(kind: str) -> list[dict[str, Any]]:
            return [
                e
                for r in fake_as.transaction_requests()
                for e in r.body.get("ephemeral", [])
                if e["type"] == kind
            ]

        await fake_as.wait_for(lambda: len(edus("m.typing")) >= 2)
        await fake_as.wait_for(
            lambda: any(e["content"]["presence"] == "unavailable" for e in edus("m.presence"))
        )
        typing = edus("m.typing")
        assert [e["content"]["user_ids"] for e in typing] == [[alice.user_id], []]
        assert all(e["room_id"] == room_id for e in typing)
        presence = [e for e in edus("m.presence") if e["content"]["presence"] == "unavailable"]
        assert presence[-1]["sender"] == alice.user_id
        assert presence[-1]["content"]["status_msg"] == "away"


@pytest_twisted.ensureDeferred
async def test_timestamp_massaging_for_services_only(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    alice, room_id, puppet_id = await bridged_room(server, fake_as)
    ts = 1_500_000_000_000
    path = f"{V3}/rooms/{q(room_id)}/send/m.room.message/massaged"
    resp = await as_client(server).request(
        "PUT", path, {"msgtype": "m.text", "body": "old"}, params={"user_id": puppet_id, "ts": ts}
    )
    assert resp.code == 200, resp
    event = await alice.get(f"{V3}/rooms/{q(room_id)}/event/{q(resp.json['event_id'])}")
    assert event.json["origin_server_ts"] == ts
    state = await as_client(server).request(
        "PUT",
        f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(puppet_id)}",
        {"membership": "join", "displayname": "Puppet"},
        params={"user_id": puppet_id, "ts": ts},
    )
    assert state.code == 200, state
    event = await alice.get(f"{V3}/rooms/{q(room_id)}/event/{q(state.json['event_id'])}")
    assert event.json["origin_server_ts"] == ts
    # A normal user's ts is ignored.
    resp = await alice.put(f"{path}2?ts={ts}", {"msgtype": "m.text", "body": "now"})
    event = await alice.get(f"{V3}/rooms/{q(room_id)}/event/{q(resp.json['event_id'])}")
    assert event.json["origin_server_ts"] > ts
