"""Third-party lookups proxied to the services, and the services' published room lists."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.appservice.fake_as import FakeAppService
from tests.appservice.helpers import V3, as_client, as_request, assert_error, registration
from tests.support.client import Client, q
from tests.support.server import RunningServer

IRC_PROTOCOL = {
    "user_fields": ["network", "nickname"],
    "location_fields": ["network", "channel"],
    "icon": "mxc://example.org/irc",
    "field_types": {
        "network": {"regexp": "[a-z.]+", "placeholder": "irc.example.org"},
        "nickname": {"regexp": "[^\\s]+", "placeholder": "nick"},
        "channel": {"regexp": "#[^\\s]+", "placeholder": "#chan"},
    },
    "instances": [{"desc": "Libera", "fields": {"network": "libera"}, "network_id": "libera"}],
}
LOCATION = {
    "alias": "#_bridge_libera_chan:test.local",
    "protocol": "irc",
    "fields": {"channel": "#chan"},
}
USER = {"userid": "@irc-nick:test.local", "protocol": "irc", "fields": {"nickname": "nick"}}


def serve_thirdparty(fake_as: FakeAppService) -> None:
    async def protocol(path: str, args: Any, body: Any) -> tuple[int, Any]:
        if path == "/thirdparty/protocol/irc":
            return 200, IRC_PROTOCOL
        return 404, {"errcode": "M_NOT_FOUND"}

    async def location(path: str, args: Any, body: Any) -> tuple[int, Any]:
        return 200, [LOCATION, {"alias": 5, "protocol": "irc", "fields": {}}, "junk"]

    async def user(path: str, args: Any, body: Any) -> tuple[int, Any]:
        return 200, [USER]

    fake_as.state.handlers.update(
        {
            "/thirdparty/protocol/": protocol,
            "/thirdparty/location": location,
            "/thirdparty/user": user,
        }
    )


async def someone(server: RunningServer) -> Client:
    client = server.client()
    await client.register("alice")
    return client


@pytest_twisted.ensureDeferred
async def test_protocols_come_from_the_services_with_instance_ids(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    serve_thirdparty(fake_as)
    alice = await someone(server)
    resp = await alice.get(f"{V3}/thirdparty/protocols")
    assert resp.code == 200, resp
    irc = resp.json["irc"]
    assert irc["user_fields"] == ["network", "nickname"]
    assert irc["instances"][0]["instance_id"] == "bridge|libera"
    assert irc["instances"][0]["network_id"] == "libera"
    resp = await alice.get(f"{V3}/thirdparty/protocol/irc")
    assert resp.code == 200, resp
    assert resp.json == irc
    resp = await alice.get(f"{V3}/thirdparty/protocol/xmpp")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await server.client().get(f"{V3}/thirdparty/protocols", token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_protocol_metadata_is_cached(server: RunningServer, fake_as: FakeAppService) -> None:
    """A service's protocol answer is kept (an hour, as Synapse): a service that answers
    nothing later is not asked again, and the metadata stays."""
    serve_thirdparty(fake_as)
    alice = await someone(server)
    resp = await alice.get(f"{V3}/thirdparty/protocols")
    assert resp.code == 200 and "irc" in resp.json, resp
    asked = len(fake_as.requests_to("/thirdparty/protocol/irc"))
    fake_as.state.handlers.pop("/thirdparty/protocol/")  # now it answers nothing useful
    resp = await alice.get(f"{V3}/thirdparty/protocol/irc")
    assert resp.code == 200, resp
    assert resp.json["user_fields"] == ["network", "nickname"]
    assert len(fake_as.requests_to("/thirdparty/protocol/irc")) == asked


@pytest_twisted.ensureDeferred
async def test_location_and_user_lookups_pass_the_fields_and_drop_malformed_answers(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    serve_thirdparty(fake_as)
    alice = await someone(server)
    resp = await alice.get(f"{V3}/thirdparty/location/irc", params={"channel": "#chan"})
    assert resp.code == 200, resp
    assert resp.json == [LOCATION]
    (query,) = fake_as.requests_to("/thirdparty/location/irc")
    assert query.args == {"channel": ["#chan"]}
    resp = await alice.get(f"{V3}/thirdparty/user/irc", params={"nickname": "nick"})
    assert resp.json == [USER]
    # Reverse lookups go to every service with protocols.
    resp = await alice.get(f"{V3}/thirdparty/location", params={"alias": LOCATION["alias"]})
    assert resp.json == [LOCATION]
    assert fake_as.requests_to("/thirdparty/location")[-1].args == {"alias": [LOCATION["alias"]]}
    resp = await alice.get(f"{V3}/thirdparty/user", params={"userid": USER["userid"]})
    assert resp.json == [USER]
    # A protocol nobody provides asks nobody.
    before = len(fake_as.state.requests)
    resp = await alice.get(f"{V3}/thirdparty/user/xmpp")
    assert resp.code == 200 and resp.json == []
    assert len(fake_as.state.requests) == before


@pytest_twisted.ensureDeferred
async def test_a_failing_service_gives_empty_results(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    alice = await someone(server)
    resp = await alice.get(f"{V3}/thirdparty/location/irc")
    assert resp.code == 200 and resp.json == [], resp
    resp = await alice.get(f"{V3}/thirdparty/protocols")
    assert resp.code == 200 and resp.json == {}, resp


class TestTwoServicesOfOneProtocol:
    @pytest.fixture
    def extra_services(self, fake_as: FakeAppService) -> list[dict[str, Any]]:
        return [
            registration(
                fake_as.url,
                id="bridge2",
                as_token="token2",
                sender_localpart="bot2",
                namespaces={"users": [], "aliases": [], "rooms": []},
            )
        ]

    @pytest_twisted.ensureDeferred
    async def test_instances_of_one_protocol_are_merged(
        self, server: RunningServer, fake_as: FakeAppService
    ) -> None:
        serve_thirdparty(fake_as)
        alice = await someone(server)
        resp = await alice.get(f"{V3}/thirdparty/protocols")
        ids = [i["instance_id"] for i in resp.json["irc"]["instances"]]
        assert ids == ["bridge|libera", "bridge2|libera"]


async def public_room(server: RunningServer, owner: Client, name: str) -> str:
    resp = await owner.post(f"{V3}/createRoom", {"visibility": "public", "name": name})
    return str(resp.json["room_id"])


@pytest_twisted.ensureDeferred
async def test_a_service_publishes_rooms_per_network(server: RunningServer) -> None:
    alice = await someone(server)
    mine = await public_room(server, alice, "server room")
    resp = await as_request(server, "POST", f"{V3}/createRoom", {"name": "bridged"})
    bridged = resp.json["room_id"]
    path = f"{V3}/directory/list/appservice/libera/{q(bridged)}"
    resp = await as_client(server).put(path, {"visibility": "public"})
    assert resp.code == 200, resp

    async def listed(**body: Any) -> list[str]:
        resp = await alice.post(f"{V3}/publicRooms", body)
        assert resp.code == 200, resp
        return sorted(r["room_id"] for r in resp.json["chunk"])

    assert await listed() == [mine]
    assert await listed(third_party_instance_id="bridge|libera") == [bridged]
    assert await listed(third_party_instance_id="bridge|oftc") == []
    assert await listed(include_all_networks=True) == sorted([mine, bridged])
    resp = await alice.get(f"{V3}/publicRooms", params={"third_party_instance_id": "bridge|libera"})
    assert [r["room_id"] for r in resp.json["chunk"]] == [bridged]
    assert resp.json["chunk"][0]["name"] == "bridged"

    resp = await alice.post(
        f"{V3}/publicRooms",
        {"include_all_networks": True, "third_party_instance_id": "bridge|libera"},
    )
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.post(f"{V3}/publicRooms", {"third_party_instance_id": "no-bar"})
    assert_error(resp, 400, "M_INVALID_PARAM")

    resp = await as_client(server).put(path, {"visibility": "private"})
    assert resp.code == 200, resp
    assert await listed(third_party_instance_id="bridge|libera") == []
    resp = await as_client(server).put(path, {"visibility": "public"})
    resp = await as_client(server).delete(path)
    assert resp.code == 200, resp
    assert await listed(include_all_networks=True) == [mine]


@pytest_twisted.ensureDeferred
async def test_only_services_edit_their_room_lists(server: RunningServer) -> None:
    alice = await someone(server)
    room_id = await public_room(server, alice, "r")
    path = f"{V3}/directory/list/appservice/libera/{q(room_id)}"
    resp = await alice.put(path, {"visibility": "public"})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await as_client(server).put(path, {"visibility": "sideways"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await as_client(server).put(path, {})
    assert_error(resp, 400, "M_MISSING_PARAM")
    resp = await as_client(server).put(
        f"{V3}/directory/list/appservice/libera/{q('!nope:test.local')}", {"visibility": "public"}
    )
    assert_error(resp, 404, "M_NOT_FOUND")
