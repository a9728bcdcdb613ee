"""The composition root: builds every service once, in dependency order.

Nothing here decides anything; it wires config into stores, stores into handlers and
handlers into servlets, then opens the listeners.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from crypto.signing_key import load_or_generate_signing_key
from homeserver.api.client.account import AccountServlets
from homeserver.api.client.account_data import AccountDataServlets
from homeserver.api.client.devices import DeviceServlets
from homeserver.api.client.directory import DirectoryServlets
from homeserver.api.client.login import LoginServlets
from homeserver.api.client.meta import MetaServlets
from homeserver.api.client.profile import ProfileServlets
from homeserver.api.client.register import RegisterServlets
from homeserver.api.client.rooms import RoomServlets
from homeserver.api.client.sync import SyncServlets
from homeserver.api.keys import KeyServlets
from homeserver.config import HomeserverConfig
from homeserver.events.event import Event
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.profile import ProfileHandler
from homeserver.handlers.register import RegistrationHandler
from homeserver.handlers.ui_auth import UiAuthHandler
from homeserver.http.ratelimit import Ratelimiter
from homeserver.http.server import JsonResource, MatrixSite
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.event_creation import EventCreator
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.persister import EventPersister
from homeserver.rooms.room_cache import RoomCache
from homeserver.rooms.visibility import VisibilityFilter
from homeserver.sync.handler import SyncHandler
from homeserver.sync.notifier import Notifier
from storage.database import Database, make_engine
from storage.storage import Storage
from synapse_compat.admin_register import SharedSecretRegistrationServlet

logger = logging.getLogger(__name__)


@dataclass
class HomeServer:
    config: HomeserverConfig
    reactor: Any
    storage: Storage
    auth: AuthHandler
    resource: JsonResource
    ports: list[Any] = field(default_factory=list)

    @property
    def server_name(self) -> str:
        return self.config.server_name

    def listen(self) -> list[Any]:
        """Open every configured HTTP listener."""
        for listener in self.config.listeners:
            if listener.type != "http":
                logger.warning("Listener type %s is not served yet; skipped", listener.type)
                continue
            if listener.tls:
                raise NotImplementedError("TLS listeners arrive with federation")
            site = MatrixSite(
                self.resource,
                max_body_size=self.config.max_request_body_size,
                x_forwarded=listener.x_forwarded,
            )
            for address in listener.bind_addresses:
                try:
                    port = self.reactor.listenTCP(listener.port, site, interface=address)
                except Exception as e:
                    if address == "::":
                        # No IPv6 on this machine: 0.0.0.0 usually covers it.
                        logger.warning("Could not listen on [::]:%d: %s", listener.port, e)
                        continue
                    raise
                logger.info("Listening on %s:%d", address, port.getHost().port)
                self.ports.append(port)
        return self.ports

    async def stop(self) -> None:
        """Stop accepting requests, let in-flight work finish, close the database."""
        stopping = [p.stopListening() for p in self.ports]
        await defer.gatherResults([d for d in stopping if d is not None], consumeErrors=True)
        self.ports.clear()
        self.storage.db.close()


class EventFanout:
    """After events commit: update membership caches and redactions, wake syncs."""

    def __init__(
        self, server_name: str, rooms: RoomCache, memberships: MembershipCache, notifier: Notifier
    ) -> None:
        self._suffix = f":{server_name}"
        self._rooms = rooms
        self._memberships = memberships
        self._notifier = notifier

    def on_persisted(self, events: list[Event]) -> None:
        to_wake: set[str] = set()
        for ev in events:
            room = self._rooms.get_if_loaded(ev.room_id)
            if ev.membership is not None:
                self._memberships.on_membership(ev)
                if ev.state_key:
                    to_wake.add(ev.state_key)
            redacts = ev.redacts
            if redacts is not None and room is not None:
                for target in room.recent:
                    if target.event_id == redacts and target.redacted_by is None:
                        target.redacted_by = ev.event_id
                        target.redaction = ev
                        target.invalidate_client_cache()
            if room is not None:
                to_wake |= room.joined_members()
        self._notifier.notify_users(u for u in to_wake if u.endswith(self._suffix))

    def on_failure(self, room_ids: set[str]) -> None:
        for room_id in room_ids:
            self._rooms.invalidate(room_id)


async def build_homeserver(config: HomeserverConfig, reactor: Any) -> HomeServer:
    server_name = config.server_name
    os.makedirs(os.path.dirname(config.signing_key_path) or ".", exist_ok=True)
    signing_key = load_or_generate_signing_key(config.signing_key_path)

    db_args = config.database["args"]
    database = Database(
        make_engine(config.database),
        reactor,
        cp_min=int(db_args.get("cp_min", 5)),
        cp_max=int(db_args.get("cp_max", 10)),
    )
    try:
        storage = await Storage.open(database)
    except BaseException:
        database.close()  # its pool threads would keep the process from exiting
        raise

    rc_login = config.rc_login
    failed_login_limiter = Ratelimiter(reactor, rc_login.failed_attempts)
    auth = AuthHandler(
        storage,
        reactor,
        bcrypt_rounds=config.bcrypt_rounds,
        refreshable_access_token_lifetime_ms=config.refreshable_access_token_lifetime,
        refresh_token_lifetime_ms=config.refresh_token_lifetime,
    )
    ui_auth = UiAuthHandler(storage, auth, server_name, failed_login_limiter)
    registration = RegistrationHandler(storage, auth, server_name)
    profiles = ProfileHandler(storage, server_name)

    room_cache = RoomCache(storage.events)
    memberships = MembershipCache(storage.events)
    notifier = Notifier(reactor)
    fanout = EventFanout(server_name, room_cache, memberships, notifier)
    persister = EventPersister(storage.events, fanout.on_persisted, fanout.on_failure)
    creator = EventCreator(server_name, signing_key, reactor, room_cache, storage.events, persister)
    room_handler = RoomHandler(
        server_name, reactor, storage, room_cache, creator, notifier, memberships
    )
    profiles.listeners.append(room_handler.on_profile_changed)
    visibility = VisibilityFilter(storage.events, room_cache)
    history = RoomHistory(storage, room_cache, visibility)
    directory = RoomDirectory(storage, room_cache, server_name)
    sync = SyncHandler(storage, room_cache, memberships, notifier, visibility, reactor)
    storage.account_data.listeners.append(lambda user_id: notifier.notify_users([user_id]))

    resource = JsonResource()
    for servlets in (
        MetaServlets(config, auth),
        RegisterServlets(
            config,
            storage,
            auth,
            ui_auth,
            registration,
            Ratelimiter(reactor, config.rc_registration),
        ),
        LoginServlets(
            config,
            storage,
            auth,
            Ratelimiter(reactor, rc_login.address),
            Ratelimiter(reactor, rc_login.account),
            failed_login_limiter,
        ),
        AccountServlets(config, storage, auth, ui_auth),
        DeviceServlets(storage, auth, ui_auth),
        ProfileServlets(auth, profiles),
        AccountDataServlets(storage, auth),
        RoomServlets(auth, room_handler, history, Ratelimiter(reactor, config.rc_message)),
        SyncServlets(storage, auth, sync),
        DirectoryServlets(auth, room_handler, directory),
        KeyServlets(server_name, signing_key, reactor, config.key_refresh_interval),
        SharedSecretRegistrationServlet(
            config.registration_shared_secret, reactor, auth, registration
        ),
    ):
        servlets.register(resource)

    return HomeServer(config=config, reactor=reactor, storage=storage, auth=auth, resource=resource)
