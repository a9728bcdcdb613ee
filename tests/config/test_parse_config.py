"""homeserver.config: parsing, validation messages, merging files, generation."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from homeserver.config import (
    ConfigError,
    RateLimit,
    generate_config_text,
    load_config_files,
    parse_config,
    parse_duration_ms,
    parse_size,
)

BASE: dict[str, Any] = {"server_name": "example.com"}


def _parse(tmp_path: Path, **values: Any) -> Any:
    return parse_config({**BASE, **values}, str(tmp_path))


def _error(tmp_path: Path, **values: Any) -> str:
    with pytest.raises(ConfigError) as excinfo:
        _parse(tmp_path, **values)
    return str(excinfo.value)


def _write(path: Path, data: Any) -> str:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


# Defaults ----------------------------------------------------------------------------------


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    config = _parse(tmp_path)
    assert config.server_name == "example.com"
    assert config.client_baseurl == "https://example.com/"
    assert config.enable_registration is False
    assert config.allow_guest_access is False
    assert config.bcrypt_rounds == 12
    assert config.max_request_body_size == 10 * 1024 * 1024
    assert config.key_refresh_interval == 86_400_000
    assert config.refreshable_access_token_lifetime == 300_000
    assert config.refresh_token_lifetime is None
    assert config.rc_registration == RateLimit(0.17, 3)
    assert config.rc_login.failed_attempts == RateLimit(0.17, 3)
    assert config.redis.enabled is False
    assert config.listeners == []
    assert config.database == {
        "name": "sqlite3",
        "args": {"database": str(tmp_path / "homeserver.db")},
    }
    assert config.signing_key_path == str(tmp_path / "example.com.signing.key")
    assert config.media_store_path == str(tmp_path / "media_store")


def test_server_name_with_port_gives_key_file_without_colon(tmp_path: Path) -> None:
    config = _parse(tmp_path, server_name="example.com:8448")
    assert config.signing_key_path == str(tmp_path / "example.com_8448.signing.key")


def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    config = _parse(
        tmp_path,
        signing_key_path="keys/k.key",
        media_store_path="/abs/media",
        database={"name": "sqlite3", "args": {"database": "data/hs.db"}},
        log_config="log.yaml",
        pid_file="run/hs.pid",
    )
    assert config.signing_key_path == str(tmp_path / "keys" / "k.key")
    assert config.media_store_path == "/abs/media"
    assert config.database["args"]["database"] == str(tmp_path / "data" / "hs.db")
    assert config.log_config == str(tmp_path / "log.yaml")
    assert config.pid_file == str(tmp_path / "run" / "hs.pid")


def test_sqlite_memory_database_is_kept(tmp_path: Path) -> None:
    config = _parse(tmp_path, database={"name": "sqlite3", "args": {"database": ":memory:"}})
    assert config.database["args"]["database"] == ":memory:"


def test_public_baseurl_gets_a_trailing_slash(tmp_path: Path) -> None:
    assert _parse(tmp_path, public_baseurl="https://m.example.com").client_baseurl == (
        "https://m.example.com/"
    )


def test_listener_defaults(tmp_path: Path) -> None:
    (listener,) = _parse(
        tmp_path, listeners=[{"port": 8008, "resources": [{"names": ["client"]}]}]
    ).listeners
    assert listener.port == 8008
    assert listener.type == "http"
    assert listener.bind_addresses == ["::", "0.0.0.0"]
    assert listener.tls is False and listener.x_forwarded is False
    assert listener.resources == ["client"]
    (legacy,) = _parse(tmp_path, listeners=[{"port": 1, "bind_address": "127.0.0.1"}]).listeners
    assert legacy.bind_addresses == ["127.0.0.1"]


def test_postgres_database_section(tmp_path: Path) -> None:
    config = _parse(
        tmp_path,
        database={
            "name": "psycopg2",
            "args": {"user": "u", "password": "p", "database": "d", "host": "h", "port": 5433},
        },
    )
    assert config.database["name"] == "psycopg2"
    assert config.database["args"]["port"] == 5433


def test_accepted_synapse_keys_are_kept_without_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="homeserver.config"):
        config = _parse(tmp_path, macaroon_secret_key="m", trusted_key_servers=[], presence={})
    assert caplog.records == []
    assert config.macaroon_secret_key == "m"


def test_unknown_key_logs_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="homeserver.config"):
        config = _parse(tmp_path, enable_registrations=True)
    assert config.enable_registration is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "enable_registrations" in warnings[0].getMessage()


def test_null_values_mean_default(tmp_path: Path) -> None:
    config = _parse(tmp_path, bcrypt_rounds=None, listeners=None, rc_login=None)
    assert config.bcrypt_rounds == 12 and config.listeners == []


# Validation messages name the key -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"listeners": [{"port": "8008"}]}, "listeners[0].port"),
        ({"listeners": [{"port": 8008}, {"port": True}]}, "listeners[1].port"),
        ({"listeners": [{"port": 70000}]}, "listeners[0].port"),
        ({"listeners": [{}]}, "listeners[0].port"),
        ({"listeners": [{"port": 1, "type": "ftp"}]}, "listeners[0].type"),
        ({"listeners": [{"port": 1, "tls": "no"}]}, "listeners[0].tls"),
        ({"listeners": [{"port": 1, "bind_addresses": "0.0.0.0"}]}, "listeners[0].bind_addresses"),
        ({"listeners": [{"port": 1, "bind_addresses": [1]}]}, "listeners[0].bind_addresses[0]"),
        (
            {"listeners": [{"port": 1, "resources": [{"names": ["client", "bogus"]}]}]},
            "listeners[0].resources[0].names",
        ),
        ({"listeners": [{"port": 1, "resources": "client"}]}, "listeners[0].resources"),
        ({"listeners": {"port": 1}}, "listeners"),
        ({"listeners": ["8008"]}, "listeners[0]"),
        ({"enable_registration": "yes"}, "enable_registration"),
        ({"bcrypt_rounds": "12"}, "bcrypt_rounds"),
        ({"server_name": 5}, "server_name"),
        ({"database": {"name": "mysql"}}, "database.name"),
        ({"database": {"name": "sqlite3", "args": {}}}, "database.args.database"),
        ({"database": {"name": "sqlite3", "args": ["hs.db"]}}, "database.args"),
        ({"database": {"name": "psycopg2", "args": {"port": "5432"}}}, "database.args.port"),
        ({"database": {"name": "psycopg2", "args": {"cp_min": 0}}}, "database.args.cp_min"),
        ({"database": "sqlite"}, "database"),
        ({"rc_login": {"address": {"per_second": "fast"}}}, "rc_login.address.per_second"),
        ({"rc_registration": {"burst_count": True}}, "rc_registration.burst_count"),
        ({"rc_message": 5}, "rc_message"),
        ({"redis": {"port": "6379"}}, "redis.port"),
        ({"redis": {"enabled": 1}}, "redis.enabled"),
        ({"key_refresh_interval": "soon"}, "key_refresh_interval"),
        ({"max_request_body_size": "big"}, "max_request_body_size"),
        ({"refreshable_access_token_lifetime": "5 minutes"}, "refreshable_access_token_lifetime"),
        ({"password_config": "off"}, "password_config"),
        ({"public_baseurl": 3}, "public_baseurl"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_wrong_value_error_names_the_key(
    tmp_path: Path, values: dict[str, Any], expected: str
) -> None:
    message = _error(tmp_path, **values)
    assert message.startswith(expected + ":"), message


def test_missing_server_name_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server_name"):
        parse_config({}, str(tmp_path))


@pytest.mark.parametrize("name", ["exa mple.com", "example.com:port", "[::1", "-" * 300])
def test_invalid_server_name_is_an_error(tmp_path: Path, name: str) -> None:
    assert "server_name" in _error(tmp_path, server_name=name)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_config(["server_name"], str(tmp_path))  # type: ignore[arg-type]


# Durations and sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (1500, 1500),
        ("1500", 1500),
        ("250ms", 250),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        ("2w", 1_209_600_000),
        ("1y", 31_536_000_000),
        (" 3s ", 3000),
    ],
)
def test_durations_parse(value: Any, ms: int) -> None:
    assert parse_duration_ms("k", value) == ms


@pytest.mark.parametrize("value", ["5 minutes", "1.5s", "-1s", "s", True, 1.5, None, [1]])
def test_bad_durations_are_refused_naming_the_key(value: Any) -> None:
    with pytest.raises(ConfigError, match="^some_key:"):
        parse_duration_ms("some_key", value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("10K", 10 * 1024),
        ("10k", 10 * 1024),
        ("50M", 50 * 1024**2),
        ("1G", 1024**3),
        ("2T", 2 * 1024**4),
        ("10KB", 10 * 1024),
        ("100b", 100),
    ],
)
def test_sizes_parse(value: Any, size: int) -> None:
    assert parse_size("k", value) == size


@pytest.mark.parametrize("value", ["10 X", "1.5M", "M", True, -1.0, None])
def test_bad_sizes_are_refused_naming_the_key(value: Any) -> None:
    with pytest.raises(ConfigError, match="^some_size:"):
        parse_size("some_size", value)


def test_duration_and_size_keys_use_the_parsers(tmp_path: Path) -> None:
    config = _parse(
        tmp_path,
        key_refresh_interval="1h",
        refreshable_access_token_lifetime="5m",
        refresh_token_lifetime="30d",
        max_request_body_size="1M",
        max_upload_size="5M",
    )
    assert config.key_refresh_interval == 3_600_000
    assert config.refreshable_access_token_lifetime == 300_000
    assert config.refresh_token_lifetime == 30 * 86_400_000
    assert config.max_request_body_size == 1024**2
    assert config.max_upload_size == 5 * 1024**2


# Several files ------------------------------------------------------------------------------


def test_several_files_merge_later_top_level_keys_win(tmp_path: Path) -> None:
    first = _write(
        tmp_path / "homeserver.yaml",
        {
            "server_name": "example.com",
            "enable_registration": False,
            "bcrypt_rounds": 10,
            "listeners": [{"port": 8008}, {"port": 8448}],
            "rc_login": {"address": {"per_second": 1, "burst_count": 5}},
        },
    )
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    second = _write(
        conf_d / "override.yaml",
        {"enable_registration": True, "listeners": [{"port": 9000}], "rc_login": {}},
    )
    config = load_config_files([first, second])
    assert config.server_name == "example.com"
    assert config.enable_registration is True
    assert config.bcrypt_rounds == 10
    # Top-level keys are replaced, not deep-merged.
    assert [listener.port for listener in config.listeners] == [9000]
    assert config.rc_login.address == RateLimit(0.17, 3)
    # Relative paths resolve against the first file's folder.
    assert config.config_dir == str(tmp_path)
    assert config.signing_key_path == str(tmp_path / "example.com.signing.key")


def test_empty_file_in_the_list_is_skipped(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.yaml", {"server_name": "example.com"})
    empty = _write(tmp_path / "b.yaml", "")
    assert load_config_files([first, empty]).server_name == "example.com"


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_files([str(tmp_path / "missing.yaml")])
    bad = _write(tmp_path / "bad.yaml", "server_name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config_files([bad])
    listy = _write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a YAML mapping"):
        load_config_files([listy])
    with pytest.raises(ConfigError, match="no configuration file"):
        load_config_files([])


def test_validation_error_after_merge_names_the_key(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.yaml", {"server_name": "example.com"})
    second = _write(tmp_path / "b.yaml", {"listeners": [{"port": "http"}]})
    with pytest.raises(ConfigError, match=r"^listeners\[0\]\.port:"):
        load_config_files([first, second])


# Generated config -----------------------------------------------------------------------------


def _generated(tmp_path: Path, **kw: Any) -> str:
    return generate_config_text(
        "example.com",
        str(tmp_path / "data"),
        registration_shared_secret="reg-secret",
        macaroon_secret_key="mac-secret",
        form_secret="form-secret",
        **kw,
    )


def test_generated_config_parses_back_without_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = _generated(tmp_path, port=8118)
    raw = yaml.safe_load(text)
    with caplog.at_level(logging.WARNING, logger="homeserver.config"):
        config = parse_config(raw, str(tmp_path))
    assert caplog.records == []
    data = str(tmp_path / "data")
    assert config.server_name == "example.com"
    assert config.client_baseurl == "https://example.com/"
    assert config.registration_shared_secret == "reg-secret"
    assert raw["macaroon_secret_key"] == "mac-secret" and raw["form_secret"] == "form-secret"
    assert config.enable_registration is False
    assert config.report_stats is False
    (listener,) = config.listeners
    assert listener.port == 8118 and listener.bind_addresses == ["127.0.0.1"]
    assert set(listener.resources) >= {"client", "federation"}
    assert config.database == {
        "name": "sqlite3",
        "args": {"database": os.path.join(data, "homeserver.db")},
        "allow_unsafe_locale": False,
    }
    assert config.signing_key_path == os.path.join(data, "example.com.signing.key")
    assert config.media_store_path == os.path.join(data, "media_store")
    assert config.log_config == os.path.join(data, "log.config")


def test_generated_config_documents_every_key(tmp_path: Path) -> None:
    from homeserver.config import SCHEMA

    text = _generated(tmp_path)
    for key in SCHEMA:
        assert f"{key.name}:" in text, key.name
    # Defaults not set are present as comments, so uncommenting one parses.
    assert "#bcrypt_rounds: 12" in text


def test_generated_config_with_registration_and_local_name(tmp_path: Path) -> None:
    text = generate_config_text(
        "localhost:8080",
        str(tmp_path),
        registration_shared_secret="a",
        macaroon_secret_key="b",
        form_secret="c",
        enable_registration=True,
        report_stats=True,
    )
    config = parse_config(yaml.safe_load(text), str(tmp_path))
    assert config.enable_registration is True
    assert config.enable_registration_without_verification is True
    assert config.report_stats is True
    assert config.client_baseurl == "http://localhost:8080/"
    assert config.signing_key_path.endswith("localhost_8080.signing.key")
