"""The ``replication`` listener resource of a real server: served only where configured,
authenticated by ``worker_replication_secret``, answering ``ping``."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from homeserver.config import ConfigError, parse_config
from homeserver.replication.client import InternalClient
from homeserver.replication.ping import PING
from homeserver.workers import InstanceLocation
from tests.support.client import Client
from tests.support.server import RunningServer, make_config_dict, start_server

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


@pytest_twisted.ensureDeferred
async def test_a_unix_socket_listener_serves_replication_without_a_secret(
    database: dict[str, Any], tmp_path: Any
) -> None:
    socket_path = str(tmp_path / "main.sock")
    config = make_config_dict(
        str(tmp_path),
        database,
        listeners=[
            {"port": 0, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]},
            {"path": socket_path, "mode": 0o600, "resources": [{"names": ["replication"]}]},
        ],
    )
    running = await start_server(config, str(tmp_path))
    client = InternalClient(
        reactor,
        "worker1",
        {"master": InstanceLocation(path=socket_path)},
        None,
        endpoints={PING.name: PING},
    )
    try:
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
        answer = await client.call("master", "ping")
        assert answer["instance_name"] == "master"
        # A process killed leaves its socket and lock file behind: the next one replaces them.
        await running.stop()
        _leave_as_a_killed_process_would(socket_path)
        running = await start_server(config, str(tmp_path))
        assert (await client.call("master", "ping"))["instance_name"] == "master"
    finally:
        await client.close()
        await running.stop()


def _leave_as_a_killed_process_would(socket_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path)
    stale.close()
    dead = subprocess.Popen(["true"])
    dead.wait()
    os.symlink(str(dead.pid), socket_path + ".lock")


@pytest.mark.parametrize(
    ("listener", "error"),
    [
        ({"path": "/tmp/x.sock", "port": 8008}, "listeners[0]: a listener has a port or a path"),
        ({"path": "/tmp/x.sock", "type": "metrics"}, "listeners[0].path: only plain http"),
        ({"path": "/tmp/x.sock", "tls": True}, "listeners[0].path: only plain http"),
        ({"path": "/tmp/x.sock", "mode": 0o1777}, "listeners[0].mode"),
        ({"path": ""}, "listeners[0].path"),
    ],
)
def test_unix_socket_listener_keys_are_checked(
    listener: dict[str, Any], error: str, tmp_path: Any
) -> None:
    raw = {"server_name": "test.local", "listeners": [listener]}
    with pytest.raises(ConfigError, match=re.escape(error)):
        parse_config(raw, str(tmp_path))
