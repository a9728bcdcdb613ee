"""End to end encryption with real Olm and Megolm (matrix-nio on vodozemac) against a real
server process: two clients upload keys, Alice creates an encrypted room, nio queries
and claims Bob's keys, shares a Megolm session over Olm to-device messages, and Bob
decrypts the message. Then the server's whole database is searched for the plaintext:
it must not be there (while an unencrypted control message must be).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nio
import pytest

from tests.support.databases import database_config
from tests.support.nio_e2ee import nio_client, register_with_keys, sqlite_bytes, sync
from tests.support.subprocess_server import (
    NO_RATE_LIMITS,
    ServerProcess,
    free_port,
    generate_config,
    start_server,
    write_overrides,
)

SYNC_ATTEMPTS = 20


@dataclass
class E2eeServer:
    process: ServerProcess
    database: dict[str, Any]
    data_dir: Path


@pytest.fixture(params=["sqlite", "postgres"])
def e2ee_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[E2eeServer]:
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    port = free_port()
    config_path = generate_config(server_dir, port)
    with database_config(str(request.param), str(server_dir)) as database:
        overrides = {"bcrypt_rounds": 4, "database": database, **NO_RATE_LIMITS}
        server = start_server(server_dir, port, config_path, write_overrides(server_dir, overrides))
        try:
            yield E2eeServer(server, database, server_dir)
        finally:
            status = server.stop()
        assert status == 0, f"unclean shutdown ({status}); stderr:\n{server.stderr()}"


async def _scenario(server: E2eeServer, tmp_path: Path, secret: str, control: str) -> None:
    alice = nio_client(server.process.base_url, tmp_path / "alice-store")
    bob = nio_client(server.process.base_url, tmp_path / "bob-store")
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            await register_with_keys(client, name)

        created = await alice.room_create(
            name="secret plans",
            invite=[bob.user_id],
            initial_state=[nio.EnableEncryptionBuilder().as_dict()],
        )
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        joined = await bob.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined
        await sync(bob)
        await sync(alice)
        assert alice.rooms[room_id].encrypted
        assert bob.user_id in alice.rooms[room_id].users

        # nio queries Bob's device keys, claims a one-time key, builds an Olm session,
        # sends the Megolm session key to Bob's device, then sends the encrypted event.
        sent = await alice.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": secret},
            ignore_unverified_devices=True,
        )
        assert isinstance(sent, nio.RoomSendResponse), sent

        decrypted: list[str] = []
        undecryptable: list[Any] = []
        for _ in range(SYNC_ATTEMPTS):
            resp = await sync(bob)
            room = resp.rooms.join.get(room_id)
            for event in room.timeline.events if room else []:
                if isinstance(event, nio.RoomMessageText):
                    decrypted.append(event.body)
                elif isinstance(event, nio.MegolmEvent):
                    undecryptable.append(event)
            if decrypted:
                break
        assert decrypted == [secret], (decrypted, undecryptable)
        [event] = [
            e
            for e in (await bob.room_messages(room_id, start="", limit=50)).chunk
            if isinstance(e, nio.RoomMessageText)
        ] or [None]
        assert event is not None and event.decrypted and event.body == secret

        # A control message, sent in clear to an unencrypted room, proves the scan works.
        plain = await alice.room_create(name="plain room")
        assert isinstance(plain, nio.RoomCreateResponse), plain
        await sync(alice)
        clear = await alice.room_send(
            plain.room_id, "m.room.message", {"msgtype": "m.text", "body": control}
        )
        assert isinstance(clear, nio.RoomSendResponse), clear
    finally:
        await alice.close()
        await bob.close()


def _postgres_dump(database: dict[str, Any]) -> bytes:
    import psycopg2

    args = {k: v for k, v in database["args"].items() if k not in ("cp_min", "cp_max")}
    args["dbname"] = args.pop("database")
    conn = psycopg2.connect(**args)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            tables = [r[0] for r in cur.fetchall()]
            chunks = []
            for table in tables:
                cur.execute(f'SELECT t::text FROM "{table}" t')
                chunks.extend(r[0] for r in cur.fetchall())
    finally:
        conn.close()
    return "\n".join(chunks).encode("utf-8")


def test_olm_and_megolm_between_two_nio_clients(e2ee_server: E2eeServer, tmp_path: Path) -> None:
    secret = f"the eagle lands at dawn {secrets.token_hex(8)}"
    control = f"nothing to hide {secrets.token_hex(8)}"
    asyncio.run(_scenario(e2ee_server, tmp_path, secret, control))

    if e2ee_server.database["name"] == "sqlite3":
        contents = sqlite_bytes(e2ee_server.data_dir)
    else:
        contents = _postgres_dump(e2ee_server.database)
    assert control.encode() in contents, "the scan did not see the database's messages"
    assert b"m.megolm.v1.aes-sha2" in contents  # the ciphertext event is stored
    assert secret.encode() not in contents, "the plaintext reached the server's database"
