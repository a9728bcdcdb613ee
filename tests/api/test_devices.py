"""/devices, /devices/{deviceId} and /delete_devices."""

from __future__ import annotations

import pytest_twisted

from tests.api.helpers import PASSWORD, assert_error, uia_password
from tests.support.client import Client, q
from tests.support.server import RunningServer

DEVICES = "/_matrix/client/v3/devices"
WHOAMI = "/_matrix/client/v3/account/whoami"


def _device(device_id: str) -> str:
    return f"{DEVICES}/{q(device_id)}"


async def _login(
    server: RunningServer, device_id: str | None = None, name: str | None = None
) -> Client:
    c = server.client()
    extra = {}
    if device_id:
        extra["device_id"] = device_id
    if name:
        extra["initial_device_display_name"] = name
    resp = await c.login("alice", **extra)
    assert resp.code == 200, resp
    return c


@pytest_twisted.ensureDeferred
async def test_list_devices_shows_every_session(server: RunningServer, alice: Client) -> None:
    phone = await _login(server, "PHONE", "Phone")
    resp = await alice.get(DEVICES)
    assert resp.code == 200, resp
    by_id = {d["device_id"]: d for d in resp.json["devices"]}
    assert set(by_id) == {alice.device_id, phone.device_id}
    assert by_id["PHONE"]["display_name"] == "Phone"
    for device in by_id.values():
        assert set(device) >= {"device_id", "display_name", "last_seen_ip", "last_seen_ts"}


@pytest_twisted.ensureDeferred
async def test_devices_of_other_users_are_not_listed(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    devices = (await bob.get(DEVICES)).json["devices"]
    assert [d["device_id"] for d in devices] == [bob.device_id]
    assert_error(await bob.get(_device(alice.device_id)), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_get_device(server: RunningServer, alice: Client) -> None:
    await _login(server, "PHONE", "Phone")
    resp = await alice.get(_device("PHONE"))
    assert resp.code == 200, resp
    assert resp.json["device_id"] == "PHONE"
    assert resp.json["display_name"] == "Phone"


@pytest_twisted.ensureDeferred
async def test_get_unknown_device_is_404(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.get(_device("NOPE")), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_devices_require_token(server: RunningServer) -> None:
    c = server.client()
    assert_error(await c.get(DEVICES), 401, "M_MISSING_TOKEN")
    assert_error(await c.get(_device("X")), 401, "M_MISSING_TOKEN")
    assert_error(await c.put(_device("X"), {}), 401, "M_MISSING_TOKEN")
    assert_error(await c.delete(_device("X")), 401, "M_MISSING_TOKEN")
    assert_error(await c.post("/_matrix/client/v3/delete_devices", {}), 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_rename_device(server: RunningServer, alice: Client) -> None:
    resp = await alice.put(_device(alice.device_id), {"display_name": "My laptop"})
    assert resp.code == 200, resp
    assert resp.json == {}
    assert (await alice.get(_device(alice.device_id))).json["display_name"] == "My laptop"


@pytest_twisted.ensureDeferred
async def test_rename_with_empty_body_leaves_name(server: RunningServer, alice: Client) -> None:
    await alice.put(_device(alice.device_id), {"display_name": "Kept"})
    resp = await alice.put(_device(alice.device_id), {})
    assert resp.code == 200, resp
    # The spec: "If not given, the display name is unchanged."
    assert (await alice.get(_device(alice.device_id))).json["display_name"] == "Kept"
    # An explicit null clears it.
    assert (await alice.put(_device(alice.device_id), {"display_name": None})).code == 200
    assert (await alice.get(_device(alice.device_id))).json["display_name"] is None


@pytest_twisted.ensureDeferred
async def test_rename_unknown_device_is_404(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.put(_device("NOPE"), {"display_name": "x"}), 404, "M_NOT_FOUND")
    assert_error(await alice.put(_device("NOPE"), {}), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_rename_device_of_another_user_is_404(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    resp = await bob.put(_device(alice.device_id), {"display_name": "pwned"})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert (await alice.get(_device(alice.device_id))).json["display_name"] != "pwned"


@pytest_twisted.ensureDeferred
async def test_rename_with_bad_name_is_400(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.put(_device(alice.device_id), {"display_name": 5}), 400, "M_BAD_JSON")
    too_long = await alice.put(_device(alice.device_id), {"display_name": "x" * 101})
    assert too_long.code == 400, too_long
    assert_error(await alice.put(_device(alice.device_id), raw=b"[]"), 400, "M_BAD_JSON")


# Deletion ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_device_needs_uia(server: RunningServer, alice: Client) -> None:
    phone = await _login(server, "PHONE")
    resp = await alice.delete(_device("PHONE"))
    assert resp.code == 401, resp
    assert resp.json["flows"] == [{"stages": ["m.login.password"]}]
    assert (await phone.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_deleting_a_device_invalidates_its_token_immediately(
    server: RunningServer, alice: Client
) -> None:
    phone = await _login(server, "PHONE")
    assert (await phone.get(WHOAMI)).code == 200  # cached
    resp = await uia_password(alice, "DELETE", _device("PHONE"))
    assert resp.code == 200, resp
    assert resp.json == {}
    gone = await phone.get(WHOAMI)
    assert_error(gone, 401, "M_UNKNOWN_TOKEN")
    assert gone.json["soft_logout"] is False
    assert_error(await alice.get(_device("PHONE")), 404, "M_NOT_FOUND")
    assert (await alice.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_delete_device_wrong_password_keeps_device(
    server: RunningServer, alice: Client
) -> None:
    phone = await _login(server, "PHONE")
    resp = await uia_password(alice, "DELETE", _device("PHONE"), password="wrong")
    assert resp.code == 401 and resp.json["errcode"] == "M_FORBIDDEN", resp
    assert (await phone.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_delete_device_with_another_users_password_is_403(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    """SyTest: a stolen token plus the thief's own password is refused outright (403)."""
    phone = await _login(server, "PHONE")
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": bob.user_id},
        "password": PASSWORD,
    }
    assert_error(await alice.delete(_device("PHONE"), {"auth": auth}), 403, "M_FORBIDDEN")
    assert (await phone.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_delete_own_current_device_logs_it_out(server: RunningServer, alice: Client) -> None:
    resp = await uia_password(alice, "DELETE", _device(alice.device_id))
    assert resp.code == 200, resp
    assert_error(await alice.get(WHOAMI), 401, "M_UNKNOWN_TOKEN")


@pytest_twisted.ensureDeferred
async def test_delete_unknown_device_is_404(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.delete(_device("NOPE")), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_delete_device_of_another_user_is_404(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    resp = await bob.delete(_device(alice.device_id))
    assert_error(resp, 404, "M_NOT_FOUND")
    assert (await alice.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_delete_devices_removes_listed_devices_and_their_tokens(
    server: RunningServer, alice: Client
) -> None:
    phone = await _login(server, "PHONE")
    tablet = await _login(server, "TABLET")
    keep = await _login(server, "KEEP")
    for c in (phone, tablet, keep):
        assert (await c.get(WHOAMI)).code == 200
    resp = await uia_password(
        alice, "POST", "/_matrix/client/v3/delete_devices", {"devices": ["PHONE", "TABLET"]}
    )
    assert resp.code == 200, resp
    for c in (phone, tablet):
        assert_error(await c.get(WHOAMI), 401, "M_UNKNOWN_TOKEN")
    assert (await keep.get(WHOAMI)).code == 200
    remaining = {d["device_id"] for d in (await alice.get(DEVICES)).json["devices"]}
    assert remaining == {alice.device_id, "KEEP"}


@pytest_twisted.ensureDeferred
async def test_delete_devices_ignores_unknown_ids(server: RunningServer, alice: Client) -> None:
    resp = await uia_password(
        alice, "POST", "/_matrix/client/v3/delete_devices", {"devices": ["NOPE"]}
    )
    assert resp.code == 200, resp
    assert (await alice.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_delete_devices_cannot_touch_another_users_devices(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    resp = await uia_password(
        bob, "POST", "/_matrix/client/v3/delete_devices", {"devices": [alice.device_id]}
    )
    assert resp.code == 200, resp
    assert (await alice.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_delete_devices_validates_its_body(server: RunningServer, alice: Client) -> None:
    path = "/_matrix/client/v3/delete_devices"
    assert_error(await alice.post(path, {}), 400, "M_MISSING_PARAM")
    assert_error(await alice.post(path, {"devices": "PHONE"}), 400, "M_BAD_JSON")
    assert_error(await alice.post(path, {"devices": [1]}), 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_uia_session_for_one_device_cannot_delete_another(
    server: RunningServer, alice: Client
) -> None:
    phone = await _login(server, "PHONE")
    await _login(server, "TABLET")
    first = await alice.delete(_device("TABLET"))
    auth = {"type": "m.login.password", "password": PASSWORD, "session": first.json["session"]}
    resp = await alice.delete(_device("PHONE"), {"auth": auth})
    assert_error(resp, 403, "M_FORBIDDEN")
    assert (await phone.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_put_creates_the_current_device_when_missing(
    server: RunningServer, alice: Client
) -> None:
    from homeserver.handlers.auth import hash_token

    # A token bound to a device id that has no device row yet.
    await server.hs.storage.users.add_access_token(
        alice.user_id, "GHOST", hash_token("mat_ghost_device")
    )
    resp = await alice.put(_device("GHOST"), {"display_name": "Ghost"}, token="mat_ghost_device")
    assert resp.code == 200, resp
    assert (await alice.get(_device("GHOST"))).json["display_name"] == "Ghost"


@pytest_twisted.ensureDeferred
async def test_last_seen_is_recorded(server: RunningServer, alice: Client) -> None:
    await alice.get("/_matrix/client/v3/account/whoami", headers={"User-Agent": "test-agent/1"})
    await server.hs.auth.client_ips.flush()  # type: ignore[union-attr]
    resp = await alice.get(f"/_matrix/client/v3/devices/{q(alice.device_id)}")
    assert resp.code == 200, resp
    assert resp.json["last_seen_ip"] == "127.0.0.1"
    assert isinstance(resp.json["last_seen_ts"], int) and resp.json["last_seen_ts"] > 0
    stored = await server.hs.storage.users.get_device(alice.user_id, alice.device_id)
    assert stored is not None and stored.last_seen_user_agent == "test-agent/1"
