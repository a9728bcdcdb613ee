"""The WebSocket transport (issue #8, framing of the Matrix WebSocket draft, MSC #1148).

``GET /_matrix/client/unstable/org.homeserver.ws/stream`` upgrades to a WebSocket
(subprotocol ``m.json``). The server pushes /sync responses; the client makes calls
(``{"id", "method", "params"}``) answered by ``{"id", "result"}`` or ``{"id", "error"}``.
The protocol is in docs/websocket.md.

Invariants:
- Every text frame pushed is exactly the body of an incremental /sync from the previous
  frame's ``next_batch`` (the first from ``since``, or an initial sync), built by the
  same ``SyncHandler`` call as ``GET /sync``; so a client that reconnects with the last
  ``next_batch`` it received misses nothing and sees nothing twice. Responses with
  nothing for the user are not pushed (the position still advances: nothing was owed).
- Each method does what its REST endpoint does by calling the servlet's shared method
  (same validation, rate limits, transaction ids, presence bumps).
- Nothing is buffered without bound. The connection is the transport's push producer:
  while the peer does not read (the transport paused us) no new sync is built. A peer
  paused for ``stall_timeout``, with more than ``max_buffered_bytes`` unsent, or with
  more than ``max_pending_messages`` replies written while paused, is closed with 4000;
  it resumes from its last ``next_batch``.
- An idle connection holds the autobahn protocol object (its ``__dict__`` trimmed to
  what differs from class-level defaults), one entry in the notifier's waiters (the
  protocol itself: woken, it builds one sync and registers again) and one in the
  factory's ping ring. No coroutine, Deferred or timer per idle connection: one shared
  LoopingCall pings every connection once per ``ping_interval`` (in slices) and drops
  those that do not answer within ``ping_timeout``. The user counts as syncing
  (presence, push) from open to close (``SyncHandler.hold``); each build is a heartbeat.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import TrafficStats
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import defer, task
from twisted.web.server import Request

from homeserver.api.client.ephemeral import EphemeralServlets
from homeserver.api.client.paths import CLIENT_PREFIX, WEBSOCKET_FEATURE
from homeserver.api.client.rooms import RoomServlets
from homeserver.api.client.sync import SyncServlets
from homeserver.clock import Clock, DelayedCall
from homeserver.config import WebSocketConfig
from homeserver.errors import Codes, MatrixError
from homeserver.events.filtering import FilterCollection
from homeserver.handlers.auth import AuthHandler, get_access_token_from_request
from homeserver.http.server import JsonResource, MatrixRequest, RawResponse
from homeserver.http.servlet import field, parse_string
from homeserver.requester import Requester
from homeserver.sync.encoding import encode_sync_body
from homeserver.sync.handler import SyncHandler, SyncRequest, SyncToken
from homeserver.untrusted import decode_json

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

WS_PATH = f"{CLIENT_PREFIX}/unstable/{WEBSOCKET_FEATURE}/stream"
SUBPROTOCOL = "m.json"

# Close codes (4000-4999 are the application's).
CLOSE_TOO_SLOW = 4000
CLOSE_TOO_SLOW_REASON = "too slow, resume from your last next_batch"
CLOSE_BAD_SYNC = 4400  # the sync itself was refused (e.g. a token ahead of the server)
CLOSE_UNKNOWN_TOKEN = 4401  # the access token died (logout, deactivation)
CLOSE_SHUTTING_DOWN = 4001  # resume from the last next_batch (autobahn refuses 1001)
CLOSE_INTERNAL = 4500

# One shared instance for every connection without a filter (most of them).
_NO_FILTER = FilterCollection.from_json({})

# What autobahn keeps of the opening handshake and never reads after it (they are only
# read in processHandshake/succeedHandshake): ~3 KiB per connection, dropped at onOpen.
_HANDSHAKE_LEFTOVERS = (
    "http_headers",
    "http_request_data",
    "http_response_data",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "_wskey",
    "websocket_protocols",
    "websocket_extensions",
)
# autobahn counts octets per connection in a TrafficStats nobody here reads: one shared
# instance instead of ~1.2 KiB each.
_SHARED_TRAFFIC_STATS = TrafficStats()

# Per-connection autobahn state that an open, healthy connection holds at its initial
# value: read from the class instead (an instance attribute appears again only when
# autobahn sets it), so each connection's __dict__ holds only what differs.
_STATE_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(_HANDSHAKE_LEFTOVERS),
    **dict.fromkeys(
        (
            "wasNotCleanReason",
            "localCloseCode",
            "localCloseReason",
            "remoteCloseCode",
            "remoteCloseReason",
            "openHandshakeTimeoutCall",
            "closeHandshakeTimeoutCall",
            "autoPingTimeoutCall",
            "autoPingPending",
            "autoPingPendingCall",
            "autoPingPendingSent",
            "_perMessageCompress",
            "trackedTimings",
            "utf8validator",
            "websocket_origin",
            "http_request_uri",
        )
    ),
    **dict.fromkeys(
        (
            "closedByMe",
            "failedByMe",
            "droppedByMe",
            "wasClean",
            "wasServerConnectionDropTimeout",
            "wasOpenHandshakeTimeout",
            "wasCloseHandshakeTimeout",
            "wasServingFlashSocketPolicyFile",
            "wasMaxFramePayloadSizeExceeded",
            "wasMaxMessagePayloadSizeExceeded",
            "triggered",
            "inside_message",
        ),
        False,
    ),
    "autoPingPendingSeq": 0,
    "data": b"",
    "send_queue": (),
    "trafficStats": _SHARED_TRAFFIC_STATS,
}

# The shared pinger visits one slice of the connections per tick.
PING_TICK_S = 1.0
# Woken connections built per reactor turn (see SyncStreamFactory.kick_soon).
KICK_SLICE = 50


def _unsent_bytes(transport: Any) -> int:
    """Bytes written to ``transport`` not yet handed to the kernel (TLS: below it too)."""
    total = 0
    for _ in range(3):  # the socket, or TLS over a socket
        if transport is None:
            break
        if hasattr(transport, "dataBuffer"):
            total += len(transport.dataBuffer) - getattr(transport, "offset", 0)
            total += getattr(transport, "_tempDataLen", 0)
        transport = getattr(transport, "transport", None)
    return total


class _Session:
    """What the upgrade request established; handed to the protocol the factory builds."""

    __slots__ = ("access_token", "filters", "requester", "set_presence", "since")

    def __init__(
        self,
        requester: Requester,
        access_token: str,
        since: SyncToken | None,
        filters: FilterCollection,
        set_presence: str | None,
    ) -> None:
        self.requester = requester
        self.access_token = access_token
        self.since = since
        self.filters = filters
        self.set_presence = set_presence


class SyncStreamProtocol(WebSocketServerProtocol):  # type: ignore[misc]
    """One client connection: a /sync loop pushing frames, and calls answered."""

    factory: SyncStreamFactory
    session: _Session

    # Class defaults: an instance attribute exists only while it differs.
    _building = False  # a sync build (or the opening hold) is running
    _waiting = False  # registered with the notifier
    _holds: tuple[Callable[[], None], ...] = ()  # ends of the sync hooks (presence, push)
    _ping_sent = 0.0  # when an unanswered ping went out
    _paused = False
    _stall_timer: Any = None  # an IDelayedCall while paused
    _pending_while_paused = 0
    _calls = 0
    _closing = False

    # Handshake and life cycle ---------------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> str | None:
        if request.protocols and SUBPROTOCOL not in request.protocols:
            raise ConnectionDeny(400, f"Only the {SUBPROTOCOL} subprotocol is spoken")
        return SUBPROTOCOL if request.protocols else None

    def onOpen(self) -> None:
        self.factory.add(self)
        # Handshake leftovers, the per-connection TrafficStats and the UTF-8 validator go
        # (incoming text is not validated incrementally, utf8validateIncoming is off:
        # decode_json refuses invalid UTF-8, answered M_NOT_JSON), and so does all state
        # still at its class default: a fresh, compact __dict__. autobahn queues frames
        # only for sync=True sends (never made here); the default empty tuple reads as an
        # empty queue, and any append would fail loudly, not cross-talk.
        self.__dict__ = {k: v for k, v in self.__dict__.items() if k not in _STATE_DEFAULTS}
        # The HTTP channel was the transport's producer until the upgrade; now we are.
        assert self.transport is not None
        self.transport.unregisterProducer()
        self.registerProducer(self, True)
        self._building = True
        d = defer.ensureDeferred(self._open_stream())
        d.addErrback(self._loop_failed)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.discard(self)
        self._closing = True
        self._cancel_stall_timer()
        self._stop_waiting()
        holds, self._holds = self._holds, ()
        for end in holds:
            end()

    def _close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._cancel_stall_timer()
        self._stop_waiting()
        self.sendClose(code, reason)

    def _stop_waiting(self) -> None:
        if self._waiting:
            self._waiting = False
            self.factory.sync.notifier.remove_waiter(self.session.requester.user_id, self)

    # Back-pressure (IPushProducer, called by the transport) ----------------------------

    def pauseProducing(self) -> None:
        if self._paused:
            return
        self._paused = True
        self._pending_while_paused = 0
        self._stall_timer = self.factory.clock.callLater(
            self.factory.settings.stall_timeout_ms / 1000.0, self._stalled
        )

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancel_stall_timer()
        if not self._waiting:
            self._kick()  # a build skipped while paused (a no-op if one is running)

    def stopProducing(self) -> None:
        self._close(1000, "connection lost")

    def _cancel_stall_timer(self) -> None:
        timer, self._stall_timer = self._stall_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _stalled(self) -> None:
        self._stall_timer = None
        logger.info("WebSocket of %s closed: stalled", self.session.requester.user_id)
        self._close_too_slow()

    def _close_too_slow(self) -> None:
        if not self._closing:
            self.factory.closed_too_slow += 1
        self._close(CLOSE_TOO_SLOW, CLOSE_TOO_SLOW_REASON)

    def _push(self, body: JsonDict) -> None:
        if self._closing or self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        settings = self.factory.settings
        if self._paused:
            self._pending_while_paused += 1
        if (
            self._pending_while_paused > settings.max_pending_messages
            or _unsent_bytes(self.transport) > settings.max_buffered_bytes
        ):
            logger.info("WebSocket of %s closed: too slow", self.session.requester.user_id)
            self._close_too_slow()
            return
        # maxMessagePayloadSize guards what peers send us; a /sync body may be larger.
        limit: int = getattr(self, "maxMessagePayloadSize", 0)
        self.maxMessagePayloadSize = 0
        try:
            self.sendMessage(encode_sync_body(body), isBinary=False)
        finally:
            self.maxMessagePayloadSize = limit

    # Server to client: the sync loop ---------------------------------------------------

    async def _open_stream(self) -> None:
        session = self.session
        try:
            holds = await self.factory.sync.hold(
                session.requester.user_id, session.requester.device_id, session.set_presence
            )
        finally:
            self._building = False
        if self._closing:
            for end in holds:
                end()
            return
        self._holds = holds
        self._kick()

    def wake(self) -> None:
        """The notifier: something happened for the user (one call per registration).

        The build starts on the next reactor turn, not inside the notifier's caller,
        which may have more to do first (logout invalidates the token after deleting
        the device, whose notification wakes us)."""
        self._waiting = False
        self.factory.kick_soon(self)

    def _kick(self) -> None:
        if self._closing or self._building or self._paused:
            return  # the running build looks again; resumeProducing kicks a paused one
        self._building = True
        d = defer.ensureDeferred(self._sync_until_idle())
        d.addErrback(self._loop_failed)

    async def _sync_until_idle(self) -> None:
        """Build (and push) syncs until nothing new is left, then wait on the notifier."""
        factory = self.factory
        session = self.session
        user_id = session.requester.user_id
        try:
            while not self._closing and not self._paused:
                since = session.since
                response, has_updates, token = await factory.sync.sync_held(
                    SyncRequest(
                        user_id=user_id,
                        device_id=session.requester.device_id,
                        since=since,
                        timeout_ms=0,
                        filters=session.filters,
                        full_state=False,
                        set_presence=session.set_presence,
                    )
                )
                if self._closing:
                    return
                if has_updates or since is None:
                    self._push(response)
                session.since = token
                # Checked after the build, right before waiting: what woke us may be the
                # token's own death (logout deletes the device, then the token).
                if not await self._still_authorised(allow_guest=True):
                    return
                if not self._closing and not self._paused and factory.sync.current_token() == token:
                    # Nothing arrived while building; registering is synchronous with that
                    # check, so whatever comes next wakes us.
                    self._waiting = True
                    factory.sync.notifier.add_waiter(user_id, self)
                    return
        finally:
            self._building = False

    def _recheck_token(self) -> None:
        """From the pinger: an idle connection whose token expired is closed (logout and
        deactivation wake it at once; expiry notifies nobody)."""
        if self._waiting and not self._closing:
            d = defer.ensureDeferred(self._still_authorised(allow_guest=True))
            d.addErrback(self._loop_failed)

    def _ping(self, now: float) -> None:
        if self._closing or self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        if not self._ping_sent:
            self._ping_sent = now
            self.sendPing()

    def _ping_expired(self, now: float, timeout: float) -> None:
        if self._ping_sent and now - self._ping_sent >= timeout and not self._closing:
            self.wasClean = False
            self.wasNotCleanReason = "WebSocket ping timeout (no pong in time)"
            self.dropConnection(abort=True)

    def onPong(self, payload: bytes) -> None:
        self._ping_sent = 0.0

    def _loop_failed(self, failure: Any) -> None:
        if failure.check(defer.CancelledError):
            return None
        exc = failure.value
        if isinstance(exc, MatrixError):
            self._close(CLOSE_BAD_SYNC, f"{exc.errcode}: {exc.message}"[:120])
            return None
        logger.error("WebSocket sync loop failed", exc_info=exc)
        self._close(CLOSE_INTERNAL, "internal server error")
        return None

    async def _still_authorised(self, *, allow_guest: bool) -> bool:
        """Re-check the access token (a cache hit unless it died); close if it did."""
        if self.factory.auth.cached_token_alive(self.session.access_token):
            return True  # the common case, once per build: no Requester built
        requester = await self._requester(allow_guest=allow_guest)
        return requester is not None

    async def _requester(self, *, allow_guest: bool) -> Requester | None:
        session = self.session
        if session.requester.app_service_id is not None:
            return session.requester  # service tokens live in the config: they cannot die
        try:
            return await self.factory.auth.get_user_by_access_token(
                session.access_token, allow_guest=allow_guest
            )
        except MatrixError as e:
            if e.errcode == Codes.UNKNOWN_TOKEN:
                self._close(CLOSE_UNKNOWN_TOKEN, f"{e.errcode}: {e.message}"[:120])
                return None
            raise

    # Client to server: calls -----------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._ping_sent:
            self._ping_sent = 0.0  # any traffic shows the peer is alive
        if isBinary:
            self._close(1003, "only text frames (JSON) are accepted")
            return
        call_id: Any = None
        try:
            message = decode_json(payload, forbid_nul=True)
            if not isinstance(message, dict):
                raise MatrixError(400, Codes.BAD_JSON, "Message must be a JSON object")
            call_id = message.get("id")
            if isinstance(call_id, (dict, list)):
                call_id = None
            call_id = field(message, "id", str, required=True)
            if not call_id:
                raise MatrixError(400, Codes.BAD_JSON, "id must not be empty")
            method = field(message, "method", str, required=True)
            params = field(message, "params", dict, default={}, what="an object")
            if method not in _METHODS:
                raise MatrixError(400, Codes.UNRECOGNIZED, f"Unknown method {method!r}")
            if self._calls >= self.factory.settings.max_calls_in_flight:
                raise MatrixError(
                    429, Codes.LIMIT_EXCEEDED, "Too many calls in flight on this connection"
                )
        except MatrixError as e:
            self._push({"id": call_id, "error": e.to_json()})
            return
        self._calls += 1
        defer.ensureDeferred(self._call(call_id, method, params))

    async def _call(self, call_id: str, method: str, params: JsonDict) -> None:
        try:
            requester = await self._requester(allow_guest=method == "ping")
            if requester is None:
                return
            result = await _METHODS[method](self.factory, requester, call_id, params)
            self._push({"id": call_id, "result": result})
        except MatrixError as e:
            self._push({"id": call_id, "error": e.to_json()})
        except defer.CancelledError:
            pass
        except Exception:
            logger.exception("WebSocket call %s failed", method)
            self._push(
                {"id": call_id, "error": {"errcode": Codes.UNKNOWN, "error": "Internal error"}}
            )
        finally:
            self._calls -= 1


for _name, _value in _STATE_DEFAULTS.items():
    setattr(SyncStreamProtocol, _name, _value)


# The methods: each the REST endpoint's shared servlet method ------------------------

Method = Callable[["SyncStreamFactory", Requester, str, JsonDict], Awaitable[JsonDict]]


def _object(params: JsonDict, name: str) -> JsonDict:
    value: JsonDict = field(params, name, dict, required=True, what="an object")
    return value


async def _ping(f: SyncStreamFactory, requester: Requester, call_id: str, p: JsonDict) -> JsonDict:
    return {}


async def _send_event(
    f: SyncStreamFactory, requester: Requester, call_id: str, p: JsonDict
) -> JsonDict:
    # The call id is the transaction id: a resent call is answered with the same event.
    event_id = await f.rooms.send_event(
        requester,
        field(p, "room_id", str, required=True),
        field(p, "event_type", str, required=True),
        _object(p, "content"),
        call_id,
    )
    return {"event_id": event_id}


async def _state(f: SyncStreamFactory, requester: Requester, call_id: str, p: JsonDict) -> JsonDict:
    event_id = await f.rooms.put_state(
        requester,
        field(p, "room_id", str, required=True),
        field(p, "event_type", str, required=True),
        field(p, "state_key", str, default=""),
        _object(p, "content"),
    )
    return {"event_id": event_id}


async def _typing(
    f: SyncStreamFactory, requester: Requester, call_id: str, p: JsonDict
) -> JsonDict:
    room_id = field(p, "room_id", str, required=True)
    await f.ephemeral.typing(requester, room_id, requester.user_id, p)
    return {}


async def _receipt(
    f: SyncStreamFactory, requester: Requester, call_id: str, p: JsonDict
) -> JsonDict:
    await f.ephemeral.receipt(
        requester,
        field(p, "room_id", str, required=True),
        field(p, "receipt_type", str, required=True),
        field(p, "event_id", str, required=True),
        p,
    )
    return {}


async def _read_markers(
    f: SyncStreamFactory, requester: Requester, call_id: str, p: JsonDict
) -> JsonDict:
    await f.ephemeral.read_markers(requester, field(p, "room_id", str, required=True), p)
    return {}


_METHODS: dict[str, Method] = {
    "ping": _ping,
    "send": _send_event,
    "state": _state,
    "typing": _typing,
    "receipt": _receipt,
    "read_markers": _read_markers,
}


# The factory and the upgrade --------------------------------------------------------


class SyncStreamFactory(WebSocketServerFactory):  # type: ignore[misc]
    protocol = SyncStreamProtocol  # type: ignore[assignment]

    def __init__(
        self,
        settings: WebSocketConfig,
        clock: Clock,
        auth: AuthHandler,
        sync: SyncHandler,
        rooms: RoomServlets,
        ephemeral: EphemeralServlets,
    ) -> None:
        super().__init__(protocols=[SUBPROTOCOL])
        self.settings = settings
        self.clock = clock
        self.auth = auth
        self.sync = sync
        self.rooms = rooms
        self.ephemeral = ephemeral
        self.connections: set[SyncStreamProtocol] = set()
        self.closed_too_slow = 0  # connections closed with 4000 since start (for operators)
        # Set only while WebSocketResource.render builds the protocol (synchronously).
        self._next_session: _Session | None = None
        self.setProtocolOptions(
            # Pings are ours (one LoopingCall for all connections), not a timer each.
            autoPingInterval=0,
            autoPingTimeout=0,
            closeHandshakeTimeout=settings.close_timeout_ms / 1000.0,
            # Calls are small; pushed frames are sent whole (never fragmented).
            maxMessagePayloadSize=64 * 1024,
            maxFramePayloadSize=64 * 1024,
            utf8validateIncoming=False,
        )

        # autobahn copies each option onto every connection unless its class has it: a
        # class of our own per factory holds them once.
        class Configured(SyncStreamProtocol):
            pass

        for name in SyncStreamProtocol.CONFIG_ATTRS:
            setattr(Configured, name, getattr(self, name))
        self.protocol = Configured

        # The ping ring: connections in slices, one slice visited per tick.
        interval = settings.ping_interval_ms / 1000.0
        self._ping_tick = min(PING_TICK_S, interval)
        self._ring: list[set[SyncStreamProtocol]] = [
            set() for _ in range(max(1, round(interval / self._ping_tick)))
        ]
        self._ping_timeout = settings.ping_timeout_ms / 1000.0
        self._timeout_lag = math.ceil(self._ping_timeout / self._ping_tick)
        self._tick = 0
        self._pinger: task.LoopingCall | None = None
        self._to_kick: deque[SyncStreamProtocol] = deque()
        self._kick_call: DelayedCall | None = None

    def kick_soon(self, conn: SyncStreamProtocol) -> None:
        """Build for ``conn`` on a coming reactor turn. One event wakes every member of
        its room: their builds run KICK_SLICE at a time, and the reactor reads sockets
        (new sends, database results) between slices instead of after all of them."""
        self._to_kick.append(conn)
        if self._kick_call is None:
            self._kick_call = self.clock.callLater(0, self._kick_slice)

    def _kick_slice(self) -> None:
        self._kick_call = None
        queue = self._to_kick
        for _ in range(min(KICK_SLICE, len(queue))):
            queue.popleft()._kick()
        if queue:
            self._kick_call = self.clock.callLater(0, self._kick_slice)

    def add(self, conn: SyncStreamProtocol) -> None:
        self.connections.add(conn)
        self._ring[hash(conn) % len(self._ring)].add(conn)
        if self._pinger is None:
            self._pinger = task.LoopingCall(self._ping_slice)
            self._pinger.clock = self.clock  # type: ignore[assignment]
            self._pinger.start(self._ping_tick, now=False)

    def discard(self, conn: SyncStreamProtocol) -> None:
        self.connections.discard(conn)
        self._ring[hash(conn) % len(self._ring)].discard(conn)

    def _ping_slice(self) -> None:
        """Ping one slice; drop connections of an earlier slice still owing a pong."""
        now = self.clock.seconds()
        ring = self._ring
        self._tick += 1
        for conn in list(ring[(self._tick - self._timeout_lag) % len(ring)]):
            conn._ping_expired(now, self._ping_timeout)
        for conn in list(ring[self._tick % len(ring)]):
            conn._ping_expired(now, self._ping_timeout)
            conn._ping(now)
            conn._recheck_token()

    def buildProtocol(self, addr: Any) -> SyncStreamProtocol:  # type: ignore[override]
        session = self._next_session
        if session is None:
            raise RuntimeError("a WebSocket protocol is only built by an authenticated upgrade")
        proto = super().buildProtocol(addr)
        assert isinstance(proto, SyncStreamProtocol)
        proto.session = session
        return proto

    def upgrade(self, request: MatrixRequest, session: _Session, resource: Any) -> None:
        self._next_session = session
        try:
            resource.render(request)
        finally:
            self._next_session = None

    async def stop(self) -> None:
        """Close every connection (4001), abort those that do not finish in time."""
        pinger, self._pinger = self._pinger, None
        if pinger is not None and pinger.running:
            pinger.stop()
        for conn in list(self.connections):
            conn._close(CLOSE_SHUTTING_DOWN, "server shutting down")
        deadline = self.clock.seconds() + 1.0
        while self.connections and self.clock.seconds() < deadline:
            await task.deferLater(self.clock, 0.02, lambda: None)  # type: ignore[arg-type]
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abortConnection()
        self.connections.clear()
        for ring_slice in self._ring:
            ring_slice.clear()


class _Upgrade(RawResponse):
    """Hands the request's connection to autobahn, which answers the handshake."""

    def __init__(self, servlet: WebSocketServlet, session: _Session) -> None:
        self._servlet = servlet
        self._session = session

    async def write(self, request: MatrixRequest, status: int) -> None:
        channel = request.channel
        transport = channel.transport if channel is not None else None
        if transport is None:
            raise MatrixError(400, Codes.UNRECOGNIZED, "This connection cannot be upgraded")
        # The site tracks its HTTP channels to close them at shutdown; this one is about to
        # stop being HTTP (its connectionLost will never run), so forget it now.
        site = getattr(request, "site", None)
        open_channels = getattr(site, "open_channels", None)
        if open_channels is not None:
            for candidate in (
                getattr(transport, "protocol", None),
                getattr(transport, "wrappedProtocol", None),
            ):
                open_channels.discard(candidate)
        self._servlet.factory.upgrade(request, self._session, self._servlet.resource)
        # The HTTP side is dead now; break its reference cycles (channel <-> request) so
        # refcounting frees them at once instead of some later full garbage collection.
        if channel is not None:
            channel.requests = []
        request.channel = None  # type: ignore[assignment]
        request.content = None


class WebSocketServlet:
    def __init__(
        self,
        factory: SyncStreamFactory,
        auth: AuthHandler,
        sync_servlets: SyncServlets,
    ) -> None:
        self.factory = factory
        self.resource = WebSocketResource(factory)
        self._auth = auth
        self._sync_servlets = sync_servlets

    def register(self, r: JsonResource) -> None:
        r.register("GET", WS_PATH, self.on_upgrade)

    async def on_upgrade(self, request: Request) -> tuple[int, Any]:
        assert isinstance(request, MatrixRequest)
        # Everything that can be refused is refused here, as ordinary Matrix JSON errors.
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        token = get_access_token_from_request(request)
        assert token is not None
        since_raw = parse_string(request, "since")
        set_presence = parse_string(
            request, "set_presence", allowed=("offline", "online", "unavailable")
        )
        raw_filter = parse_string(request, "filter")
        filters = (
            _NO_FILTER
            if raw_filter is None
            else await self._sync_servlets.load_filter(requester.user_id, raw_filter)
        )
        since = SyncToken.parse(since_raw) if since_raw else None
        upgrade = (request.getHeader("upgrade") or "").lower()
        if upgrade != "websocket":
            raise MatrixError(
                400, Codes.UNRECOGNIZED, "This endpoint needs a WebSocket upgrade request"
            )
        return 101, _Upgrade(self, _Session(requester, token, since, filters, set_presence))
