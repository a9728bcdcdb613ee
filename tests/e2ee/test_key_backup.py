"""/room_keys/version and /room_keys/keys: versions, etag and count, replace rules."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.helpers import assert_error, sqlite_only
from tests.e2ee.helpers import V3
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test.local"


async def create_version(client: Client, auth_data: dict[str, Any] | None = None) -> str:
    resp = await client.post(
        f"{V3}/room_keys/version",
        {"algorithm": ALGORITHM, "auth_data": auth_data or {"public_key": "abc"}},
    )
    assert resp.code == 200, resp
    return str(resp.json["version"])


def key(
    first_message_index: int = 0,
    forwarded_count: int = 0,
    is_verified: bool = False,
    tag: str = "",
) -> dict[str, Any]:
    return {
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {"ciphertext": tag or "c", "ephemeral": "e", "mac": "m"},
    }


async def put_session(client: Client, version: str, session: str, data: Any) -> Response:
    return await client.put(
        f"{V3}/room_keys/keys/{q(ROOM)}/{q(session)}", data, params={"version": version}
    )


async def get_session(client: Client, version: str, session: str) -> Response:
    return await client.get(
        f"{V3}/room_keys/keys/{q(ROOM)}/{q(session)}", params={"version": version}
    )


@pytest_twisted.ensureDeferred
async def test_version_lifecycle(server: RunningServer, alice: Client, bob: Client) -> None:
    assert_error(await alice.get(f"{V3}/room_keys/version"), 404, "M_NOT_FOUND")
    first = await create_version(alice, {"public_key": "one"})
    second = await create_version(alice, {"public_key": "two"})
    assert first != second

    current = await alice.get(f"{V3}/room_keys/version")
    assert current.json == {
        "algorithm": ALGORITHM,
        "auth_data": {"public_key": "two"},
        "count": 0,
        "etag": "0",
        "version": second,
    }
    old = await alice.get(f"{V3}/room_keys/version/{first}")
    assert old.json["auth_data"] == {"public_key": "one"}
    # Another user's backup is not visible.
    assert_error(await bob.get(f"{V3}/room_keys/version/{first}"), 404, "M_NOT_FOUND")
    assert_error(await alice.get(f"{V3}/room_keys/version/nope"), 404, "M_NOT_FOUND")

    resp = await alice.put(
        f"{V3}/room_keys/version/{second}",
        {"algorithm": ALGORITHM, "auth_data": {"public_key": "two", "signatures": {}}},
    )
    assert resp.code == 200 and resp.json == {}, resp
    current = await alice.get(f"{V3}/room_keys/version/{second}")
    assert current.json["auth_data"] == {"public_key": "two", "signatures": {}}

    assert (await alice.delete(f"{V3}/room_keys/version/{second}")).code == 200
    assert (await alice.delete(f"{V3}/room_keys/version/{second}")).code == 200  # again: fine
    assert_error(await alice.get(f"{V3}/room_keys/version/{second}"), 404, "M_NOT_FOUND")
    assert (await alice.get(f"{V3}/room_keys/version")).json["version"] == first
    assert_error(await alice.delete(f"{V3}/room_keys/version/999999"), 404, "M_NOT_FOUND")
    # Version numbers are never reused.
    third = await create_version(alice)
    assert int(third) > int(second)


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_version_update_errors(server: RunningServer, alice: Client) -> None:
    version = await create_version(alice)
    path = f"{V3}/room_keys/version/{version}"
    resp = await alice.put(path, {"algorithm": "other", "auth_data": {}})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.put(path, {"algorithm": ALGORITHM, "auth_data": {}, "version": "77"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.put(path, {"algorithm": ALGORITHM})
    assert_error(resp, 400, "M_MISSING_PARAM")
    resp = await alice.put(
        f"{V3}/room_keys/version/12345", {"algorithm": ALGORITHM, "auth_data": {}}
    )
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await alice.post(f"{V3}/room_keys/version", {"auth_data": {}})
    assert_error(resp, 400, "M_MISSING_PARAM")
    assert_error(await alice.get(f"{V3}/room_keys/version", token=False), 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_auth_data_and_session_data_are_opaque(server: RunningServer, alice: Client) -> None:
    """Any JSON value is kept as given, as Synapse does (SyTest sends strings)."""
    resp = await alice.post(f"{V3}/room_keys/version", {"algorithm": ALGORITHM, "auth_data": "x"})
    assert resp.code == 200, resp
    version = resp.json["version"]
    got = await alice.get(f"{V3}/room_keys/version/{version}")
    assert got.json["auth_data"] == "x"
    path = f"{V3}/room_keys/version/{version}"
    assert (await alice.put(path, {"algorithm": ALGORITHM, "auth_data": [1, "y"]})).code == 200
    assert (await alice.get(path)).json["auth_data"] == [1, "y"]
    opaque = key()
    opaque["session_data"] = "anopaquestring"
    assert (await put_session(alice, version, "s", opaque)).code == 200
    got = await alice.get(f"{V3}/room_keys/keys/{q(ROOM)}/s", params={"version": version})
    assert got.json["session_data"] == "anopaquestring"


@pytest_twisted.ensureDeferred
async def test_store_and_read_keys_with_etag_and_count(
    server: RunningServer, alice: Client
) -> None:
    version = await create_version(alice)
    resp = await put_session(alice, version, "s1", key(tag="one"))
    assert resp.code == 200, resp
    assert resp.json == {"etag": "1", "count": 1}
    resp = await alice.put(
        f"{V3}/room_keys/keys/{q(ROOM)}",
        {"sessions": {"s2": key(tag="two"), "s3": key(tag="three")}},
        params={"version": version},
    )
    assert resp.json == {"etag": "2", "count": 3}
    other_room = "!other:test.local"
    resp = await alice.put(
        f"{V3}/room_keys/keys",
        {"rooms": {other_room: {"sessions": {"s4": key(tag="four")}}}},
        params={"version": version},
    )
    assert resp.json == {"etag": "3", "count": 4}

    assert (await get_session(alice, version, "s1")).json == key(tag="one")
    room = await alice.get(f"{V3}/room_keys/keys/{q(ROOM)}", params={"version": version})
    assert set(room.json["sessions"]) == {"s1", "s2", "s3"}
    everything = await alice.get(f"{V3}/room_keys/keys", params={"version": version})
    assert set(everything.json["rooms"]) == {ROOM, other_room}
    info = await alice.get(f"{V3}/room_keys/version")
    assert (info.json["count"], info.json["etag"]) == (4, "3")

    empty = await alice.get(f"{V3}/room_keys/keys/{q('!none:x')}", params={"version": version})
    assert empty.json == {"sessions": {}}
    assert_error(await get_session(alice, version, "nope"), 404, "M_NOT_FOUND")

    resp = await alice.delete(f"{V3}/room_keys/keys/{q(ROOM)}/s1", params={"version": version})
    assert resp.json == {"etag": "4", "count": 3}
    resp = await alice.delete(f"{V3}/room_keys/keys/{q(ROOM)}", params={"version": version})
    assert resp.json == {"etag": "5", "count": 1}
    resp = await alice.delete(f"{V3}/room_keys/keys", params={"version": version})
    assert resp.json == {"etag": "6", "count": 0}
    # Deleting nothing leaves the etag alone.
    resp = await alice.delete(f"{V3}/room_keys/keys", params={"version": version})
    assert resp.json == {"etag": "6", "count": 0}


@pytest_twisted.ensureDeferred
async def test_replace_rules_for_an_existing_session(server: RunningServer, alice: Client) -> None:
    version = await create_version(alice)

    async def stored() -> dict[str, Any]:
        return dict((await get_session(alice, version, "s")).json)

    await put_session(alice, version, "s", key(first_message_index=5, forwarded_count=2, tag="a"))
    # A verified key replaces an unverified one, whatever its indexes.
    verified = key(first_message_index=9, forwarded_count=9, is_verified=True, tag="b")
    await put_session(alice, version, "s", verified)
    assert await stored() == verified
    # An unverified key never replaces a verified one, even with a lower index.
    resp = await put_session(alice, version, "s", key(first_message_index=0, tag="c"))
    assert resp.json["etag"] == "2"  # unchanged: nothing replaced
    assert await stored() == verified
    # Same verification: the lower first_message_index wins.
    lower = key(first_message_index=3, forwarded_count=9, is_verified=True, tag="d")
    await put_session(alice, version, "s", lower)
    assert await stored() == lower
    higher = key(first_message_index=4, forwarded_count=0, is_verified=True, tag="e")
    await put_session(alice, version, "s", higher)
    assert await stored() == lower
    # Same index too: the lower forwarded_count wins; a tie keeps what is stored.
    fewer = key(first_message_index=3, forwarded_count=1, is_verified=True, tag="f")
    await put_session(alice, version, "s", fewer)
    assert await stored() == fewer
    tie = key(first_message_index=3, forwarded_count=1, is_verified=True, tag="g")
    resp = await put_session(alice, version, "s", tie)
    assert await stored() == fewer
    assert resp.json["count"] == 1


@pytest_twisted.ensureDeferred
async def test_keys_go_only_to_the_current_version(server: RunningServer, alice: Client) -> None:
    old = await create_version(alice)
    current = await create_version(alice)
    resp = await put_session(alice, old, "s", key())
    assert_error(resp, 403, "M_WRONG_ROOM_KEYS_VERSION")
    assert resp.json["current_version"] == current
    assert_error(await put_session(alice, "424242", "s", key()), 404, "M_NOT_FOUND")
    # Deleting a version deletes its keys.
    assert (await put_session(alice, current, "s", key())).code == 200
    assert (await alice.delete(f"{V3}/room_keys/version/{current}")).code == 200
    resp = await alice.get(f"{V3}/room_keys/keys", params={"version": current})
    assert_error(resp, 404, "M_NOT_FOUND")
    # The older one is current again.
    assert (await put_session(alice, old, "s", key())).code == 200


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_key_upload_validation(server: RunningServer, alice: Client) -> None:
    version = await create_version(alice)
    resp = await alice.put(f"{V3}/room_keys/keys/{q(ROOM)}/s", key())
    assert_error(resp, 400, "M_MISSING_PARAM")  # no version parameter
    bad = key()
    del bad["session_data"]
    assert_error(await put_session(alice, version, "s", bad), 400, "M_MISSING_PARAM")
    bad = key()
    bad["is_verified"] = "yes"
    assert_error(await put_session(alice, version, "s", bad), 400, "M_BAD_JSON")
    bad = key()
    bad["first_message_index"] = -1
    assert_error(await put_session(alice, version, "s", bad), 400, "M_INVALID_PARAM")
    resp = await alice.put(f"{V3}/room_keys/keys", {"rooms": []}, params={"version": version})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.get(f"{V3}/room_keys/keys", params={"version": "x"})
    assert_error(resp, 404, "M_NOT_FOUND")
