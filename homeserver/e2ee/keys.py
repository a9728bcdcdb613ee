"""Key distribution: /keys/upload, /keys/query, /keys/claim and /keys/changes.

Invariants:
- Device keys are accepted only from the device they describe (user id and device id
  of the access token) and must be well formed (``algorithms``, ``keys``, ``signatures``).
  Their signatures are not checked here, as Synapse does not: clients verify them (the
  server is not trusted with that), and a device may replace its keys (re-upload after a
  client resets its crypto store), which notifies the device list as any change does.
- One-time and fallback key ids are ``<algorithm>:<key id>``; a one-time key id is never
  reused with another key.
- Remote users are asked of through ``remote`` (``RemoteKeys``: federation, one request
  per server within the client's ``timeout``); servers that fail, or every server when
  no ``remote`` is plugged in, are listed in ``failures``. The local/remote decision is
  ``Locality.is_mine``.
- What a user sees of other users' signatures follows the spec's visibility rules: a
  signature is shown when made by the key's owner or by the requesting user.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from homeserver.clock import Clock, now_ms
from homeserver.e2ee.device_lists import DeviceLists, DeviceListUpdates
from homeserver.e2ee.locality import Locality, remote_failure
from homeserver.e2ee.remote import RemoteKeys
from homeserver.errors import Codes, MatrixError
from homeserver.requester import Requester
from homeserver.rooms.membership_changes import membership_changes
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import RoomCache
from homeserver.sync.handler import SyncToken
from storage.e2ee import DeviceListChange, E2eeStore, NewKey, Signature
from storage.events import EventsStore
from storage.state_groups import StateGroupStore

JsonDict = dict[str, Any]

SIGNED_CURVE25519 = "signed_curve25519"
DEFAULT_TIMEOUT_MS = 10_000


def bad(message: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, message)


def merge_signatures(
    key: Mapping[str, Any], signatures: Iterable[Signature], viewer: str | None
) -> JsonDict:
    """``key`` plus the stored signatures on it that ``viewer`` may see."""
    out = dict(key)
    merged = {u: dict(s) for u, s in (key.get("signatures") or {}).items()}
    for sig in signatures:
        if sig.signer_user_id in (sig.target_user_id, viewer):
            merged.setdefault(sig.signer_user_id, {})[sig.signer_key_id] = sig.signature
    if merged:
        out["signatures"] = merged
    return out


class KeysHandler:
    def __init__(
        self,
        store: E2eeStore,
        events: EventsStore,
        state_groups: StateGroupStore,
        rooms: RoomCache,
        memberships: MembershipCache,
        device_lists: DeviceLists,
        locality: Locality,
        clock: Clock,
    ) -> None:
        self._store = store
        self._events = events
        self._state_groups = state_groups
        self._rooms = rooms
        self._memberships = memberships
        self._device_lists = device_lists
        self._locality = locality
        self._clock = clock
        self.remote: RemoteKeys | None = None

    # Upload --------------------------------------------------------------------

    async def upload(self, requester: Requester, body: JsonDict) -> JsonDict:
        user_id, device_id = requester.user_id, requester.device_id
        if device_id is None:
            raise bad("To upload keys, the access token must belong to a device")
        device_keys = body.get("device_keys")
        if device_keys is not None:
            self._check_device_keys(user_id, device_id, device_keys)
        one_time = self._parse_keys(body.get("one_time_keys"), "one_time_keys")
        fallback = self._parse_keys(body.get("fallback_keys"), "fallback_keys")
        if len({k.algorithm for k in fallback}) != len(fallback):
            raise bad("At most one fallback key per algorithm")
        result = await self._store.upload_keys(
            user_id, device_id, now_ms(self._clock), device_keys, one_time, fallback
        )
        if result.conflict is not None:
            raise bad(f"Cannot store keys: {result.conflict}")
        if result.device_keys_changed:
            await self._device_lists.notify([DeviceListChange(user_id)])
            # New keys are with the servers sharing a room before the client hears back
            # (bounded): a room-mate there who syncs next already sees the change, and
            # may encrypt for the device.
            await self._device_lists.publish_devices(user_id, [device_id], wait_sent=True)
        counts = await self._store.get_key_counts(user_id, device_id)
        return {"one_time_key_counts": one_time_key_counts(counts.one_time_keys)}

    @staticmethod
    def _check_device_keys(user_id: str, device_id: str, device_keys: Any) -> None:
        if not isinstance(device_keys, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'device_keys' must be an object")
        if device_keys.get("user_id") != user_id:
            raise bad("device_keys.user_id must be the user id of the access token")
        if device_keys.get("device_id") != device_id:
            raise bad("device_keys.device_id must be the device id of the access token")
        algorithms = device_keys.get("algorithms")
        if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
            raise MatrixError(400, Codes.BAD_JSON, "device_keys.algorithms must be strings")
        keys = device_keys.get("keys")
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise MatrixError(400, Codes.BAD_JSON, "device_keys.keys must map ids to strings")
        signatures = device_keys.get("signatures")
        if not isinstance(signatures, dict) or not all(
            isinstance(by_key, dict) and all(isinstance(v, str) for v in by_key.values())
            for by_key in signatures.values()
        ):
            raise MatrixError(
                400, Codes.BAD_JSON, "device_keys.signatures must map users to key ids to strings"
            )

    @staticmethod
    def _parse_keys(raw: Any, name: str) -> list[NewKey]:
        if raw is None:
            return []
        if not isinstance(raw, dict):
            raise MatrixError(400, Codes.BAD_JSON, f"'{name}' must be an object")
        out = []
        for full_id, key in raw.items():
            algorithm, sep, key_id = full_id.partition(":")
            if not sep or not algorithm or not key_id:
                raise bad(f"{name}: key ids must be <algorithm>:<key id>, got {full_id!r}")
            if not isinstance(key, dict | str):
                raise MatrixError(400, Codes.BAD_JSON, f"{name}: {full_id} must be an object")
            if algorithm == SIGNED_CURVE25519 and (
                not isinstance(key, dict) or not isinstance(key.get("key"), str)
            ):
                raise MatrixError(
                    400, Codes.BAD_JSON, f"{name}: {full_id} must be a signed key object"
                )
            out.append(NewKey(algorithm, key_id, key))
        return out

    # Query -----------------------------------------------------------------------

    async def query(
        self,
        requester: Requester,
        device_keys: dict[str, list[str]],
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> JsonDict:
        viewer = requester.user_id
        local: dict[str, list[str]] = {}
        remote: dict[str, list[str]] = {}
        for user_id, device_ids in device_keys.items():
            (local if self._locality.is_mine(user_id) else remote)[user_id] = device_ids
        out = await self.local_keys(local, viewer)
        out["user_signing_keys"] = out.pop("_user_signing_keys")
        out["failures"] = {}
        if remote:
            if self.remote is None:
                answer: JsonDict = {"failures": unreachable(remote)}
            else:
                answer = await self.remote.query(remote, timeout_ms)
            for name in ("device_keys", "master_keys", "self_signing_keys", "failures"):
                out[name].update(answer.get(name) or {})
        return out

    async def local_keys(self, device_keys: dict[str, list[str]], viewer: str | None) -> JsonDict:
        """Keys of local users: ``device_keys``, ``master_keys``, ``self_signing_keys``
        and, for the viewer alone, ``_user_signing_keys`` (federation leaves it out)."""
        local = device_keys
        records = await self._store.query_device_keys(local)
        cross = await self._store.get_cross_signing_keys(local)
        targets = [(u, d) for u, devices in records.items() for d in devices]
        targets += [(u, keys["master"].key_id) for u, keys in cross.items() if "master" in keys]
        by_target: dict[tuple[str, str], list[Signature]] = {}
        for sig in await self._store.get_signatures(targets):
            by_target.setdefault((sig.target_user_id, sig.target_key_id), []).append(sig)

        out_devices: JsonDict = {user_id: {} for user_id in local}
        for user_id, devices in records.items():
            for device_id, record in devices.items():
                info = merge_signatures(
                    record.keys, by_target.get((user_id, device_id), []), viewer
                )
                unsigned = dict(info.get("unsigned") or {})
                if record.display_name is not None:
                    unsigned["device_display_name"] = record.display_name
                info["unsigned"] = unsigned
                out_devices[user_id][device_id] = info
        masters: JsonDict = {}
        self_signing: JsonDict = {}
        user_signing: JsonDict = {}
        for user_id, keys in cross.items():
            master = keys.get("master")
            if master is not None:
                sigs = by_target.get((user_id, master.key_id), [])
                masters[user_id] = merge_signatures(master.key, sigs, viewer)
            if "self_signing" in keys:
                self_signing[user_id] = keys["self_signing"].key
            if "user_signing" in keys and user_id == viewer:
                user_signing[user_id] = keys["user_signing"].key
        return {
            "device_keys": out_devices,
            "master_keys": masters,
            "self_signing_keys": self_signing,
            "_user_signing_keys": user_signing,
        }

    # Claim -----------------------------------------------------------------------

    async def claim(
        self, one_time_keys: dict[str, dict[str, str]], timeout_ms: int = DEFAULT_TIMEOUT_MS
    ) -> JsonDict:
        local: dict[str, dict[str, str]] = {}
        remote: dict[str, dict[str, str]] = {}
        for user_id, by_device in one_time_keys.items():
            (local if self._locality.is_mine(user_id) else remote)[user_id] = by_device
        result = await self.claim_local(local)
        failures: JsonDict = {}
        if remote:
            if self.remote is None:
                failures = unreachable(remote)
            else:
                answer = await self.remote.claim(remote, timeout_ms)
                result.update(answer.get("one_time_keys") or {})
                failures = answer.get("failures") or {}
        return {"one_time_keys": result, "failures": failures}

    async def claim_local(self, one_time_keys: dict[str, dict[str, str]]) -> JsonDict:
        """One key per (local user, device, algorithm): user -> device -> key id -> key."""
        wanted = [
            (user_id, d, algorithm)
            for user_id, by_device in one_time_keys.items()
            for d, algorithm in by_device.items()
        ]
        result: JsonDict = {}
        for key in await self._store.claim_keys(wanted):
            result.setdefault(key.user_id, {}).setdefault(key.device_id, {})[key.key_id] = key.key
        return result

    # Changes ---------------------------------------------------------------------

    async def changes(
        self, requester: Requester, from_token: str, to_token: str | None
    ) -> JsonDict:
        """Device list changes between two sync tokens (``to`` None: up to now)."""
        start = SyncToken.parse(from_token)
        user_id = requester.user_id
        events_now = self._events.stream.current_position
        lists_now = self._store.device_lists.current_position
        if to_token is not None:
            end = SyncToken.parse(to_token)
            events_now = min(end.events, events_now)
            lists_now = min(end.get("device_lists"), lists_now)
        rooms = await self._memberships.rooms_for_user(user_id)
        joined = {r for r, row in rooms.items() if row.membership == "join"}
        moved = {r for r, row in rooms.items() if start.events < row.stream_ordering <= events_now}
        members = await membership_changes(
            self._rooms, self._events, self._state_groups, joined | moved, start.events, events_now
        )
        updates: DeviceListUpdates = await self._device_lists.changes(
            user_id,
            start.get("device_lists"),
            lists_now,
            joined,
            joined & moved,
            members,
        )
        return {"changed": sorted(updates.changed), "left": sorted(updates.left)}


def unreachable(users: Iterable[str]) -> JsonDict:
    """``failures`` for every server of ``users`` (no federation plugged in)."""
    return {server: remote_failure(server) for server in {Locality.server_of(u) for u in users}}


def one_time_key_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts per algorithm; ``signed_curve25519`` always present, as Synapse does (older
    clients read a missing count as "unknown")."""
    out = dict(counts)
    out.setdefault(SIGNED_CURVE25519, 0)
    return out
