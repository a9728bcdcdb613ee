"""One main process and two sync workers, real subprocesses on PostgreSQL and Redis.

Bob long-polls /sync on a worker while Alice writes on the main process: each change
(messages, a receipt, typing, a to-device message, account data) reaches him once, in
order, within a bound. His /messages on the other worker agrees. A worker SIGKILLed in
the middle of a burst loses nothing: the other continues from his last ``next_batch``.
Redis dropping every subscriber loses nothing either.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.databases import postgres_database, require_postgres
from tests.support.subprocess_server import (
    NO_RATE_LIMITS,
    ServerProcess,
    generate_config,
    start_process,
    start_server,
    wait_until_up,
)

REPO = Path(__file__).resolve().parents[2]
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))
# This suite's port range is 47000-47199 (inside the ephemeral range: a port may be
# some connection's source port, so each is checked free first).
PORT_RANGE = range(47000, 47200)
BOUND_S = 10.0  # every change must reach Bob within this


def _require_redis() -> Any:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as e:
        reason = f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}: {e}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return client


def free_ports(count: int) -> list[int]:
    start = os.getpid() % len(PORT_RANGE)
    ports: list[int] = []
    for i in range(len(PORT_RANGE)):
        port = PORT_RANGE[(start + i) % len(PORT_RANGE)]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise AssertionError(f"fewer than {count} free ports in {PORT_RANGE}")


def call(
    base: str, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def ok(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    status, answer = call(base, method, path, body, token)
    assert status == 200, (method, path, status, answer)
    return answer


@dataclass
class User:
    user_id: str
    token: str
    device_id: str


def register(base: str, name: str) -> User:
    answer = ok(
        base,
        "POST",
        "/_matrix/client/v3/register",
        {"username": name, "password": "correct horse battery", "auth": {"type": "m.login.dummy"}},
    )
    return User(answer["user_id"], answer["access_token"], answer["device_id"])


@dataclass
class Seen:
    """What Bob's syncs delivered, in arrival order."""

    timeline: list[str] = field(default_factory=list)
    ephemeral: list[dict[str, Any]] = field(default_factory=list)
    to_device: list[dict[str, Any]] = field(default_factory=list)
    account_data: list[dict[str, Any]] = field(default_factory=list)
    presence: list[dict[str, Any]] = field(default_factory=list)
    device_lists_changed: list[str] = field(default_factory=list)
    next_batch: str = ""


def sync_until(
    base: str, bob: User, room_id: str, seen: Seen, done: Callable[[Seen], bool]
) -> float:
    """Long-poll until ``done``; the seconds it took (failing past ``BOUND_S``)."""
    start = time.monotonic()
    while not done(seen):
        left = BOUND_S - (time.monotonic() - start)
        assert left > 0, f"not delivered within {BOUND_S}s: {seen}"
        query = urllib.parse.urlencode(
            {
                "since": seen.next_batch,
                "timeout": int(min(left, 5) * 1000),
                # Every event, never a limited timeline: "none skipped" is checked.
                "filter": json.dumps({"room": {"timeline": {"limit": 200}}}),
            }
        )
        answer = ok(base, "GET", f"/_matrix/client/v3/sync?{query}", token=bob.token)
        seen.next_batch = answer["next_batch"]
        room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
        seen.timeline += [ev["event_id"] for ev in room.get("timeline", {}).get("events", [])]
        seen.ephemeral += room.get("ephemeral", {}).get("events", [])
        seen.to_device += answer.get("to_device", {}).get("events", [])
        seen.account_data += answer.get("account_data", {}).get("events", [])
        seen.presence += answer.get("presence", {}).get("events", [])
        seen.device_lists_changed += answer.get("device_lists", {}).get("changed", [])
    return time.monotonic() - start


@pytest.fixture
def deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ServerProcess, list[ServerProcess], Any]]:
    require_postgres()
    # The processes run this checkout's code (not whichever one the venv installed).
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    admin = _require_redis()
    main_port, repl_port, w1_port, w2_port = free_ports(4)
    with postgres_database() as pg:
        config = generate_config(tmp_path, main_port)
        shared = {
            **NO_RATE_LIMITS,
            "database": {"name": "psycopg2", "args": {**pg, "cp_min": 1, "cp_max": 5}},
            "bcrypt_rounds": 4,
            "redis": {"enabled": True, "host": REDIS_HOST, "port": REDIS_PORT},
            "worker_replication_secret": "a shared secret",
            "instance_map": {"main": {"host": "127.0.0.1", "port": repl_port}},
            "listeners": [
                {
                    "port": main_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "resources": [{"names": ["client", "federation"]}],
                },
                {
                    "port": repl_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "resources": [{"names": ["replication"]}],
                },
            ],
        }
        overrides = tmp_path / "shared.yaml"
        overrides.write_text(yaml.safe_dump(shared), encoding="utf-8")
        processes: list[ServerProcess] = []
        try:
            main = start_server(tmp_path, main_port, config, overrides)
            processes.append(main)
            workers = []
            for name, port in (("sync1", w1_port), ("sync2", w2_port)):
                folder = tmp_path / name
                folder.mkdir()
                worker_file = folder / "worker.yaml"
                worker_file.write_text(
                    yaml.safe_dump(
                        {
                            "worker_app": "synapse.app.generic_worker",
                            "worker_name": name,
                            "worker_listeners": [
                                {
                                    "port": port,
                                    "bind_addresses": ["127.0.0.1"],
                                    "type": "http",
                                    "resources": [{"names": ["client"]}],
                                }
                            ],
                        }
                    ),
                    encoding="utf-8",
                )
                proc = start_process(folder, config, overrides, worker_file)
                worker = ServerProcess(
                    proc, f"http://127.0.0.1:{port}", main.server_name, folder / "stderr.log"
                )
                processes.append(worker)
                wait_until_up(worker)
                workers.append(worker)
            yield main, workers, admin
        finally:
            for process in processes:
                process.stop()


def test_sync_workers_follow_the_main_process(
    deployment: tuple[ServerProcess, list[ServerProcess], Any],
) -> None:
    main, (w1, w2), redis_admin = deployment
    m = main.base_url
    alice, bob = register(m, "alice"), register(m, "bob")
    room_id = ok(
        m, "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, alice.token
    )["room_id"]
    ok(m, "POST", f"/_matrix/client/v3/join/{room_id}", {}, bob.token)

    # A worker serves reads only: a write there is refused as unknown, as on Synapse.
    status, answer = call(
        w1.base_url,
        "PUT",
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/x",
        {},
        bob.token,
    )
    assert (status, answer["errcode"]) == (404, "M_UNRECOGNIZED")
    assert (
        ok(w1.base_url, "GET", "/_matrix/client/v3/account/whoami", token=bob.token)["user_id"]
        == bob.user_id
    )

    seen = Seen()
    sync_until(w1.base_url, bob, room_id, seen, lambda s: bool(s.next_batch))
    txn = iter(range(1_000_000))

    def send(body: str) -> str:
        path = f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t{next(txn)}"
        return str(ok(m, "PUT", path, {"msgtype": "m.text", "body": body}, alice.token)["event_id"])

    latencies: dict[str, float] = {}
    # Messages, while Bob's long-poll is parked on worker 1.
    with ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        sent: list[str] = []
        future = pool.submit(
            sync_until,
            w1.base_url,
            bob,
            room_id,
            seen,
            lambda s: len(sent) == 3 and set(sent) <= set(s.timeline),
        )
        for i in range(3):
            sent.append(send(f"message {i}"))
        future.result(timeout=BOUND_S + 5)
        latencies["messages"] = time.monotonic() - start
    assert seen.timeline[-3:] == sent

    # A receipt.
    ok(m, "POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{sent[-1]}", {}, alice.token)
    latencies["receipt"] = sync_until(
        w1.base_url,
        bob,
        room_id,
        seen,
        lambda s: any(e["type"] == "m.receipt" and sent[-1] in e["content"] for e in s.ephemeral),
    )
    # Typing (held in the main process's memory, mirrored on the workers).
    ok(
        m,
        "PUT",
        f"/_matrix/client/v3/rooms/{room_id}/typing/{alice.user_id}",
        {"typing": True, "timeout": 30000},
        alice.token,
    )
    latencies["typing"] = sync_until(
        w1.base_url,
        bob,
        room_id,
        seen,
        lambda s: any(
            e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"]
            for e in s.ephemeral
        ),
    )
    # A to-device message.
    ok(
        m,
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.test/td1",
        {"messages": {bob.user_id: {bob.device_id: {"n": 1}}}},
        alice.token,
    )
    latencies["to_device"] = sync_until(
        w1.base_url, bob, room_id, seen, lambda s: any(e["type"] == "m.test" for e in s.to_device)
    )
    # Account data (Bob's own, written on the main process).
    ok(
        m,
        "PUT",
        f"/_matrix/client/v3/user/{bob.user_id}/account_data/m.test.worker",
        {"v": 1},
        bob.token,
    )
    latencies["account_data"] = sync_until(
        w1.base_url,
        bob,
        room_id,
        seen,
        lambda s: any(e["type"] == "m.test.worker" for e in s.account_data),
    )
    # Presence: Alice's change on the main process reaches Bob's sync on the worker;
    # Bob, who only ever syncs on workers, is online on the main process.
    ok(
        m,
        "PUT",
        f"/_matrix/client/v3/presence/{alice.user_id}/status",
        {"presence": "online", "status_msg": "via main"},
        alice.token,
    )
    latencies["presence"] = sync_until(
        w1.base_url,
        bob,
        room_id,
        seen,
        lambda s: any(
            e["sender"] == alice.user_id and e["content"].get("status_msg") == "via main"
            for e in s.presence
        ),
    )
    # Alice logs in on a new device: her device list changed, Bob (in her room) hears.
    second = ok(
        m,
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "correct horse battery",
        },
    )
    latencies["device_lists"] = sync_until(
        w1.base_url, bob, room_id, seen, lambda s: alice.user_id in s.device_lists_changed
    )
    # That device's token, cached by worker 2, dies with a logout on the main process.
    whoami = "/_matrix/client/v3/account/whoami"
    assert ok(w2.base_url, "GET", whoami, token=second["access_token"])["user_id"] == alice.user_id
    ok(m, "POST", "/_matrix/client/v3/logout", {}, second["access_token"])
    # The worker hears of it over the bus (milliseconds later; polled, bounded).
    deadline = time.monotonic() + BOUND_S
    while True:
        status, answer = call(w2.base_url, "GET", whoami, token=second["access_token"])
        if status != 200:
            break
        assert time.monotonic() < deadline, "the worker still accepts a dead token"
        time.sleep(0.02)
    assert (status, answer.get("errcode")) == (401, "M_UNKNOWN_TOKEN")
    # Carol has done nothing but register: offline, until her first sync on a worker.
    carol = register(m, "carol")
    carol_status = f"/_matrix/client/v3/presence/{carol.user_id}/status"
    assert ok(m, "GET", carol_status, token=carol.token)["presence"] == "offline"
    ok(w2.base_url, "GET", "/_matrix/client/v3/sync?timeout=0", token=carol.token)
    deadline = time.monotonic() + BOUND_S
    while ok(m, "GET", carol_status, token=carol.token)["presence"] != "online":
        assert time.monotonic() < deadline, "a sync on a worker did not make Carol online"
        time.sleep(0.05)  # polling the main process's answer, bounded
    assert [e for e in seen.to_device if e["type"] == "m.test"] == [
        {"type": "m.test", "sender": alice.user_id, "content": {"n": 1}}
    ]
    assert len(seen.timeline) == len(set(seen.timeline))

    # /messages on worker 2 agrees with what worker 1's sync delivered.
    history = ok(
        w2.base_url,
        "GET",
        f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50",
        token=bob.token,
    )
    backwards = [ev["event_id"] for ev in history["chunk"]]
    assert backwards[:3] == list(reversed(sent))

    # Worker 1 is SIGKILLed in the middle of a burst; Bob goes on with worker 2.
    acked: list[str] = []
    halfway = threading.Event()

    def burst() -> None:
        for i in range(30):
            acked.append(send(f"burst {i}"))
            if i == 10:
                halfway.set()

    with ThreadPoolExecutor(2) as pool:
        sender = pool.submit(burst)
        parked = pool.submit(
            sync_until, w1.base_url, bob, room_id, seen, lambda s: halfway.is_set()
        )
        assert halfway.wait(BOUND_S)
        w1.kill()
        try:
            parked.result(timeout=BOUND_S)
        except Exception:
            pass  # its connection died with the worker: what it got before is kept
        sender.result(timeout=60)
    before_kill = len(seen.timeline)
    latencies["after_kill"] = sync_until(
        w2.base_url, bob, room_id, seen, lambda s: set(acked) <= set(s.timeline)
    )
    assert len(seen.timeline) == len(set(seen.timeline)), "an event arrived twice"
    assert w1.proc.returncode is not None
    delivered = [e for e in seen.timeline if e in set(acked)]
    assert delivered == acked, "out of order or skipped"
    assert before_kill <= len(seen.timeline)

    # Redis drops every subscriber; what is sent afterwards still arrives.
    ours = f"homeserver.bus.{main.server_name}/"
    subscribers = [c for c in redis_admin.client_list(_type="pubsub") if c["name"].startswith(ours)]
    assert len(subscribers) == 2  # main and worker 2 (worker 1 is dead)
    for client in subscribers:
        redis_admin.client_kill_filter(_id=client["id"])
    after = [send(f"after redis {i}") for i in range(3)]
    latencies["after_redis"] = sync_until(
        w2.base_url, bob, room_id, seen, lambda s: set(after) <= set(s.timeline)
    )
    assert seen.timeline[-3:] == after
    print("latencies (s):", {k: round(v, 3) for k, v in latencies.items()})
