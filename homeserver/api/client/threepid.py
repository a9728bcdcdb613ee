"""Email validation and account 3PIDs.

- ``POST /register/email/requestToken``, ``/account/3pid/email/requestToken``,
  ``/account/password/email/requestToken``: the homeserver mails a link (rate limited
  per client address and per email address, ``rc_3pid_validation``).
- ``.../msisdn/requestToken``: refused (no SMS sender), as Synapse without one.
- ``GET`` of the mailed link (Synapse's paths): validates the session.
- ``POST /account/3pid/add`` (UIA) and the deprecated ``POST /account/3pid``
  (``three_pid_creds``): add a validated email address to the account.
"""

from __future__ import annotations

import html
from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.email_validation import (
    ADD_THREEPID,
    PASSWORD_RESET,
    REGISTRATION,
    SUBMIT_PATHS,
    EmailValidation,
)
from homeserver.handlers.threepid import ThreePidHandler
from homeserver.handlers.ui_auth import PASSWORD, UiAuthHandler
from homeserver.http.ratelimit import Ratelimiter
from homeserver.http.server import JsonResource, MatrixRequest, RawResponse
from homeserver.http.servlet import field, parse_json_body, parse_string


class HtmlPage(RawResponse):
    """A small HTML page (what a mailed link opens), or a redirect to ``location``."""

    def __init__(self, title: str, message: str, location: str | None = None) -> None:
        self._body = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head>"
            f"<body><p>{html.escape(message)}</p></body></html>"
        ).encode()
        self._location = location

    async def write(self, request: MatrixRequest, status: int) -> None:
        if self._location is not None:
            request.setResponseCode(302)
            request.setHeader(b"Location", self._location.encode())
        else:
            request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Length", str(len(self._body)).encode())
        if request.method != b"HEAD":
            request.write(self._body)
        request.finish()


class ThreePidServlets:
    def __init__(
        self,
        auth: AuthHandler,
        ui_auth: UiAuthHandler,
        validation: EmailValidation,
        threepids: ThreePidHandler,
        limiter: Ratelimiter,
    ) -> None:
        self._auth = auth
        self._ui_auth = ui_auth
        self._validation = validation
        self._threepids = threepids
        self._limiter = limiter

    def register(self, r: JsonResource) -> None:
        for path, kind in (
            ("/register/email/requestToken", REGISTRATION),
            ("/account/3pid/email/requestToken", ADD_THREEPID),
            ("/account/password/email/requestToken", PASSWORD_RESET),
        ):
            r.register_many("POST", client_paths(path), self._request_token(kind))
        for path in (
            "/register/msisdn/requestToken",
            "/account/3pid/msisdn/requestToken",
            "/account/password/msisdn/requestToken",
        ):
            r.register_many("POST", client_paths(path), self.on_msisdn_request_token)
        for path in SUBMIT_PATHS.values():
            r.register("GET", "/" + path, self.on_submit_token)
        r.register_many("POST", client_paths("/account/3pid/add"), self.on_add)
        r.register_many("POST", client_paths("/account/3pid"), self.on_add_deprecated)

    def _request_token(self, kind: str) -> Any:
        async def handler(request: Request) -> tuple[int, Any]:
            assert isinstance(request, MatrixRequest)
            body = parse_json_body(request)
            self._limiter.ratelimit(f"ip:{request.client_ip()}")
            email = body.get("email")
            if isinstance(email, str):
                self._limiter.ratelimit(f"email:{email.strip().lower()}")
            return 200, await self._validation.request_token(kind, body)

        return handler

    async def on_msisdn_request_token(self, request: Request) -> tuple[int, Any]:
        parse_json_body(request)
        raise MatrixError(
            400, Codes.UNKNOWN, "Validating phone numbers is not supported on this homeserver"
        )

    async def on_submit_token(self, request: Request) -> tuple[int, Any]:
        sid = parse_string(request, "sid", required=True) or ""
        client_secret = parse_string(request, "client_secret", required=True) or ""
        token = parse_string(request, "token", required=True) or ""
        try:
            session = await self._validation.submit_token(sid, client_secret, token)
        except MatrixError as e:
            return e.status, HtmlPage("Validation failed", e.message)
        return 200, HtmlPage(
            "Email validated",
            "Your email address has been validated. You can return to your client.",
            session.next_link,
        )

    async def _add(self, user_id: str, sid: Any, client_secret: Any) -> None:
        medium, address, validated_at = await self._validation.validated_threepid(
            sid, client_secret
        )
        await self._threepids.add(user_id, medium, address, validated_at)

    async def on_add(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        field(body, "sid", str, required=True)
        field(body, "client_secret", str, required=True)
        _, params, session_id = await self._ui_auth.check(
            body,
            [[PASSWORD]],
            uri=request.path.decode(),
            method="POST",
            description="add a third-party identifier to your account",
            requester=requester,
        )
        await self._add(requester.user_id, params.get("sid"), params.get("client_secret"))
        await self._ui_auth.finish(session_id)
        return 200, {}

    async def on_add_deprecated(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        creds = field(body, "three_pid_creds", dict) or field(body, "threePidCreds", dict)
        if creds is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing param three_pid_creds")
        await self._add(requester.user_id, creds.get("sid"), creds.get("client_secret"))
        return 200, {}
