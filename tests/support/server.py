"""Run a real homeserver in the test process, listening on loopback."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor

from homeserver.config import parse_config
from homeserver.server import HomeServer, build_homeserver
from tests.support.client import Client

HIGH_LIMIT = {"per_second": 10000, "burst_count": 10000}


def make_config_dict(data_dir: str, database: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server_name": "test.local",
        "public_baseurl": "http://127.0.0.1/",
        "listeners": [
            {
                "port": 0,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "resources": [{"names": ["client", "federation", "keys", "media"]}],
            }
        ],
        "database": database,
        "signing_key_path": os.path.join(data_dir, "test.signing.key"),
        "media_store_path": os.path.join(data_dir, "media"),
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "registration_shared_secret": "shared-secret-for-tests",
        "bcrypt_rounds": 4,
        "rc_message": HIGH_LIMIT,
        "rc_registration": HIGH_LIMIT,
        "rc_login": {"address": HIGH_LIMIT, "account": HIGH_LIMIT, "failed_attempts": HIGH_LIMIT},
        "rc_invites": {"per_room": HIGH_LIMIT, "per_user": HIGH_LIMIT, "per_issuer": HIGH_LIMIT},
        "rc_federation": {"sleep_limit": 10000, "reject_limit": 10000, "concurrent": 10000},
    }
    config.update(overrides)
    return config


class RunningServer:
    def __init__(
        self,
        hs: HomeServer,
        config_dict: dict[str, Any] | None = None,
        data_dir: str | None = None,
    ) -> None:
        self.hs = hs
        self.config_dict = config_dict
        self.data_dir = data_dir
        port = hs.ports[0].getHost().port
        self.base_url = f"http://127.0.0.1:{port}"

    def client(self) -> Client:
        return Client(self.base_url)

    async def stop(self) -> None:
        await self.hs.stop()

    async def restart(self) -> None:
        """Stop, then start a new server on the same config and database (a new port:
        re-point clients at ``base_url``). Nothing in memory survives."""
        assert self.config_dict is not None and self.data_dir is not None
        await self.hs.stop()
        fresh = await start_server(self.config_dict, self.data_dir)
        self.hs = fresh.hs
        self.base_url = fresh.base_url


async def start_server(config_dict: dict[str, Any], data_dir: str) -> RunningServer:
    config = parse_config(config_dict, data_dir)
    hs = await build_homeserver(config, reactor)
    try:
        hs.listen()
    except BaseException:
        await hs.stop()  # its database threads would keep the test process alive
        raise
    return RunningServer(hs, config_dict, data_dir)
