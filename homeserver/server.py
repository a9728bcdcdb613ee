"""The composition root: builds every service once, in dependency order.

Nothing here decides anything; it wires config into stores, stores into handlers and
handlers into servlets, then opens the listeners.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.web import resource, server

from crypto.signing_key import load_or_generate_signing_key
from federation.edus import FederationEdus
from federation.hierarchy import FederationHierarchyClient, FederationHierarchyServlet
from federation.http_client import DEFAULT_IP_RANGE_BLACKLIST
from federation.setup import Federation, build_federation
from federation.third_party_invite import ThirdPartyInviteServlets
from homeserver.api.client.account import AccountServlets
from homeserver.api.client.account_data import AccountDataServlets
from homeserver.api.client.admin_restrictions import AdminRestrictionServlets
from homeserver.api.client.appservice import AppServiceServlets
from homeserver.api.client.devices import DeviceServlets
from homeserver.api.client.directory import DirectoryServlets
from homeserver.api.client.e2e_keys import E2eKeysServlets
from homeserver.api.client.ephemeral import EphemeralServlets
from homeserver.api.client.legacy_sync import LegacySyncServlets
from homeserver.api.client.login import LoginServlets
from homeserver.api.client.login_token import LoginTokenServlets
from homeserver.api.client.media import MediaServlets
from homeserver.api.client.meta import MetaServlets
from homeserver.api.client.mutual_rooms import MutualRoomsServlets
from homeserver.api.client.openid import OpenIdServlets
from homeserver.api.client.presence import PresenceServlets
from homeserver.api.client.profile import ProfileServlets
from homeserver.api.client.register import RegisterServlets
from homeserver.api.client.relations import RelationServlets
from homeserver.api.client.reports import ReportServlets
from homeserver.api.client.room_keys import RoomKeysServlets
from homeserver.api.client.room_upgrade import RoomUpgradeServlets
from homeserver.api.client.rooms import RoomServlets
from homeserver.api.client.search import SearchServlets
from homeserver.api.client.sliding_sync import SlidingSyncServlet
from homeserver.api.client.spaces import SpaceServlets
from homeserver.api.client.sync import SyncServlets
from homeserver.api.client.tags import TagServlets
from homeserver.api.client.threepid import ThreePidServlets
from homeserver.api.client.user_directory import UserDirectoryServlets
from homeserver.api.client.voip import VoipServlets
from homeserver.api.client.websocket import SyncStreamFactory, WebSocketServlet
from homeserver.api.client.whois import WhoisServlets
from homeserver.api.federation_media import FederationMediaServlets
from homeserver.api.health import HealthServlet
from homeserver.api.keys import KeyServlets
from homeserver.appservice.handler import AppServiceHandler
from homeserver.appservice.registration import AppServiceRegistry, load_configured_app_services
from homeserver.bus import (
    AccountDataChanged,
    AliasChanged,
    Bus,
    DeviceListsChanged,
    DevicesChanged,
    EventsPersisted,
    LocalBus,
    LocalEventAccepted,
    PresenceChanged,
    PresencePing,
    ProfileChanged,
    ReceiptStored,
    RedisBus,
    RoomsInvalidated,
    ToDeviceQueued,
    TokensInvalidated,
    TypingChanged,
    UserSyncing,
)
from homeserver.config import HomeserverConfig, RateLimit
from homeserver.e2ee.backup import KeyBackupHandler
from homeserver.e2ee.cross_signing import CrossSigningHandler
from homeserver.e2ee.device_lists import DeviceLists
from homeserver.e2ee.keys import KeysHandler
from homeserver.e2ee.locality import Locality
from homeserver.e2ee.sync_sources import DeviceListSource, ToDeviceSource
from homeserver.e2ee.to_device import ToDeviceHandler
from homeserver.ephemeral.presence import PresenceHandler, PresenceSource
from homeserver.ephemeral.receipts import ReceiptsHandler, ReceiptsSource
from homeserver.ephemeral.tags import TagsHandler
from homeserver.ephemeral.typing import TypingHandler, TypingSource
from homeserver.ephemeral.user_directory import UserDirectoryHandler
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.handlers.admin_federation import DestinationsAdmin
from homeserver.handlers.admin_redact import UserRedactor
from homeserver.handlers.admin_reports import EventReportsAdmin
from homeserver.handlers.admin_users import AdminUsersHandler
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.client_ips import ClientIpTracker
from homeserver.handlers.deactivate import DeactivationHandler
from homeserver.handlers.email_validation import EmailValidation, Mailer
from homeserver.handlers.identity import IdentityServerClient
from homeserver.handlers.login_token import LoginTokenHandler
from homeserver.handlers.openid import OpenIdHandler
from homeserver.handlers.profile import ProfileHandler
from homeserver.handlers.register import RegistrationHandler
from homeserver.handlers.registration_tokens import RegistrationTokensAdmin
from homeserver.handlers.reports import ReportsHandler
from homeserver.handlers.restrictions import UserRestrictions
from homeserver.handlers.search import SearchHandler
from homeserver.handlers.server_notices import ServerNoticesHandler
from homeserver.handlers.threepid import ThreePidHandler
from homeserver.handlers.ui_auth import EMAIL_IDENTITY, UiAuthHandler
from homeserver.handlers.voip import TurnConfig
from homeserver.http.ip_filter import IpFilter
from homeserver.http.ratelimit import InviteRatelimiter, Ratelimiter
from homeserver.http.server import JsonResource, MatrixSite, respond_error
from homeserver.media.admin import MediaAdmin
from homeserver.media.preview import UrlPreviewer
from homeserver.media.remote import RemoteMediaFetcher
from homeserver.media.repository import MediaRepository, MediaSettings
from homeserver.media.storage import FileSystemMediaStorage
from homeserver.metrics import (
    EVENTS_PERSISTED,
    METRICS_PATH,
    MetricsResource,
    MetricsSources,
    ReactorTickTimer,
    cache_gauges,
    gauge,
    labelled_gauge,
    register_sources,
    set_federation_queue,
    unregister_sources,
)
from homeserver.push.setup import PushServices, build_push
from homeserver.relations.handler import RelationsHandler
from homeserver.replication.client import InternalClient
from homeserver.replication.endpoints import REPLICATION_PREFIX
from homeserver.replication.follower import FollowingNotifier, StreamFollower
from homeserver.replication.ping import PING, ping_endpoint
from homeserver.replication.server import ReplicationResource
from homeserver.rooms.admin import RoomAdmin
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.event_creation import EventCreator
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.ignored import IgnoredUsers
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.purge import RoomPurger
from homeserver.rooms.room_cache import RoomCache
from homeserver.rooms.shutdown import RoomShutdown
from homeserver.rooms.summary import RoomSummaryHandler
from homeserver.rooms.third_party_invite import ThirdPartyInviteHandler
from homeserver.rooms.upgrade import RoomUpgrader
from homeserver.rooms.visibility import VisibilityFilter
from homeserver.rooms.writer import RoomWriter
from homeserver.sync.handler import SyncHandler
from homeserver.sync.legacy import LegacySyncHandler
from homeserver.sync.notifier import Notifier
from homeserver.sync.sliding import SlidingSyncHandler
from storage.database import Database, make_engine
from storage.e2ee import DeviceListChange
from storage.receipts import RoomChangeCache
from storage.storage import Storage
from synapse_compat.admin_devices import AdminDeviceServlets
from synapse_compat.admin_media import AdminMediaServlets
from synapse_compat.admin_purge import AdminPurgeServlets
from synapse_compat.admin_register import SharedSecretRegistrationServlet
from synapse_compat.admin_registration_tokens import AdminRegistrationTokenServlets
from synapse_compat.admin_reports import AdminEventReportServlets
from synapse_compat.admin_rooms import (
    AdminRoomApiServlets,
    AdminRoomHierarchyServlet,
    AdminRoomServlets,
)
from synapse_compat.admin_server import AdminServerServlets
from synapse_compat.admin_server_notices import AdminServerNoticeServlets
from synapse_compat.admin_user_activity import AdminUserActivityServlets
from synapse_compat.admin_user_info import AdminUserInfoServlets
from synapse_compat.admin_user_limits import AdminUserLimitServlets
from synapse_compat.admin_users import AdminUserServlets

logger = logging.getLogger(__name__)


@dataclass
class HomeServer:
    config: HomeserverConfig
    reactor: Any
    storage: Storage
    auth: AuthHandler
    resource: JsonResource
    ports: list[Any] = field(default_factory=list)
    # Run by stop() before the database closes: timers to cancel, writes to finish.
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    sites: list[Any] = field(default_factory=list)
    media: MediaRepository | None = None
    upload_spool_dir: str | None = None
    push: PushServices | None = None
    federation: Federation | None = None
    websockets: SyncStreamFactory | None = None
    presence: PresenceHandler | None = None
    # Where what happened is published (homeserver/bus.py).
    bus: Bus | None = None
    sliding_sync: SlidingSyncHandler | None = None
    # With enable_metrics: what scrapes read, and the reactor tick timer.
    metrics: MetricsSources | None = None
    tick_timer: ReactorTickTimer | None = None
    # The internal API between processes: served on listeners with the ``replication``
    # resource, and the client calling the other instances of ``instance_map``.
    replication: ReplicationResource | None = None
    internal_client: InternalClient | None = None

    @property
    def server_name(self) -> str:
        return self.config.server_name

    def listen(self) -> list[Any]:
        """Open every configured listener (http and metrics)."""
        from twisted.web import server as web_server

        workers = self.config.workers
        listeners = self.config.listeners if workers.is_main else workers.worker_listeners
        for listener in listeners:
            if listener.type == "metrics":
                if self.metrics is None:
                    # As Synapse: configured but not enabled is a warning, not an error.
                    logger.warning("Metrics listener configured, but enable_metrics is not True!")
                    continue
                metrics_site = web_server.Site(MetricsResource(self.metrics))
                metrics_site.noisy = False
                self._listen_on(listener.port, listener.bind_addresses, metrics_site, None)
                continue
            tls_options = self._tls_options() if listener.tls else None
            root: Any = self.resource
            if not workers.is_main:
                root = ReaderOnlyResource(self.resource)
            if "metrics" in listener.resources and self.metrics is not None:
                root = _WithMetrics(root, MetricsResource(self.metrics))
            if "replication" in listener.resources and self.replication is not None:
                root = _WithReplication(root, self.replication)
                if not self.config.worker_replication_secret and _reachable_from_network(listener):
                    # Served then only to loopback and UNIX callers (see replication.server).
                    logger.warning(
                        "Listener on port %d serves replication without"
                        " worker_replication_secret: only loopback callers are accepted",
                        listener.port,
                    )
            site = MatrixSite(
                root,
                max_body_size=self.config.max_request_body_size,
                x_forwarded=listener.x_forwarded,
                max_upload_size=self.config.max_upload_size,
                upload_spool_dir=self.upload_spool_dir,
                head_timeout=self.config.http_request_head_timeout / 1000,
                idle_timeout=self.config.http_idle_timeout / 1000,
                site_tag="unix" if listener.path is not None else str(listener.port),
            )
            self.sites.append(site)
            if listener.path is not None:
                # wantPID: a lock file beside the socket lets a restart replace a stale one.
                port = self.reactor.listenUNIX(
                    listener.path, site, mode=listener.mode, wantPID=True
                )
                logger.info("Listening on UNIX socket %s", listener.path)
                self.ports.append(port)
                continue
            self._listen_on(listener.port, listener.bind_addresses, site, tls_options)
        return self.ports

    def _listen_on(
        self, port_number: int, addresses: list[str], site: Any, tls_options: Any
    ) -> None:
        for address in addresses:
            try:
                if tls_options is not None:
                    port = self.reactor.listenSSL(port_number, site, tls_options, interface=address)
                else:
                    port = self.reactor.listenTCP(port_number, site, interface=address)
            except Exception as e:
                if address == "::":
                    # No IPv6 on this machine: 0.0.0.0 usually covers it.
                    logger.warning("Could not listen on [::]:%d: %s", port_number, e)
                    continue
                raise
            logger.info("Listening on %s:%d", address, port.getHost().port)
            self.ports.append(port)

    def _tls_options(self) -> Any:
        """Server TLS from ``tls_certificate_path`` / ``tls_private_key_path`` (PEM)."""
        from twisted.internet import ssl

        cert_path = self.config.tls_certificate_path
        key_path = self.config.tls_private_key_path
        if not cert_path or not key_path:
            raise RuntimeError(
                "A listener has tls: true but tls_certificate_path / tls_private_key_path are not set"
            )
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
        with open(key_path, "rb") as f:
            key_pem = f.read()
        certificate = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
        chain = [ssl.Certificate.loadPEM(block) for block in _pem_blocks(cert_pem)[1:]]
        return ssl.CertificateOptions(
            privateKey=certificate.privateKey.original,
            certificate=certificate.original,
            extraCertChain=[c.original for c in chain],
        )

    async def stop(self) -> None:
        """Stop accepting requests, let in-flight work finish, close the database."""
        stopping = [p.stopListening() for p in self.ports]
        await defer.gatherResults([d for d in stopping if d is not None], consumeErrors=True)
        self.ports.clear()
        for site in self.sites:
            site.close_connections()
        for hook in self.on_stop:
            await hook()
        if self.metrics is not None:
            unregister_sources(self.metrics)
        if self.tick_timer is not None:
            self.tick_timer.uninstall()
        self.storage.db.close()


class _WithMetrics(resource.Resource):
    """The root of an http listener with the ``metrics`` resource: ``/_synapse/metrics``
    is the metrics page, every other path the JSON resource."""

    isLeaf = True

    def __init__(self, json_resource: Any, metrics: MetricsResource) -> None:
        self._json = json_resource
        self._metrics = metrics

    def render(self, request: Any) -> Any:
        if request.path == METRICS_PATH.encode() and request.method in (b"GET", b"HEAD"):
            return self._metrics.render(request)
        return self._json.render(request)

    def getChildWithDefault(self, name: bytes, request: Any) -> Any:  # never called: a leaf
        return self


class _WithReplication(resource.Resource):
    """The root of an http listener with the ``replication`` resource:
    ``/_synapse/replication/...`` is the internal API, every other path ``inner``."""

    isLeaf = True

    def __init__(self, inner: Any, replication: ReplicationResource) -> None:
        self._inner = inner
        self._replication = replication

    def render(self, request: Any) -> Any:
        if request.path.startswith(_REPLICATION_PREFIX):
            return self._replication.render(request)
        return self._inner.render(request)

    def getChildWithDefault(self, name: bytes, request: Any) -> Any:  # never called: a leaf
        return self


_REPLICATION_PREFIX = REPLICATION_PREFIX.encode()


def _reachable_from_network(listener: Any) -> bool:
    if listener.path is not None:
        return False
    for address in listener.bind_addresses:
        try:
            if not ipaddress.ip_address(address).is_loopback:
                return True
        except ValueError:
            return True  # a host name: assume the worst
    return False


def _pem_blocks(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [part + marker for part in pem.split(marker) if b"BEGIN CERTIFICATE" in part]


class EventFanout:
    """After events commit: update membership caches and redactions, wake syncs.

    The first subscriber of ``EventsPersisted`` (the others find the caches updated)."""

    def __init__(
        self, server_name: str, rooms: RoomCache, memberships: MembershipCache, notifier: Notifier
    ) -> None:
        self._suffix = f":{server_name}"
        self._rooms = rooms
        self._memberships = memberships
        self._notifier = notifier

    def on_persisted(self, events: list[Event]) -> None:
        EVENTS_PERSISTED.inc(len(events))
        to_wake: set[str] = set()
        for ev in events:
            room = self._rooms.get_if_loaded(ev.room_id)
            if ev.membership is not None:
                self._memberships.on_membership(ev)
                if ev.state_key:
                    to_wake.add(ev.state_key)
            if ev.redacts is not None and room is not None:
                room.apply_redaction(ev)
            if ev.redacted_by is not None and room is not None:
                room.redaction_took_effect(ev.redacted_by)  # it arrived after its redaction
            if room is not None:
                to_wake |= room.joined_members()
        local = [u for u in to_wake if u.endswith(self._suffix)]
        if local:
            # Woken once this reactor turn is over, after the persister has fired its
            # callers' Deferreds: the sender's PUT /send response is written before the
            # /sync that carries its echo (with unsigned.transaction_id), as on Synapse.
            # matrix-js-sdk depends on that order: a thread reply whose echo arrives
            # first, while it still loads the new thread, never resolves its send.
            self._notifier.clock.callLater(0, self._notifier.notify_users, local)

    def on_failure(self, room_ids: Iterable[str]) -> None:
        """Rooms another process failed to write: reload them from the database."""
        for room_id in room_ids:
            self._rooms.invalidate(room_id)


class ReaderEvents:
    """A reader process's side of ``EventsPersisted``: the same fan-out as the writer's
    (membership caches, redactions, whom to wake), then rooms in memory brought up to
    the events; members of a room not in memory are woken once it is loaded."""

    def __init__(
        self,
        server_name: str,
        rooms: RoomCache,
        fanout: EventFanout,
        notifier: Notifier,
        follower: StreamFollower,
    ) -> None:
        self._follower = follower
        self._suffix = f":{server_name}"
        self._rooms = rooms
        self._fanout = fanout
        self._notifier = notifier

    def on_persisted(self, events: list[Event]) -> None:
        self._fanout.on_persisted(events)
        # Rooms below are brought up to these events in this same call, before any
        # sync can run: memory holds every event up to here.
        self._follower.events_applied = max(
            [self._follower.events_applied, *(ev.stream_ordering for ev in events)]
        )
        unloaded: set[str] = set()
        for ev in events:
            if self._rooms.get_if_loaded(ev.room_id) is None:
                unloaded.add(ev.room_id)
            # A room being read is read again (the read may predate the event).
            self._rooms.follow(ev, local=ev.sender.endswith(self._suffix))
        for room_id in unloaded:
            defer.ensureDeferred(self._wake_members(room_id)).addErrback(
                lambda f: logger.error("Waking members failed", exc_info=f.value)
            )

    async def _wake_members(self, room_id: str) -> None:
        room = await self._rooms.get(room_id)
        if room is not None:
            members = [u for u in room.joined_members() if u.endswith(self._suffix)]
            self._notifier.notify_users(members)


async def _tell_syncing(
    bus: Bus, user_id: str, device_id: str | None, set_presence: str | None
) -> Callable[[], None]:
    """A reader process's sync hook: the main process's presence hears of the sync."""
    bus.publish(UserSyncing(user_id, device_id, set_presence))
    return _nothing


def _nothing() -> None:
    return None


def _events_lost(rooms: RoomCache, memberships: MembershipCache) -> None:
    """A reader process missed event messages (Redis dropped them): what memory holds
    of rooms and memberships is read from the database again."""
    logger.warning("Event messages from the main process were lost: reloading rooms")
    rooms.invalidate_all()
    memberships.drop_all()


def _reader_storage(storage: Storage) -> None:
    """A reader process learns stream positions (``ping``) possibly before the messages
    naming what changed: memory that answers "nothing changed here" is not trusted
    for receipts and to-device inboxes; they are read from the database."""
    storage.e2ee.read_inbox_from_database()
    # Never "exact": every room may have changed (a query bounded by the positions).
    storage.receipts.changes = RoomChangeCache(2**62)


# What a reader process serves (docs/workers.md); anything else is 404 M_UNRECOGNIZED,
# as on a Synapse worker, so a misrouted write fails loudly instead of being half done.
_CLIENT = r"/_matrix/client/(?:r0|v3|unstable/[^/]+)"
READER_ROUTES: tuple[tuple[frozenset[bytes], re.Pattern[bytes]], ...] = tuple(
    (frozenset(m.encode() for m in methods.split()), re.compile(pattern.encode()))
    for methods, pattern in (
        ("GET", _CLIENT + r"/sync"),
        ("GET", _CLIENT + r"/events"),
        ("GET", _CLIENT + r"/joined_rooms"),
        ("GET", _CLIENT + r"/account/whoami"),
        ("POST", _CLIENT + r"/keys/query"),
        ("GET", _CLIENT + r"/keys/changes"),
        ("GET", _CLIENT + r"/pushrules/.*"),
        ("GET", _CLIENT + r"/profile/[^/]+(?:/[^/]+)?"),
        ("GET", _CLIENT + r"/rooms/[^/]+/(?:messages|members|joined_members|state(?:/.*)?)"),
        ("GET", _CLIENT + r"/rooms/[^/]+/(?:context|event)/[^/]+"),
        ("GET", r"/_matrix/client/versions"),
        ("GET", r"/\.well-known/matrix/client"),
        ("GET", r"/health"),
    )
)


def served_by_reader(method: bytes, path: bytes) -> bool:
    """Whether a reader process serves this request (CORS preflights of those too)."""
    if method == b"HEAD":
        method = b"GET"
    return any(
        (method in methods or method == b"OPTIONS") and pattern.fullmatch(path)
        for methods, pattern in READER_ROUTES
    )


class ReaderOnlyResource(resource.Resource):
    """The JSON resource of a reader process, restricted to ``READER_ROUTES``."""

    isLeaf = True

    def __init__(self, inner: JsonResource) -> None:
        self._inner = inner

    def render(self, request: Any) -> Any:
        if not served_by_reader(request.method, request.path):
            respond_error(
                request,
                MatrixError(404, Codes.UNRECOGNIZED, "Not served by this worker"),
            )
            return server.NOT_DONE_YET
        return self._inner.render(request)

    def getChildWithDefault(self, name: bytes, request: Any) -> Any:  # never called: a leaf
        return self


def _build_bus(config: HomeserverConfig, reactor: Any) -> Bus:
    """In-process, or over Redis pub/sub when ``redis.enabled`` (see homeserver/bus.py)."""
    if not config.redis.enabled:
        return LocalBus()
    # Unique per process run, so a restarted process is not mistaken for its old self.
    instance = f"{config.workers.instance_name}-{uuid.uuid4().hex[:8]}"
    return RedisBus(reactor, config.redis, f"homeserver.bus.{config.server_name}", instance)


async def build_homeserver(config: HomeserverConfig, reactor: Any) -> HomeServer:
    server_name = config.server_name
    # Before the database is opened: a bad registration file stops start-up here.
    app_services = load_configured_app_services(config)
    os.makedirs(os.path.dirname(config.signing_key_path) or ".", exist_ok=True)
    signing_key = load_or_generate_signing_key(config.signing_key_path)

    db_args = config.database["args"]
    database = Database(
        make_engine(config.database),
        reactor,
        cp_min=int(db_args.get("cp_min", 5)),
        cp_max=int(db_args.get("cp_max", 10)),
    )
    bus = _build_bus(config, reactor)
    try:
        storage = await Storage.open(database, bus)
    except BaseException:
        database.close()  # its pool threads would keep the process from exiting
        raise

    rc_login = config.rc_login
    failed_login_limiter = Ratelimiter(reactor, rc_login.failed_attempts)
    appservice_registry = AppServiceRegistry(app_services)
    restrictions = await UserRestrictions.load(storage.user_restrictions)
    auth = AuthHandler(
        storage,
        reactor,
        bus,
        bcrypt_rounds=config.bcrypt_rounds,
        refreshable_access_token_lifetime_ms=config.refreshable_access_token_lifetime,
        refresh_token_lifetime_ms=config.refresh_token_lifetime,
        appservices=appservice_registry,
        password_pepper=config.password_config.pepper,
        restrictions=restrictions,
    )
    # A reader process writes nothing (docs/workers.md): no stream ids, no jobs, no
    # sending; what it holds in memory follows the main process's bus messages.
    reader = not config.workers.is_main
    client_ips = ClientIpTracker(storage.users, reactor)
    if not reader:
        auth.client_ips = client_ips
    ui_auth = UiAuthHandler(storage, auth, server_name, failed_login_limiter)
    registration = RegistrationHandler(storage, auth, server_name)

    room_cache = RoomCache(storage.events, storage.state_groups)
    memberships = MembershipCache(storage.memberships)
    appservices = AppServiceHandler(
        appservice_registry, storage, room_cache, memberships, reactor, server_name
    )
    profiles = ProfileHandler(
        storage, server_name, bus, appservices, clock=reactor, restrictions=restrictions
    )
    workers = config.workers
    internal_client = InternalClient(
        reactor,
        workers.instance_name,
        workers.instance_map,
        config.worker_replication_secret,
        endpoints={PING.name: PING},
    )
    notifier: Notifier
    follower: StreamFollower | None = None
    if reader:
        # Wake-ups wait for the positions to reach the writer's (replication/follower).
        notifier = FollowingNotifier(reactor)
        follower = StreamFollower(reactor, storage, internal_client, notifier.notify_now)
        notifier.follower = follower
        follower.waiting_users = notifier.waiting_users
    else:
        notifier = Notifier(reactor)
    # What reacts to what: the subscriptions below, in the order each handler runs
    # (the order is part of the behaviour; see each comment). On a reader process only
    # caches and wake-ups subscribe: the writer's handlers already ran in the writer.
    if reader:
        bus.subscribe(TokensInvalidated, lambda m: auth.forget_cached_tokens(m.user_id))
    # A connection held open on a token that died re-checks it at once and closes.
    bus.subscribe(TokensInvalidated, lambda m: notifier.notify_users([m.user_id]))
    fanout = EventFanout(server_name, room_cache, memberships, notifier)
    # First: every later subscriber finds the membership caches and rooms updated.
    if reader:
        assert follower is not None
        reader_events = ReaderEvents(server_name, room_cache, fanout, notifier, follower)
        follower.events_applied = storage.events.stream.current_position
        room_cache.held_up_to = lambda: follower.events_applied
        follower.on_events_lost = lambda: _events_lost(room_cache, memberships)
        bus.subscribe(EventsPersisted, lambda m: reader_events.on_persisted(m.events))
    else:
        bus.subscribe(EventsPersisted, lambda m: fanout.on_persisted(m.events))
    # The writer drops its own rooms at once; this is for rooms other processes
    # failed to write (a no-op for rooms already dropped).
    bus.subscribe(RoomsInvalidated, lambda m: fanout.on_failure(m.room_ids))
    if not reader:
        bus.subscribe(EventsPersisted, lambda m: appservices.on_events(m.events))
        if appservice_registry.services:
            bus.subscribe(AliasChanged, lambda m: appservices.on_alias_changed(m.alias, m.room_id))
        bus.subscribe(EventsPersisted, lambda m: profiles.on_events(m.events))
    writer = RoomWriter(storage.events, storage.state_groups, room_cache, bus)
    persister = writer.persister
    creator = EventCreator(
        server_name, signing_key, reactor, room_cache, storage.events, writer, bus
    )
    invite_limiter = InviteRatelimiter(reactor, config.rc_invites)
    room_handler = RoomHandler(
        server_name,
        reactor,
        storage,
        room_cache,
        creator,
        notifier,
        memberships,
        appservices,
        restrictions,
        invite_limiter=invite_limiter,
    )
    if not reader:
        # Awaited by the profile change: its member events are sent before it answers.
        bus.subscribe(
            ProfileChanged,
            lambda m: room_handler.on_profile_changed(m.user_id, m.field, m.value),
        )
        bus.subscribe(EventsPersisted, lambda m: room_handler.on_persisted(m.events))
    visibility = VisibilityFilter(storage.events, storage.state_groups, room_cache)
    ignored_users = IgnoredUsers(storage.account_data)
    bus.subscribe(AccountDataChanged, lambda m: ignored_users.on_account_data_changed(m.user_id))
    visibility.ignored = ignored_users
    visibility.erased = storage.users.get_erased
    history = RoomHistory(storage, room_cache, visibility)
    directory = RoomDirectory(storage, room_cache, server_name, appservices)
    sync = SyncHandler(storage, room_cache, memberships, notifier, visibility, reactor)
    relations = RelationsHandler(storage, room_cache, history, visibility)
    room_handler.message_checks.append(relations.check_new_event)
    sync.bundler = relations.bundles_for_user
    sync.ignored = ignored_users
    blacklist = config.ip_range_blacklist
    # What outbound requests made for users (push gateways, remote media) may reach.
    outbound_ip_filter = IpFilter(
        list(DEFAULT_IP_RANGE_BLACKLIST) if blacklist is None else blacklist,
        config.ip_range_whitelist,
    )
    push = build_push(
        config,
        reactor,
        storage,
        room_cache,
        memberships,
        sync,
        outbound_ip_filter,
        bus,
        reader=reader,
    )
    if reader:
        # Push rules changes are account data changes (m.push_rules is rewritten).
        bus.subscribe(AccountDataChanged, lambda m: push.rules.forget(m.user_id))
    else:
        bus.subscribe(EventsPersisted, lambda m: push.on_persisted(m.events))
    # After the ignored users cache dropped the user's entry: a woken sync reloads it.
    bus.subscribe(AccountDataChanged, lambda m: notifier.notify_users([m.user_id]))
    presence = PresenceHandler(
        storage.presence,
        room_cache,
        memberships,
        notifier,
        reactor,
        bus,
        enabled=config.presence["enabled"],
        sync_online_timeout_ms=config.presence["sync_online_timeout"],
        offline_timeout_ms=config.presence["offline_timeout"],
        include_offline_users_on_sync=config.presence["include_offline_users_on_sync"],
        server_name=server_name,
    )
    if reader:
        # The main process's changes, mirrored (no timers, no writes here).
        bus.subscribe(PresenceChanged, lambda m: presence.mirror(m.state))
    else:
        await presence.start()
        bus.subscribe(
            UserSyncing,
            lambda m: presence.sync_heartbeat(m.user_id, m.device_id, m.set_presence),
        )
    typing = TypingHandler(room_cache, notifier, reactor, bus)
    receipts = ReceiptsHandler(storage, room_cache, notifier, reactor)
    if reader:
        _reader_storage(storage)
        # Typing lives in the main process's memory: mirrored here.
        bus.subscribe(TypingChanged, lambda m: typing.mirror(m.room_id, m.user_id, m.typing))
    # After the unread counts (build_push subscribed them first).
    bus.subscribe(ReceiptStored, lambda m: receipts.on_receipt(m.receipt))
    if not reader:
        bus.subscribe(ReceiptStored, lambda m: appservices.on_receipt(m.receipt))
        bus.subscribe(LocalEventAccepted, lambda m: typing.on_event_accepted(m.event))
        # After the commit of the batch (a message bumps its sender's last active time).
        bus.subscribe(EventsPersisted, lambda m: presence.on_persisted(m.events))
    sync.add_source(ReceiptsSource(storage))
    sync.add_source(TypingSource(typing))
    sync.add_source(PresenceSource(presence, reactor))
    locality = Locality(server_name)
    device_lists = DeviceLists(storage.e2ee, room_cache, memberships, notifier, locality)
    if reader:
        bus.subscribe(
            DeviceListsChanged,
            lambda m: device_lists.notify(DeviceListChange(u, f) for u, f in m.changes),
        )
    else:
        device_lists.on_notified = lambda changes: bus.publish(
            DeviceListsChanged(tuple((c.user_id, c.for_user_id) for c in changes))
        )
        # After the pushers (build_push): awaited in turn by the device change.
        bus.subscribe(
            DevicesChanged,
            lambda m: device_lists.on_devices_changed(m.user_id, list(m.device_ids), m.created),
        )
    e2e_keys = KeysHandler(
        storage.e2ee,
        storage.events,
        storage.state_groups,
        room_cache,
        memberships,
        device_lists,
        locality,
        reactor,
    )
    cross_signing = CrossSigningHandler(
        storage.e2ee, storage.users, device_lists, locality, reactor
    )
    to_device = ToDeviceHandler(storage.e2ee, notifier, locality, reactor, bus)
    if reader:
        bus.subscribe(ToDeviceQueued, lambda m: notifier.notify_users(list(m.messages)))
    else:
        bus.subscribe(ToDeviceQueued, lambda m: appservices.on_to_device(m.messages))
    sync.add_source(ToDeviceSource(storage.e2ee))
    sync.add_source(DeviceListSource(storage.e2ee, device_lists))
    if reader:
        sync.sync_hooks.append(lambda u, d, p: _tell_syncing(bus, u, d, p))
    else:
        sync.sync_hooks.append(presence.user_syncing)

    federation = build_federation(
        config,
        reactor,
        signing_key,
        storage,
        room_cache,
        writer,
        room_handler,
        profiles,
        directory,
        e2e_keys,
        to_device,
        device_lists,
        invite_limiter,
    )
    if not reader:
        bus.subscribe(EventsPersisted, lambda m: federation.on_persisted(m.events))
        history.backfiller = federation.backfiller
    summaries = RoomSummaryHandler(server_name, reactor, room_cache, memberships)
    upgrader = RoomUpgrader(server_name, storage, room_cache, creator, room_handler, push.rules)
    room_handler.upgrades = upgrader
    summaries.remote = FederationHierarchyClient(reactor, federation.client)
    edus = FederationEdus(
        server_name,
        reactor,
        federation.sender,
        room_cache,
        memberships,
        typing,
        receipts,
        presence,
    )
    federation.transactions.edu_handlers.update(edus.handlers())
    if not reader:
        bus.subscribe(TypingChanged, lambda m: edus.on_local_typing(m.room_id, m.user_id, m.typing))
        bus.subscribe(ReceiptStored, lambda m: edus.on_local_receipt(m.receipt))
        bus.subscribe(PresenceChanged, lambda m: edus.on_local_presence(m.state))
        bus.subscribe(PresencePing, lambda m: edus.on_local_presence(m.state))
        bus.subscribe(PresenceChanged, lambda m: appservices.on_presence(m.state))
        bus.subscribe(
            TypingChanged,
            lambda m: appservices.on_typing(m.room_id, typing.typing_users(m.room_id)),
        )
        bus.subscribe(EventsPersisted, lambda m: edus.on_persisted(m.events))

    media_files = FileSystemMediaStorage(config.media_store_path)
    remote_media = RemoteMediaFetcher(
        reactor,
        federation.client,
        media_files.spool_dir,
        config.max_upload_size,
        outbound_ip_filter,
    )
    media = MediaRepository(
        MediaSettings.from_config(config),
        storage.media,
        media_files,
        reactor,
        remote_media,
        Ratelimiter(
            reactor,
            RateLimit(
                per_second=config.remote_media_download_per_second,
                burst_count=config.remote_media_download_burst_count,
            ),
        ),
    )
    previewer = (
        UrlPreviewer(
            media,
            reactor,
            ip_blacklist=config.url_preview_ip_range_blacklist,
            ip_whitelist=config.url_preview_ip_range_whitelist,
            max_size=config.max_spider_size,
        )
        if config.url_preview_enabled
        else None
    )

    tags = TagsHandler(storage.account_data)
    server_notices = ServerNoticesHandler(
        config.server_notices,
        server_name,
        storage.users,
        storage.profiles,
        registration,
        room_handler,
        memberships,
        tags,
    )

    login_via_session = config.login_via_existing_session
    login_tokens = (
        LoginTokenHandler(storage.login_tokens, reactor, login_via_session.token_timeout_ms)
        if login_via_session.enabled
        else None
    )
    resource = JsonResource()
    HealthServlet().register(resource)
    replication = ReplicationResource(reactor, config.worker_replication_secret)
    replication.register_endpoint(ping_endpoint(workers.instance_name, storage))
    federation.register(resource)
    # Shared with the WebSocket transport, which calls the same methods (and limiters).
    room_servlets = RoomServlets(
        auth,
        room_handler,
        history,
        Ratelimiter(
            reactor, config.rc_message, overrides=restrictions, honour_override_values=True
        ),
        bundler=relations.bundles_for_user,
    )
    identity = IdentityServerClient(
        reactor,
        server_name,
        signing_key,
        outbound_ip_filter,
        verify_certificates=config.federation_verify_certificates
        and not config.use_insecure_ssl_client_just_for_testing_do_not_use,
    )
    third_party_invites = ThirdPartyInviteHandler(
        server_name, room_handler, identity, federation.client
    )
    room_servlets.third_party_invites = third_party_invites
    ThirdPartyInviteServlets(federation.authenticator.authenticate, third_party_invites).register(
        resource
    )
    threepids = ThreePidHandler(storage.threepids, identity, reactor)
    deactivation = DeactivationHandler(storage, auth, threepids)
    account_servlets = AccountServlets(config, storage, auth, ui_auth, deactivation)
    account_servlets.threepids = threepids
    email_config = config.email
    email_validation = EmailValidation(
        email_config,
        Mailer(reactor, email_config) if email_config is not None else None,
        storage.validation_sessions,
        storage.threepids,
        reactor,
        config.client_baseurl,
    )
    if email_validation.enabled:
        ui_auth.register_stage(EMAIL_IDENTITY, email_validation.check_uia_stage)
    ThreePidServlets(
        auth, ui_auth, email_validation, threepids, Ratelimiter(reactor, config.rc_3pid_validation)
    ).register(resource)
    sync_servlets = SyncServlets(storage, auth, sync)
    sliding_sync = SlidingSyncHandler(storage, room_cache, memberships, sync, reactor)
    if not reader:  # (sliding sync is not served by reader processes)
        # After the fanout: the recency orders re-read these rooms from the updated caches.
        bus.subscribe(EventsPersisted, lambda m: sliding_sync.recency.on_persisted(m.events))
        bus.subscribe(
            RoomsInvalidated, lambda m: sliding_sync.recency.on_rooms_invalidated(m.room_ids)
        )
        bus.subscribe(
            DevicesChanged,
            lambda m: sliding_sync.on_devices_changed(m.user_id, list(m.device_ids), m.created),
        )
    SlidingSyncServlet(auth, sliding_sync).register(resource)
    ephemeral_servlets = EphemeralServlets(auth, receipts, typing, presence)
    on_stop: list[Callable[[], Awaitable[None]]] = []
    ws_factory: SyncStreamFactory | None = None
    if config.websocket.enabled:
        ws_factory = SyncStreamFactory(
            config.websocket, reactor, auth, sync, room_servlets, ephemeral_servlets
        )
        WebSocketServlet(ws_factory, auth, sync_servlets).register(resource)
        on_stop.append(ws_factory.stop)
    room_shutdown = RoomShutdown(storage, room_cache, room_handler)
    purger = RoomPurger(
        storage,
        room_cache,
        persister,
        memberships,
        room_shutdown,
        push.counts,
        reactor,
        server_name,
    )
    media_admin = MediaAdmin(media, storage.media_admin)
    redactor = UserRedactor(
        purger,
        storage.admin_jobs,
        storage.user_admin,
        room_handler,
        memberships,
        server_name,
        reactor,
    )
    for servlets in (
        MetaServlets(config, auth),
        RegisterServlets(
            config,
            storage,
            auth,
            ui_auth,
            registration,
            Ratelimiter(reactor, config.rc_registration),
            appservices,
        ),
        LoginServlets(
            config,
            storage,
            auth,
            Ratelimiter(reactor, rc_login.address),
            Ratelimiter(reactor, rc_login.account),
            failed_login_limiter,
            login_tokens,
        ),
        account_servlets,
        DeviceServlets(storage, auth, ui_auth, device_lists.on_device_renamed),
        ProfileServlets(
            auth,
            profiles,
            require_auth=config.require_auth_for_profile_requests,
            limit_to_shared_rooms=config.limit_profile_requests_to_users_who_share_rooms,
        ),
        AccountDataServlets(storage, auth),
        room_servlets,
        RelationServlets(auth, relations),
        sync_servlets,
        LegacySyncServlets(
            auth,
            LegacySyncHandler(
                storage,
                sync,
                room_cache,
                memberships,
                room_handler,
                history,
                visibility,
                presence,
                reactor,
            ),
            history,
            storage.events,
        ),
        VoipServlets(
            auth,
            TurnConfig(
                uris=tuple(config.turn_uris),
                shared_secret=config.turn_shared_secret,
                username=config.turn_username,
                password=config.turn_password,
                lifetime_ms=config.turn_user_lifetime,
            ),
            config.turn_allow_guests,
            reactor,
        ),
        ReportServlets(
            auth,
            ReportsHandler(
                storage,
                room_cache,
                history,
                Ratelimiter(reactor, config.rc_reports, overrides=restrictions),
                reactor,
                locality,
            ),
        ),
        OpenIdServlets(auth, OpenIdHandler(storage.openid, reactor, server_name)),
        MutualRoomsServlets(auth, memberships),
        WhoisServlets(auth, storage.users, locality),
        AdminRestrictionServlets(auth, restrictions, storage.users, locality),
        E2eKeysServlets(auth, ui_auth, e2e_keys, cross_signing, to_device),
        RoomKeysServlets(auth, KeyBackupHandler(storage.key_backup)),
        ephemeral_servlets,
        PresenceServlets(auth, presence),
        TagServlets(auth, tags),
        UserDirectoryServlets(
            auth,
            UserDirectoryHandler(
                storage.user_directory,
                search_all_users=config.user_directory["search_all_users"],
            ),
        ),
        SearchServlets(auth, SearchHandler(storage, room_cache, memberships, visibility)),
        DirectoryServlets(
            auth,
            room_handler,
            directory,
            allow_public_rooms_without_auth=config.allow_public_rooms_without_auth,
        ),
        SpaceServlets(auth, room_handler, summaries),
        RoomUpgradeServlets(auth, upgrader),
        FederationHierarchyServlet(federation.authenticator.authenticate, summaries),
        AppServiceServlets(auth, appservices),
        MediaServlets(
            auth,
            media,
            Ratelimiter(reactor, config.rc_media_create, overrides=restrictions),
            previewer,
        ),
        FederationMediaServlets(media, federation.authenticator.authenticate),
        KeyServlets(server_name, signing_key, reactor, config.key_refresh_interval),
        SharedSecretRegistrationServlet(
            config.registration_shared_secret, reactor, auth, registration
        ),
        AdminRoomApiServlets(auth, RoomAdmin(storage, room_cache, room_handler, writer), history),
        AdminEventReportServlets(auth, EventReportsAdmin(storage)),
        AdminServerServlets(auth, DestinationsAdmin(storage, federation.sender)),
        AdminRegistrationTokenServlets(
            auth, RegistrationTokensAdmin(storage.registration, reactor)
        ),
        AdminUserServlets(
            auth,
            locality,
            storage.users,
            storage.user_admin,
            AdminUsersHandler(
                storage, auth, registration, profiles, deactivation, restrictions, threepids
            ),
            deactivation,
            registration,
            room_handler.joined_room_ids,
            push.pushers.pushers_of,
        ),
        AdminUserLimitServlets(auth, locality, storage.users, restrictions),
        AdminUserInfoServlets(
            auth,
            locality,
            storage.users,
            memberships,
            storage.account_data,
            storage.threepids,
            restrictions,
            storage.media,
            media_admin,
        ),
        AdminUserActivityServlets(auth, locality, storage.user_admin, cross_signing, redactor),
        AdminRoomHierarchyServlet(auth, summaries),
        AdminDeviceServlets(auth, locality, storage.users, device_lists.on_device_renamed),
        AdminRoomServlets(auth, room_shutdown, purger),
        AdminPurgeServlets(auth, purger),
        AdminMediaServlets(auth, media_admin),
        AdminServerNoticeServlets(auth, locality, storage.users, server_notices),
    ):
        servlets.register(resource)
    if login_tokens is not None:
        LoginTokenServlets(auth, ui_auth, login_tokens, login_via_session.require_ui_auth).register(
            resource
        )
    push.register(resource, auth)

    if isinstance(bus, RedisBus):
        bus.start()  # after the subscriptions: other processes' messages may arrive now
    if follower is not None:
        assert isinstance(bus, RedisBus)  # the configuration requires Redis for workers
        from twisted.internet import threads

        if not await threads.deferToThread(bus.subscribed.wait, 30):
            raise RuntimeError("Redis bus: could not subscribe within 30 s")
        # After subscribing: a change committed from here on is either in these
        # positions or told by a message that arrives later.
        await follower.catch_up()
    if not reader:
        await appservices.start()  # after the wiring: events may flow from here on
        await federation.sender.start()
        await push.start()
        client_ips.start()
        await purger.resume()  # jobs a stop cut short
    metrics: MetricsSources | None = None
    tick_timer: ReactorTickTimer | None = None
    if config.enable_metrics:
        metrics = _metrics_sources(reactor, storage, room_cache, notifier, federation, ws_factory)
        register_sources(metrics)
        tick_timer = ReactorTickTimer(reactor)
        if not tick_timer.install():
            tick_timer = None
    return HomeServer(
        config=config,
        reactor=reactor,
        storage=storage,
        auth=auth,
        resource=resource,
        on_stop=[
            *on_stop,
            typing.stop,
            presence.stop,
            appservices.stop,
            federation.stop,
            push.stop,
            client_ips.stop,
            purger.stop,
            identity.close,
            *([follower.stop] if follower is not None else []),
            internal_client.close,
            *([bus.stop] if isinstance(bus, RedisBus) else []),
        ],
        media=media,
        upload_spool_dir=media_files.spool_dir,
        push=push,
        federation=federation,
        websockets=ws_factory,
        presence=presence,
        bus=bus,
        sliding_sync=sliding_sync,
        metrics=metrics,
        tick_timer=tick_timer,
        replication=replication,
        internal_client=internal_client,
    )


def _metrics_sources(
    reactor: Any,
    storage: Storage,
    room_cache: RoomCache,
    notifier: Notifier,
    federation: Federation,
    ws_factory: SyncStreamFactory | None,
) -> MetricsSources:
    """The live gauges of this server, read at each scrape (see homeserver.metrics)."""
    sources = MetricsSources()

    def read_gauges() -> list[Any]:
        backoff = federation.sender.backoff_intervals_ms()
        return [
            gauge("synapse_notifier_listeners", "Parked /sync long-polls", notifier.waiter_count()),
            gauge(
                "synapse_websocket_connections",
                "Open WebSocket sync connections",
                len(ws_factory.connections) if ws_factory is not None else 0,
            ),
            gauge("python_twisted_reactor_pending_calls", "", len(reactor.getDelayedCalls())),
            labelled_gauge(
                "synapse_federation_destination_retry_interval_seconds",
                "Backoff of a destination failing to receive transactions",
                "destination",
                {d: ms / 1000 for d, ms in backoff.items()},
            ),
            *cache_gauges({"room_cache": room_cache.cache_stats()}),
        ]

    async def refresh_federation_queue() -> None:
        set_federation_queue(await storage.federation.pending_counts())

    sources.gauges.append(read_gauges)
    sources.refreshers.append(refresh_federation_queue)
    return sources
