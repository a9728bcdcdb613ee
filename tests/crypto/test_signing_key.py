"""Signing key file handling (Synapse key file format)."""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pytest

from crypto.json_signing import sign_json, verify_json_signature
from crypto.signing_key import (
    SigningKey,
    decode_verify_key,
    generate_signing_key,
    get_verify_key,
    key_id,
    load_or_generate_signing_key,
    read_signing_keys,
    signing_key_from_seed,
    verify_key_base64,
    write_signing_key,
)

SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"


def test_generate_random_version() -> None:
    key = generate_signing_key()
    assert re.fullmatch(r"a_[A-Za-z]{4}", key.version)
    assert key.alg == "ed25519"
    assert key_id(key) == f"ed25519:{key.version}"


def test_generate_explicit_version() -> None:
    key = generate_signing_key("auto_1")
    assert key_id(key) == "ed25519:auto_1"


@pytest.mark.parametrize("version", ["", "a b", "a:b", "ä"])
def test_generate_rejects_bad_version(version: str) -> None:
    with pytest.raises(ValueError):
        generate_signing_key(version)


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "server.signing.key"
    key = generate_signing_key("a_Test")
    write_signing_key(path, key)
    text = path.read_text()
    assert re.fullmatch(r"ed25519 a_Test [A-Za-z0-9+/]{43}\n", text)
    (loaded,) = read_signing_keys(path)
    assert key_id(loaded) == "ed25519:a_Test"
    assert loaded.encode() == key.encode()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("keep me\n")
    with pytest.raises(FileExistsError):
        write_signing_key(path, generate_signing_key())
    assert path.read_text() == "keep me\n"


def test_read_synapse_format_with_several_keys(tmp_path: Path) -> None:
    other = generate_signing_key("a_Zzzz")
    path = tmp_path / "k"
    path.write_text(f"ed25519 1 {SPEC_SEED}\n\n{other.alg} {other.version} {padded_seed(other)}\n")
    keys = read_signing_keys(path)
    assert [key_id(k) for k in keys] == ["ed25519:1", "ed25519:a_Zzzz"]
    assert keys[1].encode() == other.encode()


def padded_seed(key: SigningKey) -> str:
    """Seed of ``key`` as padded base64 (readers must accept padding too)."""
    return base64.b64encode(key.encode()).decode()


@pytest.mark.parametrize(
    "line",
    [
        "ed25519 1\n",
        "ed25519 1 AAAA extra\n",
        "rsa 1 " + SPEC_SEED + "\n",
        "ed25519 1 not*base64\n",
        "ed25519 1 AAAA\n",  # too short for a seed
    ],
)
def test_read_rejects_malformed_lines(tmp_path: Path, line: str) -> None:
    path = tmp_path / "k"
    path.write_text(line)
    with pytest.raises(ValueError, match=r":1: bad signing key"):
        read_signing_keys(path)


def test_load_or_generate_creates_then_reuses(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = load_or_generate_signing_key(path)
    assert path.exists()
    second = load_or_generate_signing_key(path)
    assert key_id(first) == key_id(second)
    assert first.encode() == second.encode()


def test_load_returns_first_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(f"ed25519 first {SPEC_SEED}\n")
    with path.open("a") as f:
        other = generate_signing_key("second")
        f.write(f"ed25519 second {padded_seed(other)}\n")
    assert key_id(load_or_generate_signing_key(path)) == "ed25519:first"


def test_load_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("\n")
    with pytest.raises(ValueError, match="no signing keys"):
        load_or_generate_signing_key(path)


def test_verify_key_base64_matches_decoded_key() -> None:
    key = signing_key_from_seed(SPEC_SEED, "1")
    public = verify_key_base64(key)
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}", public)
    assert public == verify_key_base64(signing_key_from_seed(SPEC_SEED, "other"))
    verify_key = decode_verify_key("ed25519:1", public)
    assert verify_key.encode() == get_verify_key(key).encode()
    verify_json_signature(sign_json({"a": 1}, "domain", key), "domain", verify_key)


@pytest.mark.parametrize(
    ("kid", "b64"),
    [("ed25519", "AAAA"), ("curve25519:1", "AAAA"), ("ed25519:1", "AAAA"), ("ed25519:1", "!!")],
)
def test_decode_verify_key_rejects_bad_input(kid: str, b64: str) -> None:
    with pytest.raises(ValueError):
        decode_verify_key(kid, b64)
