"""The stores' basic operations, against both databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted

from storage.account_data import GLOBAL
from storage.database import Database
from storage.registration import UiAuthSession
from storage.storage import Storage
from tests.storage.conftest import open_database
from tests.storage.db_pool import PostgresPool, pooled_database_config

ALICE = "@alice:test"
BOB = "@bob:test"


@pytest.fixture
def database(db_kind: str, tmp_path: Any, postgres_pool: PostgresPool) -> Iterator[Any]:
    """These tests leave the schema alone, so a pooled PostgreSQL database will do."""
    if db_kind == "sqlite":
        yield {"name": "sqlite3", "args": {"database": os.path.join(str(tmp_path), "s.db")}}
        return
    with pooled_database_config(postgres_pool) as config:
        yield config


# Users ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_and_get_user(storage: Storage) -> None:
    assert await storage.users.create_user(ALICE, "hash", 1234, admin=True, appservice_id="as")
    user = await storage.users.get_user(ALICE)
    assert user is not None
    assert (user.user_id, user.password_hash, user.creation_ts) == (ALICE, "hash", 1234)
    assert (user.admin, user.is_guest, user.deactivated, user.appservice_id) == (
        True,
        False,
        False,
        "as",
    )
    assert await storage.users.get_user(BOB) is None
    assert await storage.users.count_users() == 1


@pytest_twisted.ensureDeferred
async def test_user_ids_are_unique_case_insensitively(storage: Storage) -> None:
    assert await storage.users.create_user(ALICE, None, 1)
    assert not await storage.users.create_user("@ALICE:test", None, 2)
    assert await storage.users.find_user_case_insensitive("@Alice:Test") == [ALICE]
    assert await storage.users.find_user_case_insensitive(BOB) == []


@pytest_twisted.ensureDeferred
async def test_guest_flag_and_admin_and_password_updates(storage: Storage) -> None:
    await storage.users.create_user(ALICE, None, 1, is_guest=True)
    assert (await storage.users.get_user(ALICE)).is_guest is True  # type: ignore[union-attr]
    await storage.users.set_admin(ALICE, True)
    await storage.users.set_password_hash(ALICE, "new-hash")
    user = await storage.users.get_user(ALICE)
    assert user is not None and user.admin is True and user.password_hash == "new-hash"


@pytest_twisted.ensureDeferred
async def test_new_user_has_an_empty_profile(storage: Storage) -> None:
    await storage.users.create_user(ALICE, None, 1)
    profile = await storage.profiles.get_profile(ALICE)
    assert profile is not None and profile.as_dict() == {}
    assert await storage.profiles.get_profile(BOB) is None


@pytest_twisted.ensureDeferred
async def test_deactivate_user_drops_password_devices_tokens_and_profile(
    storage: Storage,
) -> None:
    users = storage.users
    await users.create_user(ALICE, "hash", 1)
    await users.create_user(BOB, "hash", 1)
    await storage.profiles.set_field(ALICE, "displayname", "Alice")
    await storage.profiles.set_field(ALICE, "m.tz", "UTC")
    for user in (ALICE, BOB):
        await users.store_device(user, "D1", None)
        await users.add_access_token(user, "D1", f"{user}-access")
        await users.add_refresh_token(user, "D1", f"{user}-refresh", None)
    await users.deactivate_user(ALICE)
    user = await users.get_user(ALICE)
    assert user is not None and user.deactivated and user.password_hash is None
    assert await users.get_devices(ALICE) == []
    assert await users.get_access_token(f"{ALICE}-access") is None
    assert await users.get_refresh_token(f"{ALICE}-refresh") is None
    assert (await storage.profiles.get_profile(ALICE)).as_dict() == {}  # type: ignore[union-attr]
    # Bob is untouched.
    assert await users.get_access_token(f"{BOB}-access") is not None
    assert len(await users.get_devices(BOB)) == 1


# Devices ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_store_device_creates_once(storage: Storage) -> None:
    users = storage.users
    assert await users.store_device(ALICE, "D1", "Phone") is True
    assert await users.store_device(ALICE, "D1", "Other name") is False
    device = await users.get_device(ALICE, "D1")
    assert device is not None and device.display_name == "Phone"
    assert await users.get_device(BOB, "D1") is None


@pytest_twisted.ensureDeferred
async def test_devices_listed_in_order_and_renamed(storage: Storage) -> None:
    users = storage.users
    for device_id in ("B", "A", "C"):
        await users.store_device(ALICE, device_id, None)
    await users.store_device(BOB, "Z", None)
    assert [d.device_id for d in await users.get_devices(ALICE)] == ["A", "B", "C"]
    assert await users.update_device_display_name(ALICE, "B", "Bee") is True
    assert await users.update_device_display_name(ALICE, "nope", "x") is False
    assert (await users.get_device(ALICE, "B")).display_name == "Bee"  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_device_last_seen(storage: Storage) -> None:
    await storage.users.store_device(ALICE, "D1", None)
    await storage.users.update_devices_last_seen([(ALICE, "D1", 999, "10.0.0.1", "agent/1")])
    device = await storage.users.get_device(ALICE, "D1")
    assert device is not None
    assert (device.last_seen_ts, device.last_seen_ip, device.last_seen_user_agent) == (
        999,
        "10.0.0.1",
        "agent/1",
    )


@pytest_twisted.ensureDeferred
async def test_delete_devices_removes_their_tokens_and_returns_access_token_ids(
    storage: Storage,
) -> None:
    users = storage.users
    await users.store_device(ALICE, "D1", None)
    await users.store_device(ALICE, "D2", None)
    t1 = await users.add_access_token(ALICE, "D1", "h1")
    t1b = await users.add_access_token(ALICE, "D1", "h1b")
    t2 = await users.add_access_token(ALICE, "D2", "h2")
    await users.add_refresh_token(ALICE, "D1", "r1", None)
    removed = await users.delete_devices(ALICE, ["D1", "missing"])
    assert sorted(removed) == sorted([t1, t1b])
    assert await users.get_device(ALICE, "D1") is None
    assert await users.get_access_token("h1") is None
    assert await users.get_refresh_token("r1") is None
    kept = await users.get_access_token("h2")
    assert kept is not None and kept.token_id == t2


# Tokens ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_access_token_round_trip(storage: Storage) -> None:
    users = storage.users
    refresh_id = await users.add_refresh_token(ALICE, "D1", "r", 5000)
    token_id = await users.add_access_token(ALICE, "D1", "h", 1000, refresh_id)
    record = await users.get_access_token("h")
    assert record is not None
    assert (record.token_id, record.user_id, record.device_id) == (token_id, ALICE, "D1")
    assert (record.valid_until_ms, record.refresh_token_id) == (1000, refresh_id)
    assert await users.get_access_token("other") is None


@pytest_twisted.ensureDeferred
async def test_token_ids_are_unique_across_access_and_refresh_tokens(storage: Storage) -> None:
    ids = [
        await storage.users.add_access_token(ALICE, "D", "a1"),
        await storage.users.add_refresh_token(ALICE, "D", "r1", None),
        await storage.users.add_access_token(ALICE, "D", "a2"),
    ]
    assert len(set(ids)) == 3 and ids == sorted(ids)


@pytest_twisted.ensureDeferred
async def test_token_ids_continue_after_reopening(
    database: dict[str, Any], db: Database, storage: Storage
) -> None:
    first = await storage.users.add_access_token(ALICE, "D", "a1")
    refresh = await storage.users.add_refresh_token(ALICE, "D", "r1", None)
    db.close()
    again = open_database(database)
    try:
        reopened = await Storage.open(again)
        later = await reopened.users.add_access_token(ALICE, "D", "a2")
        assert later > max(first, refresh)
    finally:
        again.close()


@pytest_twisted.ensureDeferred
async def test_delete_access_token_also_deletes_its_refresh_token(storage: Storage) -> None:
    users = storage.users
    refresh_id = await users.add_refresh_token(ALICE, "D1", "r", None)
    token_id = await users.add_access_token(ALICE, "D1", "h", None, refresh_id)
    other = await users.add_access_token(ALICE, "D1", "h2")
    await users.delete_access_token(token_id)
    assert await users.get_access_token("h") is None
    assert await users.get_refresh_token("r") is None
    assert (await users.get_access_token("h2")).token_id == other  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_delete_access_tokens_for_user_with_exception_and_device_filter(
    storage: Storage,
) -> None:
    users = storage.users
    keep = await users.add_access_token(ALICE, "D1", "keep")
    d1 = await users.add_access_token(ALICE, "D1", "d1")
    d2 = await users.add_access_token(ALICE, "D2", "d2")
    bob = await users.add_access_token(BOB, "D1", "bob")
    only_d2 = await users.delete_access_tokens_for_user(ALICE, device_id="D2")
    assert only_d2 == [(d2, "D2")]
    rest = await users.delete_access_tokens_for_user(ALICE, except_token_id=keep)
    assert rest == [(d1, "D1")]
    assert (await users.get_access_token("keep")).token_id == keep  # type: ignore[union-attr]
    assert (await users.get_access_token("bob")).token_id == bob  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_replace_refresh_token_rotates_the_pair_once(storage: Storage) -> None:
    users = storage.users
    old_refresh_id = await users.add_refresh_token(ALICE, "D1", "r-old", 10_000)
    old_access_id = await users.add_access_token(ALICE, "D1", "a-old", 500, old_refresh_id)
    old = await users.get_refresh_token("r-old")
    assert old is not None and old.token_id == old_refresh_id and old.expiry_ts == 10_000
    removed = await users.replace_refresh_token(old, "r-new", 20_000, "a-new", 900)
    assert removed == [old_access_id]
    assert await users.get_refresh_token("r-old") is None
    assert await users.get_access_token("a-old") is None
    new_refresh = await users.get_refresh_token("r-new")
    new_access = await users.get_access_token("a-new")
    assert new_refresh is not None and new_access is not None
    assert (new_refresh.user_id, new_refresh.device_id, new_refresh.expiry_ts) == (
        ALICE,
        "D1",
        20_000,
    )
    assert new_access.refresh_token_id == new_refresh.token_id
    assert new_access.valid_until_ms == 900
    # Using the old record again (a concurrent refresh) changes nothing.
    assert await users.replace_refresh_token(old, "r-x", None, "a-x", None) is None
    assert await users.get_refresh_token("r-x") is None
    assert await users.get_access_token("a-x") is None


# Profiles --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_profile_fields_columns_and_custom(storage: Storage) -> None:
    profiles = storage.profiles
    await profiles.set_field(ALICE, "displayname", "Alice")  # creates the row if missing
    await profiles.set_field(ALICE, "avatar_url", "mxc://x/y")
    await profiles.set_field(ALICE, "m.tz", "Europe/Paris")
    await profiles.set_field(ALICE, "com.example.obj", {"a": [1, 2]})
    profile = await profiles.get_profile(ALICE)
    assert profile is not None
    assert profile.as_dict() == {
        "displayname": "Alice",
        "avatar_url": "mxc://x/y",
        "m.tz": "Europe/Paris",
        "com.example.obj": {"a": [1, 2]},
    }
    await profiles.set_field(ALICE, "m.tz", None)
    await profiles.set_field(ALICE, "com.example.obj", None)
    await profiles.set_field(ALICE, "avatar_url", None)
    assert (await profiles.get_profile(ALICE)).as_dict() == {"displayname": "Alice"}  # type: ignore[union-attr]


# Account data ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_account_data_put_get_and_changes(storage: Storage) -> None:
    ad = storage.account_data
    start = ad.stream.current_position
    s1 = await ad.put(ALICE, GLOBAL, "a.type", {"v": 1})
    s2 = await ad.put(ALICE, "!room:test", "a.type", {"v": 2})
    s3 = await ad.put(ALICE, GLOBAL, "a.type", {"v": 3})  # replaces s1
    await ad.put(BOB, GLOBAL, "a.type", {"bob": True})
    assert start < s1 < s2 < s3
    assert await ad.get(ALICE, GLOBAL, "a.type") == {"v": 3}
    assert await ad.get(ALICE, "!room:test", "a.type") == {"v": 2}
    assert await ad.get(ALICE, GLOBAL, "other") is None
    changes = await ad.get_changes(ALICE, start, ad.stream.current_position)
    assert [(c.room_id, c.content, c.stream_id) for c in changes] == [
        ("!room:test", {"v": 2}, s2),
        ("", {"v": 3}, s3),
    ]
    assert await ad.get_changes(ALICE, s3, ad.stream.current_position) == []


@pytest_twisted.ensureDeferred
async def test_account_data_stream_resumes_after_reopening(
    database: dict[str, Any], db: Database, storage: Storage
) -> None:
    last = await storage.account_data.put(ALICE, GLOBAL, "t", {})
    db.close()
    again = open_database(database)
    try:
        reopened = await Storage.open(again)
        assert reopened.account_data.stream.current_position == last
        assert await reopened.account_data.put(ALICE, GLOBAL, "t2", {}) == last + 1
    finally:
        again.close()


# Registration tokens and UIA sessions ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_registration_token_uses_and_expiry(storage: Storage) -> None:
    reg = storage.registration
    await reg.create_registration_token("unlimited", None, None)
    await reg.create_registration_token("twice", 2, None)
    await reg.create_registration_token("expiring", None, 1000)
    assert await reg.registration_token_is_valid("unlimited", 0)
    assert not await reg.registration_token_is_valid("unknown", 0)
    assert await reg.registration_token_is_valid("expiring", 1000)
    assert not await reg.registration_token_is_valid("expiring", 1001)
    assert not await reg.use_registration_token("expiring", 1001)
    assert await reg.use_registration_token("twice", 0)
    assert await reg.use_registration_token("twice", 0)
    assert not await reg.registration_token_is_valid("twice", 0)
    assert not await reg.use_registration_token("twice", 0)
    assert not await reg.use_registration_token("unknown", 0)
    for _ in range(3):
        assert await reg.use_registration_token("unlimited", 0)


@pytest_twisted.ensureDeferred
async def test_ui_auth_session_lifecycle(storage: Storage) -> None:
    reg = storage.registration
    session = UiAuthSession(
        session_id="s1",
        creation_ts=100,
        uri="/_matrix/client/v3/register",
        method="POST",
        description="register",
        clientdict={"username": "alice"},
        completed={},
        user_id=None,
    )
    await reg.create_ui_auth_session(session)
    assert await reg.get_ui_auth_session("s1") == session
    assert await reg.get_ui_auth_session("nope") is None
    completed = await reg.mark_ui_auth_stage_complete("s1", "m.login.dummy", True)
    assert completed == {"m.login.dummy": True}
    completed = await reg.mark_ui_auth_stage_complete("s1", "m.login.password", ALICE)
    assert completed == {"m.login.dummy": True, "m.login.password": ALICE}
    stored = await reg.get_ui_auth_session("s1")
    assert stored is not None and stored.completed == completed
    await reg.delete_ui_auth_session("s1")
    assert await reg.get_ui_auth_session("s1") is None


@pytest_twisted.ensureDeferred
async def test_expire_ui_auth_sessions_removes_only_old_ones(storage: Storage) -> None:
    reg = storage.registration
    for sid, ts in (("old", 100), ("new", 10_000)):
        await reg.create_ui_auth_session(UiAuthSession(sid, ts, "/x", "POST", "d", {}, {}, ALICE))
    await reg.expire_ui_auth_sessions(5000)
    assert await reg.get_ui_auth_session("old") is None
    assert await reg.get_ui_auth_session("new") is not None


@pytest_twisted.ensureDeferred
async def test_threepids_are_unique_and_bindings_recorded(storage: Storage) -> None:
    store = storage.threepids
    assert await store.add_threepid("@a:hs", "email", "a@x.org", 1, 2)
    assert await store.add_threepid("@a:hs", "email", "a@x.org", 1, 2)  # a repeat
    assert not await store.add_threepid("@b:hs", "email", "a@x.org", 1, 2)
    assert await store.get_user_by_threepid("email", "a@x.org") == "@a:hs"
    assert [t.address for t in await store.get_threepids("@a:hs")] == ["a@x.org"]
    assert not await store.delete_threepid("@b:hs", "email", "a@x.org")
    assert await store.delete_threepid("@a:hs", "email", "a@x.org")
    assert await store.get_user_by_threepid("email", "a@x.org") is None
    await store.add_binding("@a:hs", "email", "a@x.org", "is.example")
    await store.add_binding("@a:hs", "email", "a@x.org", "is.example")
    assert await store.get_binding_servers("@a:hs", "email", "a@x.org") == ["is.example"]
    assert await store.get_bound_threepids("@a:hs") == [("email", "a@x.org")]
    await store.remove_binding("@a:hs", "email", "a@x.org", "is.example")
    assert await store.get_bound_threepids("@a:hs") == []


@pytest_twisted.ensureDeferred
async def test_validation_session_token_expires_and_validates_once(storage: Storage) -> None:
    from storage.threepids import ValidationSession

    sessions = storage.validation_sessions
    session = ValidationSession("sid1", "email", "a@x.org", "sec", 1, "hash", 1000, None, None)
    await sessions.upsert(session, 0)
    assert await sessions.find("sec", "email", "a@x.org") == session
    assert await sessions.validate("sid1", "other", "hash", 10) is None  # wrong secret
    assert await sessions.validate("sid1", "sec", "wrong", 10) is None  # wrong token
    assert await sessions.validate("sid1", "sec", "hash", 1000) is None  # expired
    validated = await sessions.validate("sid1", "sec", "hash", 999)
    assert validated is not None and validated.validated_at == 999
    stored = await sessions.get("sid1", "sec")
    assert stored is not None and stored.validated_at == 999
    assert await sessions.get("sid1", "other") is None


# Filters, aliases, the room directory -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_filter_ids_count_up_per_user(storage: Storage) -> None:
    assert await storage.filters.add(ALICE, {"room": {"timeline": {"limit": 1}}}) == 0
    assert await storage.filters.add(ALICE, {}) == 1
    assert await storage.filters.add(BOB, {}) == 0
    assert await storage.filters.get(ALICE, 0) == {"room": {"timeline": {"limit": 1}}}
    assert await storage.filters.get(BOB, 1) is None


@pytest_twisted.ensureDeferred
async def test_room_upgrade_moves_aliases_and_listing_and_publishes_changes(
    storage: Storage,
) -> None:
    from homeserver.bus import AliasChanged, LocalBus
    from storage.aliases import RoomAlias

    bus = LocalBus()
    told: list[tuple[str, str | None]] = []
    bus.subscribe(AliasChanged, lambda m: told.append((m.alias, m.room_id)))
    storage = await Storage.open(storage.db, bus)
    for room_id in ("!old:test", "!new:test"):
        await storage.rooms.ensure(room_id, "10", ALICE)
    assert await storage.aliases.create(RoomAlias("#a:test", "!old:test", ALICE, ["test"]))
    assert not await storage.aliases.create(RoomAlias("#a:test", "!new:test", BOB))
    await storage.room_directory.set_public("!old:test", True)

    await storage.room_directory.move_room("!old:test", "!new:test")

    assert await storage.aliases.get_for_room("!new:test") == ["#a:test"]
    assert await storage.room_directory.get_public_room_ids() == ["!new:test"]
    assert await storage.room_directory.is_public("!old:test") is False
    assert told == [("#a:test", "!old:test"), ("#a:test", "!new:test")]
    await storage.aliases.delete("#a:test")
    assert await storage.aliases.get("#a:test") is None and told[-1] == ("#a:test", None)
