"""Simplified sliding sync (MSC4186) at Synapse's unstable path; see docs/sliding_sync.md."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet import defer
from twisted.web.server import Request

from homeserver.api.client.paths import CLIENT_PREFIX
from homeserver.api.client.sync import MAX_TIMEOUT_MS
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import (
    JsonResource,
    MatrixRequest,
    PendingResponse,
    respond_error,
    respond_json,
)
from homeserver.http.servlet import parse_integer, parse_json_body, parse_string
from homeserver.logging_context import current_request_id
from homeserver.sync.handler import SyncToken
from homeserver.sync.notifier import Parking
from homeserver.sync.sliding import Session, SlidingSyncHandler
from homeserver.sync.sliding_config import Position, SlidingSyncRequest, parse_request

# Advertised in /versions ``unstable_features``, as Synapse does.
SLIDING_SYNC_FEATURE = "org.matrix.simplified_msc3575"
SLIDING_SYNC_PATH = f"{CLIENT_PREFIX}/unstable/{SLIDING_SYNC_FEATURE}/sync"


class SlidingSyncServlet:
    def __init__(self, auth: AuthHandler, handler: SlidingSyncHandler) -> None:
        self._auth = auth
        self._handler = handler

    def register(self, r: JsonResource) -> None:
        r.register("POST", SLIDING_SYNC_PATH, self.on_post)

    async def on_post(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        raw_pos = parse_string(request, "pos")
        timeout = parse_integer(request, "timeout", default=0, minimum=0, maximum=MAX_TIMEOUT_MS)
        assert timeout is not None
        body = parse_json_body(request)
        req = parse_request(
            body,
            requester.user_id,
            requester.device_id or "",
            Position.parse(raw_pos) if raw_pos else None,
            timeout,
        )
        if not timeout or req.pos is None or not isinstance(request, MatrixRequest):
            return 200, await self._handler.sync(req)  # answered at once, never waits
        request.release_input()  # all parsed: a long-poll need not hold it while waiting
        return 200, _LongPoll(self._handler, req)


class _LongPoll(PendingResponse):
    """A sliding sync long-poll that waits without a coroutine of its own (as /sync's):
    between builds it is this object, parked on the notifier (woken by the user's
    notifications, expired by its deadline wheel); each wake-up builds again, and answers
    once there is something to say or the deadline has passed."""

    __slots__ = (
        "_handler",
        "_req",
        "_deadline",
        "_session",
        "_now",
        "_parking",
        "_request",
        "_building",
        "_cancelled",
    )

    def __init__(self, handler: SlidingSyncHandler, req: SlidingSyncRequest) -> None:
        self._handler = handler
        self._req = req
        self._deadline = handler.notifier.clock.seconds() + req.timeout_ms / 1000.0
        self._session: Session | None = None
        self._now: SyncToken | None = None  # the token of the last (empty) build
        self._parking = Parking(handler.notifier, req.user_id)
        self._request: MatrixRequest | None = None
        self._building: defer.Deferred[None] | None = None
        self._cancelled = False

    def start(self, request: MatrixRequest) -> None:
        self._request = request
        self._run(self._build())

    def wake(self) -> None:
        """The notifier: something happened for the user."""
        self._parking.unpark(self)
        self._run(self._build())

    def expire(self) -> None:
        """The notifier: the deadline passed."""
        self._parking.unpark(self)
        self._run(self._build())

    def cancel(self) -> None:
        """The client went away."""
        self._cancelled = True
        self._parking.unpark(self)
        building, self._building = self._building, None
        if building is not None:
            building.cancel()

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self._cancelled:
            coroutine.close()
            return
        assert self._request is not None
        token = current_request_id.set(self._request.request_id)
        try:
            building = defer.ensureDeferred(coroutine)
        finally:
            current_request_id.reset(token)
        if not building.called:
            self._building = building

    async def _build(self) -> None:
        handler = self._handler
        try:
            try:
                if self._session is None:
                    self._session = await handler.open(self._req)
                now = handler.current_token()
                built = await handler.build(self._session, now)
                past = handler.notifier.clock.seconds() >= self._deadline
                body = (
                    await handler.answer(self._session, built, now) if built.ready or past else None
                )
            finally:
                self._building = None
        except Exception as e:  # CancelledError included: the client went away
            self._answer_error(e)
            return
        if body is not None:
            self._answer(body)
            return
        self._now = now
        self._park()

    def _park(self) -> None:
        if self._cancelled:
            return
        if self._handler.current_token() != self._now:
            self._run(self._build())  # something arrived since that build
            return
        self._parking.park(self, self._deadline)

    def _answer(self, body: Any) -> None:
        request = self._request
        assert request is not None
        request.handling = None
        try:
            respond_json(request, 200, body)
        except Exception as e:
            respond_error(request, e)

    def _answer_error(self, exc: BaseException) -> None:
        request = self._request
        assert request is not None
        request.handling = None
        respond_error(request, exc)
