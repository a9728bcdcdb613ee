"""Memory held by idle connections: N /sync long-polls, then N WebSockets.

Starts our homeserver as a subprocess (SQLite, 127.0.0.1, a fresh data directory),
registers a few users, then opens N idle ``/sync`` long-polls (each from a current
``next_batch``, so it waits) and N idle WebSockets (``since`` given, so nothing is
pushed), and prints the server's RSS (``VmRSS`` of /proc/<pid>/status) before and after
each step, per connection. Only loopback traffic; bounded in count and time.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/idle_connections.py                 # N=1000 of each
    .venv/bin/python bench/idle_connections.py --websockets 10000 --long-polls 0
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.subprocess_server import (  # noqa: E402
    NO_RATE_LIMITS,
    ServerProcess,
    free_port,
    generate_config,
    start_process,
    wait_until_up,
    write_overrides,
)

WS_PATH = "/_matrix/client/unstable/org.homeserver.ws/stream"
BATCH = 200  # connections opened at once


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_fd_limit(wanted: int) -> None:
    """Connections are file descriptors on both sides; the server inherits this limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    print(f"fd limit: {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")


async def settled_rss(pid: int, seconds: float = 3.0) -> int:
    """RSS once it stops moving (the server finishes what the last batch started)."""
    await asyncio.sleep(seconds)
    return rss_kib(pid)


async def register(http: aiohttp.ClientSession, base: str, name: str) -> tuple[str, str]:
    body = {"username": name, "password": "bench-password", "auth": {"type": "m.login.dummy"}}
    async with http.post(f"{base}/_matrix/client/v3/register", json=body) as resp:
        data = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"register {name}: {resp.status} {data}")
    token = data["access_token"]
    async with http.get(
        f"{base}/_matrix/client/v3/sync", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        since = (await resp.json())["next_batch"]
    return token, since


async def run(args: argparse.Namespace) -> None:
    raise_fd_limit(2 * (args.long_polls + args.websockets) + 1000)
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
        tmp_path = Path(tmp)
        port = free_port()
        config = generate_config(tmp_path, port)
        overrides = write_overrides(
            tmp_path,
            {
                **NO_RATE_LIMITS,
                "bcrypt_rounds": 4,
                "listeners": [
                    {
                        "port": port,
                        "bind_addresses": ["127.0.0.1"],
                        "type": "http",
                        "resources": [{"names": ["client"]}],
                    }
                ],
                # Pings every 30 s and a 30 s long-poll inside each WebSocket (defaults).
            },
        )
        proc = start_process(tmp_path, config, overrides)
        server = ServerProcess(proc, f"http://127.0.0.1:{port}", f"localhost:{port}", tmp_path)
        try:
            wait_until_up(server)
            results = await measure(
                server.base_url, server.proc.pid, args.long_polls, args.websockets, args.users
            )
            print(
                "summary (bytes of server RSS per idle connection):",
                {k: round(v) for k, v in results.items()},
            )
        finally:
            server.stop()


async def measure(
    base: str, pid: int, long_polls: int, websockets: int, user_count: int = 50
) -> dict[str, float]:
    """Open the idle connections against a running server; bytes of its RSS per
    connection, by kind ("long-poll", "websocket")."""
    raise_fd_limit(2 * (long_polls + websockets) + 1000)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        prefix = f"idle{int(time.time()) % 100000}_"
        users = [await register(http, base, f"{prefix}{i}") for i in range(user_count)]
        gc.collect()
        start = await settled_rss(pid)
        print(f"server RSS after start-up and {user_count} users: {start} KiB")
        results: dict[str, Any] = {}

        polls: list[asyncio.Task[Any]] = []
        if long_polls:

            async def long_poll(i: int) -> None:
                token, since = users[i % len(users)]
                url = f"{base}/_matrix/client/v3/sync?since={since}&timeout=600000"
                async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
                    await r.read()

            polls = [asyncio.ensure_future(long_poll(i)) for i in range(long_polls)]
            before = start
            after = await settled_rss(pid, 5.0)
            per = (after - before) * 1024 / long_polls
            results["long-poll"] = per
            print(
                f"{long_polls} idle /sync long-polls: RSS {before} -> {after} KiB, "
                f"{per:.0f} bytes ({per / 1024:.2f} KiB) per connection"
            )

        if websockets:
            before = await settled_rss(pid, 1.0)
            sockets: list[aiohttp.ClientWebSocketResponse] = []
            started = time.monotonic()
            for first in range(0, websockets, BATCH):

                async def open_ws(i: int) -> aiohttp.ClientWebSocketResponse:
                    token, since = users[i % len(users)]
                    return await http.ws_connect(
                        f"{base}{WS_PATH}?since={since}",
                        headers={"Authorization": f"Bearer {token}"},
                        protocols=("m.json",),
                        autoping=True,
                        heartbeat=None,
                        compress=0,
                    )

                count = min(BATCH, websockets - first)
                sockets += await asyncio.gather(*(open_ws(first + j) for j in range(count)))
            print(f"opened {len(sockets)} WebSockets in {time.monotonic() - started:.1f} s")
            after = await settled_rss(pid, 5.0)
            per = (after - before) * 1024 / websockets
            results["websocket"] = per
            print(
                f"{websockets} idle WebSockets: RSS {before} -> {after} KiB, "
                f"{per:.0f} bytes ({per / 1024:.2f} KiB) per connection"
            )
            # Still alive? One call on the last connection.
            await sockets[-1].send_json({"id": "p", "method": "ping"})
            reply = await asyncio.wait_for(sockets[-1].receive_json(), 10)
            assert reply == {"id": "p", "result": {}}, reply
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

        for task in polls:
            task.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long-polls", type=int, default=1000, help="idle /sync long-polls")
    parser.add_argument("--websockets", type=int, default=1000, help="idle WebSockets")
    parser.add_argument("--users", type=int, default=50, help="users the connections share")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
