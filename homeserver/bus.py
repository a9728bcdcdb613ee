"""The bus: what happened, as small typed messages, told to whoever subscribed.

A service that changes something publishes one message; the composition root
(``homeserver/server.py``) subscribes the services that react to it. The whole list of
side effects after a change is therefore the list of ``subscribe`` calls there.

The wire contract (every message type fits on this screen):

- ``events_persisted``: a committed batch of events, in stream order (each event's
  PDU plus the local facts a reader needs: stream ordering, outlier, redaction...).
- ``rooms_invalidated``: rooms whose in-memory copy must be reloaded (a failed write).
- ``local_event_accepted``: a local event accepted and queued for persistence (not
  yet committed: typing ends for a member who leaves).
- ``receipt``: a stored receipt, with its stream position.
- ``typing``: a user started (or renewed) or stopped typing in a room.
- ``presence`` / ``presence_ping``: a visible presence change; a local user's
  unchanged state other servers should hear again.
- ``user_syncing``: a /sync started on a reader process (presence heartbeat).
- ``to_device``: to-device messages queued for local devices.
- ``devices_changed``: devices of a local user created, updated or deleted.
- ``device_lists``: device list stream entries committed (whom a reader wakes).
- ``account_data``: account data of a user changed.
- ``profile``: a field of a local user's profile changed.
- ``tokens_invalidated``: the access tokens of a user died (logout, deactivation).
- ``alias``: a local room alias now points at a room (room id null: deleted).

Invariants:

- A message is published after the change it reports is committed and its stream
  position visible, so a handler reading the database sees it.
- ``LocalBus`` calls handlers synchronously, in subscription order; one failing handler
  is logged and the next still runs. Order is part of the wiring: it encodes fixes
  (a receipt's unread counts reload before any sync is woken, ...).
- ``publish`` does not wait for a handler's Awaitable (its failure is logged);
  ``publish_and_wait`` awaits each in turn (device and profile changes: the request that
  made them answers once their follow-up writes are done).
- ``encode`` and ``decode`` are the only wire format: ``<name> <json>``. A message
  carries ids, positions and JSON, never an object that exists only in one process.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from twisted.internet import defer

from homeserver.events.event import Event
from homeserver.events.room_versions import get_room_version
from storage.presence import PresenceState

if TYPE_CHECKING:
    from homeserver.config import RedisConfig
    from storage.receipts import Receipt

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


class Message:
    """A message type: a frozen dataclass with a unique ``NAME``.

    The default JSON form is the dataclass fields as they are (strings, numbers, JSON
    values); a type with richer fields overrides ``to_json`` and ``from_json``.
    """

    NAME: ClassVar[str]

    def to_json(self) -> JsonDict:
        return asdict(self)  # type: ignore[call-overload,no-any-return]

    @classmethod
    def from_json(cls, data: JsonDict) -> Message:
        return cls(**data)


def _event_to_json(ev: Event) -> JsonDict:
    return {
        "event_id": ev.event_id,
        "room_version": ev.room_version.identifier,
        "pdu": ev.pdu,
        "stream_ordering": ev.stream_ordering,
        "txn_device_id": ev.txn_device_id,
        "txn_id": ev.txn_id,
        "redacted_by": ev.redacted_by,
        "rejected_reason": ev.rejected_reason,
        "outlier": ev.outlier,
        "sender_had_redact_power": ev.sender_had_redact_power,
        "withheld": ev.withheld,
        "redaction": _event_to_json(ev.redaction) if ev.redaction is not None else None,
    }


def _event_from_json(data: JsonDict) -> Event:
    version = get_room_version(data["room_version"])
    if version is None:
        raise ValueError(f"Unknown room version {data['room_version']!r}")
    redaction = data["redaction"]
    return Event(
        event_id=data["event_id"],
        pdu=data["pdu"],
        room_version=version,
        stream_ordering=data["stream_ordering"],
        txn_device_id=data["txn_device_id"],
        txn_id=data["txn_id"],
        redacted_by=data["redacted_by"],
        rejected_reason=data["rejected_reason"],
        outlier=data["outlier"],
        sender_had_redact_power=data["sender_had_redact_power"],
        withheld=data["withheld"],
        redaction=_event_from_json(redaction) if redaction is not None else None,
    )


@dataclass(frozen=True)
class EventsPersisted(Message):
    NAME = "events_persisted"
    # The persister's batch itself in process (not copied): handlers must not mutate it.
    events: list[Event]

    def to_json(self) -> JsonDict:
        return {"events": [_event_to_json(ev) for ev in self.events]}

    @classmethod
    def from_json(cls, data: JsonDict) -> EventsPersisted:
        return cls([_event_from_json(ev) for ev in data["events"]])


@dataclass(frozen=True)
class RoomsInvalidated(Message):
    NAME = "rooms_invalidated"
    room_ids: tuple[str, ...]

    @classmethod
    def from_json(cls, data: JsonDict) -> RoomsInvalidated:
        return cls(tuple(data["room_ids"]))


@dataclass(frozen=True)
class LocalEventAccepted(Message):
    NAME = "local_event_accepted"
    event: Event

    def to_json(self) -> JsonDict:
        return {"event": _event_to_json(self.event)}

    @classmethod
    def from_json(cls, data: JsonDict) -> LocalEventAccepted:
        return cls(_event_from_json(data["event"]))


@dataclass(frozen=True)
class ReceiptStored(Message):
    NAME = "receipt"
    receipt: Receipt

    def to_json(self) -> JsonDict:
        return asdict(self.receipt)

    @classmethod
    def from_json(cls, data: JsonDict) -> ReceiptStored:
        from storage.receipts import Receipt  # storage.receipts imports this module

        return cls(Receipt(**data))


@dataclass(frozen=True)
class TypingChanged(Message):
    NAME = "typing"
    room_id: str
    user_id: str
    typing: bool


@dataclass(frozen=True)
class PresenceChanged(Message):
    NAME = "presence"
    state: PresenceState

    def to_json(self) -> JsonDict:
        return asdict(self.state)

    @classmethod
    def from_json(cls, data: JsonDict) -> PresenceChanged:
        return cls(PresenceState(**data))


@dataclass(frozen=True)
class PresencePing(Message):
    NAME = "presence_ping"
    state: PresenceState

    def to_json(self) -> JsonDict:
        return asdict(self.state)

    @classmethod
    def from_json(cls, data: JsonDict) -> PresencePing:
        return cls(PresenceState(**data))


@dataclass(frozen=True)
class UserSyncing(Message):
    """A /sync started on a reader process (a presence heartbeat for the main one)."""

    NAME = "user_syncing"
    user_id: str
    device_id: str | None
    set_presence: str | None


@dataclass(frozen=True)
class ToDeviceQueued(Message):
    NAME = "to_device"
    # user id -> device id (or "*") -> {type, sender, content}
    messages: dict[str, dict[str, JsonDict]]


@dataclass(frozen=True)
class DevicesChanged(Message):
    NAME = "devices_changed"
    user_id: str
    device_ids: tuple[str, ...]
    created: bool

    @classmethod
    def from_json(cls, data: JsonDict) -> DevicesChanged:
        return cls(data["user_id"], tuple(data["device_ids"]), data["created"])


@dataclass(frozen=True)
class DeviceListsChanged(Message):
    """Device list stream entries committed: (user whose devices or keys changed, the
    only user told of it or None)."""

    NAME = "device_lists"
    changes: tuple[tuple[str, str | None], ...]

    @classmethod
    def from_json(cls, data: JsonDict) -> DeviceListsChanged:
        return cls(tuple((c[0], c[1]) for c in data["changes"]))


@dataclass(frozen=True)
class AccountDataChanged(Message):
    NAME = "account_data"
    user_id: str
    stream_id: int


@dataclass(frozen=True)
class ProfileChanged(Message):
    NAME = "profile"
    user_id: str
    field: str
    value: Any  # the new JSON value; None once removed


@dataclass(frozen=True)
class TokensInvalidated(Message):
    NAME = "tokens_invalidated"
    user_id: str


@dataclass(frozen=True)
class AliasChanged(Message):
    NAME = "alias"
    alias: str
    room_id: str | None


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.NAME: cls
    for cls in (
        EventsPersisted,
        RoomsInvalidated,
        LocalEventAccepted,
        ReceiptStored,
        TypingChanged,
        PresenceChanged,
        PresencePing,
        UserSyncing,
        ToDeviceQueued,
        DevicesChanged,
        DeviceListsChanged,
        AccountDataChanged,
        ProfileChanged,
        TokensInvalidated,
        AliasChanged,
    )
}


def encode(msg: Message) -> bytes:
    body = json.dumps(msg.to_json(), ensure_ascii=False, separators=(",", ":"))
    return f"{msg.NAME} {body}".encode()


def decode(data: bytes) -> Message:
    name, _, body = data.decode("utf-8").partition(" ")
    cls = MESSAGE_TYPES.get(name)
    if cls is None:
        raise ValueError(f"Unknown bus message {name!r}")
    return cls.from_json(json.loads(body))


M = TypeVar("M", bound=Message)
Handler = Callable[[M], Awaitable[None] | None]


class Bus(Protocol):
    def subscribe(self, msg_type: type[M], handler: Handler[M]) -> None:
        """Call ``handler`` with every message of that type, after earlier subscribers."""

    def publish(self, msg: Message) -> None:
        """Tell every subscriber now; an Awaitable a handler returns runs on its own."""

    async def publish_and_wait(self, msg: Message) -> None:
        """Tell every subscriber in turn, awaiting each one's Awaitable."""


def _log_failure(failure: Any, name: str) -> None:
    logger.error("A %s handler failed", name, exc_info=failure.value)


class LocalBus:
    """In-process dispatch: handlers run synchronously, in subscription order."""

    def __init__(self) -> None:
        self._handlers: dict[type[Message], list[Callable[[Any], Awaitable[None] | None]]] = {}

    def subscribe(self, msg_type: type[M], handler: Handler[M]) -> None:
        self._handlers.setdefault(msg_type, []).append(handler)

    def publish(self, msg: Message) -> None:
        for handler in self._handlers.get(type(msg), ()):
            try:
                result = handler(msg)
            except Exception:
                logger.exception("A %s handler failed", msg.NAME)
                continue
            if result is not None:
                d: defer.Deferred[None] = defer.ensureDeferred(result)  # type: ignore[arg-type]
                d.addErrback(_log_failure, msg.NAME)

    async def publish_and_wait(self, msg: Message) -> None:
        for handler in list(self._handlers.get(type(msg), ())):
            try:
                result = handler(msg)
                if result is not None:
                    await result
            except Exception:
                logger.exception("A %s handler failed", msg.NAME)


_MAX_BACKOFF_S = 5.0
# Messages waiting for Redis beyond this are dropped (logged): local dispatch never waits.
_MAX_OUTBOX = 10_000


class RedisBus(LocalBus):
    """``LocalBus`` plus Redis pub/sub: what this process publishes also goes out on one
    channel, and what other processes publish there is dispatched here.

    Each payload is ``<instance name> <encode(msg)>``; a process skips its own. Both
    connections are blocking redis-py clients in their own threads (the reactor never
    waits on Redis); received messages are handed to the reactor with
    ``callFromThread``. While Redis is away both threads retry with backoff and log it;
    local dispatch goes on. Pub/sub is not durable: messages published while a
    subscriber is disconnected are not delivered to it (as with Synapse's replication,
    a reader that must not miss anything catches up from the stream positions).
    """

    def __init__(self, reactor: Any, config: RedisConfig, channel: str, instance_name: str):
        super().__init__()
        self._reactor = reactor
        self._config = config
        self.channel = channel
        self.instance_name = instance_name
        self._prefix = instance_name.encode() + b" "
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Set while the subscriber connection is subscribed (tests wait for it).
        self.subscribed = threading.Event()
        self._pubsub: Any = None

    def _client(self) -> Any:
        import redis

        c = self._config
        return redis.Redis(
            host=c.host,
            port=c.port,
            password=c.password,
            db=c.dbid,
            socket_connect_timeout=5,
            health_check_interval=30,
            # Who is who in CLIENT LIST (an admin, or a test, dropping one deployment's).
            client_name=f"{self.channel}/{self.instance_name}",
        )

    def start(self) -> None:
        for target, name in ((self._publish_loop, "publish"), (self._subscribe_loop, "subscribe")):
            thread = threading.Thread(target=target, name=f"redis-bus-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        self._stopping.set()
        self._outbox.put(None)
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub.close()  # wakes the subscriber's blocking read
            except Exception:
                pass
        threads, self._threads = self._threads, []
        from twisted.internet import threads as twisted_threads

        for thread in threads:
            await twisted_threads.deferToThread(thread.join, 10)

    def publish(self, msg: Message) -> None:
        super().publish(msg)
        self._send(msg)

    async def publish_and_wait(self, msg: Message) -> None:
        await super().publish_and_wait(msg)
        self._send(msg)

    def _send(self, msg: Message) -> None:
        if self._outbox.qsize() >= _MAX_OUTBOX:
            logger.warning("Redis bus outbox full: %s not sent to other processes", msg.NAME)
            return
        self._outbox.put(self._prefix + encode(msg))

    # Threads ------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        client = self._client()
        backoff = 0.1
        payload: bytes | None = None
        while not self._stopping.is_set():
            if payload is None:
                payload = self._outbox.get()
                if payload is None:
                    return
            try:
                client.publish(self.channel, payload)
            except Exception as e:
                logger.warning("Redis bus: publishing failed (%s); retrying in %.1fs", e, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            if backoff > 0.1:
                logger.info("Redis bus: publishing again")
            backoff = 0.1
            payload = None

    def _subscribe_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            pubsub: Any = None
            try:
                pubsub = self._client().pubsub(ignore_subscribe_messages=True)
                self._pubsub = pubsub
                pubsub.subscribe(self.channel)
                self.subscribed.set()
                if backoff > 0.1:
                    logger.info("Redis bus: subscribed again to %s", self.channel)
                backoff = 0.1
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._received(message["data"])
            except Exception as e:
                self.subscribed.clear()
                if self._stopping.is_set():
                    return
                logger.warning("Redis bus: subscription lost (%s); retrying in %.1fs", e, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            finally:
                self.subscribed.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def _received(self, data: bytes) -> None:
        if data.startswith(self._prefix):
            return  # our own, dispatched locally when published
        _, _, payload = data.partition(b" ")
        try:
            msg = decode(payload)
        except Exception:
            logger.exception("Redis bus: undecodable message %r", payload[:100])
            return
        self._reactor.callFromThread(LocalBus.publish, self, msg)
