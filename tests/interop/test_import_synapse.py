"""``homeserver import-synapse``: accounts made on a real Synapse keep working here."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import pytest_twisted
import yaml
from PIL import Image

from crypto.json_signing import sign_json
from crypto.signing_key import (
    generate_signing_key,
    key_id,
    read_signing_keys,
    verify_key_base64,
)
from tests.support.client import q
from tests.support.databases import PG_ARGS, _admin_connection, require_postgres
from tests.support.federation import federation_config, federation_request
from tests.support.samples import REPO_ROOT
from tests.support.server import RunningServer, start_server
from tests.support.synapse import SynapsePeer, synapse_python_with_postgres

PASSWORD = "an old synapse password"


def _call(base_url: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    req = urllib.request.Request(
        base_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def run_import(synapse_config: str, our_config: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from homeserver.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, "import-synapse", "--synapse-config", synapse_config]
        + ["-c", our_config],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=str(REPO_ROOT),
    )


def cross_signing_key() -> tuple[Any, str]:
    """An ed25519 key whose key id is its public key, as cross-signing keys are."""
    key = generate_signing_key("x")
    public = verify_key_base64(key)
    key.version = public
    return key, public


def write_our_config(peer: SynapsePeer, data_dir: str, database: dict[str, Any]) -> str:
    os.makedirs(data_dir, exist_ok=True)
    port = int(peer.server_name.rsplit(":", 1)[1])
    config = federation_config(data_dir, database, port)
    path = os.path.join(data_dir, "homeserver.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return path


class Populated:
    def __init__(self, peer: SynapsePeer, synapse_config: dict[str, Any]) -> None:
        self.peer = peer
        self.synapse_config = synapse_config
        self.user_id = ""
        self.token = ""
        self.device_id = ""
        self.room_id = "!someroom:" + peer.server_name
        self.second_token = ""
        self.image = b""
        self.device_keys: dict[str, Any] = {}
        self.master_public = ""
        self.room_key: dict[str, Any] = {}
        self.ssk_public = ""
        self.mxc = ""
        self.second_device = ""
        self.import_while_running: subprocess.CompletedProcess[str] | None = None


@contextmanager
def synapse_postgres() -> Iterator[dict[str, Any]]:
    """A database as Synapse wants it (C collation); dropped afterwards."""
    require_postgres()
    name = f"synapse_import_{uuid.uuid4().hex[:12]}"
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
                " TEMPLATE template0"
            )
        yield {"name": "psycopg2", "args": {"database": name, **PG_ARGS}}
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


@pytest.fixture(scope="module", params=["synapse_sqlite", "synapse_postgres"])
def populated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Populated]:
    """A Synapse (on SQLite or PostgreSQL) with accounts made over its client API,
    then stopped."""
    with ExitStack() as stack:
        peer = SynapsePeer(str(tmp_path_factory.mktemp("synapse")))
        peer.write_config()
        if request.param == "synapse_postgres":
            synapse_python_with_postgres()
            with open(peer.config_path, encoding="utf-8") as f:
                config = yaml.safe_load(f)
            config["database"] = stack.enter_context(synapse_postgres())
            with open(peer.config_path, "w", encoding="utf-8") as f:
                yaml.safe_dump(config, f)
        yield from _populate(peer, tmp_path_factory)


def _populate(peer: SynapsePeer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    peer.start()
    try:
        with open(peer.config_path, encoding="utf-8") as f:
            data = Populated(peer, yaml.safe_load(f))
        url = peer.base_url
        reg = _call(
            url,
            "POST",
            "/_matrix/client/v3/register",
            {
                "username": "alice",
                "password": PASSWORD,
                "auth": {"type": "m.login.dummy"},
                "initial_device_display_name": "Alice's laptop",
            },
        )
        data.user_id, data.token, data.device_id = (
            reg["user_id"],
            reg["access_token"],
            reg["device_id"],
        )
        tok = data.token
        uid = q(data.user_id)
        _call(
            url, "PUT", f"/_matrix/client/v3/profile/{uid}/displayname", {"displayname": "Al"}, tok
        )
        _call(
            url,
            "PUT",
            f"/_matrix/client/v3/user/{uid}/account_data/org.example.settings",
            {"theme": "dark"},
            tok,
        )
        _call(
            url,
            "PUT",
            f"/_matrix/client/v3/user/{uid}/rooms/{q(data.room_id)}/account_data/m.tag.x",
            {"k": 1},
            tok,
        )
        _call(
            url,
            "PUT",
            "/_matrix/client/v3/pushrules/global/content/cake",
            {"pattern": "cake", "actions": ["notify"]},
            tok,
        )
        _call(
            url,
            "PUT",
            "/_matrix/client/v3/pushrules/global/override/.m.rule.suppress_notices/enabled",
            {"enabled": False},
            tok,
        )
        _call(
            url,
            "POST",
            "/_matrix/client/v3/pushers/set",
            {
                "kind": "http",
                "app_id": "org.example.app",
                "pushkey": "pk1",
                "app_display_name": "Example",
                "device_display_name": "Laptop",
                "lang": "en",
                "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify"},
            },
            tok,
        )
        # E2EE keys of alice's first device (Synapse does not check their signatures).
        dev = data.device_id
        data.device_keys = {
            "user_id": data.user_id,
            "device_id": dev,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{dev}": "Y3VydmUyNTUxOWtleQ", f"ed25519:{dev}": "ZWQyNTUxOWtleQ"},
            "signatures": {data.user_id: {f"ed25519:{dev}": "c2lnbmF0dXJl"}},
        }
        otk = {"key": "b3RrMQ", "signatures": {data.user_id: {f"ed25519:{dev}": "c2ln"}}}
        _call(
            url,
            "POST",
            "/_matrix/client/v3/keys/upload",
            {"device_keys": data.device_keys, "one_time_keys": {"signed_curve25519:AAAAAQ": otk}},
            tok,
        )
        # Cross-signing keys, and the device signed by the self-signing key.
        master, data.master_public = cross_signing_key()
        ssk, data.ssk_public = cross_signing_key()
        uid_raw = data.user_id
        master_json = {
            "user_id": uid_raw,
            "usage": ["master"],
            "keys": {f"ed25519:{data.master_public}": data.master_public},
        }
        ssk_json = sign_json(
            {
                "user_id": uid_raw,
                "usage": ["self_signing"],
                "keys": {f"ed25519:{data.ssk_public}": data.ssk_public},
            },
            uid_raw,
            master,
        )
        _call(
            url,
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            {
                "master_key": master_json,
                "self_signing_key": ssk_json,
                "auth": {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "alice"},
                    "password": PASSWORD,
                },
            },
            tok,
        )
        signed_device = sign_json(data.device_keys, uid_raw, ssk)
        result = _call(
            url,
            "POST",
            "/_matrix/client/v3/keys/signatures/upload",
            {uid_raw: {dev: signed_device}},
            tok,
        )
        assert not result.get("failures"), result
        # A key backup with one room key.
        backup = _call(
            url,
            "POST",
            "/_matrix/client/v3/room_keys/version",
            {
                "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                "auth_data": {"public_key": "cGs"},
            },
            tok,
        )
        data.room_key = {
            "first_message_index": 1,
            "forwarded_count": 0,
            "is_verified": True,
            "session_data": {"ephemeral": "ZQ", "ciphertext": "Yw", "mac": "bQ"},
        }
        _call(
            url,
            "PUT",
            f"/_matrix/client/v3/room_keys/keys/{q(data.room_id)}/sess1?version={backup['version']}",
            data.room_key,
            tok,
        )
        # An image, with the thumbnails Synapse makes on upload.
        image = io.BytesIO()
        Image.new("RGB", (300, 200), (200, 30, 30)).save(image, "PNG")
        data.image = image.getvalue()
        req = urllib.request.Request(
            url + "/_matrix/media/v3/upload?filename=red.png",
            data=data.image,
            method="POST",
            headers={"Content-Type": "image/png", "Authorization": f"Bearer {tok}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            data.mxc = json.loads(resp.read())["content_uri"]
        # A second session of alice's, and bob, who deactivates his account.
        login = _call(
            url,
            "POST",
            "/_matrix/client/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": PASSWORD,
                "initial_device_display_name": "Alice's phone",
            },
        )
        data.second_token, data.second_device = login["access_token"], login["device_id"]
        bob = _call(
            url,
            "POST",
            "/_matrix/client/v3/register",
            {"username": "bob", "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
        )
        _call(
            url,
            "POST",
            "/_matrix/client/v3/account/deactivate",
            {
                "auth": {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "bob"},
                    "password": PASSWORD,
                }
            },
            bob["access_token"],
        )
        # Synapse is running: the import must refuse.
        ours = write_our_config(
            peer,
            str(tmp_path_factory.mktemp("ours-running")),
            {"name": "sqlite3", "args": {"database": "/nonexistent/never-used.db"}},
        )
        data.import_while_running = run_import(peer.config_path, ours)
    finally:
        peer.stop()
    yield data


def test_refuses_while_synapse_runs(populated: Populated) -> None:
    result = populated.import_while_running
    assert result is not None
    assert result.returncode == 1, result
    assert "still running" in result.stderr


@pytest_twisted.ensureDeferred
async def test_import_keeps_accounts_working(
    populated: Populated, database: dict[str, Any], tmp_path: Any
) -> None:
    data_dir = str(tmp_path / "ours")
    our_config = write_our_config(populated.peer, data_dir, database)
    result = run_import(populated.peer.config_path, our_config)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    # The verification table: users (alice, bob), then alice's two devices.
    assert re.search(r"users\s+2\s+2", result.stdout), result.stdout
    assert re.search(r"devices\s+2\s+2", result.stdout), result.stdout
    thumbnails = re.search(r"local_media_thumbnails\s+(\d+)\s+(\d+)", result.stdout)
    assert thumbnails and thumbnails[1] == thumbnails[2] != "0", result.stdout

    with open(our_config, encoding="utf-8") as f:
        config_dict = yaml.safe_load(f)
    server: RunningServer = await start_server(config_dict, data_dir)
    try:
        client = server.client()
        # The Synapse access token still works.
        resp = await client.get("/_matrix/client/v3/account/whoami", token=populated.token)
        assert resp.code == 200, resp
        assert resp.json["user_id"] == populated.user_id
        assert resp.json["device_id"] == populated.device_id
        # Devices with their display names.
        client.access_token = populated.token
        resp = await client.get("/_matrix/client/v3/devices")
        assert resp.code == 200, resp
        names = {d["device_id"]: d.get("display_name") for d in resp.json["devices"]}
        assert names == {
            populated.device_id: "Alice's laptop",
            populated.second_device: "Alice's phone",
        }
        resp = await client.get("/_matrix/client/v3/account/whoami", token=populated.second_token)
        assert resp.json.get("device_id") == populated.second_device, resp
        # Profile, account data, push rules, pushers.
        resp = await client.get(f"/_matrix/client/v3/profile/{q(populated.user_id)}")
        assert resp.json.get("displayname") == "Al"
        uid = q(populated.user_id)
        resp = await client.get(f"/_matrix/client/v3/user/{uid}/account_data/org.example.settings")
        assert resp.code == 200 and resp.json == {"theme": "dark"}, resp
        room = q(populated.room_id)
        resp = await client.get(f"/_matrix/client/v3/user/{uid}/rooms/{room}/account_data/m.tag.x")
        assert resp.code == 200 and resp.json == {"k": 1}, resp
        resp = await client.get("/_matrix/client/v3/pushrules/global/content/cake")
        assert resp.code == 200, resp
        assert resp.json["pattern"] == "cake" and resp.json["actions"] == ["notify"]
        resp = await client.get(
            "/_matrix/client/v3/pushrules/global/override/.m.rule.suppress_notices/enabled"
        )
        assert resp.code == 200 and resp.json == {"enabled": False}, resp
        resp = await client.get("/_matrix/client/v3/pushers")
        assert [p["pushkey"] for p in resp.json["pushers"]] == ["pk1"], resp
        # E2EE device keys and the unclaimed one-time key.
        resp = await client.post(
            "/_matrix/client/v3/keys/query", {"device_keys": {populated.user_id: []}}
        )
        assert resp.code == 200, resp
        got = resp.json["device_keys"][populated.user_id][populated.device_id]
        assert got["keys"] == populated.device_keys["keys"]
        assert resp.json["master_keys"][populated.user_id]["keys"] == {
            f"ed25519:{populated.master_public}": populated.master_public
        }
        assert populated.user_id in resp.json["self_signing_keys"]
        assert f"ed25519:{populated.ssk_public}" in got["signatures"][populated.user_id]
        resp = await client.post(
            "/_matrix/client/v3/keys/claim",
            {"one_time_keys": {populated.user_id: {populated.device_id: "signed_curve25519"}}},
        )
        assert resp.code == 200, resp
        claimed = resp.json["one_time_keys"][populated.user_id][populated.device_id]
        assert list(claimed) == ["signed_curve25519:AAAAAQ"], resp
        # The key backup and its key.
        resp = await client.get("/_matrix/client/v3/room_keys/version")
        assert resp.code == 200, resp
        assert resp.json["auth_data"] == {"public_key": "cGs"} and resp.json["count"] == 1
        version = resp.json["version"]
        resp = await client.get(
            f"/_matrix/client/v3/room_keys/keys/{room}/sess1", params={"version": version}
        )
        assert resp.code == 200 and resp.json == populated.room_key, resp
        # The media, and a thumbnail of it.
        media = populated.mxc.removeprefix("mxc://")
        resp = await client.get(f"/_matrix/client/v1/media/download/{media}")
        assert resp.code == 200, resp
        assert resp.raw == populated.image
        resp = await client.get(
            f"/_matrix/client/v1/media/thumbnail/{media}",
            params={"width": "32", "height": "32", "method": "crop"},
        )
        assert resp.code == 200, resp
        assert Image.open(io.BytesIO(resp.raw)).size == (32, 32)
        # The old password logs in (twice: the second time against our re-hash).
        for _ in range(2):
            fresh = server.client()
            resp = await fresh.login("alice", PASSWORD)
            assert resp.code == 200, resp
        resp = await server.client().login("alice", "wrong password")
        assert resp.code == 403, resp
        # bob was deactivated on Synapse: he stays so.
        resp = await server.client().login("bob", PASSWORD)
        assert resp.code == 403, resp
        # The signing key is Synapse's.
        synapse_key = read_signing_keys(populated.synapse_config["signing_key_path"])[0]
        code, body = await federation_request(server, "GET", "/_matrix/key/v2/server")
        assert code == 200, body
        assert key_id(synapse_key) in body["verify_keys"]
    finally:
        await server.stop()

    # A second import into the now non-empty database is refused.
    again = run_import(populated.peer.config_path, our_config)
    assert again.returncode == 1
    assert "already holds a finished import" in again.stderr


def test_running_synapse_detection(tmp_path: Any) -> None:
    from synapse_compat.import_synapse import _is_synapse_command, synapse_running

    assert _is_synapse_command(["/usr/bin/python3", "-m", "synapse.app.homeserver", "-c", "a"])
    assert _is_synapse_command(["/venv/bin/synapse_homeserver", "--config-path=a"])
    assert not _is_synapse_command(["homeserver", "import-synapse", "--synapse-config", "a"])
    assert not _is_synapse_command(["sh", "-c", "homeserver import-synapse --synapse-config a"])
    config_path = str(tmp_path / "homeserver.yaml")
    pid_file = tmp_path / "homeserver.pid"
    config: dict[str, Any] = {"pid_file": str(pid_file), "listeners": []}
    assert synapse_running(config, config_path) is None  # no pid file
    pid_file.write_text(f"{os.getpid()}\n")
    reason = synapse_running(config, config_path)
    assert reason is not None and str(os.getpid()) in reason
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n")
    assert synapse_running(config, config_path) is None
