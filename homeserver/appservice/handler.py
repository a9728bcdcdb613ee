"""What the rest of the server asks of application services.

- Events: ``on_events`` (an EventFanout listener) feeds the transaction queues.
- Ephemeral data: ``on_ephemeral(room_id | None, edu_type, content, sender=...)`` is the
  one entry point for typing, receipts and presence (and, later, to-device); it routes
  the EDU to every interested service with ``receive_ephemeral``.
- Queries: ``user_exists`` / ``query_alias`` ask the services whose namespaces cover an
  unknown local user or alias, then look again (the service creates it meanwhile).
- Registration of namespaced users, the ping, the third-party lookups and the
  services' published room lists.

Invariants: a service's sender user exists once ``start`` has returned; no query is
sent to a service without a URL; third-party answers are merged in registration order.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer

from homeserver.appservice.api import (
    AppServiceApi,
    AppServiceBadStatus,
    AppServiceError,
    AppServiceTimeout,
)
from homeserver.appservice.interest import ServiceInterest
from homeserver.appservice.registration import ApplicationService, AppServiceRegistry
from homeserver.appservice.sender import AppServiceSender
from homeserver.clock import Clock, now_ms
from homeserver.ephemeral.presence import format_presence
from homeserver.ephemeral.receipts import receipt_content
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.events.format import is_valid_localpart, is_valid_room_id
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import RoomCache
from storage.aliases import RoomAlias
from storage.presence import PresenceState
from storage.receipts import Receipt
from storage.storage import Storage

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_USER_ID_LENGTH = 255


class AppServiceHandler:
    def __init__(
        self,
        registry: AppServiceRegistry,
        storage: Storage,
        rooms: RoomCache,
        memberships: MembershipCache,
        clock: Clock,
        server_name: str,
    ) -> None:
        self.registry = registry
        self._storage = storage
        self._rooms = rooms
        self._memberships = memberships
        self._clock = clock
        self._server_name = server_name
        self.api = AppServiceApi(clock)
        self.interests = {s.id: ServiceInterest(s, rooms) for s in registry.services}
        self.sender = AppServiceSender(
            list(registry.services),
            self.interests,
            storage.appservice,
            storage.events,
            self.api,
            clock,
        )
        self._ephemeral_lock = defer.DeferredLock()
        self._typing_sent: dict[str, tuple[str, ...]] = {}

    def on_alias_changed(self, alias: str, room_id: str | None) -> None:
        """A committed change of a local alias mapping (room id None: deleted)."""
        for interest in self.interests.values():
            interest.alias_changed(alias, room_id)

    async def start(self) -> None:
        if self.registry.services:
            mappings = await self._storage.aliases.get_all()
            for interest in self.interests.values():
                interest.load_aliases(mappings)
        for service in self.registry.services:
            created = await self._storage.users.create_user(
                service.sender, None, now_ms(self._clock), appservice_id=service.id
            )
            if created:
                localpart = service.sender[1:].split(":", 1)[0]
                await self._storage.profiles.set_field(service.sender, "displayname", localpart)
                logger.info(
                    "Created %s, the sender of application service %s", service.sender, service.id
                )
        await self.sender.start()

    async def stop(self) -> None:
        await self.sender.stop()
        await self.api.close()

    def on_events(self, events: list[Event]) -> None:
        if self.registry.services:
            self.sender.on_events(events)

    # Ephemeral data ------------------------------------------------------------------

    def on_ephemeral(
        self,
        room_id: str | None,
        edu_type: str,
        content: JsonDict,
        *,
        sender: str | None = None,
    ) -> None:
        """Route one EDU (``m.typing``, ``m.receipt``, ``m.presence``...) to the services.

        ``room_id`` for room-scoped data (typing, receipts), None otherwise; ``sender``
        is the user a presence update is about. Returns at once; never raises.
        """
        if not any(s.receive_ephemeral and s.url for s in self.registry.services):
            return
        d = defer.ensureDeferred(
            self._ephemeral_lock.run(self._route_ephemeral, room_id, edu_type, content, sender)
        )
        d.addErrback(
            lambda f: logger.error("Routing %s to application services: %s", edu_type, f.value)
        )

    def on_typing(self, room_id: str, user_ids: list[str]) -> None:
        """The room's typing users after a change (renewals that change nothing are
        not repeated)."""
        current = tuple(user_ids)
        if self._typing_sent.get(room_id, ()) == current:
            return
        if current:
            self._typing_sent[room_id] = current
        else:
            self._typing_sent.pop(room_id, None)
        self.on_ephemeral(room_id, "m.typing", {"user_ids": list(current)})

    def on_presence(self, state: PresenceState) -> None:
        """A visible presence change (a PresenceHandler listener)."""
        self.on_ephemeral(
            None,
            "m.presence",
            format_presence(state, now_ms(self._clock)),
            sender=state.user_id,
        )

    def on_to_device(self, messages: dict[str, dict[str, JsonDict]]) -> None:
        """To-device messages just queued for local devices (user -> device or ``*`` ->
        ``{type, sender, content}``): those for a service's users go to the service
        (MSC4203), with ``to_user_id`` and ``to_device_id``. Returns at once."""
        targets = [
            (s, user_id, by_device)
            for user_id, by_device in messages.items()
            for s in self.registry.services
            if s.receive_ephemeral and s.url and s.is_interested_in_user(user_id)
        ]
        if not targets:
            return
        d = defer.ensureDeferred(self._route_to_device(targets))
        d.addErrback(lambda f: logger.error("Routing to-device messages to services: %s", f.value))

    async def _route_to_device(
        self, targets: list[tuple[ApplicationService, str, dict[str, JsonDict]]]
    ) -> None:
        for service, user_id, by_device in targets:
            devices: list[str] | None = None
            for device_id, message in by_device.items():
                if device_id == "*":
                    if devices is None:
                        devices = [
                            d.device_id for d in await self._storage.users.get_devices(user_id)
                        ]
                    recipients = devices
                else:
                    recipients = [device_id]
                for recipient in recipients:
                    self.sender.on_to_device(
                        service.id, {**message, "to_user_id": user_id, "to_device_id": recipient}
                    )

    def on_receipt(self, receipt: Receipt) -> None:
        """A stored read receipt (a ``storage.receipts`` listener)."""
        self.on_ephemeral(receipt.room_id, "m.receipt", receipt_content([receipt]))

    async def _route_ephemeral(
        self, room_id: str | None, edu_type: str, content: JsonDict, sender: str | None
    ) -> None:
        for service in self.registry.services:
            if not service.receive_ephemeral or not service.url:
                continue
            interest = self.interests[service.id]
            edu: JsonDict
            if room_id is not None:
                if not await interest.room_interest_by_id(room_id):
                    continue
                data = interest.filter_receipt(content) if edu_type == "m.receipt" else content
                if not data:
                    continue
                edu = {"type": edu_type, "room_id": room_id, "content": data}
            else:
                if sender is not None and not await interest.presence_interest(
                    sender, self._memberships
                ):
                    continue
                edu = {"type": edu_type, "content": content}
                if sender is not None:
                    edu["sender"] = sender
            self.sender.on_ephemeral(service.id, edu)

    # Queries ---------------------------------------------------------------------------

    async def user_exists(self, user_id: str) -> bool:
        """A local user exists, or a service covering its id creates it when asked."""
        if await self._storage.users.get_user(user_id) is not None:
            return True
        return await self.query_user(user_id)

    async def query_user(self, user_id: str) -> bool:
        services = self.registry.interested_in_user(user_id)
        # Services holding the id exclusively are asked first.
        services.sort(key=lambda s: not s.is_exclusive_user(user_id))
        for service in services:
            if service.url is None:
                continue
            if await self.api.query_user(service, user_id):
                return await self._storage.users.get_user(user_id) is not None
        return False

    async def query_alias(self, alias: str) -> RoomAlias | None:
        """Ask the services covering an unknown local alias; the mapping if one made it."""
        if alias.rsplit(":", 1)[-1] != self._server_name and not alias.endswith(
            ":" + self._server_name
        ):
            return None
        for service in self.registry.services:
            if service.url is None or not service.is_interested_in_alias(alias):
                continue
            if await self.api.query_alias(service, alias):
                return await self._storage.aliases.get(alias)
        return None

    # Registration ------------------------------------------------------------------------

    async def register_user(self, service: ApplicationService, localpart: str) -> str:
        """``m.login.application_service`` registration: no password, no UIA."""
        if not is_valid_localpart(localpart):
            raise MatrixError(
                400,
                Codes.INVALID_USERNAME,
                "User ID can only contain characters a-z, 0-9, or '=_-./+'",
            )
        user_id = f"@{localpart}:{self._server_name}"
        if len(user_id.encode("utf-8")) > MAX_USER_ID_LENGTH:
            raise MatrixError(400, Codes.INVALID_USERNAME, "User ID is too long")
        if not service.is_interested_in_user(user_id):
            raise MatrixError(
                400, Codes.EXCLUSIVE, "Invalid user localpart for this application service."
            )
        self.registry.check_user_not_reserved(user_id, allowed=service)
        owner = service.id if service.is_exclusive_user(user_id) else None
        if not await self._storage.users.create_user(
            user_id, None, now_ms(self._clock), appservice_id=owner
        ):
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        await self._storage.profiles.set_field(user_id, "displayname", localpart)
        return user_id

    # Ping ------------------------------------------------------------------------------------

    async def ping(self, service: ApplicationService, transaction_id: str | None) -> int:
        """Call the service's ``/ping``; the round trip in ms. A success ends any backoff."""
        if service.url is None:
            raise MatrixError(
                400, "M_URL_NOT_SET", "Application service doesn't have a URL configured"
            )
        start = self._clock.seconds()
        try:
            await self.api.ping(service, transaction_id)
        except AppServiceTimeout:
            raise MatrixError(
                504, "M_CONNECTION_TIMEOUT", "Connection to application service timed out"
            ) from None
        except AppServiceBadStatus as e:
            extra: JsonDict = {"status": e.status}
            try:
                extra["body"] = e.body.decode("utf-8")
            except UnicodeDecodeError:
                pass
            raise MatrixError(
                502, "M_BAD_STATUS", f"Ping returned status {e.status}", extra
            ) from None
        except AppServiceError as e:
            raise MatrixError(502, "M_CONNECTION_FAILED", str(e)) from None
        duration_ms = int((self._clock.seconds() - start) * 1000)
        self.sender.retry_now(service.id)
        return max(0, duration_ms)

    # Third-party networks ------------------------------------------------------------------

    async def get_protocols(self, only: str | None = None) -> dict[str, JsonDict]:
        calls = [
            (protocol, service)
            for service in self.registry.services
            if service.url is not None
            for protocol in service.protocols
            if only is None or protocol == only
        ]
        infos = await defer.gatherResults(
            [defer.ensureDeferred(self.api.get_protocol(s, p)) for p, s in calls],
            consumeErrors=True,
        )
        merged: dict[str, JsonDict] = {}
        for (protocol, _), info in zip(calls, infos, strict=True):
            if info is None:
                continue
            if protocol not in merged:
                merged[protocol] = {**info, "instances": list(info["instances"])}
            else:
                merged[protocol]["instances"].extend(info["instances"])
        return merged

    async def query_3pe(
        self, kind: str, protocol: str | None, fields: dict[str, list[str]]
    ) -> list[JsonDict]:
        services = [
            s
            for s in self.registry.services
            if s.url is not None and (protocol in s.protocols if protocol else s.protocols)
        ]
        results = await defer.gatherResults(
            [defer.ensureDeferred(self.api.query_3pe(s, kind, protocol, fields)) for s in services],
            consumeErrors=True,
        )
        return [entry for result in results for entry in result]

    # Published room lists ----------------------------------------------------------------------

    async def set_room_published(
        self, service: ApplicationService, network_id: str, room_id: str, visibility: str
    ) -> None:
        if visibility not in ("public", "private"):
            raise MatrixError(400, Codes.INVALID_PARAM, "visibility must be public or private")
        if not is_valid_room_id(room_id):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a valid room ID")
        if visibility == "public" and await self._rooms.get(room_id) is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        await self._storage.appservice.set_room_published(
            service.id, network_id, room_id, visibility == "public"
        )


def parse_third_party_instance_id(value: str) -> tuple[str, str]:
    """``"<appservice id>|<network id>"`` (Synapse's ``instance_id``) -> its two parts."""
    as_id, sep, network_id = value.partition("|")
    if not sep or not as_id or not network_id or "|" in network_id:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid third_party_instance_id {value!r}")
    return as_id, network_id
