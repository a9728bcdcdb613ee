"""Figures for bench/load.py: percentiles, CPU counters from /proc, the printed table."""

from __future__ import annotations

import math
import os
import resource
from typing import Any


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"count": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return {
        "count": len(ordered),
        "p50": rank(50) * 1000,
        "p95": rank(95) * 1000,
        "p99": rank(99) * 1000,
        "max": ordered[-1] * 1000,
    }


def print_table(r: dict[str, Any]) -> None:
    rate = "back-to-back" if r["rate"] == 0 else f"{r['rate']:g} msg/s"
    print(f"\nserver        {r['base_url']}  ({r['server'] or 'no Server header'})")
    print(
        f"load          {r['users']} users, {r['senders']} senders, {rate}, "
        f"{r['duration_s']:g} s measured after {r['warmup_s']:g} s warm-up"
    )
    setup = ", ".join(f"{k} {v:.2f} s" for k, v in r["setup_s"].items())
    print(f"setup         {setup}")
    print(
        f"host          {r['cpus']} CPUs, load average {r['loadavg_before']:.2f} before the run\n"
    )
    print(f"{'latency (ms)':<18}{'count':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    for label, key in (("send", "send_latency_ms"), ("delivery", "delivery_latency_ms")):
        p = r[key]
        print(
            f"{label:<18}{p['count']:>9}{p['p50']:>9.1f}{p['p95']:>9.1f}"
            f"{p['p99']:>9.1f}{p['max']:>9.1f}"
        )
    lost_pct = (
        100 * r["deliveries_lost"] / r["deliveries_expected"] if r["deliveries_expected"] else 0
    )
    rows = [
        ("send throughput", f"{r['throughput_msg_s']:.1f} msg/s"),
        ("messages sent", f"{r['messages_sent']} ok, {r['send_errors']} failed"),
        (
            "deliveries",
            f"{r['deliveries_seen']} of {r['deliveries_expected']} seen, "
            f"{r['deliveries_lost']} lost ({lost_pct:.3f}%)",
        ),
        ("limited syncs", f"{r['limited_syncs']} ({r['backfilled_deliveries']} via /messages)"),
        ("sync requests", f"{r['sync_requests']} ({r['sync_errors']} errors)"),
        ("CPU, % of a core", ", ".join(f"{k} {v:.0f}%" for k, v in r["cpu_percent"].items())),
    ]
    print()
    for label, value in rows:
        print(f"{label:<18}{value}")
    for example in r["send_error_examples"]:
        print(f"send error: {example}")


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy_s() -> float:
    """CPU seconds all processes on this machine have used (every core summed)."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
