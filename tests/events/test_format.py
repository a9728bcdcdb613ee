"""PDU format validation and identifier grammars."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from homeserver.events.format import (
    CANONICALJSON_MAX_INT,
    MAX_PDU_SIZE,
    EventFormatError,
    is_valid_event_id,
    is_valid_localpart,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    validate_pdu_format,
)
from homeserver.events.room_versions import ROOM_VERSIONS

V10 = ROOM_VERSIONS["10"]
V11 = ROOM_VERSIONS["11"]
V12 = ROOM_VERSIONS["12"]

HASH_ID = "Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"  # 43 URL-safe base64 chars
EVENT_ID = "$" + HASH_ID
ROOM_ID_V12 = "!" + HASH_ID
ROOM_ID_V10 = "!abc123:example.org"


def good_event(room_id: str = ROOM_ID_V10) -> dict[str, Any]:
    return {
        "auth_events": [EVENT_ID],
        "content": {"membership": "join", "n": -(2**53) + 1, "big": 2**53 - 1},
        "depth": 12,
        "hashes": {"sha256": "ThisHashCoversAllFieldsInCaseThisIsRedacted"},
        "origin_server_ts": 1234567890,
        "prev_events": [EVENT_ID],
        "room_id": room_id,
        "sender": "@someone:matrix.org",
        "signatures": {"example.com": {"ed25519:key_version": "86BytesOfSignature"}},
        "state_key": "@someone:matrix.org",
        "type": "m.room.member",
        "unsigned": {"age": 4612},
    }


def good_for(room_version_id: str) -> dict[str, Any]:
    return good_event(ROOM_ID_V12 if room_version_id == "12" else ROOM_ID_V10)


@pytest.mark.parametrize("room_version_id", ["10", "11", "12"])
def test_good_event_passes(room_version_id: str) -> None:
    validate_pdu_format(good_for(room_version_id), ROOM_VERSIONS[room_version_id])


def test_minimal_event_passes() -> None:
    event = good_event()
    del event["state_key"], event["unsigned"]
    event["auth_events"] = event["prev_events"] = []
    validate_pdu_format(event, V11)


def test_v12_create_event_without_room_id_passes() -> None:
    event = good_event()
    del event["room_id"]
    event.update(type="m.room.create", state_key="", auth_events=[], prev_events=[])
    validate_pdu_format(event, V12)


def _del(key: str) -> Callable[[dict[str, Any]], None]:
    def f(e: dict[str, Any]) -> None:
        del e[key]

    return f


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def f(e: dict[str, Any]) -> None:
        e[key] = value

    return f


def _set_content(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def f(e: dict[str, Any]) -> None:
        e["content"][key] = value

    return f


# One broken rule per case, each must give M_BAD_JSON.
BAD_JSON_CASES: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    # required keys
    *[
        (f"missing {k}", _del(k))
        for k in (
            "auth_events",
            "prev_events",
            "depth",
            "origin_server_ts",
            "sender",
            "room_id",
            "type",
            "content",
            "hashes",
            "signatures",
        )
    ],
    # types
    ("auth_events not list", _set("auth_events", EVENT_ID)),
    ("auth_events non-string", _set("auth_events", [1])),
    ("auth_events bad id", _set("auth_events", ["$short"])),
    ("auth_events too many", _set("auth_events", [EVENT_ID] * 11)),
    ("auth_events listed twice", _set("auth_events", [EVENT_ID, EVENT_ID])),
    ("prev_events not list", _set("prev_events", {})),
    ("prev_events non-string", _set("prev_events", [None])),
    ("prev_events legacy id", _set("prev_events", ["$abc:example.org"])),
    ("prev_events too many", _set("prev_events", [EVENT_ID] * 21)),
    ("depth string", _set("depth", "12")),
    ("depth bool", _set("depth", True)),
    ("depth negative", _set("depth", -1)),
    ("depth float", _set("depth", 12.0)),
    ("depth too big", _set("depth", 2**53)),
    ("origin_server_ts string", _set("origin_server_ts", "1")),
    ("origin_server_ts too big", _set("origin_server_ts", 2**53)),
    ("sender not string", _set("sender", 5)),
    ("sender not a user id", _set("sender", "someone:matrix.org")),
    ("sender no server", _set("sender", "@someone")),
    ("sender bad server", _set("sender", "@someone:bad_host!")),
    ("sender too long", _set("sender", "@" + "a" * 244 + ":matrix.org")),  # 256 bytes
    ("room_id not string", _set("room_id", ["!a:b"])),
    ("room_id bad sigil", _set("room_id", "#abc:example.org")),
    ("room_id v12 form in v10 room", _set("room_id", ROOM_ID_V12)),
    ("room_id too long", _set("room_id", "!" + "a" * 250 + ":example.org")),
    ("type not string", _set("type", None)),
    ("type too long", _set("type", "t" * 256)),
    ("state_key not string", _set("state_key", None)),
    ("state_key too long", _set("state_key", "s" * 256)),
    ("state_key too long in bytes", _set("state_key", "é" * 128)),
    ("event_id too long", _set("event_id", "$" + "e" * 255)),
    ("content not object", _set("content", [])),
    ("hashes not object", _set("hashes", "abc")),
    ("hashes without sha256", _set("hashes", {"sha512": "x"})),
    ("hashes sha256 not string", _set("hashes", {"sha256": 1})),
    ("signatures not object", _set("signatures", [])),
    ("signatures entry not object", _set("signatures", {"example.com": "sig"})),
    ("signature not string", _set("signatures", {"example.com": {"ed25519:1": 1}})),
    ("unsigned not object", _set("unsigned", "x")),
    # canonical JSON values anywhere in the PDU
    ("float in content", _set_content("f", 1.5)),
    ("integral float in content", _set_content("f", 2.0)),
    ("int too large in content", _set_content("n", 2**53)),
    ("int too small in content", _set_content("n", -(2**53))),
    ("nested int too large", _set_content("deep", {"a": [1, {"b": 2**60}]})),
    ("int too large in unsigned", _set("unsigned", {"age": 2**53})),
    ("lone surrogate", _set_content("s", "\ud800")),
    ("non-JSON value", _set_content("s", object())),
]


@pytest.mark.parametrize(("name", "mutate"), BAD_JSON_CASES, ids=[c[0] for c in BAD_JSON_CASES])
def test_bad_event_is_rejected(name: str, mutate: Callable[[dict[str, Any]], None]) -> None:
    event = good_event()
    mutate(event)
    with pytest.raises(EventFormatError) as info:
        validate_pdu_format(event, V10)
    assert info.value.errcode == "M_BAD_JSON", name


def test_v12_room_id_must_be_hash_form() -> None:
    with pytest.raises(EventFormatError):
        validate_pdu_format(good_event(ROOM_ID_V10), V12)


def test_v12_non_create_event_needs_room_id() -> None:
    event = good_event(ROOM_ID_V12)
    del event["room_id"]
    with pytest.raises(EventFormatError):
        validate_pdu_format(event, V12)


def test_v10_redacts_must_be_string() -> None:
    event = good_event()
    event.update(type="m.room.redaction", redacts=5)
    with pytest.raises(EventFormatError):
        validate_pdu_format(event, V10)
    event["redacts"] = EVENT_ID
    validate_pdu_format(event, V10)


def test_not_an_object() -> None:
    with pytest.raises(EventFormatError) as info:
        validate_pdu_format([], V11)  # type: ignore[arg-type]
    assert info.value.errcode == "M_BAD_JSON"


def test_size_limit() -> None:
    from crypto.json_signing import encode_canonical_json

    event = good_event()
    event["content"]["body"] = ""
    overhead = len(encode_canonical_json(event))
    event["content"]["body"] = "x" * (MAX_PDU_SIZE - overhead)
    assert len(encode_canonical_json(event)) == MAX_PDU_SIZE
    validate_pdu_format(event, V11)  # exactly at the limit is fine
    event["content"]["body"] += "x"
    with pytest.raises(EventFormatError) as info:
        validate_pdu_format(event, V11)
    assert info.value.errcode == "M_TOO_LARGE"


def test_size_limit_counts_signatures_and_unsigned() -> None:
    event = good_event()
    event["unsigned"] = {"pad": "x" * MAX_PDU_SIZE}
    with pytest.raises(EventFormatError) as info:
        validate_pdu_format(event, V11)
    assert info.value.errcode == "M_TOO_LARGE"


def test_canonical_json_bounds_are_inclusive() -> None:
    event = good_event()
    event["depth"] = CANONICALJSON_MAX_INT
    event["content"]["n"] = -CANONICALJSON_MAX_INT
    validate_pdu_format(event, V11)


def test_error_carries_errcode_and_message() -> None:
    err = EventFormatError("M_BAD_JSON", "boom")
    assert err.errcode == "M_BAD_JSON"
    assert err.message == "boom"
    assert str(err) == "boom"


def test_input_not_modified() -> None:
    event = good_event()
    before = copy.deepcopy(event)
    validate_pdu_format(event, V11)
    assert event == before


# --- identifier grammars ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "matrix.org",
        "matrix.org:8888",
        "1.2.3.4",
        "1.2.3.4:1234",
        "[1234:5678::abcd]",
        "[1234:5678::abcd]:5678",
        "[::1]",
        "[::ffff:1.2.3.4]:8448",
        "localhost",
        "localhost:8008",
        "127.0.0.1:38448",
        "MATRIX.ORG",
        "a-b.example",
        "host:0",
        "host:99999",
    ],
)
def test_valid_server_names(name: str) -> None:
    assert is_valid_server_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        ":8448",
        "matrix.org:",
        "matrix.org:port",
        "matrix.org:123456",
        "matrix.org:-1",
        "matrix.org:80:80",
        "under_score.org",
        "bad host",
        "exa*mple.org",
        "1.2.3.256",
        "999.1.1.1:80",
        "[1234:5678::abcd",
        "[1234:5678::abcd]x",
        "[1234:5678::abcd]:",
        "[not:ipv6:zz]",
        "[1:2:3:4:5:6:7:8:9]",
        "[]",
        "1234:5678::abcd",
        "a" * 256,
        "ex\u00e4mple.org",
    ],
)
def test_invalid_server_names(name: str) -> None:
    assert not is_valid_server_name(name)


@pytest.mark.parametrize(
    "localpart", ["alice", "a", "bob_c6b4a242e", "x.y=z/w+v-u", "0123456789", "._=-/+"]
)
def test_valid_localparts(localpart: str) -> None:
    assert is_valid_localpart(localpart)


@pytest.mark.parametrize("localpart", ["", "Alice", "a b", "a:b", "a@b", "ä", "a#b", "a*", "a\n"])
def test_invalid_localparts(localpart: str) -> None:
    assert not is_valid_localpart(localpart)


@pytest.mark.parametrize(
    "user_id",
    [
        "@alice:example.org",
        "@bob_c6b4a242e:127.0.0.1:39448",
        "@a:[::1]:8448",
        "@x.y=z/w+v-u:matrix.org",
    ],
)
def test_valid_user_ids_strict_and_historical(user_id: str) -> None:
    assert is_valid_user_id(user_id)
    assert is_valid_user_id(user_id, strict=True)


@pytest.mark.parametrize(
    "user_id",
    ["@Alice:example.org", "@:example.org", "@ä!#$ :example.org", "@a\x01b:example.org"],
)
def test_historical_user_ids_accepted_only_when_not_strict(user_id: str) -> None:
    assert is_valid_user_id(user_id)
    assert not is_valid_user_id(user_id, strict=True)


@pytest.mark.parametrize(
    "user_id",
    [
        "",
        "alice:example.org",
        "@alice",
        "@alice:",
        "@alice:bad_server",
        "@a\x00b:example.org",
        "@a\ud800:example.org",
        "#alice:example.org",
        "@" + "a" * 243 + ":example.org",  # 256 bytes
        "@" + "é" * 122 + ":example.org",  # 257 bytes, fewer characters
    ],
)
def test_invalid_user_ids(user_id: str) -> None:
    assert not is_valid_user_id(user_id)


def test_user_id_length_limit_is_inclusive() -> None:
    user_id = "@" + "a" * 242 + ":example.org"
    assert len(user_id.encode()) == 255
    assert is_valid_user_id(user_id, strict=True)


def test_event_ids() -> None:
    assert is_valid_event_id(EVENT_ID)
    assert is_valid_event_id("$o91N0zPQYghJ2nACcB3NVhfmBRbtZ7TfgDgc5vBD2zQ")
    for bad in ["", HASH_ID, "!" + HASH_ID, EVENT_ID + "A", EVENT_ID[:-1], "$" + "+" * 43]:
        assert not is_valid_event_id(bad), bad
    assert not is_valid_event_id("$abc:example.org")  # v1-v3 format


def test_room_ids_per_version() -> None:
    assert is_valid_room_id(ROOM_ID_V12, V12)
    assert not is_valid_room_id(ROOM_ID_V12, V11)
    assert is_valid_room_id(ROOM_ID_V10, V10)
    assert is_valid_room_id("!dxnCoKuNwTdyFqEgin:127.0.0.1:38448", V11)
    assert not is_valid_room_id(ROOM_ID_V10, V12)
    assert is_valid_room_id(ROOM_ID_V12) and is_valid_room_id(ROOM_ID_V10)


@pytest.mark.parametrize(
    "room_id",
    [
        "",
        "abc:example.org",
        "!abc",
        "!abc:",
        "!abc:bad_server",
        "!a\x00b:example.org",
        "!" + "a" * 243 + ":example.org",
        "$" + HASH_ID,
        "!" + HASH_ID + "A",
    ],
)
def test_invalid_room_ids(room_id: str) -> None:
    assert not is_valid_room_id(room_id)
