"""The ``replication`` listener resource of a real server: served only where configured,
authenticated by ``worker_replication_secret``, answering ``ping``."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from homeserver.replication.client import InternalClient
from homeserver.replication.ping import PING
from homeserver.workers import InstanceLocation
from tests.support.client import Client
from tests.support.server import RunningServer

SECRET = "replication-secret-for-tests"


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {
        "worker_replication_secret": SECRET,
        "listeners": [
            {
                "port": 0,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "resources": [{"names": ["client", "federation"]}],
            },
            {
                "port": 0,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "resources": [{"names": ["replication"]}],
            },
        ],
    }


def _replication_port(server: RunningServer) -> int:
    return int(server.hs.ports[1].getHost().port)


@pytest_twisted.ensureDeferred
async def test_ping_answers_on_the_replication_listener(server: RunningServer) -> None:
    port = _replication_port(server)
    client = InternalClient(
        reactor,
        "worker1",
        {"master": InstanceLocation(host="127.0.0.1", port=port)},
        SECRET,
        endpoints={PING.name: PING},
    )
    try:
        alice = server.client()
        await alice.register("alice")
        created = await alice.post("/_matrix/client/v3/createRoom", {})
        assert created.code == 200, created
        answer = await client.call("master", "ping")
    finally:
        await client.close()
    assert answer["instance_name"] == "master"
    assert answer["positions"]["events"] == server.hs.storage.events.stream.current_position
    assert answer["positions"]["events"] > 0


@pytest_twisted.ensureDeferred
async def test_replication_is_not_served_on_a_listener_without_it(server: RunningServer) -> None:
    auth = {"Authorization": f"Bearer {SECRET}"}
    on_client = await Client(server.base_url).get("/_synapse/replication/ping", headers=auth)
    assert on_client.code == 404 and on_client.json["errcode"] == "M_UNRECOGNIZED"
    repl = Client(f"http://127.0.0.1:{_replication_port(server)}")
    assert (await repl.get("/_synapse/replication/ping", headers=auth)).code == 200
    refused = await repl.get("/_synapse/replication/ping")
    assert refused.code == 403 and refused.json["errcode"] == "M_FORBIDDEN"
