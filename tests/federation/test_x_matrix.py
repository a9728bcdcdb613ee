"""X-Matrix headers: parsing in any parameter order, and Synapse's real requests verify."""

from __future__ import annotations

import json

import pytest
from signedjson.key import generate_signing_key, get_verify_key

from crypto.errors import SignatureError
from crypto.json_signing import verify_json_signature
from crypto.signing_key import decode_verify_key
from federation.x_matrix import (
    XMatrixParseError,
    parse_x_matrix,
    request_json,
    sign_request,
)
from tests.support.samples import SAMPLES, samples_missing_reason

needs_samples = pytest.mark.skipif(
    samples_missing_reason() is not None, reason=str(samples_missing_reason())
)


@needs_samples
@pytest.mark.parametrize("name", ["x_matrix_put_send.json", "x_matrix_get_make_join.json"])
def test_synapse_request_signature_verifies(name: str) -> None:
    sample = json.loads((SAMPLES / name).read_text())
    auth = parse_x_matrix(sample["request_headers"]["Authorization"])
    assert auth.origin == sample["authorization_params"]["origin"]
    assert auth.destination == sample["authorization_params"]["destination"]
    body = json.loads(sample["request_body_raw"]) if sample["request_body_raw"] else None
    signed = request_json(
        sample["method"], sample["uri"], auth.origin, auth.destination or "", body
    )
    assert signed == {k: v for k, v in sample["signed_json"].items() if k != "signatures"}
    signed["signatures"] = {auth.origin: {auth.key: auth.sig}}
    ((kid, b64),) = sample["origin_verify_key"].items()
    verify_json_signature(signed, auth.origin, decode_verify_key(kid, b64))


@needs_samples
def test_tampered_request_does_not_verify() -> None:
    sample = json.loads((SAMPLES / "x_matrix_get_make_join.json").read_text())
    auth = parse_x_matrix(sample["request_headers"]["Authorization"])
    signed = request_json("GET", sample["uri"] + "x", auth.origin, auth.destination or "", None)
    signed["signatures"] = {auth.origin: {auth.key: auth.sig}}
    ((kid, b64),) = sample["origin_verify_key"].items()
    with pytest.raises(SignatureError):
        verify_json_signature(signed, auth.origin, decode_verify_key(kid, b64))


@pytest.mark.parametrize(
    "header",
    [
        'X-Matrix origin="a.org",key="ed25519:1",sig="abc",destination="b.org"',
        'X-Matrix destination="b.org", sig="abc" ,key="ed25519:1",origin="a.org"',
        "X-Matrix origin=a.org,key=ed25519:1,sig=abc,destination=b.org",
        'x-matrix origin="a.org",key="ed25519:1",sig="abc",destination="b.org"',
    ],
)
def test_parse_any_order_and_quoting(header: str) -> None:
    auth = parse_x_matrix(header)
    assert (auth.origin, auth.key, auth.sig, auth.destination) == (
        "a.org",
        "ed25519:1",
        "abc",
        "b.org",
    )


@pytest.mark.parametrize(
    "header",
    ["Bearer abc", 'X-Matrix key="ed25519:1",sig="abc"', 'X-Matrix origin="a.org",,', ""],
)
def test_parse_rejects_malformed(header: str) -> None:
    with pytest.raises(XMatrixParseError):
        parse_x_matrix(header)


def test_sign_request_round_trip() -> None:
    key = generate_signing_key("k1")
    header = sign_request(key, "PUT", "/_matrix/federation/v1/send/1", "a.org", "b.org", {"x": 1})
    auth = parse_x_matrix(header)
    signed = request_json("PUT", "/_matrix/federation/v1/send/1", "a.org", "b.org", {"x": 1})
    signed["signatures"] = {"a.org": {auth.key: auth.sig}}
    verify_json_signature(signed, "a.org", get_verify_key(key))
