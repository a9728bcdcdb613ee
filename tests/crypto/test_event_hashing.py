"""Content hashes, reference hashes, event ids and event signing."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from crypto.errors import SignatureError
from crypto.event_hashing import (
    add_content_hash,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    compute_room_id_v12,
    hash_and_sign_event,
    sign_event,
    verify_event_signature,
)
from crypto.json_signing import encode_canonical_json
from crypto.signing_key import generate_signing_key, get_verify_key, signing_key_from_seed
from homeserver.events.room_versions import ROOM_VERSIONS

V10 = ROOM_VERSIONS["10"]
V11 = ROOM_VERSIONS["11"]
V12 = ROOM_VERSIONS["12"]

KEY = signing_key_from_seed("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1", "1")
VERIFY_KEY = get_verify_key(KEY)

# Spec appendices, "Event Signing". The spec vectors keep the top-level `origin` in
# the signed (redacted) form, i.e. they follow the pre-v11 redaction rules (v10 here).
MINIMAL_EVENT: dict[str, Any] = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
MINIMAL_EVENT_SIGNED: dict[str, Any] = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_EVENT: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_EVENT_SIGNED: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}


@pytest.mark.parametrize(
    ("event", "expected"),
    [(MINIMAL_EVENT, MINIMAL_EVENT_SIGNED), (REDACTABLE_EVENT, REDACTABLE_EVENT_SIGNED)],
    ids=["minimal", "redactable"],
)
def test_spec_event_signing_vectors(event: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(event)
    signed = hash_and_sign_event(event, "domain", KEY, V10)
    assert event == before  # input untouched
    assert signed == expected
    assert encode_canonical_json(signed) == encode_canonical_json(expected)
    assert check_content_hash(signed)
    verify_event_signature(signed, "domain", VERIFY_KEY, V10)


def test_spec_vector_needs_pre_v11_rules() -> None:
    """v11 drops `origin` from the signed form, so the signature differs."""
    signed = hash_and_sign_event(MINIMAL_EVENT, "domain", KEY, V11)
    assert signed["hashes"] == MINIMAL_EVENT_SIGNED["hashes"]
    assert signed["signatures"] != MINIMAL_EVENT_SIGNED["signatures"]
    with pytest.raises(SignatureError):
        verify_event_signature(MINIMAL_EVENT_SIGNED, "domain", VERIFY_KEY, V11)


def test_content_hash_ignores_unsigned_signatures_and_hashes() -> None:
    base = {"type": "X", "content": {"a": 1}}
    h = compute_content_hash(base)
    assert h == hashlib.sha256(b'{"content":{"a":1},"type":"X"}').digest()
    noisy = dict(base, unsigned={"age": 1}, signatures={"x": {}}, hashes={"sha256": "zz"})
    assert compute_content_hash(noisy) == h


def test_add_and_check_content_hash() -> None:
    event = {"type": "X", "content": {"a": 1}, "hashes": {"other": "keep"}}
    hashed = add_content_hash(event)
    assert "sha256" not in event["hashes"]  # input untouched
    assert hashed["hashes"]["other"] == "keep"
    assert check_content_hash(hashed)
    hashed["content"] = {"a": 2}
    assert not check_content_hash(hashed)


@pytest.mark.parametrize(
    "hashes",
    [None, "abc", {}, {"sha256": 5}, {"sha256": "!!!"}, {"sha256": "AAAA"}],
)
def test_check_content_hash_rejects_bad_hashes(hashes: Any) -> None:
    event: dict[str, Any] = {"type": "X", "content": {}}
    if hashes is not None:
        event["hashes"] = hashes
    assert not check_content_hash(event)


def test_check_content_hash_accepts_padded_base64() -> None:
    hashed = add_content_hash({"type": "X", "content": {}})
    hashed["hashes"]["sha256"] += "="
    assert check_content_hash(hashed)


def test_reference_hash_ignores_unsigned_signatures_and_redacted_content() -> None:
    event = add_content_hash(
        {
            "type": "m.room.message",
            "room_id": "!r:d",
            "sender": "@u:d",
            "content": {"body": "hi"},
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
            "origin_server_ts": 1,
        }
    )
    ref = compute_reference_hash(event, V11)
    noisy = dict(event, unsigned={"age_ts": 5}, signatures={"d": {"ed25519:1": "x"}}, age_ts=3)
    assert compute_reference_hash(noisy, V11) == ref
    # Redacting the event does not change its id: the hashes still cover the content.
    assert compute_reference_hash(dict(event, content={}), V11) == ref
    # ...but changing the hash does.
    assert compute_reference_hash(dict(event, hashes={"sha256": "x"}), V11) != ref


def test_event_id_format() -> None:
    event = add_content_hash({"type": "X", "content": {}, "room_id": "!r:d", "sender": "@u:d"})
    event_id = compute_event_id(event, V10)
    assert event_id.startswith("$")
    assert len(event_id) == 44
    assert "+" not in event_id and "/" not in event_id and "=" not in event_id


def test_event_id_depends_on_room_version_redaction_rules() -> None:
    event = add_content_hash({"type": "X", "content": {}, "origin": "d", "sender": "@u:d"})
    assert compute_event_id(event, V10) != compute_event_id(event, V11)
    assert compute_event_id(event, V11) == compute_event_id(event, V12)


def test_room_id_v12_is_create_event_id_with_bang() -> None:
    create = add_content_hash(
        {
            "type": "m.room.create",
            "state_key": "",
            "sender": "@u:d",
            "content": {"room_version": "12"},
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
            "origin_server_ts": 1,
        }
    )
    room_id = compute_room_id_v12(create)
    assert room_id == "!" + compute_event_id(create, V12)[1:]


@pytest.mark.parametrize(
    "event",
    [
        {"type": "m.room.member", "content": {}},
        {"type": "m.room.create", "content": {}, "room_id": "!x:d"},
    ],
)
def test_room_id_v12_rejects_non_create_or_room_id(event: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        compute_room_id_v12(event)


def test_sign_event_requires_content_hash() -> None:
    with pytest.raises(ValueError):
        sign_event({"type": "X", "content": {}}, "domain", KEY, V11)


def test_sign_event_co_signs_without_touching_hashes() -> None:
    origin_key = generate_signing_key("o")
    event = hash_and_sign_event(
        {"type": "m.room.member", "content": {"membership": "invite"}, "sender": "@a:o"},
        "o",
        origin_key,
        V12,
    )
    cosigned = sign_event(event, "domain", KEY, V12)
    assert cosigned["hashes"] == event["hashes"]
    assert set(cosigned["signatures"]) == {"o", "domain"}
    verify_event_signature(cosigned, "o", get_verify_key(origin_key), V12)
    verify_event_signature(cosigned, "domain", VERIFY_KEY, V12)
    assert "domain" not in event["signatures"]  # input untouched


def test_signature_survives_redaction_but_not_tampering() -> None:
    event = hash_and_sign_event(
        {"type": "m.room.message", "content": {"body": "x"}, "sender": "@a:domain"},
        "domain",
        KEY,
        V11,
    )
    verify_event_signature(dict(event, content={}), "domain", VERIFY_KEY, V11)
    verify_event_signature(dict(event, unsigned={"age": 1}), "domain", VERIFY_KEY, V11)
    with pytest.raises(SignatureError):
        verify_event_signature(dict(event, sender="@b:domain"), "domain", VERIFY_KEY, V11)
    with pytest.raises(SignatureError):
        verify_event_signature(event, "elsewhere", VERIFY_KEY, V11)
