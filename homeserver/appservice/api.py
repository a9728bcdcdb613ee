"""The homeserver's HTTP client for application services (``/_matrix/app/v1``).

Invariants:
- Every request carries ``Authorization: Bearer <hs_token>`` and is bounded by a
  timeout covering the whole exchange (connect, headers and body).
- Failures surface as one of three exceptions: ``AppServiceTimeout``,
  ``AppServiceConnectionFailed`` (nothing usable came back) and ``AppServiceBadStatus``
  (a non-2xx answer, with its status and body); callers decide what each means.
- Redirects are not followed: a service answers at its registered URL.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool

from homeserver.appservice.registration import ApplicationService

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
APP_PREFIX = "/_matrix/app/v1"
MAX_RESPONSE_BYTES = 5 * 1024 * 1024
# Read at each request, so tests can shorten it.
REQUEST_TIMEOUT_S = 60.0
PROTOCOL_CACHE_S = 3600.0


class AppServiceError(Exception):
    pass


class AppServiceTimeout(AppServiceError):
    pass


class AppServiceConnectionFailed(AppServiceError):
    pass


class AppServiceBadStatus(AppServiceError):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class AppServiceApi:
    def __init__(self, reactor: Any, *, timeout_s: float | None = None) -> None:
        self._reactor = reactor
        self.timeout_s = timeout_s
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 5
        self._pool.retryAutomatically = False
        agent: Any = Agent(reactor, pool=self._pool)  # an IAgent (zope, unseen by mypy)
        self._client = HTTPClient(agent)
        # (service id, protocol) -> (expiry, metadata)
        self._protocol_cache: dict[tuple[str, str], tuple[float, JsonDict]] = {}

    async def close(self) -> None:
        await self._pool.closeCachedConnections()

    async def request(
        self,
        service: ApplicationService,
        method: str,
        path: str,
        *,
        body: JsonDict | None = None,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """The parsed JSON answer of a 2xx response (None for an empty or non-JSON body)."""
        if service.url is None:
            raise AppServiceConnectionFailed(f"application service {service.id} has no URL")
        url = service.url + APP_PREFIX + path
        d = defer.ensureDeferred(self._exchange(service, method, url, body, params))
        timed_out = False

        def _time_out() -> None:
            nonlocal timed_out
            timed_out = True
            d.cancel()

        timeout = timeout_s or self.timeout_s or REQUEST_TIMEOUT_S
        timer = self._reactor.callLater(timeout, _time_out)
        try:
            status, raw = await d
        except Exception as e:
            if timed_out:
                raise AppServiceTimeout(f"{method} {url} timed out after {timeout}s") from None
            raise AppServiceConnectionFailed(f"{method} {url}: {type(e).__name__}: {e}") from None
        finally:
            if timer.active():
                timer.cancel()
        if not 200 <= status < 300:
            raise AppServiceBadStatus(status, raw)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    async def _exchange(
        self,
        service: ApplicationService,
        method: str,
        url: str,
        body: JsonDict | None,
        params: dict[str, Any] | None,
    ) -> tuple[int, bytes]:
        headers: dict[bytes | str, bytes | str] = {"Authorization": f"Bearer {service.hs_token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        response = await self._client.request(
            method, url, headers=headers, data=data, params=params, allow_redirects=False
        )
        raw = await treq.content(response)
        return int(response.code), raw[:MAX_RESPONSE_BYTES]

    # The endpoints ----------------------------------------------------------------

    async def push_transaction(
        self, service: ApplicationService, txn_id: int, body: JsonDict
    ) -> None:
        await self.request(service, "PUT", f"/transactions/{txn_id}", body=body)

    async def ping(self, service: ApplicationService, transaction_id: str | None) -> None:
        body: JsonDict = {}
        if transaction_id is not None:
            body["transaction_id"] = transaction_id
        await self.request(service, "POST", "/ping", body=body)

    async def query_user(self, service: ApplicationService, user_id: str) -> bool:
        return await self._query(service, f"/users/{quote(user_id, safe='')}")

    async def query_alias(self, service: ApplicationService, alias: str) -> bool:
        return await self._query(service, f"/rooms/{quote(alias, safe='')}")

    async def _query(self, service: ApplicationService, path: str) -> bool:
        """True if the service answered 200 (it says the entity exists now)."""
        try:
            await self.request(service, "GET", path)
            return True
        except AppServiceBadStatus as e:
            if e.status != 404:
                logger.warning("Query %s to application service %s: %s", path, service.id, e)
            return False
        except AppServiceError as e:
            logger.warning("Query %s to application service %s failed: %s", path, service.id, e)
            return False

    async def get_protocol(self, service: ApplicationService, protocol: str) -> JsonDict | None:
        """The protocol's metadata with ``instance_id`` added per instance, or None.

        A service's answer is kept for ``PROTOCOL_CACHE_S`` (as Synapse's hour-long
        cache): protocol metadata rarely changes and clients ask for it often."""
        key = (service.id, protocol)
        cached = self._protocol_cache.get(key)
        now = self._reactor.seconds()
        if cached is not None and cached[0] > now:
            return cached[1]
        info = await self._fetch_protocol(service, protocol)
        if info is not None:
            self._protocol_cache[key] = (now + PROTOCOL_CACHE_S, info)
        return info

    async def _fetch_protocol(self, service: ApplicationService, protocol: str) -> JsonDict | None:
        try:
            info = await self.request(
                service, "GET", f"/thirdparty/protocol/{quote(protocol, safe='')}"
            )
        except AppServiceError as e:
            logger.warning("Protocol %s from application service %s: %s", protocol, service.id, e)
            return None
        if not isinstance(info, dict) or not isinstance(info.get("instances"), list):
            logger.warning("Application service %s sent invalid protocol metadata", service.id)
            return None
        instances = []
        for instance in info["instances"]:
            if not isinstance(instance, dict):
                continue
            instance = dict(instance)
            network_id = instance.get("network_id")
            if isinstance(network_id, str):
                instance["instance_id"] = third_party_instance_id(service.id, network_id)
            instances.append(instance)
        return {**info, "instances": instances}

    async def query_3pe(
        self,
        service: ApplicationService,
        kind: str,
        protocol: str | None,
        fields: dict[str, list[str]],
    ) -> list[JsonDict]:
        """Third-party users or locations (``kind``), keeping only well-formed entries."""
        path = f"/thirdparty/{kind}"
        if protocol is not None:
            path += "/" + quote(protocol, safe="")
        try:
            result = await self.request(service, "GET", path, params=fields)
        except AppServiceError as e:
            logger.info("Third-party %s query to application service %s: %s", kind, service.id, e)
            return []
        if not isinstance(result, list):
            return []
        key = "alias" if kind == "location" else "userid"
        return [r for r in result if _is_valid_3pe_result(r, key)]


def third_party_instance_id(as_id: str, network_id: str) -> str:
    """Synapse's ``instance_id``: the service id and network id joined by ``|``."""
    return f"{as_id}|{network_id}"


def _is_valid_3pe_result(result: Any, key: str) -> bool:
    if not isinstance(result, dict):
        return False
    if not isinstance(result.get(key), str) or not isinstance(result.get("protocol"), str):
        return False
    return isinstance(result.get("fields"), dict)
