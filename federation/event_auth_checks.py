"""The checks on receipt of a PDU, as pure-ish helpers shared by /send, send_join and
backfill: format, hashes (a bad content hash means we keep the redacted form), the
signatures the spec requires, and auth against a given state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crypto.event_hashing import check_content_hash
from federation.interfaces import Keyring, SignatureVerifyError
from homeserver.events.auth_rules import AuthError, check_auth_rules
from homeserver.events.format import EventFormatError, validate_pdu_format
from homeserver.events.redaction import has_redact_power, prune_event
from homeserver.events.room_versions import RoomVersion

JsonDict = dict[str, Any]
StateKey = tuple[str, str]


class PduRejected(Exception):
    """The PDU must be dropped (format, signature) — never persisted."""


class PduFormatRejected(PduRejected):
    """Dropped for its format (a float, an oversized field...): the sender's request was
    malformed, ``errcode`` says how (M_BAD_JSON mostly)."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


# What a remote server may tell us in ``unsigned`` (nothing else of it is trusted).
KEPT_UNSIGNED_KEYS = ("invite_room_state", "knock_room_state")


def strip_unsigned(pdu: JsonDict) -> JsonDict:
    """The PDU without the unsigned data a remote server may not dictate (``age``,
    ``redacted_because``, relations...); stripped state of a membership event stays."""
    unsigned = pdu.get("unsigned")
    if unsigned is None:
        return pdu
    stripped = {k: v for k, v in pdu.items() if k != "unsigned"}
    if pdu.get("type") == "m.room.member" and isinstance(unsigned, dict):
        kept = {k: unsigned[k] for k in KEPT_UNSIGNED_KEYS if k in unsigned}
        if kept:
            stripped["unsigned"] = kept
    return stripped


async def check_pdu(pdu: JsonDict, room_version: RoomVersion, keyring: Keyring) -> JsonDict:
    """Format, signatures and hashes; return the PDU to use (redacted on a bad hash,
    always without remote ``unsigned`` data)."""
    pdu = strip_unsigned(pdu)
    try:
        validate_pdu_format(pdu, room_version)
    except EventFormatError as e:
        raise PduFormatRejected(e.errcode, f"bad format: {e.message}") from None
    # The signatures cover the redacted form, so check them on it.
    redacted = prune_event(pdu, room_version)
    servers = {server_of(str(pdu.get("sender", "")))}
    authoriser = (pdu.get("content") or {}).get("join_authorised_via_users_server")
    if (
        pdu.get("type") == "m.room.member"
        and (pdu.get("content") or {}).get("membership") == "join"
        and isinstance(authoriser, str)
    ):
        servers.add(server_of(authoriser))
    for server in servers:
        try:
            await keyring.verify_json_for_server(
                server, redacted, valid_at_ms=int(pdu.get("origin_server_ts", 0))
            )
        except SignatureVerifyError as e:
            raise PduRejected(f"bad signature from {server}: {e}") from None
    if not check_content_hash(pdu):
        return {**redacted, "hashes": pdu.get("hashes", {})}
    return pdu


def auth_failure(
    pdu_with_id: JsonDict,
    state: dict[StateKey, JsonDict],
    room_version: RoomVersion,
    create_event: JsonDict | None,
) -> str | None:
    """None if the event passes the auth rules against ``state``, else the reason."""
    try:
        check_auth_rules(pdu_with_id, state, room_version, create_event=create_event)
    except AuthError as e:
        return e.message
    return None


def redact_power_at(
    pdu_with_id: JsonDict,
    states: Sequence[dict[StateKey, JsonDict]],
    room_version: RoomVersion,
    create_event: JsonDict | None,
) -> bool:
    """Whether a redaction's sender holds the ``redact`` level in every one of
    ``states`` (its auth events and the state before it, both checked as Synapse's
    ``check_redaction``); False for other events. Kept on the event: the redaction
    applies later only with it or from the target sender's server."""
    return all(has_redact_power(pdu_with_id, s, room_version, create_event) for s in states)
