"""Run the real ``homeserver`` command as a subprocess, exactly as an admin would.

``homeserver --generate-config`` writes the config, a second ``-c`` file overrides a few
keys (database, bcrypt rounds, rate limits), and ``homeserver -c ... -c ...`` runs it.
Used by tests that need a separate process: clean SIGTERM shutdown, SIGKILL recovery.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HOMESERVER = str(Path(sys.executable).with_name("homeserver"))
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
HIGH_LIMIT = {"per_second": 100000, "burst_count": 100000}
NO_RATE_LIMITS: dict[str, Any] = {
    "rc_message": HIGH_LIMIT,
    "rc_registration": HIGH_LIMIT,
    "rc_login": {"address": HIGH_LIMIT, "account": HIGH_LIMIT, "failed_attempts": HIGH_LIMIT},
    "rc_invites": {"per_room": HIGH_LIMIT, "per_user": HIGH_LIMIT, "per_issuer": HIGH_LIMIT},
    "rc_federation": {"sleep_limit": 100000, "reject_limit": 100000, "concurrent": 100000},
}


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

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)


def run_command(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def wait_until_up(server: ServerProcess) -> None:
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
        time.sleep(0.05)
    server.stop()
    raise AssertionError(
        f"homeserver did not answer /_matrix/client/versions within {START_TIMEOUT_S}s "
        f"(last error: {last_error}); stderr:\n{server.stderr()}"
    )


def generate_config(tmp_path: Path, port: int) -> Path:
    """``homeserver --generate-config`` as an admin runs it; the config file's path."""
    config_path = tmp_path / "homeserver.yaml"
    run_command(
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


def write_overrides(tmp_path: Path, overrides: dict[str, Any]) -> Path:
    path = tmp_path / "overrides.yaml"
    path.write_text(yaml.safe_dump(overrides), encoding="utf-8")
    return path


def start_process(tmp_path: Path, *config_paths: Path) -> subprocess.Popen[bytes]:
    """Start ``homeserver``; stdout and stderr are appended to files in ``tmp_path``."""
    args = [HOMESERVER]
    for path in config_paths:
        args += ["-c", str(path)]
    with open(tmp_path / "stdout.log", "ab") as out, open(tmp_path / "stderr.log", "ab") as err:
        return subprocess.Popen(
            args, cwd=tmp_path, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )


def start_server(tmp_path: Path, port: int, *config_paths: Path) -> ServerProcess:
    """Start ``homeserver`` with these configs and wait until it answers."""
    proc = start_process(tmp_path, *config_paths)
    server = ServerProcess(
        proc, f"http://127.0.0.1:{port}", f"localhost:{port}", tmp_path / "stderr.log"
    )
    wait_until_up(server)
    return server
