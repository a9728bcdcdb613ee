"""User-interactive authentication (the spec's UIA): flows, stages and sessions.

A session is bound to the URI and method that started it, so a session completed for
one operation cannot authorise another. Sessions live in the database so a restart in
the middle of a flow does not lose them; they expire after ``SESSION_LIFETIME_MS``.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.errors import Codes, InteractiveAuthIncomplete, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.ratelimit import Ratelimiter
from homeserver.requester import Requester
from storage.registration import UiAuthSession
from storage.storage import Storage

SESSION_LIFETIME_MS = 48 * 3600 * 1000

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"
EMAIL_IDENTITY = "m.login.email.identity"
# Kept among a session's completed stages (never a stage name, never shown): what the
# operation the session authorised did, so a retry of it gets the same answer.
OUTCOME = "_outcome"

JsonDict = dict[str, Any]
# A stage checker gets the auth dict and the session; returns what to record, or raises.
StageChecker = Callable[[JsonDict, UiAuthSession, "Requester | None"], Awaitable[Any]]


class UiAuthHandler:
    def __init__(
        self,
        storage: Storage,
        auth: AuthHandler,
        server_name: str,
        failed_login_limiter: Ratelimiter,
    ) -> None:
        self._storage = storage
        self._auth = auth
        self._server_name = server_name
        self._failed_login_limiter = failed_login_limiter
        self._checkers: dict[str, StageChecker] = {
            DUMMY: self._check_dummy,
            PASSWORD: self._check_password,
            REGISTRATION_TOKEN: self._check_registration_token,
        }

    def register_stage(self, stage: str, checker: StageChecker) -> None:
        """Add a stage whose checker lives elsewhere (email validation)."""
        self._checkers[stage] = checker

    def has_stage(self, stage: str) -> bool:
        return stage in self._checkers

    async def check(
        self,
        body: JsonDict,
        flows: list[list[str]],
        *,
        uri: str,
        method: str,
        description: str,
        requester: Requester | None = None,
        params: JsonDict | None = None,
    ) -> tuple[JsonDict, JsonDict, str]:
        """Run one step; return (completed stages, client dict, session id) when a flow is done.

        Raises ``InteractiveAuthIncomplete`` (401 with the flows) until then.
        """
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'auth' must be an object")
        if auth and not isinstance(auth.get("type", ""), str):
            raise MatrixError(400, Codes.BAD_JSON, "'auth.type' must be a string")
        clientdict = {k: v for k, v in body.items() if k != "auth"}
        session: UiAuthSession | None = None
        session_id = auth.get("session") if auth else None
        if session_id is not None:
            if not isinstance(session_id, str):
                raise MatrixError(400, Codes.BAD_JSON, "'auth.session' must be a string")
            session = await self._storage.registration.get_ui_auth_session(session_id)
            if session is None or session.creation_ts < self._auth.now_ms() - SESSION_LIFETIME_MS:
                raise MatrixError(400, Codes.UNKNOWN, "Unknown or expired UIA session")
            if session.uri != uri or session.method != method:
                raise MatrixError(
                    403,
                    Codes.FORBIDDEN,
                    "Requested operation has changed during the UI authentication session.",
                )
            if requester is not None and session.user_id not in (None, requester.user_id):
                raise MatrixError(403, Codes.FORBIDDEN, "UIA session belongs to another user")
            # Later requests may leave out what the first one sent (e.g. the password).
            merged = dict(session.clientdict)
            merged.update(clientdict)
            clientdict = merged
        if session is None:
            session = UiAuthSession(
                session_id=secrets.token_urlsafe(24),
                creation_ts=self._auth.now_ms(),
                uri=uri,
                method=method,
                description=description,
                clientdict=clientdict,
                completed={},
                user_id=requester.user_id if requester else None,
            )
            await self._storage.registration.create_ui_auth_session(session)

        completed = dict(session.completed)
        error: MatrixError | None = None
        stage = auth.get("type") if auth else None
        if auth is not None and stage is not None:
            allowed = {s for flow in flows for s in flow}
            if stage not in allowed or stage not in self._checkers:
                error = MatrixError(400, Codes.UNRECOGNIZED, f"Unrecognised login type {stage}")
            else:
                try:
                    result = await self._checkers[stage](auth, session, requester)
                except MatrixError as e:
                    # 403 (auth as another user than the requester's) ends the request, as
                    # Synapse does; other failures are reported with the flows (401).
                    if e.status in (403, 429):
                        raise
                    error = e
                else:
                    completed = await self._storage.registration.mark_ui_auth_stage_complete(
                        session.session_id, stage, result
                    )

        for flow in flows:
            if all(s in completed for s in flow):
                return completed, clientdict, session.session_id

        state: JsonDict = {
            "flows": [{"stages": flow} for flow in flows],
            "params": params or {},
            "session": session.session_id,
        }
        shown = [s for s in completed if s != OUTCOME]
        if shown or auth is not None:
            # Once a stage was attempted, ``completed`` is always there (as Synapse).
            state["completed"] = shown
        if error is not None:
            state["errcode"] = error.errcode
            state["error"] = error.message
            if error.status == 400 and error.errcode == Codes.UNRECOGNIZED:
                raise MatrixError(400, error.errcode, error.message)
        raise InteractiveAuthIncomplete(state)

    async def finish(self, session_id: str) -> None:
        await self._storage.registration.delete_ui_auth_session(session_id)

    async def outcome_of(self, body: JsonDict) -> Any:
        """What the operation of the session ``body`` names did (None: nothing yet, or
        no such session; ``check`` judges the session)."""
        auth = body.get("auth")
        session_id = auth.get("session") if isinstance(auth, dict) else None
        if not isinstance(session_id, str):
            return None
        session = await self._storage.registration.get_ui_auth_session(session_id)
        return session.completed.get(OUTCOME) if session is not None else None

    async def record_outcome(self, session_id: str, outcome: Any) -> None:
        """Keep the session (until it expires) with what its operation did: the
        completed stages ``check`` returns for a retry hold it under ``OUTCOME``."""
        await self._storage.registration.mark_ui_auth_stage_complete(session_id, OUTCOME, outcome)

    # Stages ----------------------------------------------------------------

    async def _check_dummy(
        self, auth: JsonDict, session: UiAuthSession, requester: Requester | None
    ) -> Any:
        return True

    async def _check_password(
        self, auth: JsonDict, session: UiAuthSession, requester: Requester | None
    ) -> Any:
        password = auth.get("password")
        if not isinstance(password, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing password")
        user_id = resolve_identifier_user(auth, self._server_name)
        if requester is not None:
            user_id = user_id or requester.user_id
            if user_id != requester.user_id:
                raise MatrixError(403, Codes.FORBIDDEN, "Invalid auth: user does not match")
        if user_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing user identifier")
        self._failed_login_limiter.ratelimit(user_id, update=False)
        if not await self._auth.check_password(user_id, password):
            self._failed_login_limiter.ratelimit(user_id)
            raise MatrixError(401, Codes.FORBIDDEN, "Invalid username or password")
        return user_id

    async def _check_registration_token(
        self, auth: JsonDict, session: UiAuthSession, requester: Requester | None
    ) -> Any:
        token = auth.get("token")
        if not isinstance(token, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing registration token")
        if not await self._storage.registration.registration_token_is_valid(
            token, self._auth.now_ms()
        ):
            raise MatrixError(401, Codes.FORBIDDEN, "Invalid registration token")
        return token


def resolve_identifier_user(body: JsonDict, server_name: str) -> str | None:
    """The full user id named by ``identifier`` (``m.id.user``) or the legacy ``user``."""
    identifier = body.get("identifier")
    name: Any = None
    if isinstance(identifier, dict):
        if identifier.get("type") != "m.id.user":
            raise MatrixError(400, Codes.UNRECOGNIZED, "Only m.id.user identifiers are supported")
        name = identifier.get("user")
    elif identifier is not None:
        raise MatrixError(400, Codes.BAD_JSON, "'identifier' must be an object")
    elif "user" in body:
        name = body.get("user")
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise MatrixError(400, Codes.BAD_JSON, "User identifier must be a non-empty string")
    if name.startswith("@"):
        return name
    return f"@{name.lower()}:{server_name}"
