"""Access tokens, sessions and password checks.

Invariants: the clear token is never stored or logged (only its SHA-256); a token that
is deleted (logout, device deletion, deactivation) stops working at once, because the
in-memory token cache is invalidated in the same call that deletes it; password hashes
are computed on a worker thread, never on the reactor.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import string
from collections import OrderedDict
from dataclasses import dataclass

import bcrypt
from twisted.internet import threads
from twisted.web.server import Request

from homeserver.appservice.registration import ApplicationService, AppServiceRegistry
from homeserver.bus import Bus, TokensInvalidated
from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.client_ips import ClientIpTracker
from homeserver.handlers.restrictions import UserRestrictions
from homeserver.http.server import MatrixRequest
from homeserver.requester import Requester
from storage.storage import Storage
from storage.users import AccessTokenRecord

logger = logging.getLogger(__name__)

TOKEN_CACHE_SIZE = 50_000


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str | None
    expires_in_ms: int | None


# Marks a password hash imported from Synapse (``homeserver import-synapse``): bcrypt
# over the password itself rather than over our SHA-256 pre-hash.
SYNAPSE_HASH_PREFIX = b"synapse:"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def generate_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


def get_access_token_from_request(request: Request) -> str | None:
    """The token from ``Authorization: Bearer`` or the deprecated ``access_token`` query."""
    header = request.getHeader("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise MatrixError(401, Codes.MISSING_TOKEN, "Invalid Authorization header")
        return value.strip()
    values = (request.args or {}).get(b"access_token")
    if values:
        return str(values[0].decode("utf-8", "replace"))
    return None


class AuthHandler:
    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        bus: Bus,
        *,
        bcrypt_rounds: int,
        refreshable_access_token_lifetime_ms: int | None,
        refresh_token_lifetime_ms: int | None,
        appservices: AppServiceRegistry | None = None,
        password_pepper: str = "",
        restrictions: UserRestrictions | None = None,
    ) -> None:
        self._storage = storage
        self._restrictions = restrictions
        self._pepper = password_pepper
        # Checked against when there is no real hash (see check_password); made once.
        self._dummy_hash: bytes | None = None
        self._appservices = appservices or AppServiceRegistry(())
        self._clock = clock
        self._bcrypt_rounds = bcrypt_rounds
        self._access_lifetime = refreshable_access_token_lifetime_ms
        self._refresh_lifetime = refresh_token_lifetime_ms
        # token hash -> record; an LRU so hot tokens cost no query.
        self._token_cache: OrderedDict[str, tuple[AccessTokenRecord, bool, bool]] = OrderedDict()
        self._bus = bus
        self._hash_by_token_id: dict[int, str] = {}
        self.client_ips: ClientIpTracker | None = None

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # Passwords -----------------------------------------------------------

    def _prehash(self, password: str) -> bytes:
        # bcrypt reads at most 72 bytes: pre-hash so long passwords keep all their
        # entropy. The pepper (Synapse's password_config.pepper) is appended first.
        return hashlib.sha256((password + self._pepper).encode("utf-8")).hexdigest().encode()

    async def hash_password(self, password: str) -> str:
        rounds = self._bcrypt_rounds

        def _hash() -> str:
            return bcrypt.hashpw(self._prehash(password), bcrypt.gensalt(rounds)).decode("ascii")

        return await threads.deferToThread(_hash)

    async def check_password(self, user_id: str, password: str) -> bool:
        """Whether ``password`` is the user's. It costs one bcrypt at the configured
        cost whatever the answer: an unknown, password-less or deactivated account is
        checked against a dummy hash, so timing does not tell which accounts exist."""
        user = await self._storage.users.get_user(user_id)
        usable = user is not None and user.password_hash is not None and not user.deactivated
        if usable:
            assert user is not None and user.password_hash is not None
            stored = user.password_hash.encode("ascii")
        else:
            if self._dummy_hash is None:
                self._dummy_hash = (await self.hash_password(secrets.token_hex(16))).encode()
            stored = self._dummy_hash
        if usable and stored.startswith(SYNAPSE_HASH_PREFIX):
            # Imported from Synapse, which hashes the password (and pepper) without
            # our pre-hash: check it that way once, then store our own hash.
            # (Synapse's bcrypt read only the first 72 bytes; ours refuses longer input.)
            legacy = (password + self._pepper).encode("utf-8")[:72]
            ok = await threads.deferToThread(
                bcrypt.checkpw, legacy, stored[len(SYNAPSE_HASH_PREFIX) :]
            )
            if ok:
                await self._storage.users.set_password_hash(
                    user_id, await self.hash_password(password)
                )
            return bool(ok)
        digest = self._prehash(password)
        matches = await threads.deferToThread(bcrypt.checkpw, digest, stored)
        return usable and bool(matches)

    # Sessions ------------------------------------------------------------

    async def create_session(
        self,
        user_id: str,
        device_id: str | None,
        initial_display_name: str | None,
        *,
        with_refresh_token: bool = False,
    ) -> Session:
        """Register (or reuse) the device and hand out a new access token for it."""
        device_id = device_id or generate_device_id()
        await self._storage.users.store_device(user_id, device_id, initial_display_name)
        access_token = generate_token("mat")
        refresh_token = None
        expires_in_ms = None
        refresh_id = None
        valid_until = None
        if with_refresh_token:
            refresh_token = generate_token("mar")
            refresh_expiry = (
                self.now_ms() + self._refresh_lifetime if self._refresh_lifetime else None
            )
            refresh_id = await self._storage.users.add_refresh_token(
                user_id, device_id, hash_token(refresh_token), refresh_expiry
            )
            if self._access_lifetime:
                expires_in_ms = self._access_lifetime
                valid_until = self.now_ms() + expires_in_ms
        await self._storage.users.add_access_token(
            user_id, device_id, hash_token(access_token), valid_until, refresh_id
        )
        return Session(user_id, device_id, access_token, refresh_token, expires_in_ms)

    async def refresh(self, refresh_token: str) -> Session:
        record = await self._storage.users.get_refresh_token(hash_token(refresh_token))
        if record is None or (record.expiry_ts is not None and record.expiry_ts < self.now_ms()):
            raise MatrixError(
                401,
                Codes.UNKNOWN_TOKEN,
                "Refresh token is unknown or expired",
                {"soft_logout": False},
            )
        new_refresh = generate_token("mar")
        new_access = generate_token("mat")
        refresh_expiry = self.now_ms() + self._refresh_lifetime if self._refresh_lifetime else None
        access_valid_until = (
            self.now_ms() + self._access_lifetime if self._access_lifetime else None
        )
        replaced = await self._storage.users.replace_refresh_token(
            record,
            hash_token(new_refresh),
            refresh_expiry,
            hash_token(new_access),
            access_valid_until,
        )
        if replaced is None:  # a concurrent refresh used it first
            raise MatrixError(
                401,
                Codes.UNKNOWN_TOKEN,
                "Refresh token is unknown or expired",
                {"soft_logout": False},
            )
        self.invalidate_token_ids(replaced)
        return Session(
            record.user_id, record.device_id, new_access, new_refresh, self._access_lifetime
        )

    def invalidate_token_ids(self, token_ids: list[int]) -> None:
        users: set[str] = set()
        for token_id in token_ids:
            token_hash = self._hash_by_token_id.pop(token_id, None)
            if token_hash is not None:
                cached = self._token_cache.pop(token_hash, None)
                if cached is not None:
                    users.add(cached[0].user_id)
        self._tokens_died(users)

    def invalidate_user(self, user_id: str) -> None:
        self.forget_cached_tokens(user_id)
        self._tokens_died({user_id})

    def forget_cached_tokens(self, user_id: str) -> None:
        """Drop the user's tokens from memory (another process told they died): the
        next request with one reads the database."""
        for token_hash, (record, _, _) in list(self._token_cache.items()):
            if record.user_id == user_id:
                self._token_cache.pop(token_hash, None)
                self._hash_by_token_id.pop(record.token_id, None)

    def _tokens_died(self, user_ids: set[str]) -> None:
        """Say so (connections held open with a token re-check it)."""
        for user_id in user_ids:
            self._bus.publish(TokensInvalidated(user_id))

    async def logout(self, requester: Requester) -> None:
        """Delete the token's device (and so every token of it), as Synapse does."""
        if requester.device_id is not None:
            removed = await self._storage.users.delete_devices(
                requester.user_id, [requester.device_id]
            )
            self.invalidate_token_ids(removed)
        if requester.access_token_id is not None:
            await self._storage.users.delete_access_token(requester.access_token_id)
            self.invalidate_token_ids([requester.access_token_id])

    async def logout_all(self, user_id: str) -> None:
        devices = await self._storage.users.get_devices(user_id)
        removed = await self._storage.users.delete_devices(user_id, [d.device_id for d in devices])
        tokens = await self._storage.users.delete_access_tokens_for_user(user_id)
        self.invalidate_token_ids(removed + [t for t, _ in tokens])
        self.invalidate_user(user_id)

    async def set_password(
        self,
        user_id: str,
        password_hash: str,
        *,
        logout_devices: bool,
        keep_device: str | None = None,
        keep_token: int | None = None,
    ) -> None:
        """Store the new hash; with ``logout_devices`` every device and token of the
        user dies except ``keep_device`` / ``keep_token`` (the session that asked)."""
        await self._storage.users.set_password_hash(user_id, password_hash)
        if not logout_devices:
            return
        devices = await self._storage.users.get_devices(user_id)
        others = [d.device_id for d in devices if d.device_id != keep_device]
        removed = await self._storage.users.delete_devices(user_id, others)
        tokens = await self._storage.users.delete_access_tokens_for_user(
            user_id, except_token_id=keep_token
        )
        self.invalidate_token_ids(removed + [t for t, _ in tokens])

    # Authenticating requests ----------------------------------------------

    async def get_user_by_req(
        self,
        request: Request,
        *,
        allow_guest: bool = False,
        allow_expired: bool = False,
        allow_locked: bool = False,
    ) -> Requester:
        token = get_access_token_from_request(request)
        if token is None:
            raise MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")
        # Application service tokens live in memory: checked before any query.
        service = self._appservices.by_token(token)
        if service is not None:
            as_requester = await self._get_appservice_user(request, service)
            _note_requester(request, as_requester.user_id)
            return as_requester
        requester = await self.get_user_by_access_token(
            token, allow_guest=allow_guest, allow_expired=allow_expired
        )
        if self._restrictions is not None and not allow_locked:
            self._restrictions.check_not_locked(requester.user_id)
        if self.client_ips is not None:
            agent = request.getHeader("user-agent")
            self.client_ips.record(
                requester.user_id, requester.device_id, _client_address(request) or "", agent
            )
        _note_requester(request, requester.user_id)
        return requester

    def cached_token_alive(self, token: str) -> bool:
        """Whether ``token`` is known alive without a query: cached and not expired.
        False says only "ask ``get_user_by_access_token``" (which may still accept it)."""
        cached = self._token_cache.get(hash_token(token))
        if cached is None:
            return False
        valid_until = cached[0].valid_until_ms
        return valid_until is None or valid_until >= self.now_ms()

    async def get_user_by_access_token(
        self, token: str, *, allow_guest: bool = False, allow_expired: bool = False
    ) -> Requester:
        token_hash = hash_token(token)
        cached = self._token_cache.get(token_hash)
        if cached is None:
            record = await self._storage.users.get_access_token(token_hash)
            if record is None:
                raise MatrixError(
                    401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", {"soft_logout": False}
                )
            user = await self._storage.users.get_user(record.user_id)
            if user is None or user.deactivated:
                raise MatrixError(
                    401,
                    Codes.UNKNOWN_TOKEN,
                    "User account has been deactivated",
                    {"soft_logout": False},
                )
            cached = (record, user.is_guest, user.admin)
            self._token_cache[token_hash] = cached
            self._hash_by_token_id[record.token_id] = token_hash
            if len(self._token_cache) > TOKEN_CACHE_SIZE:
                _, (old, _, _) = self._token_cache.popitem(last=False)
                self._hash_by_token_id.pop(old.token_id, None)
        else:
            self._token_cache.move_to_end(token_hash)
        record, is_guest, is_admin = cached
        if (
            not allow_expired
            and record.valid_until_ms is not None
            and record.valid_until_ms < self.now_ms()
        ):
            # An expired token from a refresh pair: the client should refresh, not log out.
            raise MatrixError(
                401, Codes.UNKNOWN_TOKEN, "Access token has expired", {"soft_logout": True}
            )
        if is_guest and not allow_guest:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access not allowed")
        shadow_banned = self._restrictions is not None and self._restrictions.is_shadow_banned(
            record.user_id
        )
        return Requester(
            record.user_id,
            record.device_id,
            record.token_id,
            is_guest,
            is_admin,
            shadow_banned=shadow_banned,
        )

    def get_appservice_by_req(self, request: Request) -> ApplicationService:
        """The service whose ``as_token`` the request carries (no identity assertion)."""
        token = get_access_token_from_request(request)
        if token is None:
            raise MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")
        service = self._appservices.by_token(token)
        if service is None or not service.allows_address(_client_address(request)):
            raise MatrixError(
                401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", {"soft_logout": False}
            )
        return service

    async def _get_appservice_user(
        self, request: Request, service: ApplicationService
    ) -> Requester:
        """Identity assertion: the sender, or the ``user_id`` (and ``device_id``) asked for."""
        if not service.allows_address(_client_address(request)):
            raise MatrixError(
                401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", {"soft_logout": False}
            )
        args = request.args or {}
        user_id = _first_arg(args, b"user_id") or service.sender
        if user_id != service.sender:
            if not service.is_interested_in_user(user_id):
                raise MatrixError(
                    403,
                    Codes.FORBIDDEN,
                    f"Application service cannot masquerade as this user ({user_id}).",
                )
            if await self._storage.users.get_user(user_id) is None:
                raise MatrixError(
                    403,
                    Codes.FORBIDDEN,
                    f"Application service has not registered this user ({user_id})",
                )
        device_id = _first_arg(args, b"device_id") or _first_arg(
            args, b"org.matrix.msc3202.device_id"
        )
        if (
            device_id is not None
            and await self._storage.users.get_device(user_id, device_id) is None
        ):
            raise MatrixError(
                400,
                "M_UNKNOWN_DEVICE",
                "Application service trying to use a device that doesn't exist.",
            )
        return Requester(
            user_id,
            device_id,
            None,
            app_service_id=service.id,
            ratelimited=service.rate_limited and user_id != service.sender,
        )


def _first_arg(args: dict[bytes, list[bytes]], name: bytes) -> str | None:
    values = args.get(name)
    return values[0].decode("utf-8", "replace") if values else None


def _client_address(request: Request) -> str | None:
    client_ip = getattr(request, "client_ip", None)
    if callable(client_ip):
        return str(client_ip())
    peer = request.getClientAddress()
    return getattr(peer, "host", None)


def _note_requester(request: Request, user_id: str) -> None:
    """Who the request was authenticated as, for its access-log line."""
    if isinstance(request, MatrixRequest):
        request.requester = user_id
