"""Configuration: Synapse's ``homeserver.yaml`` keys, typed and validated.

Every key we read is declared once in ``SCHEMA`` with its type, default and meaning;
the generated config file and ``docs/configuration.md`` are both produced from it, so
they cannot drift. A wrong value stops start-up with a message naming the key and what
was expected; an unknown key is logged as a warning (Synapse keys we accept but do not
act on are listed in ``ACCEPTED_SYNAPSE_KEYS`` and stay quiet).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, is_dataclass
from email.utils import parseaddr
from typing import Any

import yaml

from homeserver.workers import WorkerConfigError, parse_worker_config

logger = logging.getLogger(__name__)


class ConfigError(Exception):
    pass


# Value parsers -----------------------------------------------------------------

_DURATION_UNITS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration_ms(key: str, value: Any) -> int:
    """Synapse's durations: an integer of milliseconds, or '10s', '5m', '1h', '7d'..."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration such as 30000 or '5m', got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d|w|y)?\s*", value)
        if m:
            return int(m.group(1)) * _DURATION_UNITS[m.group(2) or "ms"]
    raise ConfigError(f"{key}: expected a duration such as 30000 or '5m', got {value!r}")


def parse_size(key: str, value: Any) -> int:
    """Synapse's sizes: an integer of bytes, or '10K', '50M', '1G'."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)[bB]?\s*", value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    raise ConfigError(f"{key}: expected a size such as 1048576 or '50M', got {value!r}")


def _expect(key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python, but `port: true` is still a mistake.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    return value


def _bool(key: str, value: Any) -> bool:
    return bool(_expect(key, value, bool, "true or false"))


def _str(key: str, value: Any) -> str:
    return str(_expect(key, value, str, "a string"))


def _opt_str(key: str, value: Any) -> str | None:
    return None if value is None else _str(key, value)


def _int(key: str, value: Any) -> int:
    return int(_expect(key, value, int, "an integer"))


def _number(key: str, value: Any) -> float:
    return float(_expect(key, value, (int, float), "a number"))


def _str_list(key: str, value: Any) -> list[str]:
    _expect(key, value, list, "a list of strings")
    return [_str(f"{key}[{i}]", v) for i, v in enumerate(value)]


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst_count: float


def _rate_limit(key: str, value: Any, default: RateLimit) -> RateLimit:
    if value is None:
        return default
    _expect(key, value, dict, "a mapping with per_second and burst_count")
    return RateLimit(
        per_second=_number(f"{key}.per_second", value.get("per_second", default.per_second)),
        burst_count=_number(f"{key}.burst_count", value.get("burst_count", default.burst_count)),
    )


@dataclass(frozen=True)
class ListenerConfig:
    port: int
    bind_addresses: list[str]
    type: str
    tls: bool
    x_forwarded: bool
    resources: list[str]
    path: str | None = None  # a UNIX socket instead of port and bind_addresses
    mode: int = 0o666  # the socket's permission bits


LISTENER_RESOURCES = {
    "client",
    "federation",
    "media",
    "keys",
    "openid",
    "health",
    "static",
    "consent",
    "metrics",
    "replication",
}


def _listeners(key: str, value: Any) -> list[ListenerConfig]:
    _expect(key, value, list, "a list of listeners")
    out = []
    for i, raw in enumerate(value):
        k = f"{key}[{i}]"
        _expect(k, raw, dict, "a mapping")
        kind = _str(f"{k}.type", raw.get("type", "http"))
        if kind not in ("http", "metrics"):
            raise ConfigError(f"{k}.type: expected 'http' or 'metrics', got {kind!r}")
        path, mode = None, 0o666
        if raw.get("path") is not None:
            # A UNIX socket (Synapse's `path` and `mode`): instead of a port.
            path = _str(f"{k}.path", raw["path"])
            if not path:
                raise ConfigError(f"{k}.path: expected the path of a UNIX socket")
            if "port" in raw:
                raise ConfigError(f"{k}: a listener has a port or a path (UNIX socket), not both")
            if kind != "http" or raw.get("tls"):
                raise ConfigError(f"{k}.path: only plain http listeners can use a UNIX socket")
            mode = _int(f"{k}.mode", raw.get("mode", mode))
            if not 0 <= mode <= 0o777:
                raise ConfigError(f"{k}.mode: expected permission bits such as 0o660")
            port = 0
        else:
            port = _int(f"{k}.port", raw.get("port"))
            if not 0 <= port <= 65535:
                raise ConfigError(f"{k}.port: expected a port between 0 and 65535, got {port}")
        binds = raw.get("bind_addresses")
        if binds is None and "bind_address" in raw:
            binds = [raw["bind_address"]]
        bind_addresses = (
            _str_list(f"{k}.bind_addresses", binds) if binds is not None else ["::", "0.0.0.0"]
        )
        names: list[str] = []
        resources = raw.get("resources", [])
        _expect(f"{k}.resources", resources, list, "a list of {names: [...]} mappings")
        for j, res in enumerate(resources):
            _expect(f"{k}.resources[{j}]", res, dict, "a mapping with 'names'")
            for name in _str_list(f"{k}.resources[{j}].names", res.get("names", [])):
                if name not in LISTENER_RESOURCES:
                    raise ConfigError(
                        f"{k}.resources[{j}].names: unknown resource {name!r}; expected one of "
                        + ", ".join(sorted(LISTENER_RESOURCES))
                    )
                names.append(name)
        out.append(
            ListenerConfig(
                port=port,
                bind_addresses=bind_addresses,
                type=kind,
                tls=_bool(f"{k}.tls", raw.get("tls", False)),
                x_forwarded=_bool(f"{k}.x_forwarded", raw.get("x_forwarded", False)),
                resources=names,
                path=path,
                mode=mode,
            )
        )
    return out


def _database(key: str, value: Any) -> dict[str, Any]:
    _expect(key, value, dict, "a mapping with 'name' and 'args'")
    name = value.get("name")
    if name not in ("sqlite3", "psycopg2"):
        raise ConfigError(f"{key}.name: expected 'sqlite3' or 'psycopg2', got {name!r}")
    args = value.get("args") or {}
    _expect(f"{key}.args", args, dict, "a mapping")
    if name == "sqlite3":
        _str(f"{key}.args.database", args.get("database"))
    else:
        for opt in ("user", "password", "database", "dbname", "host"):
            if opt in args and args[opt] is not None:
                _str(f"{key}.args.{opt}", args[opt])
        if "port" in args:
            _int(f"{key}.args.port", args["port"])
        for opt in ("cp_min", "cp_max"):
            if opt in args and _int(f"{key}.args.{opt}", args[opt]) < 1:
                raise ConfigError(f"{key}.args.{opt}: expected at least 1")
    return {
        "name": name,
        "args": dict(args),
        "allow_unsafe_locale": value.get("allow_unsafe_locale", False),
    }


@dataclass(frozen=True)
class RedisConfig:
    enabled: bool
    host: str
    port: int
    password: str | None
    dbid: int


def _redis(key: str, value: Any) -> RedisConfig:
    if value is None:
        value = {}
    _expect(key, value, dict, "a mapping")
    return RedisConfig(
        enabled=_bool(f"{key}.enabled", value.get("enabled", False)),
        host=_str(f"{key}.host", value.get("host", "localhost")),
        port=_int(f"{key}.port", value.get("port", 6379)),
        password=_opt_str(f"{key}.password", value.get("password")),
        dbid=_int(f"{key}.dbid", value.get("dbid", 0)),
    )


# Media parsers keep plain YAML values (lists of mappings, strings) so the generated
# config file and reference can show their defaults; homeserver/media turns them into
# records.

DEFAULT_THUMBNAIL_SIZES: list[dict[str, Any]] = [
    {"width": 32, "height": 32, "method": "crop"},
    {"width": 96, "height": 96, "method": "crop"},
    {"width": 320, "height": 240, "method": "scale"},
    {"width": 640, "height": 480, "method": "scale"},
    {"width": 800, "height": 600, "method": "scale"},
]

# Synapse's documented example url_preview_ip_range_blacklist: private, loopback,
# link-local, CGNAT, multicast and reserved ranges.
DEFAULT_URL_PREVIEW_IP_RANGE_BLACKLIST = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
]


def _thumbnail_sizes(key: str, value: Any) -> list[dict[str, Any]]:
    _expect(key, value, list, "a list of {width, height, method} mappings")
    out = []
    for i, raw in enumerate(value):
        k = f"{key}[{i}]"
        _expect(k, raw, dict, "a mapping with width, height and method")
        width, height = _int(f"{k}.width", raw.get("width")), _int(f"{k}.height", raw.get("height"))
        if width < 1 or height < 1:
            raise ConfigError(f"{k}: width and height must be at least 1")
        method = _str(f"{k}.method", raw.get("method", "scale"))
        if method not in ("crop", "scale"):
            raise ConfigError(f"{k}.method: expected 'crop' or 'scale', got {method!r}")
        out.append({"width": width, "height": height, "method": method})
    return out


def _media_upload_limits(key: str, value: Any) -> list[dict[str, int]]:
    _expect(key, value, list, "a list of {time_period, max_size} mappings")
    out = []
    for i, raw in enumerate(value):
        k = f"{key}[{i}]"
        _expect(k, raw, dict, "a mapping with time_period and max_size")
        out.append(
            {
                "time_period": parse_duration_ms(f"{k}.time_period", raw.get("time_period")),
                "max_size": parse_size(f"{k}.max_size", raw.get("max_size")),
            }
        )
    return out


def _ip_ranges(key: str, value: Any) -> list[str]:
    import ipaddress

    ranges = _str_list(key, value)
    for i, cidr in enumerate(ranges):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"{key}[{i}]: not an IP address or CIDR range: {cidr!r}") from None
    return ranges


PRESENCE_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "include_offline_users_on_sync": False,
    "sync_online_timeout": 30_000,
    "offline_timeout": 300_000,
}


def _presence(key: str, value: Any) -> dict[str, Any]:
    """Synapse's ``presence`` section, plus the two timeouts of ours (milliseconds)."""
    value = {} if value is None else value
    _expect(key, value, dict, "a mapping")
    enabled = value.get("enabled", True)
    if enabled == "untracked":  # Synapse: accept remote presence only; we have none yet
        enabled = False
    out = {
        "enabled": _bool(f"{key}.enabled", enabled),
        "include_offline_users_on_sync": _bool(
            f"{key}.include_offline_users_on_sync",
            value.get("include_offline_users_on_sync", False),
        ),
        "sync_online_timeout": parse_duration_ms(
            f"{key}.sync_online_timeout",
            value.get("sync_online_timeout", PRESENCE_DEFAULTS["sync_online_timeout"]),
        ),
        "offline_timeout": parse_duration_ms(
            f"{key}.offline_timeout",
            value.get("offline_timeout", PRESENCE_DEFAULTS["offline_timeout"]),
        ),
    }
    if out["offline_timeout"] < out["sync_online_timeout"]:
        raise ConfigError(f"{key}.offline_timeout: must not be shorter than sync_online_timeout")
    return out


def _user_directory(key: str, value: Any) -> dict[str, Any]:
    """Synapse's ``user_directory`` section; only ``search_all_users`` acts."""
    value = {} if value is None else value
    _expect(key, value, dict, "a mapping")
    return {
        "search_all_users": _bool(f"{key}.search_all_users", value.get("search_all_users", False)),
    }


@dataclass(frozen=True)
class FederationRetry:
    min_interval_ms: int
    multiplier: float
    max_interval_ms: int


def _federation_retry(key: str, value: Any) -> FederationRetry:
    value = value or {}
    _expect(key, value, dict, "a mapping")
    return FederationRetry(
        min_interval_ms=parse_duration_ms(
            f"{key}.destination_min_retry_interval",
            value.get("destination_min_retry_interval", 10_000),
        ),
        multiplier=_number(
            f"{key}.destination_retry_multiplier", value.get("destination_retry_multiplier", 2)
        ),
        max_interval_ms=parse_duration_ms(
            f"{key}.destination_max_retry_interval",
            value.get("destination_max_retry_interval", 7 * 86_400_000),
        ),
    )


@dataclass(frozen=True)
class WebSocketConfig:
    """The WebSocket /sync transport (docs/websocket.md); durations in milliseconds."""

    enabled: bool = True
    poll_timeout_ms: int = 30_000
    ping_interval_ms: int = 30_000
    ping_timeout_ms: int = 10_000
    stall_timeout_ms: int = 30_000
    close_timeout_ms: int = 5_000
    max_buffered_bytes: int = 1024 * 1024
    max_pending_messages: int = 100
    max_calls_in_flight: int = 16


@dataclass(frozen=True)
class LoginViaExistingSession:
    """Synapse's ``login_via_existing_session`` (MSC3882, ``POST /login/get_token``)."""

    enabled: bool = False
    require_ui_auth: bool = True
    token_timeout_ms: int = 300_000


def _login_via_existing_session(key: str, value: Any) -> LoginViaExistingSession:
    value = {} if value is None else value
    _expect(key, value, dict, "a mapping")
    timeout = parse_duration_ms(f"{key}.token_timeout", value.get("token_timeout", "5m"))
    if timeout <= 0:
        raise ConfigError(f"{key}.token_timeout: must be positive")
    return LoginViaExistingSession(
        enabled=_bool(f"{key}.enabled", value.get("enabled", False)),
        require_ui_auth=_bool(f"{key}.require_ui_auth", value.get("require_ui_auth", True)),
        token_timeout_ms=timeout,
    )


@dataclass(frozen=True)
class ServerNoticesConfig:
    """Synapse's ``server_notices``: who sends server notices and how their room looks."""

    system_mxid_localpart: str
    system_mxid_display_name: str | None = None
    system_mxid_avatar_url: str | None = None
    room_name: str | None = "Server Notices"
    room_avatar_url: str | None = None
    room_topic: str | None = None
    auto_join: bool = False


def _server_notices(key: str, value: Any) -> ServerNoticesConfig | None:
    if value is None:
        return None
    _expect(key, value, dict, "a mapping with system_mxid_localpart")
    localpart = value.get("system_mxid_localpart")
    if not isinstance(localpart, str) or not localpart:
        raise ConfigError(f"{key}.system_mxid_localpart: required, a user id localpart")
    if ":" in localpart or localpart.startswith("@"):
        raise ConfigError(f"{key}.system_mxid_localpart: a localpart, not a user id")
    return ServerNoticesConfig(
        system_mxid_localpart=localpart,
        system_mxid_display_name=_opt_str(
            f"{key}.system_mxid_display_name", value.get("system_mxid_display_name")
        ),
        system_mxid_avatar_url=_opt_str(
            f"{key}.system_mxid_avatar_url", value.get("system_mxid_avatar_url")
        ),
        room_name=_opt_str(f"{key}.room_name", value.get("room_name", "Server Notices")),
        room_avatar_url=_opt_str(f"{key}.room_avatar_url", value.get("room_avatar_url")),
        room_topic=_opt_str(f"{key}.room_topic", value.get("room_topic")),
        auto_join=_bool(f"{key}.auto_join", value.get("auto_join", False)),
    )


def _websocket(key: str, value: Any) -> WebSocketConfig:
    value = {} if value is None else value
    _expect(key, value, dict, "a mapping")
    d = WebSocketConfig()

    def duration(name: str, default: int) -> int:
        ms = parse_duration_ms(f"{key}.{name}", value.get(name, default))
        if ms <= 0:
            raise ConfigError(f"{key}.{name}: must be positive")
        return ms

    def count(name: str, default: int) -> int:
        n = _int(f"{key}.{name}", value.get(name, default))
        if n <= 0:
            raise ConfigError(f"{key}.{name}: must be positive")
        return n

    max_buffered = parse_size(
        f"{key}.max_buffered_bytes", value.get("max_buffered_bytes", d.max_buffered_bytes)
    )
    if max_buffered <= 0:
        raise ConfigError(f"{key}.max_buffered_bytes: must be positive")
    return WebSocketConfig(
        enabled=_bool(f"{key}.enabled", value.get("enabled", True)),
        poll_timeout_ms=duration("poll_timeout", d.poll_timeout_ms),
        ping_interval_ms=duration("ping_interval", d.ping_interval_ms),
        ping_timeout_ms=duration("ping_timeout", d.ping_timeout_ms),
        stall_timeout_ms=duration("stall_timeout", d.stall_timeout_ms),
        close_timeout_ms=duration("close_timeout", d.close_timeout_ms),
        max_buffered_bytes=max_buffered,
        max_pending_messages=count("max_pending_messages", d.max_pending_messages),
        max_calls_in_flight=count("max_calls_in_flight", d.max_calls_in_flight),
    )


def _trusted_key_servers(key: str, value: Any) -> list[dict[str, Any]]:
    _expect(key, value, list, "a list of {server_name, verify_keys}")
    out = []
    for i, entry in enumerate(value):
        _expect(f"{key}[{i}]", entry, dict, "a mapping with server_name")
        name = _str(f"{key}[{i}].server_name", entry.get("server_name"))
        keys = entry.get("verify_keys") or {}
        _expect(f"{key}[{i}].verify_keys", keys, dict, "a mapping of key id to base64 key")
        out.append({"server_name": name, "verify_keys": {str(k): str(v) for k, v in keys.items()}})
    return out


# The schema ----------------------------------------------------------------------


@dataclass(frozen=True)
class EmailConfig:
    smtp_host: str
    smtp_port: int
    smtp_user: str | None
    smtp_pass: str | None
    force_tls: bool
    require_transport_security: bool
    enable_tls: bool
    notif_from: str
    app_name: str
    token_lifetime_ms: int

    @staticmethod
    def from_config(raw: Any) -> EmailConfig | None:
        """The ``email`` section; None when absent or without ``notif_from`` (no mail)."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ConfigError("email must be a mapping")
        notif_from = raw.get("notif_from")
        if notif_from is None:
            return None
        if not isinstance(notif_from, str) or "@" not in parseaddr(notif_from)[1]:
            raise ConfigError("email.notif_from must be an email address")
        port = raw.get("smtp_port", 465 if raw.get("force_tls") else 25)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("email.smtp_port must be a port number")
        for key in ("smtp_host", "smtp_user", "smtp_pass", "app_name"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise ConfigError(f"email.{key} must be a string")
        for key in ("force_tls", "require_transport_security", "enable_tls"):
            if raw.get(key) is not None and not isinstance(raw[key], bool):
                raise ConfigError(f"email.{key} must be true or false")
        return EmailConfig(
            smtp_host=raw.get("smtp_host") or "localhost",
            smtp_port=port,
            smtp_user=raw.get("smtp_user"),
            smtp_pass=raw.get("smtp_pass"),
            force_tls=bool(raw.get("force_tls", False)),
            require_transport_security=bool(raw.get("require_transport_security", False)),
            enable_tls=bool(raw.get("enable_tls", True)),
            notif_from=notif_from.replace("%(app)s", raw.get("app_name") or "Matrix"),
            app_name=raw.get("app_name") or "Matrix",
            token_lifetime_ms=parse_duration_ms(
                "email.validation_token_lifetime", raw.get("validation_token_lifetime", "1h")
            ),
        )


def _email(key: str, value: Any) -> EmailConfig | None:
    return EmailConfig.from_config(value)


def _well_known_support(key: str, value: Any) -> dict[str, Any] | None:
    """``/.well-known/matrix/support``: ``contacts`` (each a ``role`` with a
    ``matrix_id`` and/or ``email_address``) and/or ``support_page`` (a URL)."""
    _expect(key, value, dict, "a mapping with contacts and/or support_page")
    out: dict[str, Any] = {}
    contacts = value.get("contacts")
    if contacts is not None:
        _expect(f"{key}.contacts", contacts, list, "a list")
        out["contacts"] = []
        for i, contact in enumerate(contacts):
            where = f"{key}.contacts[{i}]"
            _expect(where, contact, dict, "a mapping with role and matrix_id/email_address")
            role = contact.get("role")
            if not isinstance(role, str) or not role:
                raise ConfigError(f"{where}.role must be a role such as m.role.admin")
            entry: dict[str, Any] = {"role": role}
            for field_name in ("matrix_id", "email_address"):
                if contact.get(field_name) is not None:
                    entry[field_name] = _str(f"{where}.{field_name}", contact[field_name])
            if len(entry) == 1:
                raise ConfigError(f"{where} needs a matrix_id or an email_address")
            out["contacts"].append(entry)
    page = value.get("support_page")
    if page is not None:
        page = _str(f"{key}.support_page", page)
        if not page.startswith(("https://", "http://")):
            raise ConfigError(f"{key}.support_page must be an http(s) URL")
        out["support_page"] = page
    if not out.get("contacts") and "support_page" not in out:
        raise ConfigError(f"{key} needs at least one contact or a support_page")
    return out


@dataclass(frozen=True)
class Key:
    name: str
    parse: Callable[[str, Any], Any]
    default: Any
    doc: str
    example: Any = None  # what the generated config writes (None: commented out)
    section: str = "General"


def _rc(default: RateLimit) -> Callable[[str, Any], RateLimit]:
    return lambda key, value: _rate_limit(key, value, default)


@dataclass(frozen=True)
class LoginRateLimits:
    address: RateLimit
    account: RateLimit
    failed_attempts: RateLimit


def _rc_login(key: str, value: Any) -> LoginRateLimits:
    value = value or {}
    _expect(key, value, dict, "a mapping with address/account/failed_attempts")
    default = RateLimit(0.17, 3)
    return LoginRateLimits(
        address=_rate_limit(f"{key}.address", value.get("address"), default),
        account=_rate_limit(f"{key}.account", value.get("account"), default),
        failed_attempts=_rate_limit(
            f"{key}.failed_attempts", value.get("failed_attempts"), default
        ),
    )


@dataclass(frozen=True)
class InviteRateLimits:
    per_room: RateLimit = RateLimit(0.3, 10)
    per_user: RateLimit = RateLimit(0.003, 5)
    per_issuer: RateLimit = RateLimit(0.5, 5)


def _rc_invites(key: str, value: Any) -> InviteRateLimits:
    value = value or {}
    _expect(key, value, dict, "a mapping with per_room/per_user/per_issuer")
    d = InviteRateLimits()
    return InviteRateLimits(
        per_room=_rate_limit(f"{key}.per_room", value.get("per_room"), d.per_room),
        per_user=_rate_limit(f"{key}.per_user", value.get("per_user"), d.per_user),
        per_issuer=_rate_limit(f"{key}.per_issuer", value.get("per_issuer"), d.per_issuer),
    )


@dataclass(frozen=True)
class FederationRateLimit:
    """Synapse's ``rc_federation``, per origin server (times in milliseconds)."""

    window_size: int = 1000
    sleep_limit: int = 10
    sleep_delay: int = 500
    reject_limit: int = 50
    concurrent: int = 3


def _rc_federation(key: str, value: Any) -> FederationRateLimit:
    value = value or {}
    _expect(key, value, dict, "a mapping")
    d = FederationRateLimit()
    parsed = {}
    for name, minimum in (
        ("window_size", 1),
        ("sleep_limit", 1),
        ("sleep_delay", 0),
        ("reject_limit", 0),
        ("concurrent", 1),
    ):
        raw = value.get(name, getattr(d, name))
        if name in ("window_size", "sleep_delay"):
            number = parse_duration_ms(f"{key}.{name}", raw)
        else:
            number = _int(f"{key}.{name}", raw)
        if number < minimum:
            raise ConfigError(f"{key}.{name}: expected at least {minimum}, got {number}")
        parsed[name] = number
    return FederationRateLimit(**parsed)


@dataclass(frozen=True)
class PasswordPolicy:
    """``password_config.policy``: what a new password must contain (when ``enabled``)."""

    enabled: bool = False
    minimum_length: int = 0
    require_digit: bool = False
    require_symbol: bool = False
    require_lowercase: bool = False
    require_uppercase: bool = False


@dataclass(frozen=True)
class PasswordConfig:
    """``password_config``; ``enabled`` is True, False or ``"only_for_reauth"``."""

    enabled: bool | str = True
    localdb_enabled: bool = True
    pepper: str = ""
    policy: PasswordPolicy = PasswordPolicy()

    @property
    def login_enabled(self) -> bool:
        """``m.login.password`` at /login (Synapse: enabled is true and the local db on)."""
        return self.enabled is True and self.localdb_enabled

    @property
    def reauth_enabled(self) -> bool:
        """The UIA password stage and password changes."""
        return self.enabled is not False and self.localdb_enabled


def _password_config(key: str, value: Any) -> PasswordConfig:
    value = value or {}
    _expect(key, value, dict, "a mapping")
    enabled = value.get("enabled", True)
    if enabled != "only_for_reauth":
        enabled = _bool(f"{key}.enabled", enabled)
    policy = value.get("policy") or {}
    _expect(f"{key}.policy", policy, dict, "a mapping")
    length = _int(f"{key}.policy.minimum_length", policy.get("minimum_length", 0))
    if length < 0:
        raise ConfigError(f"{key}.policy.minimum_length: expected at least 0")
    flags = {
        name: _bool(f"{key}.policy.{name}", policy.get(name, False))
        for name in (
            "enabled",
            "require_digit",
            "require_symbol",
            "require_lowercase",
            "require_uppercase",
        )
    }
    return PasswordConfig(
        enabled=enabled,
        localdb_enabled=_bool(f"{key}.localdb_enabled", value.get("localdb_enabled", True)),
        pepper=_str(f"{key}.pepper", value.get("pepper", "")),
        policy=PasswordPolicy(minimum_length=length, **flags),
    )


SCHEMA: list[Key] = [
    Key(
        "server_name",
        _str,
        None,
        "The public name of this server: the domain part of user ids "
        "(`@alice:server_name`). Cannot be changed once users exist.",
        "SERVER_NAME",
    ),
    Key(
        "public_baseurl",
        _opt_str,
        None,
        "The URL clients use to reach the client API; "
        "defaults to `https://<server_name>/`. Advertised in `/.well-known/matrix/client`.",
        None,
    ),
    Key(
        "pid_file",
        _opt_str,
        None,
        "Where to write the process id while running.",
        "DATA/homeserver.pid",
    ),
    Key(
        "listeners",
        _listeners,
        [],
        "HTTP listeners: `port`, `bind_addresses`, `type: http`, "
        "`tls`, `x_forwarded` (false; true only behind a reverse proxy that sets "
        "X-Forwarded-For: the header then gives the client address used by rate limits, "
        "and any other peer could pick its own) and `resources` "
        "(`names`: client, federation, media, keys, health, metrics, replication). "
        "Instead of `port`, an http listener may have `path`, a UNIX socket (with `mode`, "
        "its permission bits, default 0o666), as Synapse's. `GET /health` answers "
        "`OK` on every http listener. A listener of `type: metrics` (only `port` and "
        "`bind_addresses`) serves Prometheus metrics on every path, and an http listener "
        "with the `metrics` resource serves them at `/_synapse/metrics`; both only with "
        "`enable_metrics: true` (as Synapse, a metrics listener is otherwise skipped with a "
        "warning).",
        "LISTENERS",
        "Network",
    ),
    Key(
        "enable_metrics",
        _bool,
        False,
        "Serve Prometheus metrics (Synapse's names; see `docs/metrics.md`) on the listeners "
        "of `type: metrics` and on http listeners with the `metrics` resource.",
        None,
        "Network",
    ),
    Key(
        "well_known_support",
        _well_known_support,
        None,
        "Our own section (Synapse has none): what `/.well-known/matrix/support` answers, "
        "`contacts` (a list of `role` such as `m.role.admin` or `m.role.security`, with "
        "`matrix_id` and/or `email_address`) and/or `support_page` (a URL). Unset, that "
        "document is 404 `M_NOT_FOUND`.",
        None,
        "Network",
    ),
    Key(
        "server_notices",
        _server_notices,
        None,
        "Server notices (Synapse's section): messages from the server to a user, sent by "
        "the admin API `POST /_synapse/admin/v1/send_server_notice` into a room of their "
        "own. `system_mxid_localpart` (required: the sending user, created on first use), "
        "`system_mxid_display_name` and `system_mxid_avatar_url` (that user's profile in "
        "the room), `room_name` (Server Notices), `room_avatar_url`, `room_topic`, "
        "`auto_join` (false: the user is invited; true: joined at once). Unset, server "
        "notices are off.",
        None,
        "General",
    ),
    Key(
        "use_insecure_ssl_client_just_for_testing_do_not_use",
        _bool,
        False,
        "Test setups only (as Synapse): do not verify the certificates of identity servers. "
        "`federation_verify_certificates: false` does the same.",
        None,
        "Network",
    ),
    Key(
        "serve_server_wellknown",
        _bool,
        False,
        "Serve `/.well-known/matrix/server` pointing federation to port 443 of `server_name`.",
        None,
        "Network",
    ),
    Key(
        "database",
        _database,
        None,
        "`name: sqlite3` with `args.database` (a file), or "
        "`name: psycopg2` with `args` user, password, database, host, port, cp_min, cp_max.",
        "DATABASE",
        "Database",
    ),
    Key(
        "log_config",
        _opt_str,
        None,
        "A Python logging configuration (YAML, dictConfig "
        "format). Without one, logs go to standard error at INFO.",
        "DATA/log.config",
        "Logging",
    ),
    Key(
        "signing_key_path",
        _opt_str,
        None,
        "The server's ed25519 signing key, in Synapse's "
        "format. Defaults to `<server_name>.signing.key` beside the config.",
        "DATA/SERVER_NAME.signing.key",
        "Keys",
    ),
    Key(
        "key_refresh_interval",
        lambda k, v: parse_duration_ms(k, v),
        86_400_000,
        "How long other servers may cache our signing key (`valid_until_ts`).",
        None,
        "Keys",
    ),
    Key(
        "media_store_path",
        _opt_str,
        None,
        "Where uploaded media are kept.",
        "DATA/media_store",
        "Media",
    ),
    Key(
        "max_upload_size",
        parse_size,
        50 * 1024**2,
        "The largest upload accepted; a larger body gets 413 `M_TOO_LARGE` while it is "
        "still arriving. Advertised as `m.upload.size` by `/media/config`.",
        None,
        "Media",
    ),
    Key(
        "remote_media_download_burst_count",
        parse_size,
        500 * 1024**2,
        "Bytes of other servers' media one client address may have fetched at once "
        "(a token bucket, with `remote_media_download_per_second`); past it, fetches "
        "answer 429 `M_LIMIT_EXCEEDED`. Media already cached is not counted.",
        None,
        "Media",
    ),
    Key(
        "remote_media_download_per_second",
        parse_size,
        87 * 1024,
        "Bytes per second by which that allowance refills.",
        None,
        "Media",
    ),
    Key(
        "media_upload_limits",
        _media_upload_limits,
        [],
        "Per-user upload quotas: a list of `{time_period, max_size}` (e.g. "
        "`{time_period: 1d, max_size: 1G}`); an upload that would take the bytes a user "
        "uploaded within `time_period` past `max_size` is refused with 403 `M_FORBIDDEN`. "
        "A very long `time_period` (e.g. `100y`) makes it a total quota.",
        None,
        "Media",
    ),
    Key(
        "max_image_pixels",
        parse_size,
        32 * 1024**2,
        "Images with more pixels than this are not thumbnailed (decompression-bomb "
        "protection); thumbnail requests for them get 413 `M_TOO_LARGE`.",
        None,
        "Media",
    ),
    Key(
        "thumbnail_sizes",
        _thumbnail_sizes,
        DEFAULT_THUMBNAIL_SIZES,
        "Thumbnails generated on upload for PNG, JPEG, GIF and WebP images: a list of "
        "`{width, height, method}` with method `crop` or `scale`.",
        None,
        "Media",
    ),
    Key(
        "dynamic_thumbnails",
        _bool,
        False,
        "Generate thumbnails of exactly the requested size on demand (cached) instead of "
        "choosing among `thumbnail_sizes`.",
        None,
        "Media",
    ),
    Key(
        "enable_authenticated_media",
        _bool,
        True,
        "Media uploaded while this is true can only be fetched through the authenticated "
        "`/_matrix/client/v1/media` endpoints; the deprecated unauthenticated "
        "`/_matrix/media/v3/download|thumbnail` answer 404 for it. Set to false to let "
        "new uploads be fetched without authentication.",
        None,
        "Media",
    ),
    Key(
        "max_pending_media_uploads",
        _int,
        5,
        "How many `POST /_matrix/media/v1/create` media ids a user may hold unused at once; "
        "more get 429 `M_LIMIT_EXCEEDED`.",
        None,
        "Media",
    ),
    Key(
        "unused_expiration_time",
        lambda k, v: parse_duration_ms(k, v),
        86_400_000,
        "How long a media id from `/create` waits for its upload (`unused_expires_at`).",
        None,
        "Media",
    ),
    Key(
        "url_preview_enabled",
        _bool,
        False,
        "Serve `/media/preview_url` (fetches pages for link previews on behalf of users).",
        None,
        "Media",
    ),
    Key(
        "url_preview_ip_range_blacklist",
        _ip_ranges,
        DEFAULT_URL_PREVIEW_IP_RANGE_BLACKLIST,
        "Addresses URL previews never connect to (CIDR ranges); `0.0.0.0` and `::` are "
        "always refused. The default lists private, loopback, link-local and reserved ranges.",
        None,
        "Media",
    ),
    Key(
        "url_preview_ip_range_whitelist",
        _ip_ranges,
        [],
        "Exceptions to `url_preview_ip_range_blacklist` (CIDR ranges).",
        None,
        "Media",
    ),
    Key(
        "max_spider_size",
        parse_size,
        10 * 1024**2,
        "The largest page or image fetched for a URL preview.",
        None,
        "Media",
    ),
    Key(
        "max_request_body_size",
        parse_size,
        10 * 1024**2,
        "The largest JSON request body "
        "accepted (not media uploads); larger requests get 413 `M_TOO_LARGE`.",
        None,
        "Network",
    ),
    Key(
        "http_request_head_timeout",
        parse_duration_ms,
        30_000,
        "Time a client has to send a request's line and headers once it has begun; a "
        "connection still sending them after that (a header line trickled every few "
        "seconds) is closed. The body has `http_idle_timeout` instead.",
        None,
        "Network",
    ),
    Key(
        "http_idle_timeout",
        parse_duration_ms,
        60_000,
        "An HTTP connection on which nothing arrives for this long while it is not being "
        "answered (an idle keep-alive connection, a stalled request body) is closed. A "
        "request being answered (a /sync long-poll) is not affected.",
        None,
        "Network",
    ),
    Key(
        "enable_registration",
        _bool,
        False,
        "Let anyone register an account through `/register`.",
        None,
        "Registration",
    ),
    Key(
        "enable_registration_without_verification",
        _bool,
        False,
        "Needed together with "
        "`enable_registration` when no email or captcha check is configured: registration "
        "then only needs the `m.login.dummy` stage.",
        None,
        "Registration",
    ),
    Key(
        "registration_requires_token",
        _bool,
        False,
        "Require a registration token (`m.login.registration_token`) to register.",
        None,
        "Registration",
    ),
    Key(
        "registration_shared_secret",
        _opt_str,
        None,
        "Secret for `register_new_matrix_user` and `POST /_synapse/admin/v1/register`.",
        "SECRET",
        "Registration",
    ),
    Key(
        "allow_guest_access",
        _bool,
        False,
        "Allow guest accounts (`kind=guest`).",
        None,
        "Registration",
    ),
    Key("bcrypt_rounds", _int, 12, "Cost factor of password hashes.", None, "Registration"),
    Key(
        "password_config",
        _password_config,
        PasswordConfig(),
        "Passwords, as in Synapse: `enabled` (true; false turns password login and "
        "changes off; `only_for_reauth` keeps them for re-authentication only), "
        "`localdb_enabled` (true: check passwords against the local database), `pepper` "
        "(a secret mixed into every hash: changing it invalidates all passwords) and "
        "`policy` for new passwords: `enabled`, `minimum_length`, `require_digit`, "
        "`require_symbol`, `require_lowercase`, `require_uppercase`. An empty password is "
        "always refused.",
        None,
        "Registration",
    ),
    Key(
        "refreshable_access_token_lifetime",
        lambda k, v: None if v is None else parse_duration_ms(k, v),
        300_000,
        "Lifetime of access tokens handed out together with a refresh token.",
        None,
        "Sessions",
    ),
    Key(
        "refresh_token_lifetime",
        lambda k, v: None if v is None else parse_duration_ms(k, v),
        None,
        "Lifetime of refresh tokens (unlimited when unset).",
        None,
        "Sessions",
    ),
    Key(
        "rc_message",
        _rc(RateLimit(0.2, 10)),
        RateLimit(0.2, 10),
        "Messages sent per user: `per_second`, `burst_count`.",
        None,
        "Rate limits",
    ),
    Key(
        "rc_registration",
        _rc(RateLimit(0.17, 3)),
        RateLimit(0.17, 3),
        "Registration requests per client address.",
        None,
        "Rate limits",
    ),
    Key(
        "rc_login",
        _rc_login,
        _rc_login("rc_login", None),
        "Login attempts: `address` (per "
        "client address), `account` (per account), `failed_attempts` (per account, failures).",
        None,
        "Rate limits",
    ),
    Key(
        "rc_media_create",
        _rc(RateLimit(10, 50)),
        RateLimit(10, 50),
        "`POST /_matrix/media/v1/create` requests per user.",
        None,
        "Rate limits",
    ),
    Key(
        "rc_invites",
        _rc_invites,
        InviteRateLimits(),
        "Invites, local and from other servers: `per_room` (per room, 0.3/s, burst 10), "
        "`per_user` (per invited user, 0.003/s, burst 5) and `per_issuer` (per inviting "
        "user, 0.5/s, burst 5); each `per_second` and `burst_count`.",
        None,
        "Rate limits",
    ),
    Key(
        "rc_federation",
        _rc_federation,
        FederationRateLimit(),
        "Inbound federation requests per origin server: past `sleep_limit` (10) requests "
        "in `window_size` (1000 ms) each waits `sleep_delay` (500 ms); at most "
        "`concurrent` (3) run at once; more than `reject_limit` (50) waiting are refused "
        "with 429.",
        None,
        "Rate limits",
    ),
    Key(
        "email",
        _email,
        None,
        "Email validation by the homeserver (Synapse's section): `notif_from` (the sender, "
        "required to send mail), `smtp_host` (localhost), `smtp_port` (25, or 465 with "
        "`force_tls`), `smtp_user`/`smtp_pass` (SMTP AUTH), `force_tls` (TLS from the first "
        "byte), `require_transport_security` (refuse to send without STARTTLS), `enable_tls` "
        "(true: use STARTTLS when offered), `app_name` (Matrix), "
        "`validation_token_lifetime` (1h). Enables `.../email/requestToken`, the "
        "`m.login.email.identity` stage, adding an email to an account and login by email.",
        None,
        "Registration",
    ),
    Key(
        "rc_3pid_validation",
        _rc(RateLimit(0.003, 5)),
        RateLimit(0.003, 5),
        "Email validation requests (`.../email/requestToken`), per client address and "
        "per email address (as Synapse).",
        None,
        "Rate limits",
    ),
    Key(
        "rc_reports",
        _rc(RateLimit(1, 5)),
        RateLimit(1, 5),
        "Reports of events, rooms and users per user (as Synapse).",
        None,
        "Rate limits",
    ),
    Key(
        "rc_joins",
        lambda k, v: v,
        None,
        "Accepted for compatibility; room joins use rc_message.",
        None,
        "Rate limits",
    ),
    Key(
        "redis",
        _redis,
        _redis("redis", None),
        "Redis for several worker processes: `enabled`, `host`, `port`, `password`, `dbid`. "
        "When enabled, the bus's messages also go out on the pub/sub channel "
        "`homeserver.bus.<server_name>` (see docs/architecture.md).",
        None,
        "Workers",
    ),
    Key(
        "worker_replication_secret",
        _opt_str,
        None,
        "Secret every request between processes (`/_synapse/replication/...`, listeners"
        " with the `replication` resource) carries as `Authorization: Bearer`. Unset:"
        " only callers on a UNIX socket or a loopback address are served (Synapse serves"
        " anyone then); set it whenever instances talk over a network.",
        None,
        "Workers",
    ),
    # Read together by homeserver.workers.parse_worker_config (they depend on each
    # other); parsed there, listed here for the reference and the generated file.
    *(
        Key(name, lambda k, v: v, None, doc, None, "Workers")
        for name, doc in (
            (
                "worker_app",
                "Set in a worker's own file: `synapse.app.generic_worker` (older Synapse"
                " worker apps are accepted). Unset or `synapse.app.homeserver`: the main"
                " process. Workers serve /sync and client reads only (docs/workers.md):"
                " a configuration giving a worker any other duty is refused at start-up.",
            ),
            ("worker_name", "A worker's instance name (default: its `worker_app`)."),
            ("worker_listeners", "A worker's listeners, in the `listeners` format."),
            (
                "instance_map",
                "Where each instance answers internal requests: `{host, port, tls}` or"
                " `{path}`; the main process is `main`.",
            ),
            (
                "stream_writers",
                "Who writes each stream (`events`, `typing`, `to_device`, `account_data`,"
                " `receipts`, `presence`): an instance or a list (several only for"
                " `events` and `receipts`); default the main process.",
            ),
            (
                "federation_sender_instances",
                "The instances sending federation, destinations sharded over them.",
            ),
            ("pusher_instances", "The instances sending push, users sharded over them."),
            ("send_federation", "Legacy: `false` needs `federation_sender_instances`."),
            ("start_pushers", "Legacy: `false` needs `pusher_instances`."),
            ("run_background_tasks_on", "The instance running background tasks."),
            ("notify_appservices_from_worker", "The instance sending to application services."),
            ("update_user_directory_from_worker", "The instance updating the user directory."),
            (
                "media_instance_running_background_jobs",
                "The instance running media background jobs.",
            ),
        )
    ),
    Key(
        "report_stats",
        _bool,
        False,
        "Accepted for compatibility; no statistics are ever sent.",
        False,
        "General",
    ),
    Key("web_client_location", _opt_str, None, "Where `/` redirects a browser.", None, "General"),
    Key(
        "tls_certificate_path",
        _opt_str,
        None,
        "PEM certificate (chain) for listeners with `tls: true`.",
        None,
        "Federation",
    ),
    Key(
        "tls_private_key_path",
        _opt_str,
        None,
        "PEM private key for listeners with `tls: true`.",
        None,
        "Federation",
    ),
    Key(
        "federation_verify_certificates",
        _bool,
        True,
        "Verify other servers' TLS certificates "
        "(turn off only for tests with self-signed certificates).",
        None,
        "Federation",
    ),
    Key(
        "allow_device_name_lookup_over_federation",
        _bool,
        False,
        "Show our users' device names to other servers (device lists and key queries). "
        "Off by default, as in Synapse: names often say who owns a device.",
        None,
        "Federation",
    ),
    Key(
        "federation_domain_whitelist",
        lambda k, v: None if v is None else _str_list(k, v),
        None,
        "If set, federate only with these server names.",
        None,
        "Federation",
    ),
    Key(
        "ip_range_blacklist",
        _str_list,
        None,
        "Address ranges (CIDR) outbound federation "
        "requests may not reach; defaults to private, loopback and reserved ranges.",
        None,
        "Federation",
    ),
    Key(
        "ip_range_whitelist",
        _str_list,
        [],
        "Ranges allowed even though blacklisted (e.g. `127.0.0.0/8` for tests on one machine).",
        None,
        "Federation",
    ),
    Key(
        "trusted_key_servers",
        _trusted_key_servers,
        [],
        "Notary servers to fetch other "
        "servers' keys through: `server_name` and `verify_keys` (key id → base64). An empty "
        "list fetches keys from each server directly.",
        None,
        "Federation",
    ),
    Key(
        "allow_public_rooms_over_federation",
        _bool,
        False,
        "Serve our public room list to other servers.",
        None,
        "Federation",
    ),
    Key(
        "allow_profile_lookup_over_federation",
        _bool,
        True,
        "Answer other servers' profile queries (`query/profile`); false answers 403.",
        None,
        "Federation",
    ),
    Key(
        "allow_public_rooms_without_auth",
        _bool,
        False,
        "Serve `/publicRooms` to clients without an access token.",
        None,
        "Federation",
    ),
    Key(
        "federation",
        _federation_retry,
        _federation_retry("federation", None),
        "Outbound "
        "retry settings: `destination_min_retry_interval` (10s), "
        "`destination_retry_multiplier` (2), `destination_max_retry_interval` (1 week).",
        None,
        "Federation",
    ),
    Key(
        "app_service_config_files",
        _str_list,
        [],
        "Application service (bridge) registration files, in Synapse's format (relative "
        "paths are relative to the config file's folder). Each is validated at start-up; "
        "see docs/appservices.md.",
        None,
        "Application services",
    ),
    Key(
        "login_via_existing_session",
        _login_via_existing_session,
        LoginViaExistingSession(),
        "Let a logged-in device issue a short-lived `m.login.token` for a new device "
        "(`POST /_matrix/client/v1/login/get_token`): `enabled` (false: the endpoint is not "
        "served), `require_ui_auth` (true: the password is asked first) and "
        "`token_timeout` (5m: how long the token is valid).",
        None,
        "Sessions",
    ),
    Key(
        "turn_uris",
        _str_list,
        [],
        "TURN server URIs handed to VoIP clients by `/voip/turnServer` (e.g. "
        "`turn:turn.example.com:3478?transport=udp`). Empty: the endpoint answers `{}`.",
        None,
        "VoIP",
    ),
    Key(
        "turn_shared_secret",
        _opt_str,
        None,
        "The TURN server's shared secret (coturn `static-auth-secret`): each user gets a "
        "username `<expiry>:<user id>` and its HMAC-SHA1 as password.",
        None,
        "VoIP",
    ),
    Key(
        "turn_username",
        _opt_str,
        None,
        "A fixed TURN username, used when no `turn_shared_secret` is set.",
        None,
        "VoIP",
    ),
    Key(
        "turn_password",
        _opt_str,
        None,
        "The password going with `turn_username`.",
        None,
        "VoIP",
    ),
    Key(
        "turn_user_lifetime",
        lambda k, v: parse_duration_ms(k, v),
        3_600_000,
        "How long the TURN credentials from a shared secret stay valid.",
        None,
        "VoIP",
    ),
    Key(
        "turn_allow_guests",
        _bool,
        True,
        "Whether guests get TURN credentials.",
        None,
        "VoIP",
    ),
    Key(
        "websocket",
        _websocket,
        WebSocketConfig(),
        "The WebSocket /sync transport (docs/websocket.md): `enabled` (true); "
        "`poll_timeout` (accepted, unused: idle connections wait on the notifier); "
        "`ping_interval` (30s) and `ping_timeout` (10s: WebSocket pings; a peer that does "
        "not answer is dropped); `stall_timeout` (30s: a peer that reads nothing for this "
        "long while data waits is closed with 4000); `max_buffered_bytes` (1M: unsent bytes "
        "past which a peer is closed with 4000); `max_pending_messages` (100: replies "
        "written while the peer does not read, past which it is closed); "
        "`max_calls_in_flight` (16: concurrent calls per connection); `close_timeout` "
        "(5s: how long a closing handshake may take).",
        None,
        "WebSocket",
    ),
    Key(
        "presence",
        _presence,
        PRESENCE_DEFAULTS,
        "Presence: `enabled` (false: nothing is tracked or sent, the endpoints still "
        "answer), `include_offline_users_on_sync` (list offline room-mates in an initial "
        "/sync), `sync_online_timeout` (how long after a user's last /sync ends they stay "
        "online before becoming unavailable) and `offline_timeout` (how long after it "
        "they become offline).",
        None,
        "Presence",
    ),
    Key(
        "require_auth_for_profile_requests",
        _bool,
        False,
        "Require an access token for `GET /profile/...`.",
        None,
        "Profiles and user directory",
    ),
    Key(
        "limit_profile_requests_to_users_who_share_rooms",
        _bool,
        False,
        "With `require_auth_for_profile_requests`: a user may only read the profiles of "
        "users they share a room with.",
        None,
        "Profiles and user directory",
    ),
    Key(
        "user_directory",
        _user_directory,
        _user_directory("user_directory", None),
        "User directory search: `search_all_users` (false: only users sharing a room "
        "with the searcher or in a public room; true: also every local user and every "
        "user of the rooms we are in). Synapse's other keys of this section are accepted "
        "and ignored.",
        None,
        "Profiles and user directory",
    ),
]

_SCHEMA_BY_NAME = {key.name: key for key in SCHEMA}

# Synapse keys accepted without effect (yet): no warning for an admin reusing a file.
ACCEPTED_SYNAPSE_KEYS = {
    "macaroon_secret_key",
    "form_secret",
    "suppress_key_server_warning",
    "room_list_publication_rules",
    "enable_media_repo",
    "media_retention",
    "auto_join_rooms",
    "default_room_version",
    "rc_admin_redaction",
    "rc_third_party_invite",
    "rc_key_requests",
    "push",
    "encryption_enabled_by_default_for_room_type",
    "experimental_features",
    "modules",
    "retention",
    "limit_remote_rooms",
    "include_profile_data_on_invite",
    "admin_contact",
    "max_event_delay_duration",
    "forgotten_room_retention_period",
    "session_lifetime",
    "nonrefreshable_access_token_lifetime",
    "caches",
    "event_cache_size",
    "signing_key",
    "old_signing_keys",
    "key_server",
    "perspectives",
    "serve_server_wellknown",
}


@dataclass
class HomeserverConfig:
    """The parsed configuration; attribute names are the YAML keys."""

    config_dir: str
    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    @property
    def server_name(self) -> str:
        return str(self.values["server_name"])

    @property
    def client_baseurl(self) -> str:
        url = self.values.get("public_baseurl") or f"https://{self.server_name}/"
        return url if url.endswith("/") else url + "/"


def parse_config(raw: dict[str, Any], config_dir: str) -> HomeserverConfig:
    """Validate a merged YAML mapping; raise ConfigError naming the key at fault."""
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a YAML mapping of keys to values")
    for raw_key in raw:
        if raw_key not in _SCHEMA_BY_NAME and raw_key not in ACCEPTED_SYNAPSE_KEYS:
            logger.warning("Unknown configuration key %r ignored", raw_key)
    values: dict[str, Any] = {}
    for key in SCHEMA:
        if key.name in raw and raw[key.name] is not None:
            values[key.name] = key.parse(key.name, raw[key.name])
        else:
            values[key.name] = key.default
    for key_name in ACCEPTED_SYNAPSE_KEYS:
        if key_name in raw and key_name not in values:
            values[key_name] = raw[key_name]
    if not values.get("server_name"):
        raise ConfigError("server_name: required, e.g. 'example.com'")
    from homeserver.events.format import is_valid_server_name

    if not is_valid_server_name(values["server_name"]):
        raise ConfigError(f"server_name: not a valid server name: {values['server_name']!r}")
    try:
        values["workers"] = parse_worker_config(raw, _listeners)
    except WorkerConfigError as e:
        raise ConfigError(str(e)) from None
    if values["database"] is None:
        values["database"] = {
            "name": "sqlite3",
            "args": {"database": os.path.join(config_dir, "homeserver.db")},
        }
    db_args = values["database"]["args"]
    if values["database"]["name"] == "sqlite3" and db_args["database"] != ":memory:":
        db_args["database"] = _resolve(config_dir, db_args["database"])
    if values["signing_key_path"] is None:
        values["signing_key_path"] = os.path.join(
            config_dir, f"{values['server_name'].replace(':', '_')}.signing.key"
        )
    values["signing_key_path"] = _resolve(config_dir, values["signing_key_path"])
    if values["workers"].is_multi_process:
        if values["database"]["name"] != "psycopg2":
            raise ConfigError(
                "database: several processes need PostgreSQL (SQLite is one process's)"
            )
        if not values["redis"].enabled:
            raise ConfigError("redis.enabled: several processes need Redis between them")
    if values["media_store_path"] is None:
        values["media_store_path"] = os.path.join(config_dir, "media_store")
    values["media_store_path"] = _resolve(config_dir, values["media_store_path"])
    for path_key in ("log_config", "pid_file"):
        if values[path_key]:
            values[path_key] = _resolve(config_dir, values[path_key])
    # The registration files themselves are read where the server is built
    # (homeserver.appservice.registration.load_configured_app_services).
    values["app_service_config_files"] = [
        _resolve(config_dir, p) for p in values["app_service_config_files"]
    ]
    return HomeserverConfig(config_dir=config_dir, values=values)


def _resolve(base: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def load_config_files(paths: list[str]) -> HomeserverConfig:
    """Read one or more YAML files (later top-level keys win) and validate."""
    if not paths:
        raise ConfigError("no configuration file given (use -c FILE)")
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a YAML mapping of keys to values")
        merged.update(data)
    return parse_config(merged, os.path.dirname(os.path.abspath(paths[0])))


# Generation ---------------------------------------------------------------------


def generate_config_text(
    server_name: str,
    data_dir: str,
    *,
    registration_shared_secret: str,
    macaroon_secret_key: str,
    form_secret: str,
    report_stats: bool = False,
    enable_registration: bool = False,
    port: int = 8008,
) -> str:
    """A commented ``homeserver.yaml``: every schema key with its meaning."""
    key_file = os.path.join(data_dir, f"{server_name.replace(':', '_')}.signing.key")
    lines = [
        "# Configuration file for homeserver, using Synapse's key names.",
        "# Every key is documented in docs/configuration.md.",
        "",
    ]
    host = server_name.rsplit(":", 1)[0] if not server_name.endswith("]") else server_name
    local = host in ("localhost", "127.0.0.1", "[::1]")
    concrete: dict[str, Any] = {
        "server_name": server_name,
        "public_baseurl": f"http://{server_name}/" if local else f"https://{server_name}/",
        "pid_file": os.path.join(data_dir, "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "tls": False,
                "type": "http",
                # Only behind a reverse proxy: anyone else could pick their address.
                "x_forwarded": False,
                "bind_addresses": ["127.0.0.1"],
                "resources": [
                    {"names": ["client", "federation", "keys", "media"], "compress": False}
                ],
            }
        ],
        "database": {
            "name": "sqlite3",
            "args": {"database": os.path.join(data_dir, "homeserver.db")},
        },
        "log_config": os.path.join(data_dir, "log.config"),
        "media_store_path": os.path.join(data_dir, "media_store"),
        "signing_key_path": key_file,
        "registration_shared_secret": registration_shared_secret,
        "report_stats": report_stats,
    }
    if enable_registration:
        concrete["enable_registration"] = True
        concrete["enable_registration_without_verification"] = True
    for key in SCHEMA:
        lines.extend("# " + line for line in _wrap(key.doc))
        if key.name in concrete:
            lines.append(yaml.safe_dump({key.name: concrete[key.name]}, sort_keys=False).rstrip())
        else:
            # Structured defaults (RateLimit, RedisConfig...) are not YAML: shown as null.
            default = None if is_dataclass(key.default) else key.default
            rendered = yaml.safe_dump({key.name: default}, sort_keys=False).rstrip()
            lines.extend("#" + line for line in rendered.splitlines())
        lines.append("")
    lines.append(yaml.safe_dump({"macaroon_secret_key": macaroon_secret_key}).rstrip())
    lines.append(yaml.safe_dump({"form_secret": form_secret}).rstrip())
    lines.append("# Where other servers' signing keys are fetched from; an empty list means")
    lines.append("# from each server directly.")
    lines.append("trusted_key_servers: []")
    lines.append("")
    return "\n".join(lines)


def generate_log_config(log_file: str) -> str:
    return yaml.safe_dump(
        {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
                }
            },
            "filters": {"context": {"()": "homeserver.logging_context.RequestIdFilter"}},
            "handlers": {
                "file": {
                    "class": "logging.handlers.TimedRotatingFileHandler",
                    "formatter": "precise",
                    "filename": log_file,
                    "when": "midnight",
                    "backupCount": 3,
                    "filters": ["context"],
                    "encoding": "utf8",
                },
                # Every request writes an access-log line: handing the file lines in
                # tens (or every 5 s, or at once from WARNING up) as Synapse's default
                # config does, and showing only warnings on the console, keeps logging
                # off the hot path (it was 15 % of the reactor's time in a busy room).
                "buffer": {
                    "class": "homeserver.logging_context.PeriodicallyFlushingMemoryHandler",
                    "target": "file",
                    "capacity": 10,
                    "flushLevel": 30,
                    "period": 5,
                },
                "console": {
                    "class": "logging.StreamHandler",
                    "formatter": "precise",
                    "filters": ["context"],
                    "level": "WARNING",
                },
            },
            "root": {"level": "INFO", "handlers": ["buffer", "console"]},
            "disable_existing_loggers": False,
        },
        sort_keys=False,
    )


def _wrap(text: str, width: int = 86) -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines


def configuration_reference_markdown() -> str:
    """docs/configuration.md, generated from SCHEMA (a test keeps the file in sync)."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `homeserver/config.py` by `python -m homeserver.config`; do not edit by hand.",
        "Key names and meanings follow Synapse's `homeserver.yaml`, so an existing file can be reused.",
        "Durations are milliseconds or strings such as `30s`, `5m`, `1h`, `7d`; sizes are bytes or `10K`, `50M`, `1G`.",
        "",
    ]
    sections: dict[str, list[Key]] = {}
    for key in SCHEMA:
        sections.setdefault(key.section, []).append(key)
    for section, keys in sections.items():
        out += [f"## {section}", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for key in keys:
            default = key.default
            if isinstance(default, RateLimit):
                shown = f"per_second {default.per_second:g}, burst_count {default.burst_count:g}"
            elif isinstance(default, LoginRateLimits):
                shown = "each of address/account/failed_attempts: per_second 0.17, burst_count 3"
            elif isinstance(default, RedisConfig):
                shown = "disabled"
            elif isinstance(default, PasswordConfig):
                shown = "enabled, no policy"
            elif isinstance(default, (InviteRateLimits, FederationRateLimit)):
                shown = "see meaning"
            elif default is None or default == {} or default == []:
                shown = "—"
            else:
                shown = f"`{default}`"
            out.append(f"| `{key.name}` | {shown} | {key.doc} |")
        out.append("")
    out += [
        "## Accepted for compatibility",
        "",
        "These Synapse keys are accepted without a warning; they take effect as the features they",
        "belong to land: " + ", ".join(f"`{k}`" for k in sorted(ACCEPTED_SYNAPSE_KEYS)) + ".",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "docs/configuration.md"
    with open(target, "w", encoding="utf-8") as f:
        f.write(configuration_reference_markdown())
