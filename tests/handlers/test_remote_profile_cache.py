"""RemoteProfileCache: expiry on the injected clock, drops, the race of a fetch
against a drop, size bounds."""

from __future__ import annotations

from twisted.internet import task

from homeserver.handlers.profile import REMOTE_PROFILE_MAX_CACHED_BYTES, RemoteProfileCache

BOB = "@bob:other.example"


def test_entry_expires_after_max_age() -> None:
    clock = task.Clock()
    cache = RemoteProfileCache(clock, max_age_s=60)
    cache.put(BOB, {"displayname": "Bob"}, cache.epoch)
    clock.advance(60)
    assert cache.get(BOB) == {"displayname": "Bob"}
    clock.advance(1)
    assert cache.get(BOB) is None


def test_drop_removes_and_a_fetch_started_before_it_is_not_stored() -> None:
    cache = RemoteProfileCache(task.Clock())
    cache.put(BOB, {"displayname": "Bob"}, cache.epoch)
    started = cache.epoch  # a fetch starts...
    cache.drop([BOB])  # ...a membership event of Bob's arrives meanwhile
    assert cache.get(BOB) is None
    cache.put(BOB, {"displayname": "Old Bob"}, started)
    assert cache.get(BOB) is None
    cache.put(BOB, {"displayname": "New Bob"}, cache.epoch)
    assert cache.get(BOB) == {"displayname": "New Bob"}


def test_least_recently_used_go_first_and_large_profiles_are_not_kept() -> None:
    cache = RemoteProfileCache(task.Clock(), max_entries=2)
    for name in ("a", "b"):
        cache.put(f"@{name}:x", {"displayname": name}, cache.epoch)
    assert cache.get("@a:x") is not None  # b is now the least recently used
    cache.put("@c:x", {"displayname": "c"}, cache.epoch)
    assert cache.get("@b:x") is None
    assert cache.get("@a:x") is not None and cache.get("@c:x") is not None
    cache.put(BOB, {"bio": "x" * REMOTE_PROFILE_MAX_CACHED_BYTES}, cache.epoch)
    assert cache.get(BOB) is None


def test_returned_profiles_are_copies() -> None:
    cache = RemoteProfileCache(task.Clock())
    profile = {"displayname": "Bob"}
    cache.put(BOB, profile, cache.epoch)
    profile["displayname"] = "changed"
    got = cache.get(BOB)
    assert got == {"displayname": "Bob"}
    got["displayname"] = "changed too"
    assert cache.get(BOB) == {"displayname": "Bob"}
