"""The server's ed25519 signing key, stored in Synapse's key file format.

A key file holds one key per line: ``ed25519 <version> <unpadded base64 seed>``.
The key id used in signatures is ``ed25519:<version>``.
"""

from __future__ import annotations

import os
import re
import secrets
import string

from signedjson.key import (
    NACL_ED25519,
    decode_signing_key_base64,
    decode_verify_key_base64,
    encode_signing_key_base64,
    encode_verify_key_base64,
    get_verify_key,
)
from signedjson.key import generate_signing_key as _generate_signing_key
from signedjson.key import read_signing_keys as _read_signing_keys
from signedjson.types import BaseKey, SigningKey, VerifyKey

__all__ = [
    "SigningKey",
    "VerifyKey",
    "decode_verify_key",
    "generate_signing_key",
    "get_verify_key",
    "key_id",
    "load_or_generate_signing_key",
    "read_signing_keys",
    "signing_key_from_seed",
    "verify_key_base64",
    "write_signing_key",
]

StrPath = str | os.PathLike[str]

# Key versions end up in key ids, URLs and the space-separated key file.
_KEY_VERSION_RE = re.compile(r"[A-Za-z0-9_]+")


def _check_version(version: str) -> None:
    if not _KEY_VERSION_RE.fullmatch(version):
        raise ValueError(f"invalid key version {version!r}: must match [A-Za-z0-9_]+")


def generate_signing_key(version: str | None = None) -> SigningKey:
    """Generate a new ed25519 key; without ``version`` pick a random one like ``a_AbCd``."""
    if version is None:
        version = "a_" + "".join(secrets.choice(string.ascii_letters) for _ in range(4))
    _check_version(version)
    return _generate_signing_key(version)


def signing_key_from_seed(seed_base64: str, version: str) -> SigningKey:
    """Build an ed25519 signing key from its base64 (padded or not) 32-byte seed."""
    _check_version(version)
    return decode_signing_key_base64(NACL_ED25519, version, seed_base64)


def read_signing_keys(path: StrPath) -> list[SigningKey]:
    """Read every key from a key file; blank lines are skipped.

    Raises ``ValueError`` naming the line on a malformed entry.
    """
    keys: list[SigningKey] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                parts = line.split()
                if len(parts) != 3:
                    raise ValueError("expected '<algorithm> <version> <seed>'")
                _check_version(parts[1])
                keys.extend(_read_signing_keys([line]))
            except ValueError as e:
                raise ValueError(f"{os.fspath(path)}:{lineno}: bad signing key: {e}") from e
    return keys


def write_signing_key(path: StrPath, key: SigningKey) -> None:
    """Write ``key`` to a new key file (mode 0600); never overwrite an existing file.

    Raises ``FileExistsError`` if ``path`` exists.
    """
    line = f"{key.alg} {key.version} {encode_signing_key_base64(key)}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(line)
    except BaseException:
        os.unlink(path)
        raise


def load_or_generate_signing_key(path: StrPath) -> SigningKey:
    """Return the first key of the key file, creating the file with a new key if missing."""
    if not os.path.exists(path):
        key = generate_signing_key()
        try:
            write_signing_key(path, key)
            return key
        except FileExistsError:
            pass  # someone else created it meanwhile: use theirs
    keys = read_signing_keys(path)
    if not keys:
        raise ValueError(f"{os.fspath(path)}: no signing keys in file")
    return keys[0]


def key_id(key: BaseKey) -> str:
    """The key id used in ``signatures`` and key responses, e.g. ``ed25519:a_AbCd``."""
    return f"{key.alg}:{key.version}"


def verify_key_base64(key: SigningKey) -> str:
    """The unpadded base64 public key matching ``key``."""
    return encode_verify_key_base64(get_verify_key(key))


def decode_verify_key(key_id: str, key_base64: str) -> VerifyKey:
    """Build a verify key from a key id (``ed25519:<version>``) and its base64 public key.

    Raises ``ValueError`` for an unsupported algorithm or a bad key.
    """
    algorithm, sep, version = key_id.partition(":")
    if not sep or not version:
        raise ValueError(f"invalid key id {key_id!r}")
    if algorithm != NACL_ED25519:
        raise ValueError(f"unsupported key algorithm {algorithm!r}")
    try:
        return decode_verify_key_base64(algorithm, version, key_base64)
    except ValueError:
        raise
    except Exception as e:  # nacl raises its own exception types for bad key bytes
        raise ValueError(f"invalid verify key for {key_id}: {e}") from e
