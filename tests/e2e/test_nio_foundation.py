"""End to end: matrix-nio (a real asyncio client library) against a real server process.

The server is started exactly as an admin would: ``homeserver --generate-config`` writes
the config, a second ``-c`` file overrides a few keys, and ``homeserver -c ... -c ...``
runs it as a subprocess. SIGTERM must stop it cleanly (exit status 0).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nio
import pytest
import yaml
from nio.responses import RegisterErrorResponse

from tests.support.databases import database_config

HOMESERVER = str(Path(sys.executable).with_name("homeserver"))
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    base_url: str
    server_name: str
    stderr_path: Path

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-8000:]
        except OSError:
            return "<no stderr>"

    def stop(self) -> int | None:
        """SIGTERM; the exit status, or None if it did not exit in time (then killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def _wait_until_up(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(
                f"homeserver exited with {server.proc.returncode} during start-up; "
                f"stderr:\n{server.stderr()}"
            )
        try:
            url = server.base_url + "/_matrix/client/versions"
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last_error = e
        time.sleep(0.1)
    server.stop()
    raise AssertionError(
        f"homeserver did not answer /_matrix/client/versions within {START_TIMEOUT_S}s "
        f"(last error: {last_error}); stderr:\n{server.stderr()}"
    )


def generate_config(tmp_path: Path, port: int) -> Path:
    """``homeserver --generate-config`` as an admin runs it; the config file's path."""
    config_path = tmp_path / "homeserver.yaml"
    _run(
        [
            HOMESERVER,
            "--generate-config",
            "-H",
            f"localhost:{port}",
            "-c",
            str(config_path),
            "--data-directory",
            str(tmp_path),
            "--enable-registration",
            "--listen-port",
            str(port),
            "--report-stats=no",
        ],
        tmp_path,
    )
    return config_path


def start_process(tmp_path: Path, *config_paths: Path) -> subprocess.Popen[bytes]:
    args = [HOMESERVER]
    for path in config_paths:
        args += ["-c", str(path)]
    with open(tmp_path / "stdout.log", "wb") as out, open(tmp_path / "stderr.log", "wb") as err:
        return subprocess.Popen(
            args, cwd=tmp_path, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )


@pytest.fixture(params=["sqlite", "postgres"])
def homeserver_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    port = free_port()
    config_path = generate_config(tmp_path, port)
    with database_config(str(request.param), str(tmp_path)) as database:
        overrides: dict[str, Any] = {"bcrypt_rounds": 4, "database": database}
        overrides_path = tmp_path / "overrides.yaml"
        overrides_path.write_text(yaml.safe_dump(overrides), encoding="utf-8")
        proc = start_process(tmp_path, config_path, overrides_path)
        server = ServerProcess(
            proc, f"http://127.0.0.1:{port}", f"localhost:{port}", tmp_path / "stderr.log"
        )
        try:
            _wait_until_up(server)
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
