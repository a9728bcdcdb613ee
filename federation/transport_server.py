"""Inbound server-server requests: X-Matrix authentication, /send transactions, keys
(including the notary API), and the simple query endpoints.

Invariants:
- Nothing is processed for a request whose X-Matrix signature does not verify: 401.
- A transaction already answered gets the same answer again (keyed by origin + id).
- PDUs of a transaction are handled in order; a failure of one is reported in the
  response and does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from federation.interfaces import PduHandler, SignatureVerifyError
from federation.keyring import RemoteKeyring
from federation.x_matrix import NotXMatrixError, XMatrixParseError, parse_x_matrix, request_json
from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, MatrixError
from homeserver.http.ratelimit import FederationRateLimiter
from homeserver.http.server import JsonResource, MatrixRequest
from homeserver.http.servlet import parse_json_body, parse_string
from homeserver.untrusted import decode_json
from storage.federation import FederationStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
EduHandlerFn = Callable[[str, JsonDict], Awaitable[None]]

MAX_PDUS = 50
MAX_EDUS = 100


class FederationAuthenticator:
    def __init__(
        self,
        server_name: str,
        keyring: RemoteKeyring,
        domain_whitelist: list[str] | None,
        limiter: FederationRateLimiter | None = None,
    ) -> None:
        self._server_name = server_name
        self._keyring = keyring
        self._whitelist = set(domain_whitelist) if domain_whitelist is not None else None
        self._limiter = limiter

    async def authenticate(self, request: Request) -> str:
        """The verified origin of ``request``; then it takes (or waits for) one of the
        origin's ``rc_federation`` slots, held until the request has been handled."""
        origin = await self._verify(request)
        limiter = self._limiter
        if (
            limiter is not None
            and isinstance(request, MatrixRequest)
            and request.after_handling is None  # not twice for one request
        ):
            await limiter.enter(origin)
            request.after_handling = lambda: limiter.leave(origin)
        return origin

    async def _verify(self, request: Request) -> str:
        headers = request.requestHeaders.getRawHeaders(b"authorization") or []
        content: Any = None
        assert request.content is not None
        request.content.seek(0)
        raw = request.content.read()
        if raw:
            content = decode_json(raw)  # 400 before any signature work, as Synapse
        uri = request.uri.decode("ascii", "replace")
        method = request.method.decode("ascii")
        last_error = "Missing Authorization headers"
        for header in headers:
            try:
                auth = parse_x_matrix(header.decode("utf-8", "replace"))
            except NotXMatrixError as e:
                last_error = str(e)
                continue
            except XMatrixParseError as e:
                # A malformed X-Matrix header (a bad origin...) is the caller's error:
                # 400, as Synapse answers.
                raise MatrixError(400, "M_UNAUTHORIZED", str(e)) from None
            if auth.destination is not None and auth.destination != self._server_name:
                last_error = "Authorization header is for another server"
                continue
            signed = request_json(method, uri, auth.origin, self._server_name, content)
            signed["signatures"] = {auth.origin: {auth.key: auth.sig}}
            try:
                await self._keyring.verify_json_for_server(auth.origin, signed)
            except SignatureVerifyError as e:
                last_error = str(e)
                continue
            if self._whitelist is not None and auth.origin not in self._whitelist:
                raise MatrixError(403, Codes.FORBIDDEN, "Federation denied with this server")
            return auth.origin
        raise MatrixError(401, "M_UNAUTHORIZED", last_error)


class TransactionServlet:
    def __init__(
        self,
        authenticator: FederationAuthenticator,
        store: FederationStore,
        pdu_handler: PduHandler,
        clock: Clock,
    ) -> None:
        self._auth = authenticator
        self._store = store
        self._pdus = pdu_handler
        self._clock = clock
        self.edu_handlers: dict[str, EduHandlerFn] = {}
        self._in_progress: set[tuple[str, str]] = set()

    def register(self, r: JsonResource) -> None:
        r.register("PUT", "/_matrix/federation/v1/send/{txnId}", self.on_send)

    async def on_send(self, request: Request, txnId: str) -> tuple[int, Any]:
        origin = await self._auth.authenticate(request)
        # One PDU or EDU with a U+0000 is refused on its own (the PDU format check),
        # never the whole transaction, which its server would retry forever.
        body = parse_json_body(request, forbid_nul=False)
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise MatrixError(400, Codes.BAD_JSON, "pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(400, Codes.BAD_JSON, "Too many PDUs or EDUs in the transaction")
        previous = await self._store.get_received_transaction(origin, txnId)
        if previous is not None:
            return 200, previous
        key = (origin, txnId)
        if key in self._in_progress:
            raise MatrixError(
                429,
                Codes.LIMIT_EXCEEDED,
                "Transaction already in progress",
                {"retry_after_ms": 1000},
            )
        self._in_progress.add(key)
        try:
            results: dict[str, JsonDict] = {}
            for pdu in pdus:
                if not isinstance(pdu, dict):
                    continue
                event_id = self._event_id(pdu)
                try:
                    error = await self._pdus.on_receive_pdu(origin, pdu)
                except Exception as e:
                    logger.exception("Processing a PDU from %s failed", origin)
                    error = f"internal error: {type(e).__name__}"
                if error:
                    logger.info("PDU %s from %s not accepted: %s", event_id, origin, error)
                if event_id is not None:
                    results[event_id] = {"error": error} if error else {}
            for edu in edus:
                if not isinstance(edu, dict):
                    continue
                handler = self.edu_handlers.get(str(edu.get("edu_type")))
                content = edu.get("content")
                if handler is None or not isinstance(content, dict):
                    continue
                try:
                    await handler(origin, content)
                except Exception:
                    logger.exception("Handling %s EDU from %s failed", edu.get("edu_type"), origin)
            response = {"pdus": results}
            await self._store.set_received_transaction(origin, txnId, response, now_ms(self._clock))
            return 200, response
        finally:
            self._in_progress.discard(key)

    @staticmethod
    def _event_id(pdu: JsonDict) -> str | None:
        from crypto.event_hashing import compute_event_id
        from homeserver.events.room_versions import ROOM_VERSIONS

        # The room version decides the id (the key of this PDU in the response): v1/v2
        # events carry theirs; v4+ ids are the reference hash (a v3 room's id differs
        # only in its base64 alphabet, so its key is the v4 spelling of the same hash).
        legacy = pdu.get("event_id")
        if isinstance(legacy, str) and ":" in legacy:
            return legacy
        try:
            return compute_event_id(pdu, ROOM_VERSIONS["11"])
        except Exception:
            return None


class KeyServlets:
    """/_matrix/key/v2/query: we act as a notary for the keys we know."""

    def __init__(self, keyring: RemoteKeyring) -> None:
        self._keyring = keyring

    def register(self, r: JsonResource) -> None:
        r.register("POST", "/_matrix/key/v2/query", self.on_post_query)
        r.register("GET", "/_matrix/key/v2/query/{serverName}", self.on_get_query)
        # The older form naming one key (no longer in the spec; Synapse still serves it and
        # SyTest uses it).
        r.register("GET", "/_matrix/key/v2/query/{serverName}/{keyId}", self.on_get_query)

    async def on_post_query(self, request: Request) -> tuple[int, Any]:
        body = parse_json_body(request)
        wanted = body.get("server_keys")
        if not isinstance(wanted, dict):
            raise MatrixError(400, Codes.BAD_JSON, "server_keys must be an object")
        out: list[JsonDict] = []
        for server, keys in wanted.items():
            by_key: dict[str, int] = {}
            if isinstance(keys, dict):
                for key_id, criteria in keys.items():
                    minimum = (
                        criteria.get("minimum_valid_until_ts")
                        if isinstance(criteria, dict)
                        else None
                    )
                    by_key[str(key_id)] = minimum if type(minimum) is int else 0
            out.extend(await self._keyring.notary_response(str(server), by_key))
        return 200, {"server_keys": out}

    async def on_get_query(
        self, request: Request, serverName: str, keyId: str | None = None
    ) -> tuple[int, Any]:
        raw = parse_string(request, "minimum_valid_until_ts")
        minimum = int(raw) if raw and raw.isdigit() and len(raw) < 19 else 0
        wanted = {keyId: minimum} if keyId else None
        return 200, {
            "server_keys": await self._keyring.notary_response(serverName, wanted, minimum)
        }
