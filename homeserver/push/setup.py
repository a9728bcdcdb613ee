"""Wiring of push notifications: rules, actions and counts, pushers, /sync and servlets.

The composition root calls ``build_push`` once and hands ``on_persisted`` to the event
fanout; everything else hooks itself in here (receipt listener, device listener, sync
source and hooks), so the root stays free of push details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from homeserver.api.client.push_rules import PushRuleServlets
from homeserver.api.client.pushers import PusherServlets
from homeserver.bus import Bus, DevicesChanged, ReceiptStored
from homeserver.events.event import Event
from homeserver.handlers.auth import AuthHandler
from homeserver.http.ip_filter import IpFilter
from homeserver.http.server import JsonResource
from homeserver.push.actions import PushActionGenerator
from homeserver.push.counts import UnreadCounts, UnreadCountsSource
from homeserver.push.notifications import NotificationsHandler
from homeserver.push.pusher import GatewayClient, PusherPool, PushSettings
from homeserver.push.rules_handler import PushRulesHandler
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import RoomCache
from homeserver.sync.handler import SyncHandler
from storage.storage import Storage


@dataclass
class PushServices:
    rules: PushRulesHandler
    counts: UnreadCounts
    actions: PushActionGenerator
    pushers: PusherPool
    notifications: NotificationsHandler
    reactor: Any

    @property
    def settings(self) -> PushSettings:
        return self.pushers.settings

    def on_persisted(self, events: list[Event]) -> None:
        self.actions.on_persisted(events)
        for ev in events:
            if ev.membership is not None and ev.state_key and not ev.outlier:
                self.counts.on_membership(ev.state_key, ev.room_id)

    def register(self, resource: JsonResource, auth: AuthHandler) -> None:
        PushRuleServlets(auth, self.rules).register(resource)
        PusherServlets(auth, self.pushers, self.notifications, self.reactor).register(resource)

    async def start(self) -> None:
        # Pushers first: their catch-up reads the actions stored before the restart, the
        # generator's catch-up then hands them the ones it computes (no overlap).
        await self.pushers.start()
        await self.actions.start()

    async def stop(self) -> None:
        await self.actions.stop()
        await self.counts.flush()
        await self.pushers.stop()


def build_push(
    config: Any,
    reactor: Any,
    storage: Storage,
    rooms: RoomCache,
    memberships: MembershipCache,
    sync: SyncHandler,
    outbound_ip_filter: IpFilter,
    bus: Bus,
    *,
    reader: bool = False,
) -> PushServices:
    """``reader``: a process that writes nothing (docs/workers.md): no pusher follows
    device changes, no sync hook writes ``m.push_rules``, and unread counts are read as
    the main process last stored them (its generator counts the events)."""
    section = config.values.get("push") or {}
    settings = PushSettings(
        include_content=bool(section.get("include_content", True)),
        skip_while_syncing=bool(section.get("skip_while_syncing", False)),
    )
    rules = PushRulesHandler(storage)
    counts = UnreadCounts(storage.push)
    actions = PushActionGenerator(
        config.server_name,
        reactor,
        rooms,
        rules,
        storage.relations,
        counts,
        storage.events.stream,
        storage.push,
        storage.events,
        storage.memberships,
    )
    pushers = PusherPool(
        storage.push,
        counts,
        memberships,
        reactor,
        GatewayClient(reactor, outbound_ip_filter),
        settings,
        events=storage.events,
        memberships_store=storage.memberships,
        rooms=rooms,
        events_stream=storage.events.stream,
    )
    actions.listeners.append(pushers.on_notifications)
    counts.receipt_listeners.append(pushers.on_receipt_applied)
    # Before any other receipt subscriber (build_push runs before they subscribe): a
    # sync woken by another must find the reload pending.
    bus.subscribe(ReceiptStored, lambda m: counts.on_receipt(m.receipt))
    if reader:
        sync.add_source(UnreadCountsSource(counts, lambda: defer.succeed(None)))
    else:
        bus.subscribe(
            DevicesChanged,
            lambda m: pushers.on_devices_changed(m.user_id, list(m.device_ids), m.created),
        )
        sync.add_source(UnreadCountsSource(counts, actions.caught_up))
        sync.sync_hooks.append(rules.sync_hook)
        sync.sync_hooks.append(pushers.sync_hook)
    notifications = NotificationsHandler(storage, actions.caught_up, counts.flush)
    return PushServices(rules, counts, actions, pushers, notifications, reactor)
