"""JSON signing against the spec's cryptographic test vectors (appendices)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from crypto.errors import SignatureError
from crypto.json_signing import (
    encode_canonical_json,
    sign_json,
    signature_key_ids,
    verify_json_signature,
)
from crypto.signing_key import generate_signing_key, get_verify_key, signing_key_from_seed

SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = signing_key_from_seed(SPEC_SEED, "1")
VERIFY_KEY = get_verify_key(KEY)


def test_spec_vector_empty_object() -> None:
    assert sign_json({}, "domain", KEY) == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }


def test_spec_vector_data_values() -> None:
    assert sign_json({"one": 1, "two": "Two"}, "domain", KEY) == {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, b"{}"),
        ({"one": 1, "two": "Two"}, b'{"one":1,"two":"Two"}'),
        ({"b": "2", "a": "1"}, b'{"a":"1","b":"2"}'),
        ({"a": "日本語"}, '{"a":"日本語"}'.encode()),
        ({"本": 2, "日": 1}, '{"日":1,"本":2}'.encode()),
        ({"a": None}, b'{"a":null}'),
    ],
)
def test_canonical_json_spec_examples(value: dict[str, Any], expected: bytes) -> None:
    assert encode_canonical_json(value) == expected


def test_sign_does_not_mutate_input_and_keeps_other_signatures() -> None:
    obj = {"a": 1, "signatures": {"other": {"ed25519:x": "sig"}}, "unsigned": {"age": 5}}
    before = copy.deepcopy(obj)
    signed = sign_json(obj, "domain", KEY)
    assert obj == before
    assert signed["signatures"]["other"] == {"ed25519:x": "sig"}
    assert "ed25519:1" in signed["signatures"]["domain"]
    assert signed["unsigned"] == {"age": 5}
    verify_json_signature(signed, "domain", VERIFY_KEY)


def test_unsigned_and_signatures_are_not_covered() -> None:
    signed = sign_json({"a": 1}, "domain", KEY)
    signed["unsigned"] = {"age": 1234}
    signed["signatures"]["someone"] = {"ed25519:z": "abc"}
    verify_json_signature(signed, "domain", VERIFY_KEY)


def test_second_signer_adds_to_signatures() -> None:
    other = generate_signing_key("b")
    signed = sign_json(sign_json({"a": 1}, "domain", KEY), "other.org", other)
    verify_json_signature(signed, "domain", VERIFY_KEY)
    verify_json_signature(signed, "other.org", get_verify_key(other))
    assert signature_key_ids(signed, "other.org") == ["ed25519:b"]


def test_verify_rejects_tampered_object() -> None:
    signed = sign_json({"a": 1}, "domain", KEY)
    signed["a"] = 2
    with pytest.raises(SignatureError):
        verify_json_signature(signed, "domain", VERIFY_KEY)


@pytest.mark.parametrize(
    "obj",
    [
        {"a": 1},
        {"a": 1, "signatures": "nope"},
        {"a": 1, "signatures": {"domain": "nope"}},
        {"a": 1, "signatures": {"domain": {"ed25519:2": "x"}}},
        {"a": 1, "signatures": {"elsewhere": {"ed25519:1": "x"}}},
        {"a": 1, "signatures": {"domain": {"ed25519:1": "!!not base64!!"}}},
        {"a": 1, "signatures": {"domain": {"ed25519:1": 5}}},
    ],
)
def test_verify_rejects_missing_or_malformed_signatures(obj: dict[str, Any]) -> None:
    with pytest.raises(SignatureError):
        verify_json_signature(obj, "domain", VERIFY_KEY)


def test_verify_with_wrong_key_fails() -> None:
    signed = sign_json({"a": 1}, "domain", KEY)
    wrong = get_verify_key(generate_signing_key("1"))
    with pytest.raises(SignatureError):
        verify_json_signature(signed, "domain", wrong)


def test_signature_key_ids_filters_unknown_algorithms() -> None:
    obj = {"signatures": {"d": {"ed25519:1": "x", "unknown:2": "y"}}}
    assert signature_key_ids(obj, "d") == ["ed25519:1"]
    assert signature_key_ids(obj, "missing") == []
    assert signature_key_ids({}, "d") == []
