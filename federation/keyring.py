"""Other servers' signing keys: fetched, verified, cached in memory and the database.

Invariants:
- A key is trusted only from a response signed by its own server (direct fetch) or by
  a configured notary whose key we were given (``trusted_key_servers``).
- A key verifies a signature made at time T only if T <= its ``valid_until_ts``
  (old keys: ``expired_ts``).
- Concurrent lookups of one server share a single fetch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from signedjson.key import get_verify_key
from signedjson.types import SigningKey, VerifyKey
from twisted.internet import defer

from crypto.json_signing import sign_json, verify_json_signature
from crypto.signing_key import decode_verify_key as _decode
from crypto.signing_key import key_id
from federation.interfaces import FederationRequestError, SignatureVerifyError
from homeserver.clock import Clock, now_ms
from storage.federation import FederationStore, StoredServerKey

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MIN_REFETCH_INTERVAL_MS = 60_000


@dataclass(frozen=True)
class TrustedKeyServer:
    server_name: str
    verify_keys: dict[str, str]  # key id -> unpadded base64


class RemoteKeyring:
    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        clock: Clock,
        store: FederationStore,
        client: Any,  # MatrixFederationHttpClient (unsigned key fetches)
        trusted_key_servers: list[TrustedKeyServer],
    ) -> None:
        self._server_name = server_name
        self._signing_key = signing_key
        self._clock = clock
        self._store = store
        self._client = client
        self._notaries = trusted_key_servers
        # server -> key id -> (verify key, valid until, expired ts)
        self._keys: dict[str, dict[str, tuple[VerifyKey, int, int | None]]] = {}
        self._fetching: dict[str, defer.Deferred[None]] = {}
        self._last_fetch: dict[str, int] = {}

    # Verifying -------------------------------------------------------------------

    async def verify_json_for_server(
        self, server_name: str, json_object: JsonDict, *, valid_at_ms: int | None = None
    ) -> None:
        sigs = (json_object.get("signatures") or {}).get(server_name)
        if not isinstance(sigs, dict) or not sigs:
            raise SignatureVerifyError(f"not signed by {server_name}")
        valid_at = valid_at_ms if valid_at_ms is not None else now_ms(self._clock)
        errors = []
        for kid in sigs:
            if not kid.startswith("ed25519:"):
                continue
            key = await self.get_key(server_name, kid, valid_at)
            if key is None:
                errors.append(f"no valid key {kid}")
                continue
            try:
                verify_json_signature(json_object, server_name, key)
                return
            except Exception as e:
                errors.append(f"{kid}: {e}")
        raise SignatureVerifyError(f"signature of {server_name} not verified: {'; '.join(errors)}")

    async def get_key(self, server_name: str, kid: str, valid_at: int) -> VerifyKey | None:
        if server_name == self._server_name:
            return get_verify_key(self._signing_key) if kid == key_id(self._signing_key) else None
        key = self._usable(server_name, kid, valid_at)
        if key is not None:
            return key
        await self._load_from_db(server_name)
        key = self._usable(server_name, kid, valid_at)
        if key is not None:
            return key
        last = self._last_fetch.get(server_name, 0)
        if now_ms(self._clock) - last >= MIN_REFETCH_INTERVAL_MS or kid not in self._keys.get(
            server_name, {}
        ):
            await self._fetch(server_name)
        return self._usable(server_name, kid, valid_at)

    def _usable(self, server_name: str, kid: str, valid_at: int) -> VerifyKey | None:
        entry = self._keys.get(server_name, {}).get(kid)
        if entry is None:
            return None
        key, valid_until, expired = entry
        limit = expired if expired is not None else valid_until
        return key if valid_at <= limit else None

    async def _load_from_db(self, server_name: str) -> None:
        for k in await self._store.get_server_keys(server_name):
            self._remember(k.server_name, k.key_id, k.verify_key, k.valid_until_ts, k.expired_ts)

    def _remember(
        self, server: str, kid: str, b64: str, valid_until: int, expired: int | None
    ) -> None:
        try:
            key = _decode(kid, b64)
        except Exception:
            return
        self._keys.setdefault(server, {})[kid] = (key, valid_until, expired)

    # Fetching ----------------------------------------------------------------------------

    async def _fetch(self, server_name: str) -> None:
        pending = self._fetching.get(server_name)
        if pending is None:
            pending = defer.ensureDeferred(self._do_fetch(server_name))
            self._fetching[server_name] = pending
            pending.addBoth(lambda r: (self._fetching.pop(server_name, None), r)[1])
        from homeserver.async_utils import observe

        await observe(pending)

    async def _do_fetch(self, server_name: str) -> None:
        self._last_fetch[server_name] = now_ms(self._clock)
        responses: list[JsonDict] = []
        if self._notaries:
            for notary in self._notaries:
                try:
                    resp = await self._client.request(
                        "POST",
                        notary.server_name,
                        "/_matrix/key/v2/query",
                        body={"server_keys": {server_name: {}}},
                        timeout_s=30,
                        sign=True,
                    )
                except FederationRequestError as e:
                    logger.info("Notary %s failed for %s: %s", notary.server_name, server_name, e)
                    continue
                for item in resp.get("server_keys", []) if isinstance(resp, dict) else []:
                    if isinstance(item, dict) and self._notary_signed(notary, item):
                        responses.append(item)
                if responses:
                    break
        else:
            try:
                resp = await self._client.request(
                    "GET", server_name, "/_matrix/key/v2/server", timeout_s=30, sign=False
                )
                if isinstance(resp, dict):
                    responses.append(resp)
            except FederationRequestError as e:
                logger.info("Fetching keys of %s failed: %s", server_name, e)
        stored = []
        for resp in responses:
            stored.extend(self.check_key_response(server_name, resp))
        if stored:
            await self._store.store_server_keys(stored)

    def _notary_signed(self, notary: TrustedKeyServer, item: JsonDict) -> bool:
        for kid, b64 in notary.verify_keys.items():
            try:
                verify_json_signature(item, notary.server_name, _decode(kid, b64))
                return True
            except Exception:
                continue
        return not notary.verify_keys and notary.server_name in (item.get("signatures") or {})

    def check_key_response(self, server_name: str, resp: JsonDict) -> list[StoredServerKey]:
        """Validate a /key/v2/server answer (self-signed) and remember its keys."""
        if resp.get("server_name") != server_name:
            return []
        verify_keys = resp.get("verify_keys") or {}
        old_keys = resp.get("old_verify_keys") or {}
        valid_until = resp.get("valid_until_ts")
        if not isinstance(verify_keys, dict) or not isinstance(valid_until, int):
            return []
        # Self-signature with one of the current keys.
        signed_ok = False
        for kid, entry in verify_keys.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                continue
            try:
                verify_json_signature(resp, server_name, _decode(kid, entry["key"]))
                signed_ok = True
                break
            except Exception:
                continue
        if not signed_ok:
            logger.info("Key response of %s is not self-signed", server_name)
            return []
        out = []
        for kid, entry in verify_keys.items():
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                self._remember(server_name, kid, entry["key"], valid_until, None)
                out.append(StoredServerKey(server_name, kid, entry["key"], valid_until, None, resp))
        if isinstance(old_keys, dict):
            for kid, entry in old_keys.items():
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    expired = entry.get("expired_ts")
                    expired_i = expired if isinstance(expired, int) else 0
                    self._remember(server_name, kid, entry["key"], expired_i, expired_i)
                    out.append(
                        StoredServerKey(server_name, kid, entry["key"], expired_i, expired_i, resp)
                    )
        return out

    # Notary service ----------------------------------------------------------------------

    async def notary_response(
        self, server_name: str, wanted: dict[str, int] | None, minimum_valid_until: int = 0
    ) -> list[JsonDict]:
        """Our cached key responses for ``server_name``, co-signed by us (for /key/v2/query).

        ``wanted`` maps key ids to their ``minimum_valid_until_ts``; None (or empty) asks for
        every key, each valid until at least ``minimum_valid_until``. We ask the origin
        again when a wanted key is unknown or not valid long enough, but keep what we held
        (an origin that forgets a key cannot make us forget it), and answer with the
        responses holding the wanted keys, as Synapse does.
        """
        stored = await self._store.get_server_keys(server_name)
        by_id = {k.key_id: k for k in stored}
        if wanted:
            stale = any(
                kid not in by_id or by_id[kid].valid_until_ts < minimum
                for kid, minimum in wanted.items()
            )
        else:
            stale = not stored or max(k.valid_until_ts for k in stored) < minimum_valid_until
        if stale:
            await self._fetch(server_name)
            stored = await self._store.get_server_keys(server_name)
        seen: dict[str, JsonDict] = {}
        for k in stored:
            if wanted and k.key_id not in wanted:
                continue
            body = k.key_json
            seen[str(body.get("valid_until_ts")) + str(sorted(body.get("verify_keys", {})))] = body
        return [sign_json(body, self._server_name, self._signing_key) for body in seen.values()]
