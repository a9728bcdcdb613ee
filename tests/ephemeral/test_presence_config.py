"""The ``presence`` config section: Synapse's keys plus our two timeouts."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.config import ConfigError, parse_config


def presence(section: Any) -> dict[str, Any]:
    config = parse_config({"server_name": "example.org", "presence": section}, "/tmp")
    return dict(config.presence)


def test_defaults_follow_synapse() -> None:
    config = parse_config({"server_name": "example.org"}, "/tmp")
    assert config.presence == {
        "enabled": True,
        "include_offline_users_on_sync": False,
        "sync_online_timeout": 30_000,
        "offline_timeout": 300_000,
    }


def test_durations_accept_synapse_units_and_untracked_means_off() -> None:
    got = presence({"enabled": "untracked", "sync_online_timeout": "2s", "offline_timeout": "1m"})
    assert got["enabled"] is False
    assert (got["sync_online_timeout"], got["offline_timeout"]) == (2000, 60_000)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"enabled": "no"}, "presence.enabled"),
        ([], "presence: expected a mapping"),
        ({"sync_online_timeout": "soon"}, "presence.sync_online_timeout"),
        ({"sync_online_timeout": "10m", "offline_timeout": "1m"}, "presence.offline_timeout"),
        ({"include_offline_users_on_sync": 1}, "presence.include_offline_users_on_sync"),
    ],
)
def test_bad_values_name_the_key(section: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        presence(section)
