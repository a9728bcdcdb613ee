"""The ``homeserver`` command line, run as a real subprocess with the venv's Python."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from crypto.signing_key import read_signing_keys
from homeserver.config import load_config_files

REPO = Path(__file__).resolve().parents[2]
# Synapse's key file: "ed25519 <version> <unpadded base64 of the 32-byte seed>".
SYNAPSE_KEY_LINE = re.compile(r"^ed25519 [A-Za-z0-9_]+ [A-Za-z0-9+/]{43}\n$")


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "homeserver.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        env=env,
    )


def _generate(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli(
        "--generate-config", "-H", "my.example.org", "-c", str(config), "--report-stats=no", *extra
    )


def test_generate_config_writes_config_key_and_log_config(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "homeserver.yaml"
    result = _generate(config)
    assert result.returncode == 0, result.stderr
    assert "my.example.org" in result.stdout
    raw = yaml.safe_load(config.read_text())
    assert raw["server_name"] == "my.example.org"
    assert raw["report_stats"] is False
    assert isinstance(raw["registration_shared_secret"], str)
    assert len(raw["registration_shared_secret"]) >= 32
    assert raw["macaroon_secret_key"] != raw["registration_shared_secret"]
    # Secrets inside: only the owner may read the file.
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    key_path = tmp_path / "conf" / "my.example.org.signing.key"
    assert raw["signing_key_path"] == str(key_path)
    key_text = key_path.read_text()
    assert SYNAPSE_KEY_LINE.match(key_text), key_text
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    (key,) = read_signing_keys(key_path)
    assert key_text.split()[1] == key.version
    assert (tmp_path / "conf" / "log.config").exists()

    loaded = load_config_files([str(config)])
    assert loaded.server_name == "my.example.org"
    assert loaded.signing_key_path == str(key_path)


def test_generate_config_never_overwrites_existing_files(tmp_path: Path) -> None:
    config = tmp_path / "homeserver.yaml"
    assert _generate(config).returncode == 0
    key_path = tmp_path / "my.example.org.signing.key"
    log_config = tmp_path / "log.config"
    edited = config.read_text() + "\n# hand edit\n"
    config.write_text(edited)
    key_before = key_path.read_text()
    log_config.write_text(log_config.read_text() + "# mine\n")
    log_before = log_config.read_text()

    result = _generate(config)
    assert result.returncode == 0, result.stderr
    assert "already exists" in result.stdout
    assert config.read_text() == edited
    assert key_path.read_text() == key_before
    assert log_config.read_text() == log_before


def test_generate_config_creates_a_missing_key_for_an_existing_config(tmp_path: Path) -> None:
    config = tmp_path / "homeserver.yaml"
    assert _generate(config).returncode == 0
    key_path = tmp_path / "my.example.org.signing.key"
    key_path.unlink()
    assert _generate(config).returncode == 0
    assert SYNAPSE_KEY_LINE.match(key_path.read_text())


def test_generate_config_with_data_directory_and_options(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "homeserver.yaml"
    data = tmp_path / "var"
    result = _generate(
        config, "--data-directory", str(data), "--enable-registration", "--listen-port", "8118"
    )
    assert result.returncode == 0, result.stderr
    loaded = load_config_files([str(config)])
    assert loaded.signing_key_path == str(data / "my.example.org.signing.key")
    assert loaded.database["args"]["database"] == str(data / "homeserver.db")
    assert loaded.enable_registration is True
    assert [listener.port for listener in loaded.listeners] == [8118]
    assert (data / "my.example.org.signing.key").exists()
    assert (data / "log.config").exists()


def test_generate_config_needs_server_name(tmp_path: Path) -> None:
    result = _cli("--generate-config", "-c", str(tmp_path / "hs.yaml"))
    assert result.returncode == 1
    assert "--server-name" in result.stderr
    assert not (tmp_path / "hs.yaml").exists()


def test_bad_config_prints_clear_error_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "homeserver.yaml"
    config.write_text(
        yaml.safe_dump({"server_name": "example.com", "listeners": [{"port": "eighty"}]})
    )
    result = _cli("-c", str(config))
    assert result.returncode == 1
    assert "Error in configuration" in result.stderr
    assert "listeners[0].port" in result.stderr
    assert "Traceback" not in result.stderr


def test_override_file_with_bad_value_is_reported(tmp_path: Path) -> None:
    base = tmp_path / "homeserver.yaml"
    base.write_text("server_name: example.com\n")
    override = tmp_path / "override.yaml"
    override.write_text("enable_registration: maybe\n")
    result = _cli("-c", str(base), "-c", str(override))
    assert result.returncode == 1
    assert "enable_registration" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_or_unparseable_config_exits_1(tmp_path: Path) -> None:
    missing = _cli("-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("server_name: [oops\n")
    result = _cli("-c", str(broken))
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_config_given_exits_1(tmp_path: Path) -> None:
    result = _cli()
    assert result.returncode == 1
    assert "-c" in result.stderr


def test_generate_keys_writes_a_missing_key_only(tmp_path: Path) -> None:
    config = tmp_path / "homeserver.yaml"
    config.write_text("server_name: example.com\n")
    key_path = tmp_path / "example.com.signing.key"
    assert _cli("-c", str(config), "--generate-keys").returncode == 0
    key_text = key_path.read_text()
    assert SYNAPSE_KEY_LINE.match(key_text)
    assert _cli("-c", str(config), "--generate-keys").returncode == 0
    assert key_path.read_text() == key_text


def test_start_up_failure_exits_1_with_a_message(tmp_path: Path) -> None:
    # A valid config whose signing key file is corrupt: start-up fails, the process ends.
    key_path = tmp_path / "example.com.signing.key"
    key_path.write_text("ed25519 a_bad not-base64!\n")
    config = tmp_path / "homeserver.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server_name": "example.com",
                "listeners": [{"port": 0, "bind_addresses": ["127.0.0.1"]}],
                "signing_key_path": str(key_path),
            }
        )
    )
    result = _cli("-c", str(config), timeout=60)
    assert result.returncode == 1
    assert "Start-up failed" in result.stderr
    assert "signing key" in result.stderr
