"""/profile/{userId} and /profile/{userId}/{keyName}."""

from __future__ import annotations

import pytest_twisted

from tests.api.helpers import assert_error
from tests.support.client import Client, q
from tests.support.server import RunningServer

ALICE = "@alice:test.local"


def _profile(user_id: str, key: str | None = None) -> str:
    path = f"/_matrix/client/v3/profile/{q(user_id)}"
    return f"{path}/{q(key)}" if key else path


@pytest_twisted.ensureDeferred
async def test_profile_is_public_and_starts_with_localpart_displayname(
    server: RunningServer, alice: Client
) -> None:
    resp = await server.client().get(_profile(ALICE))
    assert resp.code == 200, resp
    assert resp.json == {"displayname": "alice"}
    field = await server.client().get(_profile(ALICE, "displayname"))
    assert field.json == {"displayname": "alice"}


@pytest_twisted.ensureDeferred
async def test_set_and_get_displayname(server: RunningServer, alice: Client) -> None:
    resp = await alice.put(_profile(ALICE, "displayname"), {"displayname": "Alice W."})
    assert resp.code == 200, resp
    assert resp.json == {}
    assert (await alice.get(_profile(ALICE, "displayname"))).json == {"displayname": "Alice W."}
    assert (await alice.get(_profile(ALICE))).json["displayname"] == "Alice W."


@pytest_twisted.ensureDeferred
async def test_set_get_and_delete_avatar_url(server: RunningServer, alice: Client) -> None:
    url = "mxc://test.local/abcdef"
    assert (await alice.put(_profile(ALICE, "avatar_url"), {"avatar_url": url})).code == 200
    assert (await alice.get(_profile(ALICE, "avatar_url"))).json == {"avatar_url": url}
    assert (await alice.delete(_profile(ALICE, "avatar_url"))).code == 200
    assert_error(await alice.get(_profile(ALICE, "avatar_url")), 404, "M_NOT_FOUND")
    assert "avatar_url" not in (await alice.get(_profile(ALICE))).json


@pytest_twisted.ensureDeferred
async def test_custom_m_tz_field_set_get_delete(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.get(_profile(ALICE, "m.tz")), 404, "M_NOT_FOUND")
    resp = await alice.put(_profile(ALICE, "m.tz"), {"m.tz": "Europe/Paris"})
    assert resp.code == 200, resp
    assert (await alice.get(_profile(ALICE, "m.tz"))).json == {"m.tz": "Europe/Paris"}
    full = (await server.client().get(_profile(ALICE))).json
    assert full == {"displayname": "alice", "m.tz": "Europe/Paris"}
    assert (await alice.delete(_profile(ALICE, "m.tz"))).code == 200
    assert_error(await alice.get(_profile(ALICE, "m.tz")), 404, "M_NOT_FOUND")
    assert (await alice.get(_profile(ALICE))).json == {"displayname": "alice"}


@pytest_twisted.ensureDeferred
async def test_custom_namespaced_field_keeps_any_json_value(
    server: RunningServer, alice: Client
) -> None:
    value = {"nested": [1, 2, {"x": True}], "n": 1.5}
    key = "com.example.thing"
    assert (await alice.put(_profile(ALICE, key), {key: value})).code == 200
    assert (await alice.get(_profile(ALICE, key))).json == {key: value}


@pytest_twisted.ensureDeferred
async def test_m_tz_must_be_a_string(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.put(_profile(ALICE, "m.tz"), {"m.tz": 5}), 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_delete_displayname_removes_it(server: RunningServer, alice: Client) -> None:
    assert (await alice.delete(_profile(ALICE, "displayname"))).code == 200
    assert_error(await alice.get(_profile(ALICE, "displayname")), 404, "M_NOT_FOUND")
    assert (await alice.get(_profile(ALICE))).json == {}


@pytest_twisted.ensureDeferred
async def test_empty_displayname_clears_it(server: RunningServer, alice: Client) -> None:
    assert (await alice.put(_profile(ALICE, "displayname"), {"displayname": ""})).code == 200
    assert_error(await alice.get(_profile(ALICE, "displayname")), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_cannot_set_another_users_profile(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    resp = await bob.put(_profile(ALICE, "displayname"), {"displayname": "pwned"})
    assert_error(resp, 403, "M_FORBIDDEN")
    assert_error(await bob.delete(_profile(ALICE, "displayname")), 403, "M_FORBIDDEN")
    assert_error(await bob.put(_profile(ALICE, "m.tz"), {"m.tz": "UTC"}), 403, "M_FORBIDDEN")
    assert (await alice.get(_profile(ALICE))).json == {"displayname": "alice"}


@pytest_twisted.ensureDeferred
async def test_setting_profile_requires_token(server: RunningServer, alice: Client) -> None:
    c = server.client()
    assert_error(
        await c.put(_profile(ALICE, "displayname"), {"displayname": "x"}), 401, "M_MISSING_TOKEN"
    )
    assert_error(await c.delete(_profile(ALICE, "displayname")), 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_unknown_user_profile_is_404(server: RunningServer, alice: Client) -> None:
    user_id = "@nobody:test.local"
    assert_error(await alice.get(_profile(user_id)), 404, "M_NOT_FOUND")
    assert_error(await alice.get(_profile(user_id, "displayname")), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_profile_of_unreachable_server_is_502(server: RunningServer, alice: Client) -> None:
    user_id = "@alice:elsewhere.invalid"
    assert_error(await alice.get(_profile(user_id)), 502, "M_UNKNOWN")
    assert_error(await alice.get(_profile(user_id, "displayname")), 502, "M_UNKNOWN")
    assert_error(await alice.get(_profile("not-a-user-id")), 400, "M_INVALID_PARAM")
    # A key over 255 bytes is refused before anyone is asked.
    assert_error(await alice.get(_profile(user_id, "k" * 256)), 400, "M_KEY_TOO_LARGE")
    assert_error(await alice.get(_profile(ALICE, "k" * 256)), 400, "M_KEY_TOO_LARGE")


@pytest_twisted.ensureDeferred
async def test_displayname_too_long_is_400(server: RunningServer, alice: Client) -> None:
    resp = await alice.put(_profile(ALICE, "displayname"), {"displayname": "x" * 257})
    assert resp.code == 400, resp
    assert resp.json["errcode"] in ("M_BAD_JSON", "M_TOO_LARGE", "M_INVALID_PARAM")
    ok = await alice.put(_profile(ALICE, "displayname"), {"displayname": "x" * 256})
    assert ok.code == 200, ok
    assert (await alice.get(_profile(ALICE, "displayname"))).json["displayname"] == "x" * 256


@pytest_twisted.ensureDeferred
async def test_displayname_and_avatar_must_be_strings(server: RunningServer, alice: Client) -> None:
    for key, value in (("displayname", 5), ("displayname", None), ("avatar_url", ["x"])):
        assert_error(await alice.put(_profile(ALICE, key), {key: value}), 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_avatar_url_too_long_is_400(server: RunningServer, alice: Client) -> None:
    resp = await alice.put(_profile(ALICE, "avatar_url"), {"avatar_url": "mxc://a/" + "b" * 1000})
    assert resp.code == 400, resp


@pytest_twisted.ensureDeferred
async def test_put_without_the_key_in_body_is_missing_param(
    server: RunningServer, alice: Client
) -> None:
    resp = await alice.put(_profile(ALICE, "displayname"), {"avatar_url": "mxc://a/b"})
    assert_error(resp, 400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_put_invalid_json_is_rejected(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.put(_profile(ALICE, "displayname"), raw=b"{"), 400, "M_NOT_JSON")
    assert_error(await alice.put(_profile(ALICE, "displayname"), raw=b"[]"), 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_profile_key_over_255_bytes_is_key_too_large(
    server: RunningServer, alice: Client
) -> None:
    key = "com.example." + "k" * 250
    resp = await alice.put(_profile(ALICE, key), {key: 1})
    assert_error(resp, 400, "M_KEY_TOO_LARGE")


@pytest_twisted.ensureDeferred
async def test_profile_over_64k_is_profile_too_large(server: RunningServer, alice: Client) -> None:
    resp = await alice.put(_profile(ALICE, "com.example.big"), {"com.example.big": "x" * 70_000})
    assert_error(resp, 400, "M_PROFILE_TOO_LARGE")
    assert_error(await alice.get(_profile(ALICE, "com.example.big")), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_profile_fields_persist_per_user(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    await alice.put(_profile(ALICE, "displayname"), {"displayname": "A"})
    await bob.put(_profile("@bob:test.local", "displayname"), {"displayname": "B"})
    assert (await server.client().get(_profile(ALICE))).json == {"displayname": "A"}
    assert (await server.client().get(_profile("@bob:test.local"))).json == {"displayname": "B"}
