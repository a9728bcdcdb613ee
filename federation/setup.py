"""Builds the federation services from the config and plugs them into the server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from signedjson.types import SigningKey
from twisted.internet import defer

from federation.backfill import FederationBackfiller
from federation.discovery import ServerResolver
from federation.e2ee import FederationE2ee
from federation.e2ee_servlets import FederationE2eeServlets
from federation.http_client import (
    DEFAULT_IP_RANGE_BLACKLIST,
    MatrixFederationHttpClient,
)
from federation.keyring import RemoteKeyring, TrustedKeyServer
from federation.membership import FederationMembership
from federation.queries import FederationQueries
from federation.query_servlets import FederationQueryServlets
from federation.room_events import FederationEventHandler
from federation.room_servlets import FederationRoomServlets
from federation.sender import FederationSender, RetrySettings
from federation.transport_server import FederationAuthenticator, KeyServlets, TransactionServlet
from federation.well_known import WellKnownFetcher
from homeserver.config import HomeserverConfig
from homeserver.e2ee.device_lists import DeviceLists
from homeserver.e2ee.keys import KeysHandler
from homeserver.e2ee.to_device import ToDeviceHandler
from homeserver.events.event import Event
from homeserver.handlers.profile import ProfileHandler
from homeserver.http.ip_filter import IpFilter
from homeserver.http.ratelimit import FederationRateLimiter, InviteRatelimiter
from homeserver.http.server import JsonResource
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.room_cache import RoomCache
from homeserver.rooms.visibility import VisibilityFilter
from homeserver.rooms.writer import RoomWriter
from storage.storage import Storage

logger = logging.getLogger(__name__)


async def _lookup_srv(name: str) -> list[tuple[str, int]]:
    from twisted.names import client, dns

    answers, _, _ = await client.lookupService(name)
    records = [
        (a.payload.priority, -a.payload.weight, str(a.payload.target), a.payload.port)
        for a in answers
        if a.type == dns.SRV and str(a.payload.target) not in (".", "")
    ]
    return [(target, port) for _, _, target, port in sorted(records)]


@dataclass
class Federation:
    client: MatrixFederationHttpClient
    keyring: RemoteKeyring
    authenticator: FederationAuthenticator
    events: FederationEventHandler
    membership: FederationMembership
    sender: FederationSender
    transactions: TransactionServlet
    servlets: list[Any]
    e2ee: FederationE2ee
    backfiller: FederationBackfiller

    def register(self, resource: JsonResource) -> None:
        for servlets in self.servlets:
            servlets.register(resource)

    def on_persisted(self, events: list[Event]) -> None:
        self.sender.on_persisted(events)
        d = defer.ensureDeferred(self.e2ee.on_events(events))
        d.addErrback(lambda f: logger.error("Device list bookkeeping failed: %s", f.value))

    async def stop(self) -> None:
        self.sender.stop()
        await self.client.close()


def build_federation(
    config: HomeserverConfig,
    reactor: Any,
    signing_key: SigningKey,
    storage: Storage,
    rooms: RoomCache,
    writer: RoomWriter,
    room_handler: RoomHandler,
    profiles: ProfileHandler,
    directory: RoomDirectory,
    keys: KeysHandler,
    to_device: ToDeviceHandler,
    device_lists: DeviceLists,
    invite_limiter: InviteRatelimiter | None = None,
) -> Federation:
    server_name = config.server_name
    blacklist = config.ip_range_blacklist
    ip_policy = IpFilter(
        list(DEFAULT_IP_RANGE_BLACKLIST) if blacklist is None else blacklist,
        config.ip_range_whitelist,
    )
    well_known = WellKnownFetcher(
        reactor, ip_policy, verify_certificates=config.federation_verify_certificates
    )
    resolver = ServerResolver(reactor, well_known, _lookup_srv)
    client = MatrixFederationHttpClient(
        reactor,
        server_name,
        signing_key,
        resolver,
        verify_certificates=config.federation_verify_certificates,
        ip_policy=ip_policy,
        domain_whitelist=config.federation_domain_whitelist,
    )
    keyring = RemoteKeyring(
        server_name,
        signing_key,
        reactor,
        storage.federation,
        client,
        [TrustedKeyServer(t["server_name"], t["verify_keys"]) for t in config.trusted_key_servers],
    )
    events = FederationEventHandler(
        server_name,
        rooms,
        storage.events,
        storage.state_groups,
        storage.rooms,
        writer,
        client,
        keyring,
    )
    membership = FederationMembership(
        server_name,
        signing_key,
        reactor,
        rooms,
        storage.events,
        storage.rooms,
        events,
        client,
        invite_limiter=invite_limiter,
    )
    room_handler.remote = membership
    remote_queries = FederationQueries(client, reactor)
    profiles.remote = remote_queries
    directory.remote_aliases = membership
    directory.remote_rooms = remote_queries
    authenticator = FederationAuthenticator(
        server_name,
        keyring,
        config.federation_domain_whitelist,
        FederationRateLimiter(reactor, config.rc_federation),
    )
    retry = config.federation
    sender = FederationSender(
        server_name,
        reactor,
        storage.federation,
        client,
        rooms,
        RetrySettings(retry.min_interval_ms, retry.multiplier, retry.max_interval_ms),
    )
    writer.persister.preparers.append(sender.prepare)
    transactions = TransactionServlet(authenticator, storage.federation, events, reactor)
    e2ee = FederationE2ee(
        server_name,
        reactor,
        client,
        sender,
        storage.device_federation,
        storage.users,
        keys,
        to_device,
        device_lists,
        expose_device_names=bool(config.allow_device_name_lookup_over_federation),
    )
    keys.remote = e2ee
    to_device.remote = e2ee
    device_lists.publishers.append(e2ee)
    transactions.edu_handlers.update(e2ee.edu_handlers)
    queries = FederationQueryServlets(
        server_name,
        authenticator.authenticate,
        storage,
        profiles,
        directory,
        allow_public_rooms_over_federation=config.allow_public_rooms_over_federation,
        allow_profile_lookup_over_federation=config.allow_profile_lookup_over_federation,
    )
    queries.device_list_provider = e2ee.user_devices
    servlets: list[Any] = [
        transactions,
        FederationRoomServlets(
            server_name,
            authenticator.authenticate,
            rooms,
            storage.events,
            storage.state_groups,
            events,
            membership,
            VisibilityFilter(storage.events, storage.state_groups, rooms),
        ),
        queries,
        FederationE2eeServlets(authenticator.authenticate, e2ee),
        KeyServlets(keyring),
    ]
    backfiller = FederationBackfiller(
        server_name,
        reactor,
        rooms,
        storage.events,
        writer,
        events,
        client,
    )
    return Federation(
        client,
        keyring,
        authenticator,
        events,
        membership,
        sender,
        transactions,
        servlets,
        e2ee,
        backfiller,
    )
