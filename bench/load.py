#!/usr/bin/env python3
"""Load generator for any Matrix homeserver: one busy room, every member syncing.

Against ``--base-url`` it registers ``--users`` accounts (the ``m.login.dummy``
user-interactive flow, or Synapse's shared-secret admin API with ``--shared-secret``),
has user 0 create a public room that all others join, keeps one ``/sync`` long-poll
open per user, and then has ``--senders`` of them send messages at ``--rate`` msg/s in
total (0: each sender back-to-back) for ``--warmup`` + ``--duration`` seconds. Every
message carries a unique id and its send time. It reports:

- send throughput (successful sends started in the measured window / its length);
- send latency: request start to the 200 answer;
- delivery latency: send start to the message appearing in a member's /sync, for
  every member (the sender included), at p50/p95/p99/max;
- deliveries lost: member x message deliveries not seen once sending stopped and a
  ``--grace`` period passed. A ``limited`` sync timeline is filled in through
  ``/messages`` (as a client would); those deliveries count, at the time they arrive.

Bounds: every loop has a count or time limit; requests have timeouts; in-flight sends
are capped. Traffic goes only to ``--base-url``, which must be a loopback address unless
``--allow-remote`` is given. Needs only aiohttp (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import ipaddress
import json
import math
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
from report import host_busy_s, own_cpu_s, percentiles, print_table, process_cpu_s

V3 = "/_matrix/client/v3"
PASSWORD = "bench-password-0123456789"
MAX_429_RETRIES = 20
MAX_SYNC_ERRORS = 50  # per user; then that user's sync loop gives up
MAX_BACKFILL_PAGES = 10
MAX_WAIT_S = 600.0  # no single phase of the run may take longer than this


T = TypeVar("T")


def q(value: str) -> str:
    return quote(value, safe="")


class BenchError(Exception):
    pass


# HTTP -------------------------------------------------------------------------------


class Http:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.server_header = ""

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> tuple[int, Any]:
        """One request; 429s are retried (bounded) after ``retry_after_ms``."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        for _ in range(MAX_429_RETRIES):
            async with self.session.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                params=params,
                timeout=timeout,
            ) as resp:
                raw = await resp.read()
                self.server_header = resp.headers.get("Server", self.server_header)
                data = json.loads(raw) if raw else None
                if resp.status != 429:
                    return resp.status, data
                wait_ms = (data or {}).get("retry_after_ms", 500)
                await asyncio.sleep(min(max(wait_ms, 10), 5000) / 1000)
        raise BenchError(f"{method} {path}: still rate limited after {MAX_429_RETRIES} tries")

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = await self.call(method, path, body, **kw)
        if status != 200:
            raise BenchError(f"{method} {path} -> {status} {data}")
        return data


# Accounts and the room --------------------------------------------------------------


async def register_dummy(http: Http, username: str) -> tuple[str, str]:
    """Register through UIA: the first POST gets a session, the second does m.login.dummy."""
    body: dict[str, Any] = {
        "username": username,
        "password": PASSWORD,
        "initial_device_display_name": "bench",
    }
    status, data = await http.call("POST", f"{V3}/register", body)
    if status == 401:
        flows = [f.get("stages") for f in data.get("flows", [])]
        if ["m.login.dummy"] not in flows:
            raise BenchError(f"server offers no m.login.dummy registration flow: {flows}")
        body["auth"] = {"type": "m.login.dummy", "session": data.get("session")}
        status, data = await http.call("POST", f"{V3}/register", body)
    if status != 200:
        raise BenchError(f"registering {username}: {status} {data}")
    return str(data["user_id"]), str(data["access_token"])


def registration_mac(secret: str, nonce: str, username: str, password: str) -> str:
    """Synapse's shared-secret MAC: HMAC-SHA1 of nonce NUL user NUL password NUL notadmin."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    for part in (nonce, username, password):
        mac.update(part.encode("utf-8"))
        mac.update(b"\x00")
    mac.update(b"notadmin")
    return mac.hexdigest()


async def register_shared_secret(http: Http, username: str, secret: str) -> tuple[str, str]:
    path = "/_synapse/admin/v1/register"
    nonce = (await http.ok("GET", path))["nonce"]
    body = {
        "nonce": nonce,
        "username": username,
        "password": PASSWORD,
        "admin": False,
        "mac": registration_mac(secret, nonce, username, PASSWORD),
    }
    data = await http.ok("POST", path, body)
    return str(data["user_id"]), str(data["access_token"])


async def bounded_map(limit: int, func: Callable[[T], Awaitable[Any]], items: list[T]) -> list[Any]:
    """``func`` over ``items``, at most ``limit`` at a time; results in order."""
    sem = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with sem:
            return await func(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


# State of the run -------------------------------------------------------------------


@dataclass
class User:
    index: int
    user_id: str
    token: str
    since: str = ""
    arrivals: dict[str, float] = field(default_factory=dict)  # bench id -> monotonic
    seen_event_ids: set[str] = field(default_factory=set)
    syncs: int = 0
    sync_errors: int = 0
    limited: int = 0
    backfilled: int = 0


@dataclass
class Sent:
    bench_id: str
    sender: int
    start: float
    measured: bool
    end: float = 0.0
    ok: bool = False
    error: str = ""


@dataclass
class Run:
    args: argparse.Namespace
    http: Http
    run_id: str
    room_id: str = ""
    users: list[User] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    stopping: bool = False
    loadavg_before: float = 0.0
    filter_ids: dict[int, str] = field(default_factory=dict)  # user index -> uploaded id
    timings: dict[str, float] = field(default_factory=dict)

    def filter_param(self, user: User) -> str:
        """The uploaded filter's id (as most clients do), or the filter inline."""
        return self.filter_ids.get(user.index) or json.dumps(
            self.filter_json, separators=(",", ":")
        )

    @property
    def filter_json(self) -> dict[str, Any]:
        if self.args.ephemeral:  # as a chat client asks: receipts, typing and presence too
            return {
                "room": {
                    "timeline": {"limit": self.args.timeline_limit},
                    "state": {"lazy_load_members": True},
                }
            }
        return {
            "room": {
                "rooms": [self.room_id],
                "timeline": {"limit": self.args.timeline_limit},
                "state": {"lazy_load_members": True},
                "ephemeral": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
            },
            "presence": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        }


# /sync ------------------------------------------------------------------------------


def record(run: Run, user: User, events: list[dict[str, Any]], now: float) -> bool:
    """Note each bench message's first arrival; True if an event was already seen."""
    overlap = False
    for ev in events:
        event_id = ev.get("event_id", "")
        if event_id in user.seen_event_ids:
            overlap = True
            continue
        user.seen_event_ids.add(event_id)
        content = ev.get("content") or {}
        if ev.get("type") == "m.room.message" and content.get("bench_run") == run.run_id:
            user.arrivals.setdefault(str(content.get("bench_id")), now)
    return overlap


async def backfill(run: Run, user: User, prev_batch: str) -> None:
    """A limited timeline skipped events: page back until events already seen."""
    params = {"dir": "b", "limit": "100", "from": prev_batch}
    path = f"{V3}/rooms/{q(run.room_id)}/messages"
    for _ in range(MAX_BACKFILL_PAGES):
        page = await run.http.ok("GET", path, token=user.token, params=params)
        chunk = page.get("chunk", [])
        before = len(user.arrivals)
        overlap = record(run, user, chunk, time.monotonic())
        user.backfilled += len(user.arrivals) - before
        if overlap or not chunk or "end" not in page:
            return
        params["from"] = page["end"]


def handle_sync(run: Run, user: User, data: dict[str, Any]) -> str | None:
    """Record a sync response; the prev_batch to backfill from if it was limited."""
    now = time.monotonic()
    user.since = data["next_batch"]
    room = data.get("rooms", {}).get("join", {}).get(run.room_id)
    if not room:
        return None
    timeline = room.get("timeline", {})
    events = timeline.get("events", [])
    overlap = record(run, user, events, now)
    if timeline.get("limited") and not overlap and timeline.get("prev_batch"):
        user.limited += 1
        return str(timeline["prev_batch"])
    return None


async def initial_sync(run: Run, user: User) -> None:
    if run.args.filter == "upload":
        path = f"{V3}/user/{q(user.user_id)}/filter"
        data = await run.http.ok("POST", path, run.filter_json, token=user.token)
        run.filter_ids[user.index] = str(data["filter_id"])
    params = {"filter": run.filter_param(user), "timeout": "0"}
    data = await run.http.ok("GET", f"{V3}/sync", token=user.token, params=params, timeout_s=120)
    handle_sync(run, user, data)
    user.limited = 0


WS_PATH = "/_matrix/client/unstable/org.homeserver.ws/stream"


async def websocket_loop(run: Run, user: User) -> None:
    """Our server's WebSocket instead of /sync long-polls: each text frame carries an
    incremental /sync body; a dropped connection resumes from the last next_batch."""
    while not run.stopping and user.sync_errors < MAX_SYNC_ERRORS:
        params = {"filter": run.filter_param(user), "since": user.since}
        try:
            async with run.http.session.ws_connect(
                run.http.base_url + WS_PATH,
                headers={"Authorization": f"Bearer {user.token}"},
                params=params,
                protocols=("m.json",),
                max_msg_size=0,
            ) as ws:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = json.loads(msg.data)
                    if "next_batch" not in data:
                        continue  # a reply to a call (none are made here)
                    user.syncs += 1
                    prev_batch = handle_sync(run, user, data)
                    if prev_batch is not None:
                        await backfill(run, user, prev_batch)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - counted, retried (bounded)
            user.sync_errors += 1
            if user.sync_errors == 1:
                print(f"websocket error for {user.user_id}: {e!r}", file=sys.stderr)
            await asyncio.sleep(0.5)


async def sync_loop(run: Run, user: User) -> None:
    if run.args.transport == "websocket":
        await websocket_loop(run, user)
        return
    timeout_ms = run.args.sync_timeout_ms
    while not run.stopping and user.sync_errors < MAX_SYNC_ERRORS:
        params = {"filter": run.filter_param(user), "timeout": str(timeout_ms), "since": user.since}
        try:
            status, data = await run.http.call(
                "GET",
                f"{V3}/sync",
                token=user.token,
                params=params,
                timeout_s=timeout_ms / 1000 + 60,
            )
            if status != 200:
                raise BenchError(f"/sync -> {status} {data}")
            user.syncs += 1
            prev_batch = handle_sync(run, user, data)
            if prev_batch is not None:
                await backfill(run, user, prev_batch)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - counted, retried (bounded)
            user.sync_errors += 1
            if user.sync_errors == 1:
                print(f"sync error for {user.user_id}: {e!r}", file=sys.stderr)
            await asyncio.sleep(0.5)


# Sending ----------------------------------------------------------------------------


async def send_one(run: Run, sender: User, seq: int, start: float, measured: bool) -> None:
    bench_id = f"{sender.index}-{seq}"
    sent = Sent(bench_id, sender.index, start, measured)
    run.sent.append(sent)
    ts_ms = int(time.time() * 1000)
    content = {
        "msgtype": "m.text",
        "body": f"bench message {bench_id} sent at {ts_ms}",
        "bench_run": run.run_id,
        "bench_id": bench_id,
        "bench_ts": ts_ms,
    }
    path = f"{V3}/rooms/{q(run.room_id)}/send/m.room.message/{run.run_id}-{bench_id}"
    try:
        status, data = await run.http.call("PUT", path, content, token=sender.token, timeout_s=60)
        sent.ok = status == 200 and isinstance((data or {}).get("event_id"), str)
        if not sent.ok:
            sent.error = f"{status} {data}"[:200]
    except Exception as e:  # noqa: BLE001 - a failed send is a result, not a crash
        sent.error = repr(e)[:200]
    sent.end = time.monotonic()


async def send_back_to_back(run: Run, t0: float, measure_from: float, until: float) -> None:
    cap = run.args.max_messages // run.args.senders

    async def sender_loop(sender: User) -> None:
        for seq in range(cap):
            start = time.monotonic()
            if start >= until:
                return
            await send_one(run, sender, seq, start, start >= measure_from)

    await asyncio.gather(*(sender_loop(u) for u in run.users[: run.args.senders]))


async def send_at_rate(run: Run, t0: float, measure_from: float, until: float) -> None:
    """Open loop: message k is due at t0 + k/rate, whatever earlier sends are doing."""
    rate, senders = run.args.rate, run.users[: run.args.senders]
    inflight: set[asyncio.Task[None]] = set()
    total = min(run.args.max_messages, math.ceil((until - t0) * rate))
    for k in range(total):
        due = t0 + k / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while len(inflight) >= run.args.max_inflight:
            await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        sender = senders[k % len(senders)]
        start = time.monotonic()
        task = asyncio.create_task(
            send_one(run, sender, k // len(senders), start, due >= measure_from)
        )
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:
        await asyncio.wait(inflight)


# Results ----------------------------------------------------------------------------


async def wait_for_stragglers(run: Run, grace_s: float) -> None:
    """Until every successful send reached every member, or ``grace_s`` has passed."""
    ok = [s.bench_id for s in run.sent if s.ok]
    missing = [(u, b) for u in run.users for b in ok if b not in u.arrivals]
    deadline = time.monotonic() + grace_s
    while missing and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        missing = [(u, b) for u, b in missing if b not in u.arrivals]


def summarise(run: Run, cpu: dict[str, float]) -> dict[str, Any]:
    args = run.args
    measured = [s for s in run.sent if s.measured]
    ok = [s for s in measured if s.ok]
    deliveries = [
        u.arrivals[s.bench_id] - s.start for s in ok for u in run.users if s.bench_id in u.arrivals
    ]
    expected = len(ok) * len(run.users)
    errors = [s.error for s in measured if not s.ok]
    return {
        "base_url": args.base_url,
        "server": run.http.server_header,
        "users": args.users,
        "senders": args.senders,
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "grace_s": args.grace,
        "timeline_limit": args.timeline_limit,
        "filter": args.filter,
        "cpus": os.cpu_count(),
        "loadavg_before": run.loadavg_before,
        "setup_s": run.timings,
        "messages_sent": len(ok),
        "send_errors": len(errors),
        "send_error_examples": errors[:3],
        "throughput_msg_s": len(ok) / args.duration,
        "send_latency_ms": percentiles([s.end - s.start for s in ok]),
        "delivery_latency_ms": percentiles(deliveries),
        "deliveries_expected": expected,
        "deliveries_seen": len(deliveries),
        "deliveries_lost": expected - len(deliveries),
        "limited_syncs": sum(u.limited for u in run.users),
        "backfilled_deliveries": sum(u.backfilled for u in run.users),
        "sync_requests": sum(u.syncs for u in run.users),
        "sync_errors": sum(u.sync_errors for u in run.users),
        "cpu_percent": cpu,
    }


# The run ----------------------------------------------------------------------------


async def timed(run: Run, name: str, coro: Awaitable[Any]) -> Any:
    start = time.monotonic()
    result = await asyncio.wait_for(coro, MAX_WAIT_S)
    run.timings[name] = time.monotonic() - start
    return result


async def setup(run: Run) -> None:
    args, http = run.args, run.http
    await http.ok("GET", "/_matrix/client/versions")
    with open("/proc/loadavg", encoding="ascii") as f:
        run.loadavg_before = float(f.read().split()[0])
    prefix = args.prefix or f"bench{secrets.token_hex(3)}_"

    async def register(i: int) -> tuple[str, str]:
        if args.shared_secret:
            return await register_shared_secret(http, f"{prefix}{i}", args.shared_secret)
        return await register_dummy(http, f"{prefix}{i}")

    limit = args.setup_concurrency
    accounts = await timed(run, "register", bounded_map(limit, register, list(range(args.users))))
    run.users = [User(i, uid, tok) for i, (uid, tok) in enumerate(accounts)]
    owner = run.users[0]
    created = await timed(
        run,
        "create room",
        http.ok(
            "POST",
            f"{V3}/createRoom",
            {"preset": "public_chat", "name": f"bench {run.run_id}"},
            token=owner.token,
        ),
    )
    run.room_id = created["room_id"]

    async def join(user: User) -> None:
        await http.ok("POST", f"{V3}/join/{q(run.room_id)}", {}, token=user.token)

    await timed(run, "join", bounded_map(limit, join, run.users[1:]))
    await timed(run, "initial sync", bounded_map(limit, lambda u: initial_sync(run, u), run.users))


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    limit = args.users + args.max_inflight + args.senders + 16
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    async with aiohttp.ClientSession(connector=connector) as session:
        run = Run(args, Http(session, args.base_url), secrets.token_hex(4))
        await setup(run)
        syncs = [asyncio.create_task(sync_loop(run, u)) for u in run.users]
        try:
            await asyncio.sleep(0.5)  # let every long-poll reach the server
            t0 = time.monotonic()
            measure_from, until = t0 + args.warmup, t0 + args.warmup + args.duration
            cpu_start: dict[str, float] = {}
            cpu_end: dict[str, float] = {}

            async def sample_cpu(into: dict[str, float], at: float) -> None:
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                into["load generator"] = own_cpu_s()
                into["whole host"] = host_busy_s()
                if args.server_pid:
                    into["server"] = process_cpu_s(args.server_pid)

            sampler = asyncio.gather(
                sample_cpu(cpu_start, measure_from), sample_cpu(cpu_end, until)
            )
            send = send_back_to_back if args.rate == 0 else send_at_rate
            await asyncio.wait_for(
                send(run, t0, measure_from, until), args.warmup + args.duration + 120
            )
            await sampler
            await wait_for_stragglers(run, args.grace)
        finally:
            run.stopping = True
            for task in syncs:
                task.cancel()
            await asyncio.gather(*syncs, return_exceptions=True)
        cpu = {
            k: 100 * (cpu_end[k] - cpu_start[k]) / args.duration for k in cpu_start if k in cpu_end
        }
        return summarise(run, cpu)


def check_target(base_url: str, allow_remote: bool) -> None:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"--base-url must be an http(s) URL, not {base_url!r}")
    if allow_remote or parts.hostname == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing non-loopback target {parts.hostname} (see --allow-remote)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8008", help="homeserver client API")
    p.add_argument("--users", type=int, default=50, help="room members, each syncing")
    p.add_argument("--senders", type=int, default=5, help="how many members send")
    p.add_argument("--rate", type=float, default=0, help="total msg/s; 0 = back-to-back")
    p.add_argument("--duration", type=float, default=30, help="measured seconds of sending")
    p.add_argument("--warmup", type=float, default=5, help="unmeasured seconds of sending first")
    p.add_argument("--grace", type=float, default=10, help="seconds to wait for late deliveries")
    p.add_argument("--shared-secret", help="register through /_synapse/admin/v1/register")
    p.add_argument("--prefix", help="user name prefix (default: random per run)")
    p.add_argument("--timeline-limit", type=int, default=100, help="sync filter timeline limit")
    p.add_argument(
        "--filter",
        choices=("upload", "inline"),
        default="upload",
        help="upload the sync filter and pass its id (as Element does), or pass it inline",
    )
    p.add_argument(
        "--ephemeral",
        action="store_true",
        help="sync receipts, typing, presence and account data too (as a chat client does)",
    )
    p.add_argument("--sync-timeout-ms", type=int, default=30000)
    p.add_argument(
        "--transport",
        choices=("sync", "websocket"),
        default="sync",
        help="/sync long-polls, or this project's WebSocket (docs/websocket.md)",
    )
    p.add_argument("--setup-concurrency", type=int, default=20)
    p.add_argument("--max-inflight", type=int, default=200, help="cap on concurrent sends")
    p.add_argument("--max-messages", type=int, default=200_000, help="cap on messages sent")
    p.add_argument("--server-pid", type=int, help="also report this process's CPU use")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON ('-': stdout)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    args = p.parse_args(argv)
    check_target(args.base_url, args.allow_remote)
    if args.users < 1 or not 1 <= args.senders <= args.users:
        p.error("need --users >= 1 and 1 <= --senders <= --users")
    if args.rate < 0 or args.duration <= 0 or args.warmup < 0 or args.grace < 0:
        p.error("--rate, --warmup and --grace must be >= 0, --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = asyncio.run(bench(args))
    except (TimeoutError, BenchError, aiohttp.ClientError) as e:
        print(f"benchmark failed: {e!r}", file=sys.stderr)
        return 1
    print_table(results)
    if args.json == "-":
        print(json.dumps(results, indent=2))
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
