"""Cross-signing: /keys/device_signing/upload and /keys/signatures/upload.

Invariants:
- The self-signing and user-signing keys must be signed by the master key uploaded with
  them or, without one, by the stored master key; nothing is stored unless every key in
  the request checks out.
- A cross-signing public key never equals one of the user's device ids (403).
- A signature is stored only after it verifies against the signing key and the signed
  object matches the stored key (apart from signatures); failures are per key.
- Master and self-signing changes and self-signatures are device list changes for all
  who share a room; user-signing keys and signatures of other users' master keys are
  changes only the signing user is told of.
"""

from __future__ import annotations

from typing import Any

from homeserver.clock import Clock, now_ms
from homeserver.e2ee.device_lists import DeviceLists
from homeserver.e2ee.locality import Locality
from homeserver.e2ee.signatures import (
    check_signature,
    cross_signing_public_key,
    failure,
    invalid_signature,
    same_key,
    verify_key,
)
from homeserver.errors import Codes, MatrixError
from storage.e2ee import CrossSigningKeyRecord, DeviceListChange, E2eeStore, Signature
from storage.users import UserStore

JsonDict = dict[str, Any]

KEY_FIELDS = {
    "master_key": "master",
    "self_signing_key": "self_signing",
    "user_signing_key": "user_signing",
}


def unknown_key(message: str = "Unknown key") -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, message)


class CrossSigningHandler:
    def __init__(
        self,
        store: E2eeStore,
        users: UserStore,
        device_lists: DeviceLists,
        locality: Locality,
        clock: Clock,
    ) -> None:
        self._clock = clock
        self._store = store
        self._users = users
        self._device_lists = device_lists
        self._locality = locality

    async def _keys_of(self, user_id: str) -> dict[str, CrossSigningKeyRecord]:
        return (await self._store.get_cross_signing_keys([user_id])).get(user_id, {})

    # Signing keys ------------------------------------------------------------------

    async def classify_upload(self, user_id: str, body: JsonDict) -> str:
        """``same`` (nothing new: a no-op), ``first`` (no master key yet: no UIA needed),
        ``allowed`` (an admin let the user replace it without UIA for a while) or
        ``replace`` (needs UIA), as the spec and Synapse decide."""
        stored = await self._keys_of(user_id)
        for name, key_type in KEY_FIELDS.items():
            proposed = body.get(name)
            if proposed is None:
                continue
            current = stored.get(key_type)
            if current is None or current.key != proposed:
                if "master" not in stored:
                    return "first"
                until = await self._store.master_key_replaceable_until(user_id)
                if until is not None and until > now_ms(self._clock):
                    return "allowed"
                return "replace"
        return "same"

    async def allow_replacement_without_uia(self, user_id: str, period_ms: int) -> int | None:
        """Open the window (Synapse's admin API); its end, or None without a master key."""
        until = now_ms(self._clock) + period_ms
        if not await self._store.allow_master_key_replacement(user_id, until):
            return None
        return until

    async def upload_signing_keys(self, user_id: str, body: JsonDict) -> None:
        stored = await self._keys_of(user_id)
        new: list[CrossSigningKeyRecord] = []
        master = body.get("master_key")
        if master is not None:
            record = self._check_key(user_id, "master", master, None)
            new.append(record)
        elif "master" in stored:
            record = stored["master"]
        else:
            raise MatrixError(400, Codes.MISSING_PARAM, "No master key available")
        _, master_verify = cross_signing_public_key(record.key)
        for name in ("self_signing_key", "user_signing_key"):
            key = body.get(name)
            if key is not None:
                new.append(self._check_key(user_id, KEY_FIELDS[name], key, master_verify))
        if not new:
            return
        devices = {d.device_id for d in await self._users.get_devices(user_id)}
        for key in new:
            if key.key_id in devices:
                raise MatrixError(403, Codes.FORBIDDEN, "Key ID in use by a device")
        changes = []
        if any(k.key_type in ("master", "self_signing") for k in new):
            changes.append(DeviceListChange(user_id))
        if any(k.key_type == "user_signing" for k in new):
            changes.append(DeviceListChange(user_id, for_user_id=user_id))
        await self._store.set_cross_signing_keys(user_id, new, changes)
        await self._device_lists.notify(changes)
        if any(k.key_type in ("master", "self_signing") for k in new):
            await self._device_lists.publish_signing_keys(user_id)

    @staticmethod
    def _check_key(
        user_id: str, key_type: str, key: Any, signed_by: Any | None
    ) -> CrossSigningKeyRecord:
        if not isinstance(key, dict):
            raise MatrixError(400, Codes.BAD_JSON, f"The {key_type} key must be an object")
        if key.get("user_id") != user_id:
            raise MatrixError(400, Codes.INVALID_PARAM, f"The {key_type} key has the wrong user id")
        usage = key.get("usage")
        if not isinstance(usage, list) or key_type not in usage:
            raise MatrixError(400, Codes.INVALID_PARAM, f"The {key_type} key has the wrong usage")
        key_id, _ = cross_signing_public_key(key)
        if signed_by is not None:
            check_signature(key, user_id, signed_by)
        return CrossSigningKeyRecord(user_id, key_type, key_id.partition(":")[2], key)

    # Signatures ----------------------------------------------------------------

    async def upload_signatures(self, user_id: str, body: JsonDict) -> JsonDict:
        failures: dict[str, JsonDict] = {}
        accepted: list[Signature] = []
        for target_user, keys in body.items():
            if not isinstance(keys, dict) or not all(isinstance(k, dict) for k in keys.values()):
                raise MatrixError(400, Codes.BAD_JSON, "Signed keys must be objects")
            if not self._locality.is_mine(target_user):
                error = MatrixError(404, Codes.NOT_FOUND, "Remote users are not supported yet")
                failures[target_user] = {key_id: failure(error) for key_id in keys}
                continue
            if target_user == user_id:
                sigs, errors = await self._own_signatures(user_id, keys)
            else:
                sigs, errors = await self._other_signatures(user_id, target_user, keys)
            accepted.extend(sigs)
            if errors:
                failures[target_user] = errors
        if accepted:
            changes = [
                DeviceListChange(s.target_user_id)
                if s.target_user_id == user_id
                else DeviceListChange(s.target_user_id, for_user_id=user_id)
                for s in accepted
            ]
            await self._store.store_signatures(accepted, changes)
            await self._device_lists.notify(changes)
            # Other servers see our users' devices and master key with new signatures.
            own = [s for s in accepted if s.target_user_id == user_id]
            master = (await self._keys_of(user_id)).get("master")
            devices = sorted({s.target_key_id for s in own} - {master.key_id if master else ""})
            if devices:
                await self._device_lists.publish_devices(user_id, devices)
            if len(devices) < len({s.target_key_id for s in own}):
                await self._device_lists.publish_signing_keys(user_id)
        return {"failures": failures}

    async def _own_signatures(
        self, user_id: str, keys: dict[str, JsonDict]
    ) -> tuple[list[Signature], JsonDict]:
        """Own devices signed by the self-signing key; the master key signed by own devices."""
        stored = await self._keys_of(user_id)
        master = stored.get("master")
        self_signing = stored.get("self_signing")
        records = (await self._store.query_device_keys({user_id: []})).get(user_id, {})
        accepted: list[Signature] = []
        errors: JsonDict = {}
        for key_id, signed in keys.items():
            try:
                if master is not None and key_id == master.key_id:
                    accepted.extend(
                        self._master_signed_by_devices(user_id, master, signed, records)
                    )
                    continue
                if key_id not in records:
                    raise unknown_key("Unknown device")
                if self_signing is None:
                    raise MatrixError(400, Codes.MISSING_PARAM, "No self-signing key uploaded")
                if not same_key(signed, records[key_id].keys):
                    raise MatrixError(400, Codes.INVALID_PARAM, "Signed key does not match")
                ssk_id = f"ed25519:{self_signing.key_id}"
                signature = ((signed.get("signatures") or {}).get(user_id) or {}).get(ssk_id)
                if not isinstance(signature, str):
                    raise invalid_signature("Missing signature by the self-signing key")
                check_signature(signed, user_id, verify_key(ssk_id, self_signing.key_id))
                accepted.append(Signature(user_id, ssk_id, user_id, key_id, signature))
            except MatrixError as e:
                errors[key_id] = failure(e)
        return accepted, errors

    @staticmethod
    def _master_signed_by_devices(
        user_id: str, master: CrossSigningKeyRecord, signed: JsonDict, records: dict[str, Any]
    ) -> list[Signature]:
        if not same_key(signed, master.key):
            raise MatrixError(400, Codes.INVALID_PARAM, "Signed key does not match")
        sigs = (signed.get("signatures") or {}).get(user_id)
        if not isinstance(sigs, dict):
            raise invalid_signature("No signatures by the user")
        known = (master.key.get("signatures") or {}).get(user_id) or {}
        out = []
        for signing_key_id, signature in sigs.items():
            if known.get(signing_key_id) == signature:
                continue  # already part of the stored key (e.g. its self-signature)
            device_id = signing_key_id.partition(":")[2]
            record = records.get(device_id)
            public = record.keys.get("keys", {}).get(signing_key_id) if record else None
            if public is None or not isinstance(signature, str):
                raise invalid_signature(f"Signature by unknown device key {signing_key_id}")
            check_signature(signed, user_id, verify_key(signing_key_id, public))
            out.append(Signature(user_id, signing_key_id, user_id, master.key_id, signature))
        return out

    async def _other_signatures(
        self, user_id: str, target_user: str, keys: dict[str, JsonDict]
    ) -> tuple[list[Signature], JsonDict]:
        """Another user's master key signed by our user-signing key."""
        accepted: list[Signature] = []
        errors: JsonDict = {}
        user_signing = (await self._keys_of(user_id)).get("user_signing")
        master = (await self._keys_of(target_user)).get("master")
        for key_id, signed in keys.items():
            try:
                if user_signing is None:
                    raise MatrixError(400, Codes.MISSING_PARAM, "No user-signing key uploaded")
                if master is None or key_id != master.key_id:
                    raise unknown_key("Only the user's master key can be signed")
                if not same_key(signed, master.key):
                    raise MatrixError(400, Codes.INVALID_PARAM, "Signed key does not match")
                usk_id = f"ed25519:{user_signing.key_id}"
                signature = ((signed.get("signatures") or {}).get(user_id) or {}).get(usk_id)
                if not isinstance(signature, str):
                    raise invalid_signature("Missing signature by the user-signing key")
                check_signature(signed, user_id, verify_key(usk_id, user_signing.key_id))
                accepted.append(Signature(user_id, usk_id, target_user, key_id, signature))
            except MatrixError as e:
                errors[key_id] = failure(e)
        return accepted, errors
