"""Signing and verifying JSON objects (spec appendices, "Signing JSON").

``signatures`` and ``unsigned`` are not covered by a signature; everything else
is, encoded as canonical JSON. The work is done by signedjson/canonicaljson.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canonicaljson import encode_canonical_json
from signedjson.key import SUPPORTED_ALGORITHMS
from signedjson.sign import SignatureVerifyException, verify_signed_json
from signedjson.sign import sign_json as _sign_json
from signedjson.types import SigningKey, VerifyKey

from crypto.errors import SignatureError

__all__ = [
    "JsonDict",
    "SignatureError",
    "encode_canonical_json",
    "sign_json",
    "signature_key_ids",
    "verify_json_signature",
]

JsonDict = dict[str, Any]


def _copy_signatures(obj: Mapping[str, Any]) -> JsonDict:
    """Shallow copy of ``obj`` whose ``signatures`` maps are fresh dicts we may mutate."""
    out = dict(obj)
    if "signatures" in out:
        sigs = out["signatures"]
        if not isinstance(sigs, Mapping) or not all(isinstance(v, Mapping) for v in sigs.values()):
            raise ValueError("'signatures' must be an object of objects")
        out["signatures"] = {name: dict(by_key) for name, by_key in sigs.items()}
    return out


def sign_json(obj: Mapping[str, Any], signer_name: str, key: SigningKey) -> JsonDict:
    """Return a copy of ``obj`` with ``key``'s signature added under ``signatures[signer_name]``.

    Existing signatures are kept; ``unsigned`` is carried over but not signed.
    The input is not modified.
    """
    return _sign_json(_copy_signatures(obj), signer_name, key)


def signature_key_ids(obj: Mapping[str, Any], signer_name: str) -> list[str]:
    """Key ids with a supported algorithm under ``signatures[signer_name]`` (may be empty)."""
    sigs = obj.get("signatures")
    if not isinstance(sigs, Mapping):
        return []
    by_key = sigs.get(signer_name)
    if not isinstance(by_key, Mapping):
        return []
    return [k for k in by_key if isinstance(k, str) and k.split(":", 1)[0] in SUPPORTED_ALGORITHMS]


def verify_json_signature(obj: Mapping[str, Any], signer_name: str, verify_key: VerifyKey) -> None:
    """Check ``signer_name``'s signature made with ``verify_key`` (its ``alg:version`` picks it).

    Raises ``SignatureError`` if the signature is missing, malformed or invalid.
    """
    key_id = f"{verify_key.alg}:{verify_key.version}"
    sigs = obj.get("signatures")
    if not isinstance(sigs, Mapping):
        raise SignatureError("no signatures on this object")
    by_key = sigs.get(signer_name)
    if not isinstance(by_key, Mapping):
        raise SignatureError(f"no signatures from {signer_name}")
    if not isinstance(by_key.get(key_id), str):
        raise SignatureError(f"missing signature for {signer_name}, {key_id}")
    try:
        verify_signed_json(dict(obj), signer_name, verify_key)
    except SignatureVerifyException as e:
        raise SignatureError(str(e)) from e
    except (TypeError, ValueError) as e:  # e.g. the object cannot be canonical-JSON encoded
        raise SignatureError(f"cannot verify signature for {signer_name}, {key_id}: {e}") from e
