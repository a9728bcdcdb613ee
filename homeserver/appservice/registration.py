"""Application service registrations: Synapse's registration YAML files, validated once.

Invariants:
- Every file named in ``app_service_config_files`` is read at start-up; a file that
  fails validation stops start-up with a ``ConfigError`` naming the file and the field
  at fault. No two registrations share an ``id`` or an ``as_token``.
- Namespace regexes are compiled once, here. They are matched with ``re.match``
  (anchored at the start only), as Synapse does.
- A registration is immutable; the set of services is fixed for the process lifetime.
- The ``users`` namespaces only ever cover local users (spec: "application services can
  only register interest in local users"); the service's sender always counts as one
  of its exclusive users.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from homeserver.config import ConfigError, HomeserverConfig
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_localpart

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAMESPACE_KINDS = ("users", "aliases", "rooms")


@dataclass(frozen=True, slots=True)
class Namespace:
    regex: re.Pattern[str]
    exclusive: bool

    def matches(self, value: str) -> bool:
        return self.regex.match(value) is not None


@dataclass(frozen=True)
class ApplicationService:
    id: str
    url: str | None  # None: the service wants no traffic (no transactions, no queries)
    as_token: str
    hs_token: str
    sender: str  # @sender_localpart:server_name
    users: tuple[Namespace, ...]
    aliases: tuple[Namespace, ...]
    rooms: tuple[Namespace, ...]
    rate_limited: bool
    protocols: tuple[str, ...]
    receive_ephemeral: bool
    ip_range_whitelist: tuple[IpNetwork, ...] | None
    source: str  # the registration file, for messages

    @property
    def server_name(self) -> str:
        return self.sender.split(":", 1)[1]

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name) and user_id.startswith("@")

    def is_interested_in_user(self, user_id: str) -> bool:
        if user_id == self.sender:
            return True
        return self._is_local(user_id) and any(ns.matches(user_id) for ns in self.users)

    def is_exclusive_user(self, user_id: str) -> bool:
        if user_id == self.sender:
            return True
        return self._is_local(user_id) and any(
            ns.exclusive and ns.matches(user_id) for ns in self.users
        )

    def is_interested_in_alias(self, alias: str) -> bool:
        return any(ns.matches(alias) for ns in self.aliases)

    def is_exclusive_alias(self, alias: str) -> bool:
        return any(ns.exclusive and ns.matches(alias) for ns in self.aliases)

    def is_interested_in_room_id(self, room_id: str) -> bool:
        return any(ns.matches(room_id) for ns in self.rooms)

    def allows_address(self, address: str | None) -> bool:
        if self.ip_range_whitelist is None:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in net for net in self.ip_range_whitelist)


class AppServiceRegistry:
    """The registered services, looked up by token, id, user or alias."""

    def __init__(self, services: Iterable[ApplicationService]) -> None:
        self.services: tuple[ApplicationService, ...] = tuple(services)
        self._by_token_hash = {_token_hash(s.as_token): s for s in self.services}
        self._by_id = {s.id: s for s in self.services}

    def by_token(self, token: str) -> ApplicationService | None:
        return self._by_token_hash.get(_token_hash(token)) if self.services else None

    def by_id(self, service_id: str | None) -> ApplicationService | None:
        return self._by_id.get(service_id) if service_id is not None else None

    def interested_in_user(self, user_id: str) -> list[ApplicationService]:
        return [s for s in self.services if s.is_interested_in_user(user_id)]

    def check_user_not_reserved(
        self, user_id: str, *, allowed: ApplicationService | None = None
    ) -> None:
        """``M_EXCLUSIVE`` when another service holds ``user_id`` exclusively."""
        for service in self.services:
            if service is not allowed and service.is_exclusive_user(user_id):
                raise MatrixError(
                    400, Codes.EXCLUSIVE, "This user ID is reserved by an application service."
                )

    def check_alias_change(self, app_service_id: str | None, alias: str) -> bool:
        """May this requester create or delete ``alias``? ``M_EXCLUSIVE`` if not.

        True when the requester is a service managing the alias (it then needs no other
        permission, as the spec gives services full control of their namespace).
        """
        service = self.by_id(app_service_id)
        if service is not None:
            if not service.is_interested_in_alias(alias):
                raise MatrixError(
                    400,
                    Codes.EXCLUSIVE,
                    "This application service has not reserved this kind of alias.",
                )
            return True
        if any(s.is_exclusive_alias(alias) for s in self.services):
            raise MatrixError(
                400, Codes.EXCLUSIVE, "This alias is reserved by an application service."
            )
        return False


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


# Loading -------------------------------------------------------------------------


def load_configured_app_services(config: HomeserverConfig) -> list[ApplicationService]:
    """The services of ``app_service_config_files``, read once and kept as
    ``config.app_services``; ConfigError naming the file at fault otherwise.

    Called by the command line before starting (so a bad file is reported like any
    configuration error) and by ``build_homeserver``.
    """
    services: list[ApplicationService] | None = config.values.get("app_services")
    if services is None:
        services = load_app_services(config.app_service_config_files, config.server_name)
        config.values["app_services"] = services
    return services


def load_app_services(paths: list[str], server_name: str) -> list[ApplicationService]:
    """Read and validate every registration file; refuse duplicates."""
    services: list[ApplicationService] = []
    seen_paths: set[str] = set()
    for path in paths:
        if path in seen_paths:
            raise ConfigError(f"app_service_config_files: {path} is listed twice")
        seen_paths.add(path)
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(f"app_service_config_files: cannot read {path}: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        services.append(parse_registration(raw, path, server_name))
    for i, service in enumerate(services):
        for other in services[:i]:
            if other.id == service.id:
                raise ConfigError(
                    f"{service.source}: id: {service.id!r} is already used by {other.source}"
                )
            if other.as_token == service.as_token:
                raise ConfigError(
                    f"{service.source}: as_token: already used by {other.source}; "
                    "every application service needs its own as_token"
                )
    return services


def parse_registration(raw: Any, source: str, server_name: str) -> ApplicationService:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {field}: {problem}")

    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a YAML mapping (an application service registration)"
        )

    def required_str(field: str) -> str:
        value = raw.get(field)
        if not isinstance(value, str) or not value:
            raise fail(field, f"required, a non-empty string (got {value!r})")
        return value

    service_id = required_str("id")
    as_token = required_str("as_token")
    hs_token = required_str("hs_token")
    localpart = required_str("sender_localpart")
    if not is_valid_localpart(localpart):
        raise fail("sender_localpart", f"not a valid user id localpart: {localpart!r}")
    if "url" not in raw:
        raise fail("url", "required (a URL, or null for a service that wants no traffic)")
    url = raw["url"]
    if url is not None:
        if not isinstance(url, str) or not re.match(r"^https?://[^/]+", url):
            raise fail("url", f"expected an http(s) URL or null, got {url!r}")
        url = url.rstrip("/")

    namespaces = raw.get("namespaces")
    if not isinstance(namespaces, dict):
        raise fail("namespaces", "required, a mapping with users, aliases and rooms lists")
    parsed: dict[str, tuple[Namespace, ...]] = {}
    for kind in _NAMESPACE_KINDS:
        entries = namespaces.get(kind) or []
        if not isinstance(entries, list):
            raise fail(f"namespaces.{kind}", "expected a list of {regex, exclusive} mappings")
        out = []
        for i, entry in enumerate(entries):
            where = f"namespaces.{kind}[{i}]"
            if not isinstance(entry, dict):
                raise fail(where, "expected a mapping with regex and exclusive")
            regex = entry.get("regex")
            if not isinstance(regex, str):
                raise fail(f"{where}.regex", f"expected a string, got {regex!r}")
            exclusive = entry.get("exclusive")
            if not isinstance(exclusive, bool):
                raise fail(f"{where}.exclusive", f"expected true or false, got {exclusive!r}")
            try:
                compiled = re.compile(regex)
            except re.error as e:
                raise fail(f"{where}.regex", f"not a valid regular expression: {e}") from None
            out.append(Namespace(compiled, exclusive))
        parsed[kind] = tuple(out)

    rate_limited = raw.get("rate_limited", True)
    if not isinstance(rate_limited, bool):
        raise fail("rate_limited", f"expected true or false, got {rate_limited!r}")
    protocols = raw.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise fail("protocols", f"expected a list of strings, got {protocols!r}")
    receive_ephemeral = False
    for key in ("receive_ephemeral", "de.sorunome.msc2409.push_ephemeral", "push_ephemeral"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise fail(key, f"expected true or false, got {value!r}")
        receive_ephemeral = receive_ephemeral or value

    whitelist: tuple[IpNetwork, ...] | None = None
    if raw.get("ip_range_whitelist") is not None:
        ranges = raw["ip_range_whitelist"]
        if not isinstance(ranges, list):
            raise fail("ip_range_whitelist", "expected a list of CIDR ranges")
        nets = []
        for i, cidr in enumerate(ranges):
            try:
                nets.append(ipaddress.ip_network(str(cidr), strict=False))
            except ValueError:
                raise fail(f"ip_range_whitelist[{i}]", f"not a CIDR range: {cidr!r}") from None
        whitelist = tuple(nets)

    return ApplicationService(
        id=service_id,
        url=url,
        as_token=as_token,
        hs_token=hs_token,
        sender=f"@{localpart}:{server_name}",
        users=parsed["users"],
        aliases=parsed["aliases"],
        rooms=parsed["rooms"],
        rate_limited=rate_limited,
        protocols=tuple(protocols),
        receive_ephemeral=receive_ephemeral,
        ip_range_whitelist=whitelist,
        source=source,
    )
