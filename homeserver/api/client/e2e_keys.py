"""/keys/upload, /keys/query, /keys/claim, /keys/changes, cross-signing uploads and
/sendToDevice: parse and validate, then call the E2EE handlers."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.e2ee.cross_signing import CrossSigningHandler
from homeserver.e2ee.keys import DEFAULT_TIMEOUT_MS, KeysHandler
from homeserver.e2ee.to_device import ToDeviceHandler
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.ui_auth import PASSWORD, UiAuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body, parse_string


def string_lists(value: Any, name: str) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not all(
        isinstance(v, list) and all(isinstance(d, str) for d in v) for v in value.values()
    ):
        raise MatrixError(400, Codes.BAD_JSON, f"'{name}' must map user ids to lists of strings")
    return value


def string_maps(value: Any, name: str) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict) or not all(
        isinstance(v, dict) and all(isinstance(a, str) for a in v.values()) for v in value.values()
    ):
        raise MatrixError(
            400, Codes.BAD_JSON, f"'{name}' must map user ids to device ids to strings"
        )
    return value


def _timeout(body: dict[str, Any]) -> int:
    """The time in ms to wait for other servers (default 10 s, at most a minute)."""
    timeout: int | None = field(body, "timeout", int)
    if timeout is None:
        return DEFAULT_TIMEOUT_MS
    return max(0, min(timeout, 60_000))


class E2eKeysServlets:
    def __init__(
        self,
        auth: AuthHandler,
        ui_auth: UiAuthHandler,
        keys: KeysHandler,
        cross_signing: CrossSigningHandler,
        to_device: ToDeviceHandler,
    ) -> None:
        self._auth = auth
        self._ui_auth = ui_auth
        self._keys = keys
        self._cross_signing = cross_signing
        self._to_device = to_device

    def register(self, r: JsonResource) -> None:
        r.register_many("POST", client_paths("/keys/upload"), self.on_upload)
        # The deprecated form with the device id in the path (still sent by some clients).
        r.register_many("POST", client_paths("/keys/upload/{deviceId}"), self.on_upload)
        r.register_many("POST", client_paths("/keys/query"), self.on_query)
        r.register_many("POST", client_paths("/keys/claim"), self.on_claim)
        r.register_many("GET", client_paths("/keys/changes"), self.on_changes)
        # Cross-signing is also served under the unstable prefix it was introduced with
        # (MSC1756), as Synapse does: older clients and SyTest still use it.
        cross_signing_versions = ("v3", "r0", "unstable")
        r.register_many(
            "POST",
            client_paths("/keys/device_signing/upload", versions=cross_signing_versions),
            self.on_device_signing_upload,
        )
        r.register_many(
            "POST",
            client_paths("/keys/signatures/upload", versions=cross_signing_versions),
            self.on_signatures_upload,
        )
        r.register_many(
            "PUT", client_paths("/sendToDevice/{eventType}/{txnId}"), self.on_send_to_device
        )

    async def on_upload(self, request: Request, deviceId: str | None = None) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        if deviceId is not None and deviceId != requester.device_id:
            raise MatrixError(400, Codes.INVALID_PARAM, "The device id must be the token's")
        body = parse_json_body(request)
        return 200, await self._keys.upload(requester, body)

    async def on_query(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        body = parse_json_body(request)
        timeout = _timeout(body)
        device_keys = string_lists(field(body, "device_keys", dict, required=True), "device_keys")
        return 200, await self._keys.query(requester, device_keys, timeout)

    async def on_claim(self, request: Request) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request, allow_guest=True)
        body = parse_json_body(request)
        timeout = _timeout(body)
        wanted = string_maps(field(body, "one_time_keys", dict, required=True), "one_time_keys")
        return 200, await self._keys.claim(wanted, timeout)

    async def on_changes(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        from_token = parse_string(request, "from", required=True)
        # Required by the spec, but only a hint; like Synapse, absent means "now".
        to_token = parse_string(request, "to")
        assert from_token is not None
        return 200, await self._keys.changes(requester, from_token, to_token)

    async def on_device_signing_upload(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        for name in ("master_key", "self_signing_key", "user_signing_key"):
            field(body, name, dict)
        kind = await self._cross_signing.classify_upload(requester.user_id, body)
        if kind == "same":
            return 200, {}  # exactly the keys already held: idempotent, no UIA
        session_id = None
        if kind == "replace":
            _, body, session_id = await self._ui_auth.check(
                body,
                [[PASSWORD]],
                uri=request.path.decode(),
                method=request.method.decode(),
                description="reset the cross-signing keys of your account",
                requester=requester,
            )
        await self._cross_signing.upload_signing_keys(requester.user_id, body)
        if session_id is not None:
            await self._ui_auth.finish(session_id)
        return 200, {}

    async def on_signatures_upload(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        return 200, await self._cross_signing.upload_signatures(requester.user_id, body)

    async def on_send_to_device(
        self, request: Request, eventType: str, txnId: str
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        body = parse_json_body(request)
        messages = field(body, "messages", dict, required=True)
        await self._to_device.send(requester, eventType, txnId, messages)
        return 200, {}
