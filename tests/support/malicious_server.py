"""A malicious federating server for attacker tests: correct signatures, hostile intent.

It owns an ed25519 key and the server name ``127.0.0.1:<port>`` (or ``localhost:<port>``), serves
``/_matrix/key/v2/server`` over TLS on loopback (so our server, configured by
``tests.support.federation`` to federate with loopback and trust self-signed
certificates, verifies its signatures), and can:

- send signed federation requests to one of our servers: :meth:`MaliciousServer.request`;
- build hashed and signed PDUs (room versions 10, 11, 12) with whatever prev and auth
  events the test chooses: :meth:`MaliciousServer.build_pdu`;
- join one of our rooms as its own user through make_join/send_join:
  :meth:`MaliciousServer.join`;
- answer requests our server makes to it with handlers the test supplies:
  :meth:`MaliciousServer.on` (anything unhandled answers 404 ``M_UNRECOGNIZED``;
  transactions our server sends it are accepted and kept in ``transactions``, and
  every request's (method, path) in ``received``).

Usage::

    async with MaliciousServer.running(tmp_dir) as evil:
        joined = await evil.join(ours, room_id)
        status, body = await evil.request(ours, "GET", f"/_matrix/federation/v1/event/{eid}")

It never checks the signatures of requests made to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import treq
from twisted.internet import reactor, ssl
from twisted.internet.interfaces import IListeningPort
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.server import Request
from zope.interface import implementer

from crypto.event_hashing import compute_event_id, hash_and_sign_event
from crypto.json_signing import sign_json
from crypto.signing_key import generate_signing_key, key_id, verify_key_base64
from federation.x_matrix import sign_request
from homeserver.events.room_versions import ROOM_VERSIONS
from homeserver.http.server import JsonResource, MatrixSite
from tests.support.federation import write_self_signed_cert
from tests.support.server import RunningServer

JsonDict = dict[str, Any]
# A handler for a request our server makes to the attacker: it gets the request, the
# path parameters and the JSON body (None without one), and answers (status, body).
PeerHandler = Callable[..., Awaitable[tuple[int, Any]]]


def federation_port(target: RunningServer) -> int:
    """The port of ``target``'s TLS federation listener (its last listener)."""
    return int(target.hs.ports[-1].getHost().port)


@implementer(IPolicyForHTTPS)
class _NoVerify:
    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.CertificateOptions(verify=False)


class _RecordingResource(JsonResource):
    """Routes like ours, and remembers (method, path) of every request it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, str]] = []

    def register(self, method: str, pattern: str, handler: Any) -> None:
        """Later registrations win (a test's handler replaces a default one)."""
        super().register(method, pattern, handler)
        self._routes.insert(0, self._routes.pop())

    def render(self, request: Request) -> Any:
        self.received.append((request.method.decode(), request.path.decode()))
        return super().render(request)


@dataclass(frozen=True)
class Joined:
    """The outcome of :meth:`MaliciousServer.join`."""

    user_id: str
    event: JsonDict  # the signed join event, with its event_id under "event_id"
    send_join: JsonDict  # our server's send_join answer (state, auth_chain, ...)
    room_version: str


class MaliciousServer:
    def __init__(self, data_dir: str, host: str = "127.0.0.1") -> None:
        """``host`` names the server (``<host>:<port>``); it must resolve to 127.0.0.1.
        Pass ``"localhost"`` to tell it apart from our servers in a server ACL (ACLs
        ignore ports, and our test servers are all ``127.0.0.1:<port>``)."""
        self._data_dir = data_dir
        self._host = host
        self.port = 0  # set by start()
        self.server_name = ""  # "<host>:<port>", set by start()
        self.signing_key = generate_signing_key()
        self._resource = _RecordingResource()
        self._resource.register("GET", "/_matrix/key/v2/server", self._on_key)
        self._resource.register("PUT", "/_matrix/federation/v1/send/{txnId}", self._on_send)
        self._listening: IListeningPort | None = None
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._agent = Agent(reactor, contextFactory=_NoVerify(), pool=self._pool)
        # (method, path) of every request made to it, handled or not.
        self.received = self._resource.received
        # The bodies of the transactions our server sent it (accepted, answered {}).
        self.transactions: list[JsonDict] = []

    @classmethod
    @asynccontextmanager
    async def running(
        cls, data_dir: str, host: str = "127.0.0.1"
    ) -> AsyncIterator[MaliciousServer]:
        evil = cls(data_dir, host)
        evil.start()
        try:
            yield evil
        finally:
            await evil.stop()

    def start(self) -> None:
        cert_path, key_path = write_self_signed_cert(self._data_dir)
        with open(cert_path, "rb") as f, open(key_path, "rb") as g:
            cert = ssl.PrivateCertificate.loadPEM(g.read() + b"\n" + f.read())
        options = ssl.CertificateOptions(
            privateKey=cert.privateKey.original, certificate=cert.original
        )
        site = MatrixSite(self._resource, max_body_size=50 * 1024 * 1024, x_forwarded=False)
        self._listening = reactor.listenSSL(0, site, options, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.port = int(self._listening.getHost().port)
        self.server_name = f"{self._host}:{self.port}"

    async def stop(self) -> None:
        if self._listening is not None:
            await self._listening.stopListening()
            self._listening = None

    def user(self, localpart: str = "mallory") -> str:
        return f"@{localpart}:{self.server_name}"

    # Answering our server -------------------------------------------------------------

    def on(self, method: str, pattern: str, handler: PeerHandler) -> None:
        """Answer ``method`` on ``pattern`` (``{name}`` segments become keyword
        arguments) with ``await handler(body=..., query=..., **params)``, where ``body``
        is the parsed JSON body (or None) and ``query`` maps names to their values."""

        async def wrapped(request: Request, **params: str) -> tuple[int, Any]:
            raw = request.content.read() if request.content is not None else b""
            body = json.loads(raw) if raw else None
            query = {k.decode(): [v.decode() for v in vs] for k, vs in (request.args or {}).items()}
            return await handler(body=body, query=query, **params)

        self._resource.register(method, pattern, wrapped)

    async def _on_send(self, request: Request, txnId: str) -> tuple[int, Any]:
        raw = request.content.read() if request.content is not None else b""
        self.transactions.append(json.loads(raw) if raw else {})
        return 200, {"pdus": {}}

    async def _on_key(self, request: Request) -> tuple[int, Any]:
        body = {
            "server_name": self.server_name,
            "valid_until_ts": int(time.time() * 1000) + 3600_000,
            "verify_keys": {key_id(self.signing_key): {"key": verify_key_base64(self.signing_key)}},
            "old_verify_keys": {},
        }
        return 200, sign_json(body, self.server_name, self.signing_key)

    # Talking to our server ------------------------------------------------------------

    async def request(
        self,
        target: RunningServer,
        method: str,
        path: str,
        body: Any | None = None,
        query: Mapping[str, str | Sequence[str]] | None = None,
    ) -> tuple[int, Any]:
        """A request to ``target``'s federation listener, signed (X-Matrix) by us.
        ``path`` is already percent-encoded; answers (status, parsed JSON body)."""
        uri = path + ("?" + urlencode(query, doseq=True) if query else "")
        destination = target.hs.server_name
        auth = sign_request(self.signing_key, method, uri, self.server_name, destination, body)
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        resp = await treq.request(
            method,
            f"https://127.0.0.1:{federation_port(target)}{uri}",
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
            agent=self._agent,
        )
        content = await treq.content(resp)
        return resp.code, json.loads(content) if content else None

    # Events ---------------------------------------------------------------------------

    def sign_pdu(self, event: Mapping[str, Any], room_version: str) -> JsonDict:
        """Hash and sign ``event`` as ours; the answer carries its id under ``event_id``
        (strip it before sending: room versions 3+ PDUs have no ``event_id``)."""
        version = ROOM_VERSIONS[room_version]
        signed = hash_and_sign_event(event, self.server_name, self.signing_key, version)
        return {**signed, "event_id": compute_event_id(signed, version)}

    def build_pdu(
        self,
        room_version: str,
        room_id: str,
        sender: str,
        type: str,
        content: JsonDict,
        prev_events: Sequence[str],
        auth_events: Sequence[str],
        depth: int,
        state_key: str | None = None,
        origin_server_ts: int | None = None,
    ) -> JsonDict:
        """A PDU from ``sender`` with the chosen prev/auth events, hashed and signed
        (see :meth:`sign_pdu` for its ``event_id``)."""
        event: JsonDict = {
            "room_id": room_id,
            "sender": sender,
            "type": type,
            "content": content,
            "prev_events": list(prev_events),
            "auth_events": list(auth_events),
            "depth": depth,
            "origin_server_ts": origin_server_ts or int(time.time() * 1000),
        }
        if state_key is not None:
            event["state_key"] = state_key
        return self.sign_pdu(event, room_version)

    async def join(self, target: RunningServer, room_id: str, localpart: str = "mallory") -> Joined:
        """Join ``room_id`` on ``target`` as ``@localpart:<us>`` (make_join, send_join v2);
        raises AssertionError with our server's answer if either step is refused."""
        user_id = self.user(localpart)
        status, made = await self.request(
            target,
            "GET",
            f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(user_id)}",
            query={"ver": ["10", "11", "12"]},
        )
        assert status == 200, (status, made)
        room_version = str(made["room_version"])
        template = {
            k: v for k, v in made["event"].items() if k not in ("signatures", "hashes", "unsigned")
        }
        template["origin_server_ts"] = int(time.time() * 1000)
        pdu = self.sign_pdu(template, room_version)
        event_id = pdu.pop("event_id")
        status, answer = await self.request(
            target,
            "PUT",
            f"/_matrix/federation/v2/send_join/{quote(room_id)}/{quote(event_id)}",
            pdu,
        )
        assert status == 200, (status, answer)
        return Joined(user_id, {**pdu, "event_id": event_id}, answer, room_version)

    async def send_pdus(
        self, target: RunningServer, pdus: Sequence[JsonDict], edus: Sequence[JsonDict] = ()
    ) -> tuple[int, Any]:
        """PUT /send with ``pdus`` (their ``event_id`` keys dropped) and ``edus``."""
        txn = f"t{time.monotonic_ns()}"
        body = {
            "origin": self.server_name,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": [{k: v for k, v in p.items() if k != "event_id"} for p in pdus],
            "edus": list(edus),
        }
        return await self.request(target, "PUT", f"/_matrix/federation/v1/send/{txn}", body)
