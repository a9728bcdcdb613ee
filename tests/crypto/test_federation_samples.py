"""Real Synapse 1.163.2 federation traffic: hashes, ids and signatures must match exactly.

Samples live in /work/shared/federation-samples (override with FEDERATION_SAMPLES);
the tests are skipped when the directory is absent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from crypto.event_hashing import (
    check_content_hash,
    compute_event_id,
    compute_room_id_v12,
    verify_event_signature,
)
from crypto.json_signing import verify_json_signature
from crypto.signing_key import VerifyKey, decode_verify_key
from homeserver.events.format import validate_pdu_format
from homeserver.events.redaction import prune_event
from homeserver.events.room_versions import ROOM_VERSIONS
from tests.support.samples import SAMPLES  # noqa: E402

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"no samples at {SAMPLES}")

V12 = ROOM_VERSIONS["12"]
ROOM_ID_V12 = "!KJPSgD46LrH3qS6yyCqpCXuFuOGUSzOMaRGohIpqfGo"
PDU_FILES = sorted(p.name for p in SAMPLES.glob("pdu_*.json")) if SAMPLES.is_dir() else []


def load(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def server_keys() -> dict[str, dict[str, VerifyKey]]:
    """server name -> key id -> verify key, from the self-signed key responses."""
    out: dict[str, dict[str, VerifyKey]] = {}
    for name in ("key_v2_server_A.json", "key_v2_server_B.json"):
        resp = load(name)
        out[resp["server_name"]] = {
            kid: decode_verify_key(kid, v["key"]) for kid, v in resp["verify_keys"].items()
        }
    return out


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1]


def check_origin_signature(event: dict[str, Any], room_version_id: str) -> None:
    origin = server_of(event["sender"])
    keys = server_keys()[origin]
    assert set(event["signatures"][origin]) <= set(keys)
    for verify_key in keys.values():
        verify_event_signature(event, origin, verify_key, ROOM_VERSIONS[room_version_id])


def v12_room_events() -> list[dict[str, Any]]:
    """Every full PDU of the v12 room in the send_join and invite exchanges."""
    join = load("exchange_put_fed_v2_send_join.json")
    invite = load("exchange_put_fed_v2_invite.json")
    body = join["response_body"]
    return [
        *body["state"],
        *body["auth_chain"],
        body["event"],
        join["request_body"],
        *invite["request_body"]["invite_room_state"],
        invite["request_body"]["event"],
        invite["response_body"]["event"],
    ]


def test_sample_list_is_complete() -> None:
    assert len(PDU_FILES) == 10
    assert {n for n in PDU_FILES if n.startswith("pdu_send_join_")} == {
        "pdu_send_join_member_v10.json",
        "pdu_send_join_member_v11.json",
        "pdu_send_join_member_v12.json",
    }


@pytest.mark.parametrize("name", ["key_v2_server_A.json", "key_v2_server_B.json"])
def test_key_responses_are_self_signed(name: str) -> None:
    resp = load(name)
    for kid, v in resp["verify_keys"].items():
        verify_json_signature(resp, resp["server_name"], decode_verify_key(kid, v["key"]))


@pytest.mark.parametrize("name", PDU_FILES)
def test_pdu_content_hash(name: str) -> None:
    assert check_content_hash(load(name)["pdu"])


@pytest.mark.parametrize("name", PDU_FILES)
def test_pdu_event_id(name: str) -> None:
    sample = load(name)
    rv = ROOM_VERSIONS[sample["room_version"]]
    assert compute_event_id(sample["pdu"], rv) == sample["event_id"]


@pytest.mark.parametrize("name", PDU_FILES)
def test_pdu_origin_signature(name: str) -> None:
    sample = load(name)
    check_origin_signature(sample["pdu"], sample["room_version"])


@pytest.mark.parametrize("name", PDU_FILES)
def test_pdu_redacted_signed_form(name: str) -> None:
    sample = load(name)
    rv = ROOM_VERSIONS[sample["room_version"]]
    assert prune_event(sample["pdu"], rv) == sample["redacted_signed_form"]


@pytest.mark.parametrize("name", PDU_FILES)
def test_pdu_format_is_valid(name: str) -> None:
    sample = load(name)
    validate_pdu_format(sample["pdu"], ROOM_VERSIONS[sample["room_version"]])


def test_v12_room_id_from_create_event() -> None:
    creates = [e for e in v12_room_events() if e["type"] == "m.room.create"]
    assert len(creates) == 2  # in send_join state and in invite_room_state
    for create in creates:
        assert "room_id" not in create
        assert compute_room_id_v12(create) == ROOM_ID_V12
        assert compute_event_id(create, V12) == "$" + ROOM_ID_V12[1:]


def test_v12_every_event_checks_out() -> None:
    for event in v12_room_events():
        assert check_content_hash(event), event["type"]
        check_origin_signature(event, "12")
        validate_pdu_format(event, V12)
        if event["type"] != "m.room.create":
            assert event["room_id"] == ROOM_ID_V12


def test_v12_event_ids_resolve_every_reference() -> None:
    """Each auth/prev event id cited in the exchange is the id we compute for some event."""
    events = v12_room_events()
    ids = {compute_event_id(e, V12): e for e in events}
    cited = {ref for e in events for ref in e["auth_events"] + e["prev_events"]}
    assert cited <= set(ids)
    # The send_join path names the joining event's id.
    join = load("exchange_put_fed_v2_send_join.json")
    assert "%24" + compute_event_id(join["request_body"], V12)[1:] in join["path"]
    # v12 events never cite the create event in auth_events.
    create_id = "$" + ROOM_ID_V12[1:]
    assert all(create_id not in e["auth_events"] for e in events)


def test_v12_invite_is_co_signed_by_invitee_server() -> None:
    event = load("exchange_put_fed_v2_invite.json")["response_body"]["event"]
    keys = server_keys()
    assert set(event["signatures"]) == set(keys)
    for server, by_id in keys.items():
        for verify_key in by_id.values():
            verify_event_signature(event, server, verify_key, V12)


def test_v12_redaction_keeps_ids_and_signatures_of_state_events() -> None:
    """Redacting real state events keeps their event id and origin signature valid."""
    seen_types = set()
    for event in v12_room_events():
        pruned = prune_event(event, V12)
        assert "unsigned" not in pruned
        assert compute_event_id(pruned, V12) == compute_event_id(event, V12)
        check_origin_signature(pruned, "12")
        # The content hash only still matches if redaction removed nothing from content.
        assert check_content_hash(pruned) == (pruned["content"] == event["content"])
        seen_types.add(event["type"])
    assert {
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.name",
        "m.room.guest_access",
    } <= seen_types


def test_v12_redaction_of_sample_state_content() -> None:
    by_type = {(e["type"], e.get("state_key")): e for e in v12_room_events()}
    pl = by_type[("m.room.power_levels", "")]
    pruned_pl = prune_event(pl, V12)["content"]
    assert "invite" in pruned_pl and pruned_pl["invite"] == pl["content"]["invite"]
    assert set(pruned_pl) <= {
        "ban",
        "events",
        "events_default",
        "invite",
        "kick",
        "redact",
        "state_default",
        "users",
        "users_default",
    }
    assert prune_event(by_type[("m.room.create", "")], V12)["content"] == {"room_version": "12"}
    assert prune_event(by_type[("m.room.name", "")], V12)["content"] == {}
    assert prune_event(by_type[("m.room.guest_access", "")], V12)["content"] == {}
    assert prune_event(by_type[("m.room.join_rules", "")], V12)["content"] == {
        "join_rule": "invite"
    }
    assert prune_event(by_type[("m.room.history_visibility", "")], V12)["content"] == {
        "history_visibility": "shared"
    }
    bob = by_type[("m.room.member", "@bob_c6b4a242e:127.0.0.1:39448")]
    assert prune_event(bob, V12)["content"] == {"membership": bob["content"]["membership"]}
