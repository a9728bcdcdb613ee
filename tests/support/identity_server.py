"""A fake identity server (Identity Service API v2): a real HTTPS server on loopback.

It keeps bindings (medium, address) -> mxid, stores third-party invites and signs what
it hands out with an ed25519 key (``ed25519:0``), like SyTest's. ``rotate_keys`` makes
the old key invalid at ``/pubkey/isvalid``; ``requests`` records every request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from twisted.internet import reactor, ssl
from twisted.web import resource, server
from unpaddedbase64 import encode_base64

from tests.support.federation import write_self_signed_cert

JsonDict = dict[str, Any]
ACCESS_TOKEN = "is-token"
PEPPER = "matrixrocks"


@dataclass
class FakeIdentityServer:
    port: int = 0
    key: Any = None
    valid_keys: set[str] = field(default_factory=set)
    bindings: dict[tuple[str, str], str] = field(default_factory=dict)
    invites: list[JsonDict] = field(default_factory=list)
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)  # sid -> 3pid
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    listener: Any = None
    next_token: int = 0

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def public_key(self) -> str:
        return encode_base64(get_verify_key(self.key).encode())

    def rotate_keys(self) -> None:
        self.key = generate_signing_key("0")
        self.valid_keys = {self.public_key}

    def sign(self, obj: JsonDict) -> JsonDict:
        return sign_json(obj, self.name, self.key)

    def validated_session(self, medium: str, address: str) -> str:
        sid = f"session{len(self.sessions)}"
        self.sessions[sid] = (medium, address)
        return sid

    def onbind_body(self, medium: str, address: str, mxid: str) -> JsonDict:
        """What the identity server POSTs to ``/3pid/onbind`` once the address is bound."""
        self.bindings[(medium, address)] = mxid
        invites = []
        for invite in self.invites:
            if (invite["medium"], invite["address"]) != (medium, address):
                continue
            signed = self.sign({"mxid": mxid, "token": invite["token"]})
            invites.append({**invite, "mxid": mxid, "signed": signed})
        return self.sign({"medium": medium, "address": address, "mxid": mxid, "invites": invites})

    # HTTP -------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, args: dict[str, list[str]], auth: str | None, body: Any
    ) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        v2 = "/_matrix/identity/v2"
        if path == f"{v2}/pubkey/isvalid":
            return 200, {"valid": args.get("public_key", [""])[0] in self.valid_keys}
        if path == f"{v2}/3pid/unbind":
            threepid = body.get("threepid") or {}
            key = (threepid.get("medium"), threepid.get("address"))
            if self.bindings.get(key) != body.get("mxid"):
                return 404, {"errcode": "M_NOT_FOUND", "error": "Not bound"}
            del self.bindings[key]
            return 200, {}
        if auth != f"Bearer {ACCESS_TOKEN}":
            return 401, {"errcode": "M_UNAUTHORIZED", "error": "Bad token"}
        if path == f"{v2}/hash_details":
            return 200, {"lookup_pepper": PEPPER, "algorithms": ["none", "sha256"]}
        if path == f"{v2}/lookup":
            mappings = {}
            for wanted in body["addresses"]:
                for (medium, address), mxid in self.bindings.items():
                    digest = hashlib.sha256(f"{address} {medium} {PEPPER}".encode()).digest()
                    hashed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                    if wanted == hashed:
                        mappings[wanted] = mxid
            return 200, {"mappings": mappings}
        if path == f"{v2}/store-invite":
            token = f"token{self.next_token}"
            self.next_token += 1
            self.invites.append(
                {
                    "medium": body["medium"],
                    "address": body["address"],
                    "room_id": body["room_id"],
                    "sender": body["sender"],
                    "token": token,
                }
            )
            url = f"https://{self.name}/_matrix/identity/v2/pubkey/isvalid"
            return 200, {
                "token": token,
                "display_name": "B***",
                "public_keys": [{"public_key": self.public_key, "key_validity_url": url}],
            }
        if path == f"{v2}/3pid/bind":
            medium, address = self.sessions[body["sid"]]
            self.bindings[(medium, address)] = body["mxid"]
            return 200, self.sign(
                {"medium": medium, "address": address, "mxid": body["mxid"], "ts": 0}
            )
        return 404, {"errcode": "M_UNRECOGNIZED", "error": path}


class _Resource(resource.Resource):
    isLeaf = True

    def __init__(self, fake: FakeIdentityServer) -> None:
        super().__init__()
        self.fake = fake

    def render(self, request: server.Request) -> bytes:
        raw = request.content.read() if request.content else b""
        body = json.loads(raw) if raw else None
        args = {k.decode(): [v.decode() for v in vs] for k, vs in (request.args or {}).items()}
        auth = request.getHeader("Authorization")
        status, answer = self.fake.handle(
            request.method.decode(), unquote(request.path.decode()), args, auth, body
        )
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(answer).encode()


def start_identity_server(directory: str) -> FakeIdentityServer:
    os.makedirs(directory, exist_ok=True)
    cert_path, key_path = write_self_signed_cert(directory)
    fake = FakeIdentityServer()
    fake.rotate_keys()
    context = ssl.DefaultOpenSSLContextFactory(key_path, cert_path)
    fake.listener = reactor.listenSSL(  # type: ignore[attr-defined]
        0, server.Site(_Resource(fake)), context, interface="127.0.0.1"
    )
    fake.port = fake.listener.getHost().port
    return fake
