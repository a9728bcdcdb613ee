"""End to end: a bridge built with mautrix-python's appservice module against the real
``homeserver`` command.

The registration file is written as an admin would and named in
``app_service_config_files``. The bridge (``mautrix.appservice.AppService``) pings the
homeserver, joins when invited, and answers every message of a normal user through a
puppet of its namespace; the answer must reach the user's /sync.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import nio
import pytest
import yaml
from mautrix.appservice import AppService
from mautrix.appservice.state_store import FileASStateStore
from mautrix.types import Event, EventType, Membership, MessageType, UserID

from tests.support.databases import database_config
from tests.support.subprocess_server import (
    NO_RATE_LIMITS,
    ServerProcess,
    free_port,
    generate_config,
    start_server,
    write_overrides,
)

AS_TOKEN = "mautrix_as_token_0123456789"
HS_TOKEN = "mautrix_hs_token_9876543210"
PASSWORD = "correct horse battery staple"
TIMEOUT_S = 30


def write_registration(tmp_path: Path, server_name: str, as_port: int) -> Path:
    registration = {
        "id": "echo",
        "url": f"http://127.0.0.1:{as_port}",
        "as_token": AS_TOKEN,
        "hs_token": HS_TOKEN,
        "sender_localpart": "echobot",
        "rate_limited": False,
        "namespaces": {
            "users": [{"regex": f"@echo_.*:{re.escape(server_name)}", "exclusive": True}],
            "aliases": [],
            "rooms": [],
        },
    }
    path = tmp_path / "echo-registration.yaml"
    path.write_text(yaml.safe_dump(registration), encoding="utf-8")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def bridge_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    port, as_port = free_port(), free_port()
    config_path = generate_config(tmp_path, port)
    server_name = f"localhost:{port}"
    registration = write_registration(tmp_path, server_name, as_port)
    with database_config(str(request.param), str(tmp_path)) as database:
        overrides: dict[str, Any] = {
            "bcrypt_rounds": 4,
            "database": database,
            "app_service_config_files": [str(registration)],
            **NO_RATE_LIMITS,
        }
        server = start_server(tmp_path, port, config_path, write_overrides(tmp_path, overrides))
        try:
            yield server, as_port
        finally:
            status = server.stop()
        assert status == 0, f"exit status {status}; stderr:\n{server.stderr()}"


def make_bridge(server: ServerProcess, tmp_path: Path) -> AppService:
    bridge = AppService(
        server=server.base_url,
        domain=server.server_name,
        as_token=AS_TOKEN,
        hs_token=HS_TOKEN,
        bot_localpart="echobot",
        id="echo",
        state_store=FileASStateStore(str(tmp_path / "mx-state.json"), binary=False),
    )

    @bridge.matrix_event_handler
    async def on_event(evt: Event) -> None:
        bot = bridge.intent
        if evt.type == EventType.ROOM_MEMBER and evt.state_key == bot.mxid:
            if evt.content.membership == Membership.INVITE:
                await bot.join_room(evt.room_id)
            return
        if evt.type != EventType.ROOM_MESSAGE or evt.sender == bot.mxid:
            return
        if evt.sender.startswith("@echo_"):
            return  # our own puppets
        localpart = evt.sender[1:].split(":", 1)[0]
        puppet = bot.user(UserID(f"@echo_{localpart}:{server.server_name}"))
        await puppet.ensure_joined(evt.room_id)
        await puppet.send_text(evt.room_id, f"echo: {evt.content.body}")

    return bridge


async def wait_for_message(
    client: nio.AsyncClient, room_id: str, sender: str, body: str
) -> nio.RoomMessageText:
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while asyncio.get_running_loop().time() < deadline:
        sync = await client.sync(timeout=2000)
        assert isinstance(sync, nio.SyncResponse), sync
        room = sync.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            is_text = isinstance(event, nio.RoomMessageText)
            if is_text and event.sender == sender and event.body == body:
                return event
    raise AssertionError(f"{sender} never said {body!r} in {room_id}")


async def scenario(server: ServerProcess, as_port: int, tmp_path: Path) -> None:
    bridge = make_bridge(server, tmp_path)
    await bridge.start(host="127.0.0.1", port=as_port)
    alice = nio.AsyncClient(
        server.base_url,
        "alice",
        config=nio.AsyncClientConfig(max_limit_exceeded=0, max_timeouts=2, request_timeout=20),
    )
    try:
        # The homeserver reaches the bridge (POST /_matrix/app/v1/ping round trip).
        duration = await bridge.ping_self("mautrix-e2e")
        assert isinstance(duration, int) and duration >= 0

        reg = await alice.register("alice", PASSWORD)
        assert isinstance(reg, nio.RegisterResponse), reg
        bot_id = f"@echobot:{server.server_name}"
        created = await alice.room_create(name="bridged", invite=[bot_id])
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        await alice.sync(timeout=0)

        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while True:  # the bot joins from its transaction handler
            members = await alice.joined_members(room_id)
            assert isinstance(members, nio.JoinedMembersResponse), members
            if bot_id in {m.user_id for m in members.members}:
                break
            assert asyncio.get_running_loop().time() < deadline, "the bridge bot never joined"
            await asyncio.sleep(0.1)

        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": str(MessageType.TEXT), "body": "hello bridge"}
        )
        assert isinstance(sent, nio.RoomSendResponse), sent
        puppet_id = f"@echo_alice:{server.server_name}"
        answer = await wait_for_message(alice, room_id, puppet_id, "echo: hello bridge")
        assert answer.sender == puppet_id

        # The puppet was registered through m.login.application_service.
        profile = await alice.get_displayname(puppet_id)
        assert isinstance(profile, nio.ProfileGetDisplayNameResponse), profile
    finally:
        await alice.close()
        await bridge.stop()


def test_a_mautrix_bridge_answers_through_a_puppet(bridge_setup: Any, tmp_path: Path) -> None:
    server, as_port = bridge_setup
    asyncio.run(scenario(server, as_port, tmp_path))
