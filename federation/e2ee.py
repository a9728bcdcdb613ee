"""End-to-end encryption across servers: keys of remote users, device list updates and
to-device messages over federation.

Invariants:
- We answer ``/user/devices``, ``/user/keys/query`` and ``/user/keys/claim`` for our own
  users only (400 otherwise), and take answers from a server only about its own users.
- Outbound ``m.device_list_update`` EDUs of one user are built one at a time (a lock per
  user), each naming the previous one as ``prev_id``, and go through the durable
  outbox. The ``stream_id`` served by ``/user/devices`` is read before the keys, so a
  resync never claims to include an update it does not show.
- A remote user's device list is cached only while one of our users shares a room with
  them, and changes only by a resync (``GET /user/devices``) or by an update whose
  ``prev_id`` is the cached extremity; any gap triggers a resync. Resyncs of one user
  run one at a time; an update arriving during one causes another after it.
- EDUs are accepted only about users of the server that sent them.
- A key upload returns once its update was accepted by the servers it goes to (at
  most ``SENT_WAIT_S``; servers backing off are not waited for). Ours accept an update
  only after applying it (a gap's resync aside), so a room-mate there who syncs after
  the upload returned sees the change: no race between the client and federation.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet import defer

from federation.interfaces import FederationClient, FederationRequestError
from federation.room_events import quote
from federation.sender import FederationSender
from homeserver.async_utils import observe
from homeserver.clock import Clock
from homeserver.e2ee.device_lists import DeviceLists
from homeserver.e2ee.keys import KeysHandler
from homeserver.e2ee.locality import Locality
from homeserver.e2ee.to_device import ToDeviceHandler
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from storage.device_federation import DeviceFederationStore, RemoteDevice, RemoteDeviceList
from storage.e2ee import DeviceListChange
from storage.users import UserStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
T = TypeVar("T")

DEVICE_LIST_UPDATE = "m.device_list_update"
SIGNING_KEY_UPDATE = "m.signing_key_update"
DIRECT_TO_DEVICE = "m.direct_to_device"
RESYNC_TIMEOUT_S = 30.0
MAX_EARLY_UPDATES = 1000
EARLY_UPDATE_TTL_S = 120.0
# How long a key upload waits for its device list update to reach the other servers.
SENT_WAIT_S = 2.0


def failure_of(server: str, error: Exception) -> JsonDict:
    """A ``failures`` entry for a server that did not answer (well)."""
    if isinstance(error, FederationRequestError):
        return {
            "status": error.code,
            "errcode": error.errcode or Codes.UNKNOWN,
            "error": str(error),
        }
    if isinstance(error, defer.TimeoutError | defer.CancelledError):
        return {"status": 504, "errcode": Codes.UNKNOWN, "error": f"{server} timed out"}
    return {"status": 503, "errcode": Codes.UNKNOWN, "error": f"{server}: {error}"}


def _strip_unsigned(keys: JsonDict) -> JsonDict:
    return {k: v for k, v in keys.items() if k != "unsigned"}


def parse_user_devices(user_id: str, body: Any) -> RemoteDeviceList:
    """A ``GET /user/devices`` answer as a cache entry; devices that are not the user's
    are left out. Raises ``ValueError`` on a malformed answer."""
    if not isinstance(body, dict) or body.get("user_id") != user_id:
        raise ValueError("user/devices answer is not about the user asked for")
    stream_id = body.get("stream_id")
    devices = body.get("devices")
    if not isinstance(stream_id, int) or not isinstance(devices, list):
        raise ValueError("user/devices answer lacks stream_id or devices")
    out: dict[str, RemoteDevice] = {}
    for device in devices:
        if not isinstance(device, dict) or not isinstance(device.get("device_id"), str):
            continue
        device_id = device["device_id"]
        keys = device.get("keys")
        if not _keys_of_device(keys, user_id, device_id):
            keys = None
        name = device.get("device_display_name")
        out[device_id] = RemoteDevice(device_id, name if isinstance(name, str) else None, keys)
    master = body.get("master_key")
    ssk = body.get("self_signing_key")
    return RemoteDeviceList(
        user_id,
        stream_id,
        out,
        master if _cross_signing_key_of(master, user_id) else None,
        ssk if _cross_signing_key_of(ssk, user_id) else None,
    )


@dataclass(frozen=True, slots=True)
class DeviceListUpdate:
    """An ``m.device_list_update`` EDU; ``device`` None when the device was deleted."""

    user_id: str
    device_id: str
    stream_id: int
    prev_ids: tuple[int, ...]
    device: RemoteDevice | None


def parse_device_list_update(content: Any) -> DeviceListUpdate | None:
    """The EDU's content, or None if malformed. Keys not about the device are dropped."""
    if not isinstance(content, dict):
        return None
    user_id = content.get("user_id")
    device_id = content.get("device_id")
    stream_id = content.get("stream_id")
    prev_ids = content.get("prev_id", [])
    if not (
        isinstance(user_id, str)
        and isinstance(device_id, str)
        and isinstance(stream_id, int)
        and isinstance(prev_ids, list)
        and all(isinstance(p, int) for p in prev_ids)
    ):
        return None
    device = None
    if not content.get("deleted"):
        keys = content.get("keys")
        name = content.get("device_display_name")
        device = RemoteDevice(
            device_id,
            name if isinstance(name, str) else None,
            keys if _keys_of_device(keys, user_id, device_id) else None,
        )
    return DeviceListUpdate(user_id, device_id, stream_id, tuple(prev_ids), device)


def _keys_of_device(keys: Any, user_id: str, device_id: str) -> bool:
    """Whether ``keys`` may be cached as the device's keys: an object that names no other
    user or device. Their shape is not checked further (Synapse keeps whatever the
    server sends, and SyTest sends ``{"device_keys": {}}``): clients verify device keys
    and their signatures before trusting them."""
    return (
        isinstance(keys, dict)
        and keys.get("user_id", user_id) == user_id
        and keys.get("device_id", device_id) == device_id
    )


def _cross_signing_key_of(key: Any, user_id: str) -> bool:
    return (
        isinstance(key, dict)
        and key.get("user_id") == user_id
        and isinstance(key.get("keys"), dict)
    )


def server_of(user_id: str) -> str | None:
    try:
        return Locality.server_of(user_id)
    except MatrixError:
        return None


class FederationE2ee:
    """Implements ``RemoteKeys``, ``RemoteToDevice`` and ``DeviceListPublisher`` over
    federation, serves the server-server key endpoints and handles the E2EE EDUs."""

    def __init__(
        self,
        server_name: str,
        clock: Clock,
        client: FederationClient,
        sender: FederationSender,
        store: DeviceFederationStore,
        users: UserStore,
        keys: KeysHandler,
        to_device: ToDeviceHandler,
        device_lists: DeviceLists,
        *,
        expose_device_names: bool = False,
    ) -> None:
        self._server_name = server_name
        # allow_device_name_lookup_over_federation: names leave only when allowed.
        self._expose_device_names = expose_device_names
        self._clock = clock
        self._client = client
        self._sender = sender
        self._store = store
        self._users = users
        self._keys = keys
        self._to_device = to_device
        self._device_lists = device_lists
        self._locks: dict[str, defer.DeferredLock] = {}
        self._resyncing: dict[str, defer.Deferred[Exception | None]] = {}
        # Users whose update came before we shared a room with them (our join to their
        # room was still being persisted): user id -> when; resynced if the join lands.
        self._early_updates: OrderedDict[str, float] = OrderedDict()
        self._resync_again: set[str] = set()

    @property
    def edu_handlers(self) -> dict[str, Callable[[str, JsonDict], Awaitable[None]]]:
        return {
            DEVICE_LIST_UPDATE: self.on_device_list_update,
            SIGNING_KEY_UPDATE: self.on_signing_key_update,
            DIRECT_TO_DEVICE: self._to_device.receive_federated,
        }

    def _check_local(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            if server_of(user_id) != self._server_name:
                raise MatrixError(400, Codes.INVALID_PARAM, f"{user_id} is not a user here")

    # Serving ------------------------------------------------------------------------

    async def user_devices(self, user_id: str) -> JsonDict:
        """``GET /user/devices/{userId}`` for one of our users."""
        self._check_local([user_id])
        stream_id = await self._store.outbound_stream_id(user_id)  # before the keys
        keys = await self._keys.local_keys({user_id: []}, None)
        device_keys = keys["device_keys"].get(user_id, {})
        devices = []
        for device in await self._users.get_devices(user_id):
            if device.device_id not in device_keys:
                continue  # as Synapse: only devices that have keys
            entry: JsonDict = {
                "device_id": device.device_id,
                "keys": _strip_unsigned(device_keys[device.device_id]),
            }
            if device.display_name is not None and self._expose_device_names:
                entry["device_display_name"] = device.display_name
            devices.append(entry)
        out: JsonDict = {"user_id": user_id, "stream_id": stream_id, "devices": devices}
        if user_id in keys["master_keys"]:
            out["master_key"] = keys["master_keys"][user_id]
        if user_id in keys["self_signing_keys"]:
            out["self_signing_key"] = keys["self_signing_keys"][user_id]
        return out

    async def query_local(self, device_keys: dict[str, list[str]]) -> JsonDict:
        """``POST /user/keys/query``: our users' keys as another server sees them."""
        self._check_local(device_keys)
        out = await self._keys.local_keys(device_keys, None)
        del out["_user_signing_keys"]
        if not self._expose_device_names:
            for devices in out["device_keys"].values():
                for info in devices.values():
                    unsigned = info.get("unsigned")
                    if isinstance(unsigned, dict) and "device_display_name" in unsigned:
                        unsigned = {k: v for k, v in unsigned.items() if k != "device_display_name"}
                        if unsigned:
                            info["unsigned"] = unsigned
                        else:
                            del info["unsigned"]
        return out

    async def claim_local(self, one_time_keys: dict[str, dict[str, str]]) -> JsonDict:
        self._check_local(one_time_keys)
        return {"one_time_keys": await self._keys.claim_local(one_time_keys)}

    # Asking other servers (RemoteKeys) -------------------------------------------

    async def _per_server(
        self,
        users: Iterable[str],
        timeout_ms: int,
        ask: Callable[[str, list[str], float], Coroutine[Any, Any, T]],
    ) -> tuple[dict[str, T], JsonDict]:
        """Run ``ask(server, users, timeout_s)`` for every server at once; answers by
        server and ``failures`` for those that failed or ran out of time."""
        by_server: dict[str, list[str]] = {}
        for user_id in users:
            server = server_of(user_id)
            if server is not None:
                by_server.setdefault(server, []).append(user_id)
        timeout_s = max(timeout_ms, 1) / 1000.0
        calls: dict[str, defer.Deferred[T]] = {}
        for server, server_users in by_server.items():
            d: defer.Deferred[T] = defer.ensureDeferred(ask(server, server_users, timeout_s))
            calls[server] = d.addTimeout(timeout_s, self._clock)  # type: ignore[arg-type]
        answers: dict[str, T] = {}
        failures: JsonDict = {}
        for server, d in calls.items():
            try:
                answers[server] = await d
            except Exception as e:
                logger.info("Asking %s for keys failed: %s", server, e)
                failures[server] = failure_of(server, e)
        return answers, failures

    async def query(self, device_keys: dict[str, list[str]], timeout_ms: int) -> JsonDict:
        answers, failures = await self._per_server(
            device_keys,
            timeout_ms,
            lambda server, users, t: self._query_server(
                server, {u: device_keys[u] for u in users}, t
            ),
        )
        out: JsonDict = {
            "device_keys": {},
            "master_keys": {},
            "self_signing_keys": {},
            "failures": failures,
        }
        for answer in answers.values():
            for name in ("device_keys", "master_keys", "self_signing_keys"):
                out[name].update(answer.get(name) or {})
        return out

    async def _query_server(
        self, server: str, wanted: dict[str, list[str]], timeout_s: float
    ) -> JsonDict:
        """Cached users from the cache; users sharing a room with ours but not cached by
        a resync (which caches them); everyone else by one live ``/user/keys/query``."""
        out: JsonDict = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        tracked = [u for u in wanted if await self._device_lists.shares_room_with_local_user(u)]
        cached = await self._store.get_remote_lists(tracked)
        for user_id in tracked:
            if user_id not in cached:
                await self._resync(user_id, timeout_s)
        cached = await self._store.get_remote_lists(tracked)
        for user_id, remote in cached.items():
            self._answer_from_cache(out, remote, wanted[user_id])
        live = {u: d for u, d in wanted.items() if u not in cached}
        if live:
            answer = await self._client.post_json(
                server,
                "/_matrix/federation/v1/user/keys/query",
                {"device_keys": live},
                timeout_s=timeout_s,
            )
            if not isinstance(answer, dict):
                raise FederationRequestError(server, 502, None, "Expected a JSON object")
            for name in ("device_keys", "master_keys", "self_signing_keys"):
                section = answer.get(name)
                if isinstance(section, dict):
                    # Only what the server says about its own users, and asked for.
                    out[name].update({u: v for u, v in section.items() if u in live})
        return out

    @staticmethod
    def _answer_from_cache(out: JsonDict, remote: RemoteDeviceList, device_ids: list[str]) -> None:
        user_id = remote.user_id
        wanted = set(device_ids)
        devices: JsonDict = {}
        for device_id, device in remote.devices.items():
            if device.keys is None or (wanted and device_id not in wanted):
                continue
            info = dict(device.keys)
            if device.display_name is not None:
                info["unsigned"] = {
                    **(info.get("unsigned") or {}),
                    "device_display_name": device.display_name,
                }
            devices[device_id] = info
        out["device_keys"][user_id] = devices
        if remote.master_key is not None:
            out["master_keys"][user_id] = remote.master_key
        if remote.self_signing_key is not None:
            out["self_signing_keys"][user_id] = remote.self_signing_key

    async def claim(self, one_time_keys: dict[str, dict[str, str]], timeout_ms: int) -> JsonDict:
        async def ask(server: str, users: list[str], timeout_s: float) -> JsonDict:
            answer = await self._client.post_json(
                server,
                "/_matrix/federation/v1/user/keys/claim",
                {"one_time_keys": {u: one_time_keys[u] for u in users}},
                timeout_s=timeout_s,
            )
            keys = answer.get("one_time_keys") if isinstance(answer, dict) else None
            if not isinstance(keys, dict):
                raise FederationRequestError(server, 502, None, "Expected one_time_keys")
            return {u: v for u, v in keys.items() if u in users and isinstance(v, dict)}

        answers, failures = await self._per_server(one_time_keys, timeout_ms, ask)
        result: JsonDict = {}
        for answer in answers.values():
            result.update(answer)
        return {"one_time_keys": result, "failures": failures}

    # Resync -------------------------------------------------------------------------

    async def _resync(self, user_id: str, timeout_s: float = RESYNC_TIMEOUT_S) -> None:
        """Fetch and cache ``user_id``'s whole device list; wait for it to finish."""
        running = self._resyncing.get(user_id)
        if running is not None:
            self._resync_again.add(user_id)  # what it fetches may predate this call
        else:
            running = defer.ensureDeferred(self._resync_loop(user_id, timeout_s))
            self._resyncing[user_id] = running
        error = await observe(running)
        if error is not None:
            raise error

    async def _resync_loop(self, user_id: str, timeout_s: float) -> Exception | None:
        """Resync until no update asked for another; the error (not raised: several
        callers may wait on it) or None."""
        try:
            while True:
                self._resync_again.discard(user_id)
                server = server_of(user_id)
                assert server is not None
                body = await self._client.get_json(
                    server,
                    f"/_matrix/federation/v1/user/devices/{quote(user_id)}",
                    timeout_s=timeout_s,
                )
                try:
                    remote = parse_user_devices(user_id, body)
                except ValueError as e:
                    raise FederationRequestError(server, 502, None, str(e)) from None
                await self._store.replace_remote_list(remote)
                await self._device_lists.notify([DeviceListChange(user_id)])
                if user_id not in self._resync_again:
                    return None
        except Exception as e:
            return e
        finally:
            self._resyncing.pop(user_id, None)

    def _resync_in_background(self, user_id: str) -> None:
        d = defer.ensureDeferred(self._resync(user_id))
        d.addErrback(lambda f: logger.info("Resyncing devices of %s failed: %s", user_id, f.value))

    # Inbound EDUs -------------------------------------------------------------------

    async def on_device_list_update(self, origin: str, content: JsonDict) -> None:
        update = parse_device_list_update(content)
        if update is None:
            logger.info("Ignoring a malformed device list update from %s", origin)
            return
        user_id = update.user_id
        if server_of(user_id) != origin:
            logger.warning("%s sent a device list update for %s; ignored", origin, user_id)
            return
        if not await self._device_lists.shares_room_with_local_user(user_id):
            # Not tracked: we resync if we ever need the list, or if a join of ours
            # to a room of theirs lands soon (servers announce devices on joins).
            self._early_updates[user_id] = self._clock.seconds()
            self._early_updates.move_to_end(user_id)
            while len(self._early_updates) > MAX_EARLY_UPDATES:
                self._early_updates.popitem(last=False)
            return
        cached = (await self._store.get_remote_lists([user_id])).get(user_id)
        if cached is not None and update.stream_id <= cached.stream_id:
            return  # already applied (or included in a resync)
        if (
            cached is not None
            and user_id not in self._resyncing
            and update.prev_ids
            and all(p == cached.stream_id for p in update.prev_ids)
            and await self._store.apply_remote_update(
                user_id, cached.stream_id, update.stream_id, update.device_id, update.device
            )
        ):
            await self._device_lists.notify([DeviceListChange(user_id)])
            return
        self._resync_in_background(user_id)

    async def on_signing_key_update(self, origin: str, content: JsonDict) -> None:
        user_id = content.get("user_id")
        if not isinstance(user_id, str) or server_of(user_id) != origin:
            logger.info("Ignoring a signing key update from %s", origin)
            return
        master = content.get("master_key")
        ssk = content.get("self_signing_key")
        if await self._store.set_remote_signing_keys(
            user_id,
            master if _cross_signing_key_of(master, user_id) else None,
            ssk if _cross_signing_key_of(ssk, user_id) else None,
        ):
            await self._device_lists.notify([DeviceListChange(user_id)])

    async def on_events(self, events: list[Event]) -> None:
        """Forget a remote user's cached list once no room is shared with them: their
        server stops sending us updates, so the cache would silently go stale. Announce
        device lists on joins (``_push_on_join``)."""
        for ev in events:
            user_id = ev.state_key
            if (
                ev.membership == "join"
                and user_id
                and not ev.outlier
                and ev.rejected_reason is None
                and ev.stream_ordering > 0  # not backfilled history
            ):
                try:
                    await self._push_on_join(ev.room_id, user_id, ev)
                except Exception:
                    logger.exception("Announcing device lists on a join failed")
            if ev.membership not in ("leave", "ban") or not user_id:
                continue
            if server_of(user_id) in (None, self._server_name):
                continue
            if not await self._device_lists.shares_room_with_local_user(user_id):
                await self._store.forget_remote_list(user_id)

    async def _push_on_join(self, room_id: str, user_id: str, ev: Event) -> None:
        """A server newly sharing a room with a user hears of their devices with keys at
        once, rather than on its first /keys/query (Synapse waits for that query). A
        local user's join announces them to the room's other servers; a remote server's
        first user in a room gets the devices of our users there."""
        prev = (ev.pdu.get("unsigned") or {}).get("prev_content") or {}
        if isinstance(prev, dict) and prev.get("membership") == "join":
            return  # a profile change, not a join
        members = await self._device_lists.members_of([room_id])
        joiner_server = server_of(user_id)
        if joiner_server == self._server_name:
            servers = {server_of(u) for u in members} - {None, self._server_name}
            await self._announce_devices(user_id, {s for s in servers if s is not None})
            self._resync_early_updates(members)
            return
        if joiner_server is None or any(
            server_of(u) == joiner_server for u in members if u != user_id
        ):
            return  # that server was already in the room
        for member in sorted(members):
            if server_of(member) == self._server_name:
                await self._announce_devices(member, {joiner_server})

    def _resync_early_updates(self, members: Iterable[str]) -> None:
        """Resync members whose device updates reached us just before our join did."""
        cutoff = self._clock.seconds() - EARLY_UPDATE_TTL_S
        for member in members:
            seen = self._early_updates.pop(member, None)
            if seen is not None and seen >= cutoff:
                self._resync_in_background(member)

    async def _announce_devices(self, user_id: str, destinations: set[str]) -> None:
        """One update per device of ``user_id`` that has keys, at its current stream
        id, to ``destinations`` only. ``prev_id`` is empty: the others' chains stay
        intact, and a receiver without the list resyncs it.

        Devices without keys are not announced: there is nothing to encrypt to yet, and
        their first key upload reaches every server sharing a room with the user. (Synapse
        announces nothing on joins; SyTest's 'Local device key changes get to remote
        servers with correct prev_id' expects the first update after a join to be a key
        upload's.)"""
        if not destinations:
            return
        devices = await self._users.get_devices(user_id)
        if not devices:
            return
        keys = await self._keys.local_keys({user_id: [d.device_id for d in devices]}, None)
        device_keys = keys.get("device_keys", {}).get(user_id, {})
        devices = [d for d in devices if d.device_id in device_keys]
        if not devices:
            return
        stream_id = await self._store.outbound_stream_id(user_id)
        if stream_id == 0:
            _, ids = await self._store.next_outbound_ids(user_id, 1)
            stream_id = ids[0]
        for device in devices:
            content: JsonDict = {
                "user_id": user_id,
                "device_id": device.device_id,
                "stream_id": stream_id,
                "prev_id": [],
            }
            if device.display_name is not None and self._expose_device_names:
                content["device_display_name"] = device.display_name
            if device.device_id in device_keys:
                content["keys"] = _strip_unsigned(device_keys[device.device_id])
            await self._sender.send_edu(sorted(destinations), DEVICE_LIST_UPDATE, content)

    # Outbound (DeviceListPublisher, RemoteToDevice) ------------------------------------

    async def _destinations(self, user_id: str) -> set[str]:
        members = await self._device_lists.members_of(
            await self._device_lists.joined_room_ids(user_id)
        )
        servers = {server_of(u) for u in members}
        return {s for s in servers if s is not None and s != self._server_name}

    def _lock(self, user_id: str) -> defer.DeferredLock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = defer.DeferredLock()
        return lock

    async def devices_changed(
        self, user_id: str, device_ids: list[str], deleted: bool, *, wait_sent: bool = False
    ) -> None:
        if not device_ids:
            return
        destinations: set[str] = set()
        lock = self._lock(user_id)
        await lock.acquire()
        try:
            prev, stream_ids = await self._store.next_outbound_ids(user_id, len(device_ids))
            destinations = await self._destinations(user_id)
            if not destinations:
                return
            keys = {} if deleted else await self._keys.local_keys({user_id: device_ids}, None)
            device_keys = keys.get("device_keys", {}).get(user_id, {})
            for device_id, stream_id in zip(device_ids, stream_ids, strict=True):
                content: JsonDict = {
                    "user_id": user_id,
                    "device_id": device_id,
                    "stream_id": stream_id,
                    "prev_id": [prev] if prev is not None else [],
                }
                if deleted:
                    content["deleted"] = True
                else:
                    device = await self._users.get_device(user_id, device_id)
                    if (
                        device is not None
                        and device.display_name is not None
                        and self._expose_device_names
                    ):
                        content["device_display_name"] = device.display_name
                    if device_id in device_keys:
                        content["keys"] = _strip_unsigned(device_keys[device_id])
                await self._sender.send_edu(destinations, DEVICE_LIST_UPDATE, content)
                prev = stream_id
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(user_id, None)
        if wait_sent and destinations:
            await self._sender.wait_sent(destinations, SENT_WAIT_S)

    async def signing_keys_changed(self, user_id: str) -> None:
        destinations = await self._destinations(user_id)
        if not destinations:
            return
        keys = await self._keys.local_keys({user_id: []}, None)
        content: JsonDict = {"user_id": user_id}
        if user_id in keys["master_keys"]:
            content["master_key"] = keys["master_keys"][user_id]
        if user_id in keys["self_signing_keys"]:
            content["self_signing_key"] = keys["self_signing_keys"][user_id]
        await self._sender.send_edu(destinations, SIGNING_KEY_UPDATE, content)

    async def send_to_device(
        self, sender: str, event_type: str, messages: dict[str, dict[str, JsonDict]]
    ) -> None:
        by_server: dict[str, dict[str, dict[str, JsonDict]]] = {}
        for user_id, by_device in messages.items():
            server = server_of(user_id)
            if server is not None and server != self._server_name:
                by_server.setdefault(server, {})[user_id] = by_device
        for server, server_messages in by_server.items():
            content = {
                "sender": sender,
                "type": event_type,
                "message_id": secrets.token_urlsafe(16),
                "messages": server_messages,
            }
            await self._sender.send_edu([server], DIRECT_TO_DEVICE, content)
