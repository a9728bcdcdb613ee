"""Synapse (from PyPI) as a federation peer, in its own virtualenv, on loopback.

The virtualenv lives in ``.interop/synapse-venv`` inside the checkout (git-ignored)
and is created on first use; ``SYNAPSE_PYTHON`` may point at an existing one.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.federation import free_port, write_self_signed_cert
from tests.support.samples import REPO_ROOT

SYNAPSE_VERSION = "1.163.2"
# The same as ours (setup.cfg), for a Synapse on PostgreSQL.
PSYCOPG2_VERSION = "2.9.13"
VENV = REPO_ROOT / ".interop" / "synapse-venv"


def synapse_python() -> str:
    override = os.environ.get("SYNAPSE_PYTHON")
    if override:
        return override
    python = VENV / "bin" / "python"
    marker = VENV / f".installed-{SYNAPSE_VERSION}"
    if marker.exists():
        return str(python)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    # Two peers may start at once (threads or processes): one builds, the other waits.
    # flock holds per open file, so each caller opens its own.
    with open(VENV.parent / "synapse-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", f"matrix-synapse=={SYNAPSE_VERSION}"],
                check=True,
            )
            marker.touch()
    return str(python)


def synapse_python_with_postgres() -> str:
    """The Synapse venv's python, with psycopg2 (Synapse's PostgreSQL driver) added."""
    python = synapse_python()
    marker = VENV / f".installed-psycopg2-{PSYCOPG2_VERSION}"
    if marker.exists():
        return python
    with open(VENV.parent / "synapse-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run(
                [python, "-m", "pip", "install", "-q", f"psycopg2-binary=={PSYCOPG2_VERSION}"],
                check=True,
            )
            marker.touch()
    return python


class SynapsePeer:
    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.fed_port = free_port()
        self.server_name = f"127.0.0.1:{self.fed_port}"
        self.base_url = f"http://127.0.0.1:{self.client_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = os.path.join(data_dir, "homeserver.yaml")
        self.log_path = os.path.join(data_dir, "synapse.log")

    def write_config(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        cert, key = write_self_signed_cert(self.data_dir)
        python = synapse_python()
        subprocess.run(
            [
                python,
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                self.server_name,
                "--config-path",
                self.config_path,
                "--data-directory",
                self.data_dir,
                "--generate-config",
                "--report-stats=no",
            ],
            check=True,
            capture_output=True,
        )
        with open(self.config_path, encoding="utf-8") as f:
            config: dict[str, Any] = yaml.safe_load(f)
        high = {"per_second": 1000, "burst_count": 1000}
        config.update(
            {
                "listeners": [
                    {
                        "port": self.client_port,
                        "bind_addresses": ["127.0.0.1"],
                        "type": "http",
                        "tls": False,
                        "x_forwarded": False,
                        "resources": [{"names": ["client"], "compress": False}],
                    },
                    {
                        "port": self.fed_port,
                        "bind_addresses": ["127.0.0.1"],
                        "type": "http",
                        "tls": True,
                        "resources": [{"names": ["federation", "keys"], "compress": False}],
                    },
                ],
                "tls_certificate_path": cert,
                "tls_private_key_path": key,
                "database": {
                    "name": "sqlite3",
                    "args": {"database": os.path.join(self.data_dir, "homeserver.db")},
                },
                "federation_verify_certificates": False,
                "trusted_key_servers": [],
                "suppress_key_server_warning": True,
                "ip_range_blacklist": [],
                "ip_range_whitelist": ["127.0.0.0/8"],
                "enable_registration": True,
                "enable_registration_without_verification": True,
                "room_list_publication_rules": [{"action": "allow"}],
                "allow_public_rooms_over_federation": True,
                "rc_message": high,
                "rc_registration": high,
                "rc_login": {"address": high, "account": high, "failed_attempts": high},
                "rc_joins": {"local": high, "remote": high},
                "rc_joins_per_room": high,
                "rc_federation": {
                    "window_size": 1000,
                    "sleep_limit": 1000,
                    "sleep_delay": 1,
                    "reject_limit": 1000,
                    "concurrent": 100,
                },
                "rc_invites": {"per_room": high, "per_user": high, "per_issuer": high},
                "federation": {
                    "destination_min_retry_interval": "1s",
                    "destination_retry_multiplier": 1.5,
                    "destination_max_retry_interval": "5s",
                },
                "presence": {"enabled": False},
                "log_config": None,
            }
        )
        config.pop("log_config", None)
        with open(self.config_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)

    def start(self, timeout: float = 60.0) -> None:
        if not os.path.exists(self.config_path):
            self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [synapse_python(), "-m", "synapse.app.homeserver", "-c", self.config_path],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Synapse exited early:\n{self.tail_log()}")
            try:
                urllib.request.urlopen(f"{self.base_url}/_matrix/client/versions", timeout=1)
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError(f"Synapse did not start in time:\n{self.tail_log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def tail_log(self, lines: int = 60) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
