"""Import speed of ``homeserver import-synapse``: fill a Synapse with many events, stop
it, import it, print events/s.

    python bench/import_bench.py --events 100000 [--rooms 20] [--concurrency 16]
        [--synapse-db sqlite|postgres] [--target sqlite|postgres] [--port 49600]

Events are made with concurrent ``/send`` calls (rate limits off) spread over several
rooms (Synapse serialises sends per room). Synapse comes from the interop venv
(tests/support/synapse.py). Ports: ``--port`` and ``--port + 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.databases import PG_ARGS, _admin_connection  # noqa: E402
from tests.support.federation import federation_config  # noqa: E402
from tests.support.synapse import SynapsePeer, synapse_python_with_postgres  # noqa: E402


def _call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for _ in range(50):
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            if e.code != 429:
                raise
            time.sleep(json.loads(e.read() or b"{}").get("retry_after_ms", 500) / 1000)
    raise RuntimeError(f"{path}: still rate limited")


def _create_pg_database(prefix: str) -> dict[str, Any]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = _admin_connection()
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
    conn.close()
    return {"name": "psycopg2", "args": {"database": name, **PG_ARGS}}


def _drop_pg_database(database: dict[str, Any]) -> None:
    conn = _admin_connection()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {database['args']['database']} WITH (FORCE)")
    conn.close()


def fill(peer: SynapsePeer, events: int, rooms: int, concurrency: int) -> float:
    base = peer.base_url
    reg = _call(
        base,
        "POST",
        "/_matrix/client/v3/register",
        {"username": "bench", "password": "bench password", "auth": {"type": "m.login.dummy"}},
    )
    token = reg["access_token"]
    room_ids = [
        _call(base, "POST", "/_matrix/client/v3/createRoom", {"name": f"room {i}"}, token)[
            "room_id"
        ]
        for i in range(rooms)
    ]
    done = [0]
    lock = threading.Lock()
    started = time.monotonic()

    def send(i: int) -> None:
        room = room_ids[i % rooms]
        _call(
            base,
            "PUT",
            f"/_matrix/client/v3/rooms/{urllib.request.quote(room)}/send/m.room.message/t{i}",
            {"msgtype": "m.text", "body": f"message number {i} of the import benchmark"},
            token,
        )
        with lock:
            done[0] += 1
            if done[0] % 5000 == 0:
                rate = done[0] / (time.monotonic() - started)
                print(f"  {done[0]} events sent ({rate:.0f}/s)", flush=True)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, range(events)))
    return time.monotonic() - started


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--synapse-db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--target", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--port", type=int, default=49600)
    p.add_argument(
        "--synapse-dir",
        help="Import a Synapse filled by an earlier --keep run (its folder) instead.",
    )
    p.add_argument("--keep", action="store_true", help="Keep the work folder (printed).")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="import-bench-"))
    cleanup: list[dict[str, Any]] = []
    peer = SynapsePeer(args.synapse_dir or str(work / "synapse"))
    peer.client_port, peer.fed_port = args.port, args.port + 1
    if args.synapse_dir:
        config = yaml.safe_load(Path(peer.config_path).read_text())
        peer.server_name = str(config["server_name"])
        peer.fed_port = int(peer.server_name.rsplit(":", 1)[1])
    else:
        peer.server_name = f"127.0.0.1:{peer.fed_port}"
        peer.base_url = f"http://127.0.0.1:{peer.client_port}"
        peer.write_config()
        config = yaml.safe_load(Path(peer.config_path).read_text())
        for key in ("rc_message", "rc_joins_per_room", "rc_room_creation"):
            config[key] = {"per_second": 1_000_000, "burst_count": 1_000_000}
        if args.synapse_db == "postgres":
            synapse_python_with_postgres()
            config["database"] = _create_pg_database("bench_synapse")
            if not args.keep:
                cleanup.append(config["database"])
        Path(peer.config_path).write_text(yaml.safe_dump(config))
    try:
        if not args.synapse_dir:
            peer.start()
            try:
                print(f"Filling Synapse with {args.events} events...", flush=True)
                fill_s = fill(peer, args.events, args.rooms, args.concurrency)
                print(f"  filled in {fill_s:.0f}s ({args.events / fill_s:.0f} events/s)")
            finally:
                peer.stop()

        ours_dir = work / "ours"
        ours_dir.mkdir()
        if args.target == "postgres":
            target = _create_pg_database("bench_ours")
            cleanup.append(target)
        else:
            target = {"name": "sqlite3", "args": {"database": str(ours_dir / "homeserver.db")}}
        our_config = federation_config(str(ours_dir), target, peer.fed_port)
        our_config["listeners"][0]["port"] = args.port + 2
        our_config_path = ours_dir / "homeserver.yaml"
        our_config_path.write_text(yaml.safe_dump(our_config))
        code = "import sys; from homeserver.cli import main; sys.exit(main())"
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", code, "import-synapse", "--synapse-config", peer.config_path]
            + ["-c", str(our_config_path), "--batch-size", str(args.batch_size)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            cwd=str(REPO_ROOT),
        )
        wall = time.monotonic() - started
        print(result.stdout[-4000:])
        if result.returncode != 0:
            print(result.stderr[-4000:], file=sys.stderr)
            return 1
        rows = re.findall(r"^  (\S+)\s+(\d+)\s+(\d+)$", result.stdout, re.M)
        events = next(int(o) for n, _, o in rows if n == "events")
        total_rows = sum(int(o) for _, _, o in rows)
        took = re.search(r"Import took ([0-9.]+)s", result.stdout)
        inner = float(took[1]) if took else wall
        print(
            f"RESULT import (without start-up) {inner:.1f}s: {events / inner:.0f} events/s,"
            f" {total_rows / inner:.0f} rows/s"
        )
        print(
            f"RESULT synapse={config['database']['name']} target={args.target} events={events}"
            f" import_wall={wall:.1f}s events_per_s={events / wall:.0f}"
            f" rows={total_rows} rows_per_s={total_rows / wall:.0f}"
        )
        return 0
    finally:
        for database in cleanup:
            _drop_pg_database(database)
        if args.keep:
            print(f"Kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
