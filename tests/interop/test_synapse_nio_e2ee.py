"""End-to-end encryption across federation with a real Synapse, both ends real Olm/Megolm
(matrix-nio on vodozemac): Alice on our server, Bob on Synapse, in an encrypted room.

Each client claims the other's one-time key over federation (/user/keys/query and
/user/keys/claim), sends its Megolm session key over Olm in an m.direct_to_device EDU,
and sends an encrypted message that the other decrypts: ours→Synapse and Synapse→ours.
Then Alice adds a device, which Synapse learns of from our m.device_list_update EDU, and
Bob's next message is decrypted there too.
Then our database is searched for both plaintexts; clear control messages (one of them
received over federation) prove the search can see messages.

Our server runs in the test's Twisted reactor, so the nio clients (asyncio) run in a
worker thread with their own event loop.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import nio
import pytest_twisted
from twisted.internet import threads

from tests.interop.test_synapse import name
from tests.support.nio_e2ee import (
    PASSWORD,
    nio_client,
    register_with_keys,
    sqlite_bytes,
    sync_until,
)
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer

MEGOLM = "m.megolm.v1.aes-sha2"


@dataclass
class Texts:
    to_synapse: str  # encrypted, Alice (ours) to Bob (Synapse)
    to_ours: str  # encrypted, Bob to Alice
    to_new_device: str  # encrypted, Bob to Alice's second device, announced after he joined
    clear_ours: str  # unencrypted, sent by Alice
    clear_synapse: str  # unencrypted, sent by Bob, reaches us over federation


def _joined(client: nio.AsyncClient, room_id: str, user_id: str) -> bool:
    room = client.rooms.get(room_id)
    return room is not None and user_id in room.users and not room.users[user_id].invited


def _bodies(resp: nio.SyncResponse, room_id: str, sender: str) -> list[nio.Event]:
    room = resp.rooms.join.get(room_id)
    return [e for e in room.timeline.events if e.sender == sender] if room else []


async def _receive(
    client: nio.AsyncClient, room_id: str, sender: str, what: str
) -> nio.RoomMessageText:
    """Sync until ``sender``'s message arrives in ``room_id`` and return it; fail if it
    arrives but stays undecryptable (the room key never came)."""
    seen: list[nio.Event] = []

    def arrived(resp: nio.SyncResponse) -> bool:
        seen.extend(_bodies(resp, room_id, sender))
        # The room event may come before the to-device message with its key (they travel
        # in separate federation transactions): nio then hands over a MegolmEvent, and
        # later syncs do not deliver it again. Retry those once keys may have arrived.
        for i, event in enumerate(seen):
            if isinstance(event, nio.MegolmEvent):
                try:
                    seen[i] = client.decrypt_event(event)
                except nio.EncryptionError:
                    pass
        return any(isinstance(e, nio.RoomMessageText) for e in seen)

    try:
        await sync_until(client, arrived, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; events from {sender}: {seen!r}") from None
    [message] = [e for e in seen if isinstance(e, nio.RoomMessageText)]
    return message


async def _learn_device(
    client: nio.AsyncClient, user_id: str, device_id: str, timeout: float = 30.0
) -> None:
    """Query ``user_id``'s keys until ``device_id`` is among them (a server may answer
    without it while it resyncs a device list it just started to follow)."""
    assert client.olm is not None
    deadline = asyncio.get_running_loop().time() + timeout
    while device_id not in client.device_store[user_id]:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{client.user_id} never got keys of {user_id}/{device_id}")
        client.olm.users_for_key_query.add(user_id)
        resp = await client.keys_query()
        assert isinstance(resp, nio.KeysQueryResponse | nio.KeysQueryError), resp
        if device_id not in client.device_store[user_id]:
            await asyncio.sleep(0.3)  # nothing to poll but the query itself


async def _scenario(synapse: SynapsePeer, ours: RunningServer, store: Path, texts: Texts) -> None:
    alice = nio_client(ours.base_url, store / "alice")
    bob = nio_client(synapse.base_url, store / "bob")
    try:
        alice_keys = await register_with_keys(alice, name())
        bob_keys = await register_with_keys(bob, name())
        assert alice.device_id and bob.device_id

        created = await alice.room_create(
            name="secret plans",
            invite=[bob.user_id],
            initial_state=[nio.EnableEncryptionBuilder().as_dict()],
        )
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        await sync_until(bob, lambda _: room_id in bob.invited_rooms, "the invite over federation")
        joined = await bob.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined
        await sync_until(alice, lambda _: _joined(alice, room_id, bob.user_id), "Bob's join")
        await sync_until(bob, lambda _: _joined(bob, room_id, alice.user_id), "Bob's own join")
        assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted
        # /keys/query over federation, both ways.
        await _learn_device(alice, bob.user_id, bob.device_id)
        await _learn_device(bob, alice.user_id, alice.device_id)

        # Bob sends first, and Alice sends before syncing again: so neither has yet
        # received the other's Olm pre-key message and each must claim a one-time key of
        # the other's device over federation (rather than answer on an inbound session).
        sent = await bob.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": texts.to_ours},
            ignore_unverified_devices=True,
        )
        assert isinstance(sent, nio.RoomSendResponse), sent
        sent = await alice.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": texts.to_synapse},
            ignore_unverified_devices=True,
        )
        assert isinstance(sent, nio.RoomSendResponse), sent
        assert alice.olm is not None and bob.olm is not None
        bob_curve = bob.olm.account.identity_keys["curve25519"]
        alice_curve = alice.olm.account.identity_keys["curve25519"]
        assert alice.olm.session_store.get(bob_curve), "Alice made no Olm session to Bob"
        assert bob.olm.session_store.get(alice_curve), "Bob made no Olm session to Alice"

        got = await _receive(bob, room_id, alice.user_id, "Alice's encrypted message")
        assert got.decrypted and got.body == texts.to_synapse, got
        got = await _receive(alice, room_id, bob.user_id, "Bob's encrypted message")
        assert got.decrypted and got.body == texts.to_ours, got

        # Each server handed out exactly one of its user's one-time keys: the claim over
        # federation reached the right device (sync reports the remaining count).
        left = await sync_until(alice, lambda _: True, "a sync")
        assert left.device_key_count.signed_curve25519 == alice_keys.signed_curve25519_count - 1
        left = await sync_until(bob, lambda _: True, "a sync")
        assert left.device_key_count.signed_curve25519 == bob_keys.signed_curve25519_count - 1

        # Alice signs in on a second device: our m.device_list_update EDU tells Synapse,
        # which tells Bob; his next message's room key goes to that device too.
        phone = nio_client(ours.base_url, store / "alice-phone", user=alice.user_id)
        try:
            login = await phone.login(PASSWORD, device_name="Alice's phone")
            assert isinstance(login, nio.LoginResponse), login
            assert phone.device_id != alice.device_id
            up = await phone.keys_upload()
            assert isinstance(up, nio.KeysUploadResponse), up
            await sync_until(
                bob,
                lambda resp: alice.user_id in resp.device_list.changed,
                "the device list update for Alice's new device",
            )
            # As nio's sync loop would do on that change (room_send does not).
            assert phone.device_id
            await _learn_device(bob, alice.user_id, phone.device_id)
            sent = await bob.room_send(
                room_id,
                "m.room.message",
                {"msgtype": "m.text", "body": texts.to_new_device},
                ignore_unverified_devices=True,
            )
            assert isinstance(sent, nio.RoomSendResponse), sent
            got = await _receive(phone, room_id, bob.user_id, "Bob's message on the phone")
            assert got.decrypted and got.body == texts.to_new_device, got
            got = await _receive(alice, room_id, bob.user_id, "Bob's second message")
            assert got.decrypted and got.body == texts.to_new_device, got
        finally:
            await phone.close()

        # Control messages in clear: one from each side, in an unencrypted room.
        plain = await alice.room_create(name="plain room", invite=[bob.user_id])
        assert isinstance(plain, nio.RoomCreateResponse), plain
        await sync_until(bob, lambda _: plain.room_id in bob.invited_rooms, "the plain invite")
        joined = await bob.join(plain.room_id)
        assert isinstance(joined, nio.JoinResponse), joined
        await sync_until(bob, lambda _: _joined(bob, plain.room_id, bob.user_id), "plain join")
        await sync_until(alice, lambda _: _joined(alice, plain.room_id, bob.user_id), "his join")
        for client, body in ((alice, texts.clear_ours), (bob, texts.clear_synapse)):
            clear = await client.room_send(
                plain.room_id, "m.room.message", {"msgtype": "m.text", "body": body}
            )
            assert isinstance(clear, nio.RoomSendResponse), clear
        seen: list[str] = []

        def clear_arrived(resp: nio.SyncResponse) -> bool:
            events = _bodies(resp, plain.room_id, bob.user_id)
            seen.extend(e.body for e in events if isinstance(e, nio.RoomMessageText))
            return texts.clear_synapse in seen

        await sync_until(alice, clear_arrived, "Bob's clear message")
    finally:
        await alice.close()
        await bob.close()


def _text_columns(database: Path) -> str:
    """Every value of every column of every table, as text, read through SQLite itself
    (a long value spills over pages, which a search of the file's bytes could split)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out: list[str] = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        out.append(value.decode("utf-8", "replace"))
                    elif value is not None:
                        out.append(str(value))
    finally:
        conn.close()
    return "\n".join(out)


@pytest_twisted.ensureDeferred
async def test_megolm_both_ways_between_ours_and_synapse(
    synapse: SynapsePeer, ours: RunningServer, tmp_path: Path
) -> None:
    token = secrets.token_hex(8)
    texts = Texts(
        to_synapse=f"the eagle lands at dawn {token}",
        to_ours=f"the fox sleeps at noon {token}",
        to_new_device=f"the owl hunts at dusk {token}",
        clear_ours=f"nothing to hide here {token}",
        clear_synapse=f"nothing to hide there {token}",
    )
    store = tmp_path / "nio"
    store.mkdir()
    # nio's asyncio loop in a worker thread; the reactor keeps serving our server.
    await threads.deferToThread(asyncio.run, _scenario(synapse, ours, store, texts))

    assert ours.data_dir is not None
    data_dir = Path(ours.data_dir)
    raw = sqlite_bytes(data_dir)
    columns = _text_columns(data_dir / "homeserver.db")
    for contents, how in ((raw.decode("utf-8", "replace"), "file bytes"), (columns, "columns")):
        assert texts.clear_ours in contents, f"the {how} scan missed our clear message"
        assert texts.clear_synapse in contents, f"the {how} scan missed Synapse's clear message"
        assert MEGOLM in contents, f"no Megolm event in the {how}"
        assert texts.to_synapse not in contents, f"ours→Synapse plaintext in the {how}"
        assert texts.to_ours not in contents, f"Synapse→ours plaintext in the {how}"
        assert texts.to_new_device not in contents, f"new device's plaintext in the {how}"
