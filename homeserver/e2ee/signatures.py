"""Checking the signatures clients put on their keys (spec appendices, "Signing JSON").

Every check raises ``MatrixError(400, M_INVALID_SIGNATURE)`` on a bad or missing
signature, so callers can report it per key (``failure``) or for the whole request.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any

from signedjson.key import decode_verify_key_bytes
from signedjson.types import VerifyKey
from unpaddedbase64 import decode_base64

from crypto.errors import SignatureError
from crypto.json_signing import verify_json_signature
from homeserver.errors import Codes, MatrixError

INVALID_SIGNATURE = "M_INVALID_SIGNATURE"
WRONG_ROOM_KEYS_VERSION = "M_WRONG_ROOM_KEYS_VERSION"

JsonDict = dict[str, Any]


def invalid_signature(message: str = "Invalid signature") -> MatrixError:
    return MatrixError(400, INVALID_SIGNATURE, message)


def verify_key(key_id: str, public_key: Any) -> VerifyKey:
    """The ed25519 key ``key_id`` (``ed25519:<version>``) with this base64 public key."""
    algorithm, _, version = key_id.partition(":")
    if algorithm != "ed25519" or not version or not isinstance(public_key, str):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Unsupported or malformed key {key_id!r}")
    try:
        key: VerifyKey = decode_verify_key_bytes(key_id, decode_base64(public_key))
    except (ValueError, binascii.Error, TypeError):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Malformed public key for {key_id}") from None
    return key


def check_signature(obj: Mapping[str, Any], user_id: str, key: VerifyKey) -> None:
    try:
        verify_json_signature(obj, user_id, key)
    except (SignatureError, ValueError) as e:
        raise invalid_signature(f"Invalid signature: {e}") from None


def same_key(signed: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Whether two copies of a key agree on everything but signatures and unsigned."""
    strip = ("signatures", "unsigned")
    return {k: v for k, v in signed.items() if k not in strip} == {
        k: v for k, v in stored.items() if k not in strip
    }


def failure(error: MatrixError) -> JsonDict:
    """One entry of a ``failures`` map."""
    return {"status": error.status, "errcode": error.errcode, "error": error.message}


def cross_signing_public_key(key: Mapping[str, Any]) -> tuple[str, VerifyKey]:
    """(key id, verify key) of a CrossSigningKey: exactly one ``ed25519:<pub>`` entry whose
    value is ``<pub>``."""
    keys = key.get("keys")
    if not isinstance(keys, Mapping) or len(keys) != 1:
        raise MatrixError(400, Codes.INVALID_PARAM, "A cross-signing key must hold one key")
    key_id, public = next(iter(keys.items()))
    if not isinstance(key_id, str) or key_id.partition(":")[2] != public:
        raise MatrixError(
            400, Codes.INVALID_PARAM, "Cross-signing key id must be ed25519:<public key>"
        )
    return key_id, verify_key(key_id, public)
