"""``homeserver import-synapse``, the rooms half: a Synapse filled by matrix-nio clients
(an encrypted room, a public room with an alias, a topic change, a redaction, a read
receipt) is stopped and imported — interrupted after a few batches, then resumed — and
our server then answers /messages, /state and /members as Synapse did, the encrypted
message still decrypts on the client's kept Olm/Megolm store, and new events can be sent
into the imported rooms.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nio
import pytest
import yaml
from PIL import Image

from tests.interop.test_import_synapse import synapse_postgres
from tests.support.client import q
from tests.support.databases import database_config
from tests.support.federation import federation_config
from tests.support.nio_e2ee import nio_client, register_with_keys, sync
from tests.support.samples import REPO_ROOT
from tests.support.subprocess_server import ServerProcess, free_port, wait_until_up
from tests.support.synapse import SynapsePeer, synapse_python_with_postgres

SECRET = "the encrypted plans survive the move"


def _call(base_url: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    req = urllib.request.Request(
        base_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def _run_import(
    synapse_config: str, our_config: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    code = "import sys; from homeserver.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, "import-synapse", "--synapse-config", synapse_config]
        + ["-c", our_config, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=str(REPO_ROOT),
    )


@dataclass
class Session:
    user_id: str
    device_id: str
    token: str


@dataclass
class Filled:
    alice: Session | None = None
    bob: Session | None = None
    secret_room: str = ""
    town: str = ""
    alias: str = ""
    redacted: str = ""
    receipt_event: str = ""
    views: dict[str, Any] = field(default_factory=dict)


async def _fill(base_url: str, server_name: str, stores: Path) -> Filled:
    out = Filled()
    alice = nio_client(base_url, stores / "alice")
    bob = nio_client(base_url, stores / "bob")
    try:
        await register_with_keys(alice, "alice")
        await register_with_keys(bob, "bob")
        created = await alice.room_create(
            name="secret plans",
            invite=[bob.user_id],
            initial_state=[nio.EnableEncryptionBuilder().as_dict()],
        )
        assert isinstance(created, nio.RoomCreateResponse), created
        out.secret_room = created.room_id
        assert isinstance(await bob.join(out.secret_room), nio.JoinResponse)
        await sync(bob)
        await sync(alice)
        sent = await alice.room_send(
            out.secret_room,
            "m.room.message",
            {"msgtype": "m.text", "body": SECRET},
            ignore_unverified_devices=True,
        )
        assert isinstance(sent, nio.RoomSendResponse), sent
        got: list[str] = []
        for _ in range(20):
            resp = await sync(bob)
            room = resp.rooms.join.get(out.secret_room)
            got += [e.body for e in (room.timeline.events if room else []) if hasattr(e, "body")]
            if got:
                break
        assert got == [SECRET], got

        out.alias = f"#town:{server_name}"
        town = await alice.room_create(
            visibility=nio.RoomVisibility.public, alias="town", name="Town", topic="first topic"
        )
        assert isinstance(town, nio.RoomCreateResponse), town
        out.town = town.room_id
        assert isinstance(await bob.join(out.town), nio.JoinResponse)
        await sync(alice)
        await sync(bob)
        ids = []
        for i in range(12):
            r = await alice.room_send(
                out.town, "m.room.message", {"msgtype": "m.text", "body": f"hello {i}"}
            )
            assert isinstance(r, nio.RoomSendResponse), r
            ids.append(r.event_id)
        await alice.room_put_state(out.town, "m.room.topic", {"topic": "second topic"})
        # Over 100 state changes: Synapse stores some state groups whole rather than
        # as a delta (MAX_STATE_DELTA_HOPS), so the state before such an event must be
        # rebuilt (from replaces_state, or whole for a new key).
        for i in range(110):
            if i % 2:
                r = await alice.room_put_state(out.town, "m.room.topic", {"topic": f"topic {i}"})
            else:
                r = await alice.room_put_state(out.town, "org.example.key", {"i": i}, f"k{i}")
            assert isinstance(r, nio.RoomPutStateResponse), r
        redaction = await alice.room_redact(out.town, ids[3], reason="oops")
        assert isinstance(redaction, nio.RoomRedactResponse), redaction
        out.redacted = ids[3]
        out.receipt_event = ids[-1]
        receipt = await bob.update_receipt_marker(out.town, ids[-1])
        assert isinstance(receipt, nio.UpdateReceiptMarkerResponse), receipt
        assert alice.access_token and bob.access_token
        out.alice = Session(alice.user_id, str(alice.device_id), alice.access_token)
        out.bob = Session(bob.user_id, str(bob.device_id), bob.access_token)
    finally:
        await alice.close()
        await bob.close()
    return out


def _essential(event: dict[str, Any]) -> dict[str, Any]:
    keep = ("event_id", "type", "sender", "state_key", "content", "origin_server_ts", "redacts")
    return {k: event[k] for k in keep if k in event}


def _views(base_url: str, filled: Filled) -> dict[str, Any]:
    """What both servers must answer alike."""
    assert filled.alice is not None
    tok = filled.alice.token
    out: dict[str, Any] = {}
    for room in (filled.secret_room, filled.town):
        r = q(room)
        msgs = _call(
            base_url, "GET", f"/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=100", None, tok
        )
        out[f"messages {room}"] = [_essential(e) for e in msgs["chunk"]]
        state = _call(base_url, "GET", f"/_matrix/client/v3/rooms/{r}/state", None, tok)
        out[f"state {room}"] = sorted(json.dumps(_essential(e), sort_keys=True) for e in state)
        members = _call(base_url, "GET", f"/_matrix/client/v3/rooms/{r}/members", None, tok)
        out[f"members {room}"] = sorted(
            json.dumps(_essential(e), sort_keys=True) for e in members["chunk"]
        )
    alias = _call(
        base_url, "GET", f"/_matrix/client/v3/directory/room/{q(filled.alias)}", None, tok
    )
    out["alias"] = alias["room_id"]
    public = _call(base_url, "GET", "/_matrix/client/v3/publicRooms", None, tok)
    out["public"] = sorted(r["room_id"] for r in public["chunk"])
    return out


def _our_config(
    peer: SynapsePeer, data_dir: Path, client_port: int, database: dict[str, Any]
) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    fed_port = int(peer.server_name.rsplit(":", 1)[1])
    config = federation_config(str(data_dir), database, fed_port)
    config["listeners"][0]["port"] = client_port
    path = data_dir / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path)


def _start_ours(config_path: str, data_dir: Path, port: int) -> ServerProcess:
    code = "import sys; from homeserver.cli import main; sys.exit(main())"
    err = data_dir / "stderr.log"
    with open(data_dir / "stdout.log", "ab") as out, open(err, "ab") as errf:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "-c", config_path],
            cwd=str(REPO_ROOT),
            stdout=out,
            stderr=errf,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", "", err)
    wait_until_up(server)
    return server


def _table(database: dict[str, Any], sql: str) -> list[tuple[Any, ...]]:
    if database["name"] == "sqlite3":
        conn = sqlite3.connect(database["args"]["database"])
        try:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()
    import psycopg2

    args = {k: v for k, v in database["args"].items() if k not in ("cp_min", "cp_max")}
    args["dbname"] = args.pop("database")
    pg = psycopg2.connect(**args)
    try:
        with pg.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        pg.close()


_COMPARED = [
    "SELECT stream_ordering, event_id, topological_ordering, redacted_by, outlier,"
    " rejected_reason FROM events ORDER BY stream_ordering",
    "SELECT event_id, prev_event_id FROM event_edges ORDER BY 1, 2",
    "SELECT event_id, state_group, state_group_before FROM event_to_state_groups ORDER BY 1",
    "SELECT state_group, type, state_key, event_id FROM state_group_entries ORDER BY 1, 2, 3",
    "SELECT room_id, type, state_key, event_id FROM current_state_events ORDER BY 1, 2, 3",
    "SELECT room_id, event_id FROM event_forward_extremities ORDER BY 1, 2",
    "SELECT event_id, membership FROM room_memberships ORDER BY 1",
    "SELECT room_id, user_id, event_id FROM receipts ORDER BY 1, 2",
]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_rooms_survive_the_import(kind: str, tmp_path: Path) -> None:
    """``kind``: Synapse's database and ours."""
    with ExitStack() as stack:
        peer = SynapsePeer(str(tmp_path / "synapse"))
        peer.write_config()
        if kind == "postgres":
            synapse_python_with_postgres()
            config = yaml.safe_load(Path(peer.config_path).read_text())
            config["database"] = stack.enter_context(synapse_postgres())
            Path(peer.config_path).write_text(yaml.safe_dump(config))
        resumed_db = stack.enter_context(database_config(kind, str(tmp_path / "ours")))
        straight_db = stack.enter_context(database_config(kind, str(tmp_path / "straight")))
        remote = None
        if kind == "sqlite":
            # Another Synapse in the public room: it keeps federating with us.
            remote = SynapsePeer(str(tmp_path / "remote"))
            remote.write_config()
            remote.start()
            stack.callback(remote.stop)
        _scenario(peer, tmp_path, resumed_db, straight_db, remote)


def _poll_body(base_url: str, room_id: str, token: str, body: str) -> None:
    for _ in range(120):
        msgs = _call(
            base_url,
            "GET",
            f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit=10",
            None,
            token,
        )
        if any(e.get("content", {}).get("body") == body for e in msgs["chunk"]):
            return
        time.sleep(0.5)
    raise AssertionError(f"{body!r} did not arrive at {base_url}")


def _scenario(
    peer: SynapsePeer,
    tmp_path: Path,
    resumed_db: dict[str, Any],
    straight_db: dict[str, Any],
    remote: SynapsePeer | None,
) -> None:
    peer.start()
    carol = ""
    remote_mxc = ""
    remote_image = b""
    try:
        filled = asyncio.run(_fill(peer.base_url, peer.server_name, tmp_path))
        if remote is not None:
            reg = _call(
                remote.base_url,
                "POST",
                "/_matrix/client/v3/register",
                {"username": "carol", "password": "carol pw", "auth": {"type": "m.login.dummy"}},
            )
            carol = reg["access_token"]
            joined = _call(
                remote.base_url, "POST", f"/_matrix/client/v3/join/{q(filled.alias)}", {}, carol
            )
            assert joined["room_id"] == filled.town
            # carol's image, fetched by alice through the old server: in its remote
            # media cache, with thumbnails.
            image = io.BytesIO()
            Image.new("RGB", (320, 240), (20, 90, 200)).save(image, "PNG")
            remote_image = image.getvalue()
            req = urllib.request.Request(
                remote.base_url + "/_matrix/media/v3/upload?filename=blue.png",
                data=remote_image,
                method="POST",
                headers={"Content-Type": "image/png", "Authorization": f"Bearer {carol}"},
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                remote_mxc = json.loads(resp.read())["content_uri"].removeprefix("mxc://")
            assert filled.alice is not None
            req = urllib.request.Request(
                f"{peer.base_url}/_matrix/client/v1/media/download/{remote_mxc}",
                headers={"Authorization": f"Bearer {filled.alice.token}"},
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.read() == remote_image
        before = _views(peer.base_url, filled)
        # A to-device message bob's device has not synced yet.
        assert filled.alice is not None and filled.bob is not None
        _call(
            peer.base_url,
            "PUT",
            "/_matrix/client/v3/sendToDevice/org.example.ping/ping1",
            {"messages": {filled.bob.user_id: {filled.bob.device_id: {"waiting": True}}}},
            filled.alice.token,
        )
    finally:
        peer.stop()
    assert filled.alice is not None and filled.bob is not None
    assert before["alias"] == filled.town and filled.town in before["public"]

    # An import stopped after two batches of events, then resumed...
    port = free_port()
    resumed_dir = tmp_path / "ours"
    config = _our_config(peer, resumed_dir, port, resumed_db)
    stopped = _run_import(
        peer.config_path, config, "--batch-size", "5", "--stop-after-batches", "2"
    )
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "run the same command again to resume" in stopped.stdout
    result = _run_import(peer.config_path, config, "--batch-size", "5")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Resuming an interrupted import" in result.stdout
    assert "FAILED" not in result.stdout, result.stdout
    # ...writes the same as one run straight through.
    straight_dir = tmp_path / "straight"
    straight = _run_import(
        peer.config_path, _our_config(peer, straight_dir, free_port(), straight_db)
    )
    assert straight.returncode == 0, straight.stdout + straight.stderr
    for sql in _COMPARED:
        ours = _table(resumed_db, sql)
        assert ours, sql
        assert ours == _table(straight_db, sql), sql
    _check_state_before(resumed_db)
    # History is neither pushed again nor counted as unread.
    [(top,)] = _table(resumed_db, "SELECT MAX(stream_ordering) FROM events")
    assert _table(resumed_db, "SELECT stream_ordering FROM push_actions_position") == [(top,)]
    # A finished import is not run twice.
    again = _run_import(peer.config_path, config)
    assert again.returncode == 1 and "finished import" in again.stderr

    server = _start_ours(config, resumed_dir, port)
    try:
        after = _views(server.base_url, filled)
        for key, value in before.items():
            assert after[key] == value, key
        # The receipt.
        sync_resp = _call(
            server.base_url, "GET", "/_matrix/client/v3/sync", None, filled.alice.token
        )
        town = sync_resp["rooms"]["join"][filled.town]
        receipts = [e for e in town["ephemeral"]["events"] if e["type"] == "m.receipt"]
        assert receipts and filled.receipt_event in receipts[0]["content"], town["ephemeral"]
        # The to-device message waited for bob's device.
        bob_sync = _call(server.base_url, "GET", "/_matrix/client/v3/sync", None, filled.bob.token)
        pings = [
            e
            for e in bob_sync.get("to_device", {}).get("events", [])
            if e["type"] == "org.example.ping"
        ]
        assert [p["content"] for p in pings] == [{"waiting": True}], bob_sync.get("to_device")
        assert pings[0]["sender"] == filled.alice.user_id
        # The encrypted message decrypts on bob's kept store.
        assert asyncio.run(_decrypt_again(server.base_url, filled, tmp_path / "bob")) == SECRET
        # Alice sends into the imported room; it comes back in /messages.
        sent = _call(
            server.base_url,
            "PUT",
            f"/_matrix/client/v3/rooms/{q(filled.town)}/send/m.room.message/after-import",
            {"msgtype": "m.text", "body": "sent on the new server"},
            filled.alice.token,
        )
        msgs = _call(
            server.base_url,
            "GET",
            f"/_matrix/client/v3/rooms/{q(filled.town)}/messages?dir=b&limit=2",
            None,
            filled.bob.token,
        )
        assert msgs["chunk"][0]["event_id"] == sent["event_id"]
        prev = _call(
            server.base_url,
            "GET",
            f"/_matrix/client/v3/rooms/{q(filled.town)}/context/{q(sent['event_id'])}",
            None,
            filled.bob.token,
        )
        assert prev["event"]["content"]["body"] == "sent on the new server"
        if remote is not None:
            # The remote media came from Synapse's cache, with its thumbnails.
            origin, media_id = remote_mxc.split("/", 1)
            rows = _table(
                resumed_db,
                f"SELECT size FROM media WHERE server_name = '{origin}'"
                f" AND media_id = '{media_id}'",
            )
            assert rows == [(len(remote_image),)], rows
            assert (
                _table(
                    resumed_db,
                    f"SELECT COUNT(*) FROM media_thumbnails WHERE media_id = '{media_id}'",
                )[0][0]
                > 0
            )
            req = urllib.request.Request(
                f"{server.base_url}/_matrix/client/v1/media/download/{remote_mxc}",
                headers={"Authorization": f"Bearer {filled.alice.token}"},
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.read() == remote_image
            # The other Synapse gets our event and sends us its own.
            _poll_body(remote.base_url, filled.town, carol, "sent on the new server")
            _call(
                remote.base_url,
                "PUT",
                f"/_matrix/client/v3/rooms/{q(filled.town)}/send/m.room.message/from-remote",
                {"msgtype": "m.text", "body": "the remote still talks to us"},
                carol,
            )
            _poll_body(
                server.base_url, filled.town, filled.alice.token, "the remote still talks to us"
            )
    finally:
        status = server.stop()
    assert status == 0, server.stderr()


def _check_state_before(database: dict[str, Any]) -> None:
    """In these unforked rooms the state before each event is the state after its only
    prev event: check it for every event, through our state groups."""
    prev_group = dict(_table(database, "SELECT id, prev_group FROM state_groups"))
    entries: dict[int, dict[tuple[str, str], str]] = {}
    for g, t, sk, eid in _table(
        database, "SELECT state_group, type, state_key, event_id FROM state_group_entries"
    ):
        entries.setdefault(int(g), {})[(t, sk)] = eid

    def state(group: int) -> dict[tuple[str, str], str]:
        chain = []
        current: int | None = group
        while current is not None:
            chain.append(current)
            current = prev_group[current]
        out: dict[tuple[str, str], str] = {}
        for g in reversed(chain):
            out.update(entries.get(g, {}))
        return out

    groups = {
        e: (int(a), int(b))
        for e, a, b in _table(
            database, "SELECT event_id, state_group, state_group_before FROM event_to_state_groups"
        )
    }
    prevs: dict[str, list[str]] = {}
    for e, p in _table(database, "SELECT event_id, prev_event_id FROM event_edges"):
        prevs.setdefault(e, []).append(p)
    whole = {g for g, p in prev_group.items() if p is None}
    checked = 0
    for event_id, (_, before) in groups.items():
        ps = prevs.get(event_id, [])
        if len(ps) == 1 and ps[0] in groups:
            assert state(before) == state(groups[ps[0]][0]), event_id
            checked += 1
    assert checked > 100
    # Some groups Synapse stored whole, past the first of each room.
    assert len(whole) > 2, whole


async def _decrypt_again(base_url: str, filled: Filled, store: Path) -> str:
    assert filled.bob is not None
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    bob = nio.AsyncClient(base_url, filled.bob.user_id, store_path=str(store), config=config)
    try:
        bob.restore_login(filled.bob.user_id, filled.bob.device_id, filled.bob.token)
        resp = await bob.room_messages(filled.secret_room, start="", limit=50)
        assert isinstance(resp, nio.RoomMessagesResponse), resp
        bodies = [e.body for e in resp.chunk if isinstance(e, nio.RoomMessageText)]
        assert bodies, resp.chunk
        return bodies[0]
    finally:
        await bob.close()
