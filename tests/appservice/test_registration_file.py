"""Registration files: Synapse's format, validated at start-up with the file and field named."""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from homeserver.appservice.registration import (
    AppServiceRegistry,
    load_app_services,
    load_configured_app_services,
)
from homeserver.cli import main as cli_main
from homeserver.config import ConfigError, parse_config
from homeserver.errors import MatrixError
from homeserver.server import build_homeserver
from tests.appservice.helpers import registration, write_registration
from tests.support.server import make_config_dict


def load(tmp_path: Any, **overrides: Any) -> Any:
    path = write_registration(tmp_path, registration("http://127.0.0.1:9999/", **overrides))
    return load_app_services([path], "test.local")[0]


def error_of(tmp_path: Any, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, **overrides)
    return str(e.value)


def test_a_valid_file_loads_with_synapse_defaults(tmp_path: Any) -> None:
    service = load(tmp_path)
    assert service.id == "bridge"
    assert service.url == "http://127.0.0.1:9999"  # the trailing slash is dropped
    assert service.sender == "@_bridge_bot:test.local"
    assert service.rate_limited is True
    assert service.receive_ephemeral is False
    assert service.protocols == ("irc",)
    assert service.is_exclusive_user("@_bridge_alice:test.local")
    assert service.is_interested_in_user("@shared-x:test.local")
    assert not service.is_exclusive_user("@shared-x:test.local")
    assert not service.is_interested_in_user("@_bridge_alice:elsewhere.org")
    assert service.is_exclusive_user(service.sender)
    assert service.is_exclusive_alias("#_bridge_room:test.local")


def test_url_may_be_null_and_ephemeral_accepts_the_unstable_key(tmp_path: Any) -> None:
    service = load(tmp_path, url=None, **{"de.sorunome.msc2409.push_ephemeral": True})
    assert service.url is None
    assert service.receive_ephemeral is True
    assert load(tmp_path, receive_ephemeral=True).receive_ephemeral is True
    assert load(tmp_path, push_ephemeral=True).receive_ephemeral is True
    assert load(tmp_path, rate_limited=False).rate_limited is False


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": None}, "id"),
        ({"as_token": 5}, "as_token"),
        ({"hs_token": ""}, "hs_token"),
        ({"sender_localpart": "Bad Bot"}, "sender_localpart"),
        ({"url": "ftp://x"}, "url"),
        ({"namespaces": "users"}, "namespaces"),
        ({"namespaces": {"users": {"regex": "x"}}}, "namespaces.users"),
        (
            {"namespaces": {"users": [{"regex": "(", "exclusive": True}]}},
            "namespaces.users[0].regex",
        ),
        ({"namespaces": {"aliases": [{"regex": "#a"}]}}, "namespaces.aliases[0].exclusive"),
        ({"namespaces": {"rooms": [{"exclusive": False}]}}, "namespaces.rooms[0].regex"),
        ({"rate_limited": "no"}, "rate_limited"),
        ({"protocols": "irc"}, "protocols"),
        ({"receive_ephemeral": "yes"}, "receive_ephemeral"),
        ({"ip_range_whitelist": ["not-an-ip"]}, "ip_range_whitelist[0]"),
    ],
)
def test_an_invalid_field_names_the_file_and_the_field(
    tmp_path: Any, overrides: dict[str, Any], field: str
) -> None:
    message = error_of(tmp_path, **overrides)
    assert os.path.join(str(tmp_path), "bridge.yaml") in message
    assert f": {field}:" in message


def test_a_missing_url_key_is_refused(tmp_path: Any) -> None:
    data = registration("http://x")
    del data["url"]
    path = write_registration(tmp_path, data)
    with pytest.raises(ConfigError, match="url: required"):
        load_app_services([path], "test.local")


def test_a_file_that_is_not_a_mapping_or_not_there_is_refused(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "list.yaml")
    with open(path, "w") as f:
        f.write("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a YAML mapping"):
        load_app_services([path], "test.local")
    with pytest.raises(ConfigError, match="cannot read"):
        load_app_services([os.path.join(str(tmp_path), "missing.yaml")], "test.local")


def test_two_services_may_not_share_an_as_token_or_an_id(tmp_path: Any) -> None:
    first = write_registration(tmp_path, registration("http://a"), "a.yaml")
    same_token = write_registration(tmp_path, registration("http://b", id="other"), "b.yaml")
    with pytest.raises(ConfigError, match="b.yaml: as_token: already used by .*a.yaml"):
        load_app_services([first, same_token], "test.local")
    same_id = write_registration(tmp_path, registration("http://c", as_token="t2"), "c.yaml")
    with pytest.raises(ConfigError, match="c.yaml: id: 'bridge' is already used by .*a.yaml"):
        load_app_services([first, same_id], "test.local")
    with pytest.raises(ConfigError, match="listed twice"):
        load_app_services([first, first], "test.local")


def test_the_config_key_resolves_relative_paths_against_the_config_folder(tmp_path: Any) -> None:
    write_registration(tmp_path, registration("http://a"))
    config = parse_config(
        {"server_name": "test.local", "app_service_config_files": ["bridge.yaml"]}, str(tmp_path)
    )
    assert config.app_service_config_files == [os.path.join(str(tmp_path), "bridge.yaml")]
    assert [s.id for s in load_configured_app_services(config)] == ["bridge"]
    assert [s.id for s in config.app_services] == ["bridge"]
    with pytest.raises(ConfigError, match="app_service_config_files: expected a list"):
        parse_config({"server_name": "t.local", "app_service_config_files": "x"}, str(tmp_path))


def test_config_parsing_leaves_the_registration_files_to_start_up(tmp_path: Any) -> None:
    # parse_config only resolves the paths: the files are read where the server is built.
    config = parse_config(
        {"server_name": "test.local", "app_service_config_files": ["missing.yaml"]}, str(tmp_path)
    )
    assert "app_services" not in config.values
    with pytest.raises(ConfigError, match="app_service_config_files: cannot read .*missing.yaml"):
        load_configured_app_services(config)


@pytest_twisted.ensureDeferred
async def test_building_the_server_refuses_a_bad_registration(tmp_path: Any) -> None:
    write_registration(tmp_path, registration("http://a", as_token=None))
    db_path = os.path.join(str(tmp_path), "homeserver.db")
    database = {"name": "sqlite3", "args": {"database": db_path}}
    config = parse_config(
        make_config_dict(str(tmp_path), database, app_service_config_files=["bridge.yaml"]),
        str(tmp_path),
    )
    with pytest.raises(ConfigError, match="bridge.yaml: as_token: required"):
        await build_homeserver(config, reactor)
    assert not os.path.exists(db_path), "refused before the database is opened"


def test_the_command_refuses_to_start_with_a_bad_registration(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    write_registration(tmp_path, registration("http://a", as_token=None))
    config_path = os.path.join(str(tmp_path), "homeserver.yaml")
    with open(config_path, "w") as f:
        f.write("server_name: test.local\napp_service_config_files: [bridge.yaml]\n")
    assert cli_main(["-c", config_path]) == 1
    err = capsys.readouterr().err
    assert "bridge.yaml: as_token: required" in err


def test_exclusive_namespaces_are_enforced_by_the_registry(tmp_path: Any) -> None:
    service = load(tmp_path)
    registry = AppServiceRegistry([service])
    assert registry.by_token("as_secret_token") is service
    assert registry.by_token("nope") is None
    with pytest.raises(MatrixError) as e:
        registry.check_user_not_reserved("@irc-bob:test.local")
    assert e.value.errcode == "M_EXCLUSIVE"
    registry.check_user_not_reserved("@irc-bob:test.local", allowed=service)
    registry.check_user_not_reserved("@shared-bob:test.local")  # not exclusive
    assert registry.check_alias_change("bridge", "#_bridge_x:test.local") is True
    assert registry.check_alias_change(None, "#free:test.local") is False
    with pytest.raises(MatrixError):
        registry.check_alias_change(None, "#_bridge_x:test.local")
    with pytest.raises(MatrixError):
        registry.check_alias_change("bridge", "#free:test.local")
