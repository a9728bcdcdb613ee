"""End to end: matrix-nio (a real asyncio client library) against a real server process.

The server is started exactly as an admin would: ``homeserver --generate-config`` writes
the config, a second ``-c`` file overrides a few keys, and ``homeserver -c ... -c ...``
runs it as a subprocess. SIGTERM must stop it cleanly (exit status 0).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nio
import pytest
from nio.responses import RegisterErrorResponse

from tests.support.databases import database_config
from tests.support.subprocess_server import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ServerProcess,
    free_port,
    generate_config,
    start_process,
    start_server,
    write_overrides,
)

PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["sqlite", "postgres"])
def homeserver_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    port = free_port()
    config_path = generate_config(tmp_path, port)
    with database_config(str(request.param), str(tmp_path)) as database:
        overrides: dict[str, Any] = {"bcrypt_rounds": 4, "database": database}
        overrides_path = write_overrides(tmp_path, overrides)
        server = start_server(tmp_path, port, config_path, overrides_path)
        try:
            yield server
        finally:
            # Always stop before the PostgreSQL database is dropped.
            status = server.stop()
        assert status == 0, (
            f"homeserver did not shut down cleanly on SIGTERM (exit status {status}, "
            f"None means still running after {STOP_TIMEOUT_S}s); stderr:\n{server.stderr()}"
        )
        assert not (tmp_path / "homeserver.pid").exists(), "pid file left behind after shutdown"


def _client(server: ServerProcess, user: str = "") -> nio.AsyncClient:
    # Fail fast instead of retrying forever on 429s or timeouts.
    config = nio.AsyncClientConfig(max_limit_exceeded=0, max_timeouts=2, request_timeout=20)
    return nio.AsyncClient(server.base_url, user, config=config)


async def _scenario(server: ServerProcess) -> None:
    user_id = f"@alice:{server.server_name}"
    first = _client(server)
    second = _client(server, "alice")
    third = _client(server)
    try:
        # Registration: nio sends m.login.dummy straight away, without a session.
        reg = await first.register("alice", PASSWORD, device_name="first device")
        assert isinstance(reg, nio.RegisterResponse), reg
        assert reg.user_id == user_id
        assert first.access_token and first.device_id

        taken = await third.register("alice", PASSWORD)
        assert isinstance(taken, RegisterErrorResponse), taken
        assert taken.status_code == "M_USER_IN_USE"

        login = await second.login(PASSWORD, device_name="second device")
        assert isinstance(login, nio.LoginResponse), login
        assert login.user_id == user_id
        assert login.device_id != reg.device_id
        assert login.access_token != reg.access_token

        third.user = "alice"
        bad = await third.login("wrong password")
        assert isinstance(bad, nio.LoginError), bad
        assert bad.status_code == "M_FORBIDDEN"

        who = await second.whoami()
        assert isinstance(who, nio.WhoamiResponse), who
        assert who.user_id == user_id
        assert who.device_id == login.device_id

        # The display name defaults to the localpart; set it from one session, read from both.
        got = await first.get_displayname()
        assert isinstance(got, nio.ProfileGetDisplayNameResponse), got
        assert got.displayname == "alice"
        changed = await second.set_displayname("Alice Liddell")
        assert isinstance(changed, nio.ProfileSetDisplayNameResponse), changed
        for client in (first, second):
            got = await client.get_displayname(user_id)
            assert isinstance(got, nio.ProfileGetDisplayNameResponse), got
            assert got.displayname == "Alice Liddell"

        devices = await first.devices()
        assert isinstance(devices, nio.DevicesResponse), devices
        names = {d.id: d.display_name for d in devices.devices}
        assert names == {reg.device_id: "first device", login.device_id: "second device"}

        old_token = second.access_token
        out = await second.logout()
        assert isinstance(out, nio.LogoutResponse), out
        assert second.access_token == ""

        # The logged-out token is dead at once; the other session is unaffected.
        second.access_token = old_token
        dead = await second.whoami()
        assert isinstance(dead, nio.WhoamiError), dead
        assert dead.status_code == "M_UNKNOWN_TOKEN"
        assert dead.soft_logout is False

        who = await first.whoami()
        assert isinstance(who, nio.WhoamiResponse), who
        devices = await first.devices()
        assert isinstance(devices, nio.DevicesResponse), devices
        assert [d.id for d in devices.devices] == [reg.device_id]
    finally:
        for client in (first, second, third):
            await client.close()


def test_nio_register_login_profile_devices_logout(homeserver_process: ServerProcess) -> None:
    asyncio.run(_scenario(homeserver_process))


def test_start_up_failure_exits_non_zero(tmp_path: Path) -> None:
    """A server that cannot listen says why and exits 1 (it used to hang forever)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config_path = generate_config(tmp_path, busy.getsockname()[1])
        proc = start_process(tmp_path, config_path)
        try:
            status = proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = None
    stderr = (tmp_path / "stderr.log").read_text(encoding="utf-8", errors="replace")
    assert status == 1, f"exit status {status} (None: still running); stderr:\n{stderr}"
    assert "Start-up failed" in stderr and "Address already in use" in stderr, stderr
