"""Content hashes, reference hashes, event ids and event signatures.

See the server-server API "Signing Events" section and the room version pages
(event ids are the URL-safe base64 reference hash, v4+ format).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from signedjson.types import SigningKey, VerifyKey

from crypto.json_signing import JsonDict, encode_canonical_json, sign_json, verify_json_signature
from homeserver.events.redaction import prune_event
from homeserver.events.room_versions import EVENT_FORMAT_V3, ROOM_VERSIONS, RoomVersion

__all__ = [
    "add_content_hash",
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
    "compute_room_id_v12",
    "hash_and_sign_event",
    "new_legacy_event_id",
    "sign_event",
    "verify_event_signature",
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def _b64_urlsafe(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_decode(text: str) -> bytes:
    """Decode standard base64, padded or not (raises ``ValueError`` on bad input)."""
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.encode("ascii"), validate=True)


def compute_content_hash(event: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of ``event`` without ``unsigned``, ``signatures``, ``hashes``."""
    stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(stripped)).digest()


def add_content_hash(event: Mapping[str, Any]) -> JsonDict:
    """Return a copy of ``event`` with ``hashes.sha256`` set to its content hash."""
    out = dict(event)
    old = event.get("hashes")
    hashes = dict(old) if isinstance(old, Mapping) else {}
    hashes["sha256"] = _b64(compute_content_hash(event))
    out["hashes"] = hashes
    return out


def check_content_hash(event: Mapping[str, Any]) -> bool:
    """True if ``hashes.sha256`` is present, decodes, and matches the content hash."""
    hashes = event.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        return False
    try:
        claimed_bytes = _b64_decode(claimed)
    except (ValueError, binascii.Error):
        return False
    try:
        actual = compute_content_hash(event)
    except (TypeError, ValueError):  # not encodable as canonical JSON
        return False
    return hmac.compare_digest(claimed_bytes, actual)


def compute_reference_hash(event: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """SHA-256 of the redacted event without ``signatures``, ``unsigned`` and ``age_ts``."""
    pruned = prune_event(event, room_version)
    for key in ("signatures", "unsigned", "age_ts"):
        pruned.pop(key, None)
    return hashlib.sha256(encode_canonical_json(pruned)).digest()


def compute_event_id(event: Mapping[str, Any], room_version: RoomVersion) -> str:
    """The event id of ``event`` in ``room_version``.

    v4+: ``$`` + URL-safe unpadded base64 of the reference hash; v3: the same in
    standard base64. v1, v2: the event's own ``event_id`` field (covered by its hashes
    and signatures); ``ValueError`` if it has none.
    """
    if room_version.event_id_in_event:
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("a room version 1 or 2 event must carry its event_id")
        return event_id
    digest = compute_reference_hash(event, room_version)
    if room_version.event_format == EVENT_FORMAT_V3:
        return "$" + _b64(digest)
    return "$" + _b64_urlsafe(digest)


def new_legacy_event_id(server_name: str) -> str:
    """A fresh event id for an event this server creates in a v1/v2 room: ``$random:server``."""
    return f"${secrets.token_urlsafe(18)}:{server_name}"


def compute_room_id_v12(create_event: Mapping[str, Any]) -> str:
    """Room id of a v12 room: the create event's event id with ``!`` instead of ``$``.

    Raises ``ValueError`` if the event is not an ``m.room.create`` event or has a
    ``room_id`` (v12 create events must not carry one).
    """
    if create_event.get("type") != "m.room.create":
        raise ValueError("not an m.room.create event")
    if "room_id" in create_event:
        raise ValueError("a room version 12 m.room.create event must not have a room_id")
    return "!" + _b64_urlsafe(compute_reference_hash(create_event, ROOM_VERSIONS["12"]))


def sign_event(
    event: Mapping[str, Any], server_name: str, key: SigningKey, room_version: RoomVersion
) -> JsonDict:
    """Return a copy of ``event`` with ``server_name``'s signature over its redacted form.

    Existing signatures and ``hashes`` are kept as they are (so this also co-signs
    events from other servers). The event must already carry ``hashes.sha256``;
    use :func:`hash_and_sign_event` for a new event.
    """
    hashes = event.get("hashes")
    if not isinstance(hashes, Mapping) or not isinstance(hashes.get("sha256"), str):
        raise ValueError("event has no hashes.sha256: add the content hash before signing")
    signed_redacted = sign_json(prune_event(event, room_version), server_name, key)
    out = dict(event)
    out["signatures"] = signed_redacted["signatures"]
    return out


def hash_and_sign_event(
    event: Mapping[str, Any], server_name: str, key: SigningKey, room_version: RoomVersion
) -> JsonDict:
    """Add the content hash, then sign: what a server does to an event it creates.

    In v1/v2 rooms an event without an ``event_id`` gets a new ``$random:server_name``
    one first (it is part of what is hashed and signed).
    """
    if room_version.event_id_in_event and not isinstance(event.get("event_id"), str):
        event = {**event, "event_id": new_legacy_event_id(server_name)}
    return sign_event(add_content_hash(event), server_name, key, room_version)


def verify_event_signature(
    event: Mapping[str, Any], server_name: str, verify_key: VerifyKey, room_version: RoomVersion
) -> None:
    """Check ``server_name``'s signature (by ``verify_key``) on the redacted event.

    Raises ``SignatureError`` if it is missing or does not verify.
    """
    verify_json_signature(prune_event(event, room_version), server_name, verify_key)
