"""Requests to identity servers (the Identity Service API, v2), on a user's behalf.

Identity servers are named by clients (``id_server`` in a request body) or by room state
(the ``key_validity_url`` of an ``m.room.third_party_invite``), so every request is
treated as untrusted outbound traffic:

- the host must be a valid server name (``host[:port]``) and is always reached over
  HTTPS; the address it resolves to is checked against the outbound IP range policy
  (``ip_range_blacklist`` / ``ip_range_whitelist``) and connected to directly (never
  re-resolved);
- certificates are verified unless ``federation_verify_certificates`` is false (or
  Synapse's ``use_insecure_ssl_client_just_for_testing_do_not_use`` is true): the same
  switch as for other servers we reach by a name from the network;
- every exchange is bounded by a timeout and answers by a size limit.

Failures raise ``IdentityServerError`` with the status to give the client.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from signedjson.types import SigningKey
from twisted.internet import defer
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers

from federation.http_client import (
    BodyTooLarge,
    FixedNamePolicy,
    read_limited,
    resolve_ip,
)
from federation.x_matrix import sign_request
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_reachable_server_name
from homeserver.http.ip_filter import IpFilter

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
IS_V2 = "/_matrix/identity/v2"
MAX_RESPONSE_BYTES = 1024 * 1024
REQUEST_TIMEOUT_S = 30.0


class IdentityServerError(MatrixError):
    """An identity server could not be reached or refused the request."""


def _unpadded_urlsafe_b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


class IdentityServerClient:
    def __init__(
        self,
        reactor: Any,
        server_name: str,
        signing_key: SigningKey,
        ip_filter: IpFilter,
        *,
        verify_certificates: bool,
    ) -> None:
        self._reactor = reactor
        self._server_name = server_name
        self._key = signing_key
        self._ip_filter = ip_filter
        self._verify = verify_certificates
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 2
        self._pool.retryAutomatically = False

    async def close(self) -> None:
        await self._pool.closeCachedConnections()

    # Transport ----------------------------------------------------------------------

    @staticmethod
    def check_id_server(id_server: Any) -> str:
        """``id_server`` as a client gives it: ``host[:port]`` (no scheme, no path)."""
        if not isinstance(id_server, str) or not is_reachable_server_name(id_server):
            raise MatrixError(400, Codes.INVALID_PARAM, "id_server is not a valid server name")
        return id_server

    async def request(
        self,
        method: str,
        id_server: str,
        path: str,
        *,
        args: dict[str, str] | None = None,
        body: JsonDict | None = None,
        access_token: str | None = None,
        sign: bool = False,
    ) -> JsonDict:
        """The JSON object an identity server answers with (2xx only)."""
        self.check_id_server(id_server)
        host, _, port_s = id_server.rpartition(":") if not id_server.endswith("]") else ("", "", "")
        if not host or not port_s.isdigit():
            host, port = id_server, 443
        else:
            port = int(port_s)
        bare = host.strip("[]")
        try:
            ip = await resolve_ip(self._reactor, bare)
        except Exception as e:
            raise IdentityServerError(502, Codes.UNKNOWN, f"Cannot resolve {host}: {e}") from None
        if not self._ip_filter.allows(ip):
            raise IdentityServerError(403, Codes.FORBIDDEN, "Identity server address refused")
        uri = path + (f"?{urlencode(args)}" if args else "")
        headers = Headers({b"Host": [id_server.encode()], b"User-Agent": [b"homeserver"]})
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers.addRawHeader(b"Content-Type", b"application/json")
        if access_token is not None:
            headers.addRawHeader(b"Authorization", f"Bearer {access_token}".encode())
        elif sign:
            auth = sign_request(self._key, method, uri, self._server_name, id_server, body)
            headers.addRawHeader(b"Authorization", auth.encode())
        agent = Agent(
            self._reactor,
            contextFactory=FixedNamePolicy(bare, self._verify),
            pool=self._pool,
            connectTimeout=10,
        )
        url = f"https://{'[' + ip + ']' if ':' in ip else ip}:{port}{uri}"
        d = defer.ensureDeferred(self._exchange(agent, method, url, headers, data))
        timer = self._reactor.callLater(REQUEST_TIMEOUT_S, d.cancel)
        try:
            status, raw = await d
        except defer.CancelledError:
            raise IdentityServerError(504, Codes.UNKNOWN, "Identity server timed out") from None
        except BodyTooLarge:
            raise IdentityServerError(
                502, Codes.UNKNOWN, "Identity server answer too large"
            ) from None
        except Exception as e:
            logger.info("Identity server %s: %s %s failed: %s", id_server, method, path, e)
            raise IdentityServerError(502, Codes.UNKNOWN, "Identity server unreachable") from None
        finally:
            if timer.active():
                timer.cancel()
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except ValueError:
            parsed = None
        if not 200 <= status < 300:
            errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
            error = parsed.get("error") if isinstance(parsed, dict) else None
            if status == 401:
                # The identity server refused its access token: not ours, so never a
                # 401 (or M_UNKNOWN_TOKEN) that would sign the client out.
                raise IdentityServerError(
                    403, Codes.FORBIDDEN, "The identity server refused the id_access_token"
                )
            raise IdentityServerError(
                status if 400 <= status < 500 else 502,
                errcode if isinstance(errcode, str) else Codes.UNKNOWN,
                error if isinstance(error, str) else f"Identity server answered {status}",
            )
        if not isinstance(parsed, dict):
            raise IdentityServerError(502, Codes.UNKNOWN, "Identity server answer is not JSON")
        return parsed

    async def _exchange(
        self, agent: Any, method: str, url: str, headers: Headers, data: bytes | None
    ) -> tuple[int, bytes]:
        producer = FileBodyProducer(io.BytesIO(data)) if data is not None else None
        response = await agent.request(method.encode(), url.encode(), headers, producer)
        raw = await read_limited(response, MAX_RESPONSE_BYTES)
        return int(response.code), raw

    # Identity Service API ----------------------------------------------------------

    async def lookup_3pid(
        self, id_server: str, id_access_token: str, medium: str, address: str
    ) -> str | None:
        """The Matrix ID bound to ``medium``/``address`` on the identity server, if any."""
        details = await self.request(
            "GET", id_server, f"{IS_V2}/hash_details", access_token=id_access_token
        )
        algorithms = details.get("algorithms")
        pepper = details.get("lookup_pepper")
        if not isinstance(algorithms, list) or not isinstance(pepper, str):
            raise IdentityServerError(502, Codes.UNKNOWN, "Bad hash_details from identity server")
        if "sha256" in algorithms:
            digest = hashlib.sha256(f"{address} {medium} {pepper}".encode()).digest()
            key, algorithm = _unpadded_urlsafe_b64(digest), "sha256"
        elif "none" in algorithms:
            key, algorithm = f"{address} {medium}", "none"
        else:
            raise IdentityServerError(
                502, Codes.UNKNOWN, "Identity server offers no lookup algorithm we know"
            )
        result = await self.request(
            "POST",
            id_server,
            f"{IS_V2}/lookup",
            body={"addresses": [key], "algorithm": algorithm, "pepper": pepper},
            access_token=id_access_token,
        )
        mappings = result.get("mappings")
        mxid = mappings.get(key) if isinstance(mappings, dict) else None
        return mxid if isinstance(mxid, str) else None

    async def store_invite(self, id_server: str, id_access_token: str, body: JsonDict) -> JsonDict:
        return await self.request(
            "POST", id_server, f"{IS_V2}/store-invite", body=body, access_token=id_access_token
        )

    async def bind(
        self, id_server: str, id_access_token: str, sid: str, client_secret: str, mxid: str
    ) -> JsonDict:
        return await self.request(
            "POST",
            id_server,
            f"{IS_V2}/3pid/bind",
            body={"sid": sid, "client_secret": client_secret, "mxid": mxid},
            access_token=id_access_token,
        )

    async def unbind(self, id_server: str, mxid: str, medium: str, address: str) -> None:
        """Signed by this server (X-Matrix), as the spec's server-initiated unbind."""
        await self.request(
            "POST",
            id_server,
            f"{IS_V2}/3pid/unbind",
            body={"mxid": mxid, "threepid": {"medium": medium, "address": address}},
            sign=True,
        )

    async def key_is_valid(self, key_validity_url: str, public_key: str) -> bool:
        """Whether the identity server at ``key_validity_url`` still vouches for the key.
        Anything but an HTTPS URL answering ``{"valid": true}`` is False."""
        parts = urlsplit(key_validity_url)
        if parts.scheme != "https" or not parts.netloc or "@" in parts.netloc:
            return False
        try:
            self.check_id_server(parts.netloc)
            answer = await self.request(
                "GET",
                parts.netloc,
                quote(parts.path or "/", safe="/"),
                args={"public_key": public_key},
            )
        except MatrixError as e:
            logger.info("Key validity check at %s failed: %s", key_validity_url, e.message)
            return False
        return answer.get("valid") is True
