"""A fake E2EE client device for tests: real ed25519 keys and signatures (signedjson),
random curve25519 public keys, helpers to upload, query and claim over HTTP."""

from __future__ import annotations

import os
from typing import Any

from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from signedjson.types import SigningKey
from unpaddedbase64 import encode_base64

from tests.support.client import Client, Response

V3 = "/_matrix/client/v3"
ALGORITHMS = ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"]


def random_curve25519() -> str:
    return encode_base64(os.urandom(32))


class FakeDevice:
    """The public half of a device's crypto, able to sign like the real thing."""

    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.signing_key = generate_signing_key(device_id)
        self.ed25519 = encode_verify_key_base64(get_verify_key(self.signing_key))
        self.curve25519 = random_curve25519()
        self._next_key = 0

    @classmethod
    def of(cls, client: Client) -> FakeDevice:
        assert client.user_id and client.device_id
        return cls(client.user_id, client.device_id)

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        return dict(sign_json(dict(obj), self.user_id, self.signing_key))

    def device_keys(self) -> dict[str, Any]:
        return self.sign(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": ALGORITHMS,
                "keys": {
                    f"curve25519:{self.device_id}": self.curve25519,
                    f"ed25519:{self.device_id}": self.ed25519,
                },
            }
        )

    def one_time_keys(self, count: int) -> dict[str, Any]:
        out = {}
        for _ in range(count):
            self._next_key += 1
            key_id = f"signed_curve25519:AAAA{self._next_key:04d}"
            out[key_id] = self.sign({"key": random_curve25519()})
        return out

    def fallback_key(self) -> dict[str, Any]:
        self._next_key += 1
        key_id = f"signed_curve25519:FB{self._next_key:04d}"
        return {key_id: self.sign({"key": random_curve25519(), "fallback": True})}


class CrossSigningKey:
    """A cross-signing key pair: its id is ``ed25519:<public key>``."""

    def __init__(self, user_id: str, usage: str) -> None:
        self.user_id = user_id
        self.usage = usage
        self.signing_key: SigningKey = generate_signing_key("x")
        self.public = encode_verify_key_base64(get_verify_key(self.signing_key))
        self.signing_key.version = self.public
        self.key_id = f"ed25519:{self.public}"

    def public_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "usage": [self.usage], "keys": {self.key_id: self.public}}

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        return dict(sign_json(dict(obj), self.user_id, self.signing_key))


def cross_signing_set(user_id: str) -> tuple[CrossSigningKey, CrossSigningKey, CrossSigningKey]:
    return (
        CrossSigningKey(user_id, "master"),
        CrossSigningKey(user_id, "self_signing"),
        CrossSigningKey(user_id, "user_signing"),
    )


def signing_upload_body(
    master: CrossSigningKey, ssk: CrossSigningKey, usk: CrossSigningKey
) -> dict[str, Any]:
    return {
        "master_key": master.public_json(),
        "self_signing_key": master.sign(ssk.public_json()),
        "user_signing_key": master.sign(usk.public_json()),
    }


async def upload(client: Client, body: dict[str, Any]) -> Response:
    return await client.post(f"{V3}/keys/upload", body)


async def upload_device(
    client: Client, device: FakeDevice, *, otks: int = 0, fallback: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {"device_keys": device.device_keys()}
    if otks:
        body["one_time_keys"] = device.one_time_keys(otks)
    if fallback:
        body["fallback_keys"] = device.fallback_key()
    resp = await upload(client, body)
    assert resp.code == 200, resp
    return dict(resp.json)


async def query(client: Client, device_keys: dict[str, list[str]]) -> dict[str, Any]:
    resp = await client.post(f"{V3}/keys/query", {"device_keys": device_keys})
    assert resp.code == 200, resp
    return dict(resp.json)


async def claim(client: Client, wanted: dict[str, dict[str, str]]) -> Response:
    return await client.post(f"{V3}/keys/claim", {"one_time_keys": wanted})
