"""GET /_matrix/key/v2/server: the server's self-signed signing key."""

from __future__ import annotations

import pytest
import pytest_twisted

from crypto.errors import SignatureError
from crypto.json_signing import verify_json_signature
from crypto.signing_key import decode_verify_key, read_signing_keys, verify_key_base64
from tests.support.server import RunningServer


def _check_server_key_response(server: RunningServer, body: dict) -> None:
    assert body["server_name"] == "test.local"
    assert body["old_verify_keys"] == {}
    (key_id, key), *rest = body["verify_keys"].items()
    assert not rest
    assert key_id.startswith("ed25519:")
    verify_key = decode_verify_key(key_id, key["key"])
    verify_json_signature(body, "test.local", verify_key)
    # It is the key in the configured key file.
    (signing_key,) = read_signing_keys(server.hs.config.signing_key_path)
    assert key_id == f"ed25519:{signing_key.version}"
    assert key["key"] == verify_key_base64(signing_key)
    now_ms = server.hs.reactor.seconds() * 1000
    assert body["valid_until_ts"] > now_ms + 3600 * 1000
    # Tampering breaks the signature.
    tampered = dict(body, valid_until_ts=body["valid_until_ts"] + 1)
    with pytest.raises(SignatureError):
        verify_json_signature(tampered, "test.local", verify_key)


@pytest_twisted.ensureDeferred
async def test_server_key_is_self_signed_and_valid_in_the_future(server: RunningServer) -> None:
    resp = await server.client().get("/_matrix/key/v2/server")
    assert resp.code == 200, resp
    _check_server_key_response(server, resp.json)


@pytest_twisted.ensureDeferred
async def test_legacy_server_key_path_with_key_id_serves_the_same_key(
    server: RunningServer,
) -> None:
    resp = await server.client().get("/_matrix/key/v2/server/ed25519%3Aanything")
    assert resp.code == 200, resp
    _check_server_key_response(server, resp.json)


@pytest.mark.parametrize("config_overrides", [{"key_refresh_interval": "2h"}], ids=["2h"])
@pytest_twisted.ensureDeferred
async def test_valid_until_follows_key_refresh_interval(server: RunningServer) -> None:
    before = server.hs.reactor.seconds() * 1000
    resp = await server.client().get("/_matrix/key/v2/server")
    after = server.hs.reactor.seconds() * 1000
    valid_until = resp.json["valid_until_ts"]
    assert before + 2 * 3600_000 - 1 <= valid_until <= after + 2 * 3600_000 + 1


@pytest_twisted.ensureDeferred
async def test_signing_key_survives_restart(server: RunningServer, tmp_path) -> None:
    from tests.support.server import start_server

    first = (await server.client().get("/_matrix/key/v2/server")).json["verify_keys"]
    await server.stop()
    config = dict(server.hs.config.values)
    # A second server over the same key file serves the same key.
    raw = {
        "server_name": "test.local",
        "listeners": [
            {"port": 0, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["keys"]}]}
        ],
        "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "other.db")}},
        "signing_key_path": config["signing_key_path"],
    }
    again = await start_server(raw, str(tmp_path))
    try:
        second = (await again.client().get("/_matrix/key/v2/server")).json["verify_keys"]
    finally:
        await again.stop()
    assert first == second
