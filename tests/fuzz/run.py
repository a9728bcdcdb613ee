"""The long fuzz run, by hand: ``python -m tests.fuzz.run --examples 200 --db postgres``.

Starts one server (the database kind given), fuzzes every operation of both APIs (or
those whose label contains ``--only``), prints a line per operation and a summary:
requests sent, operations, time, and each finding with the request that shows it. The
exit status is 1 when anything was found. ``--seed`` picks another stream of inputs
(the default, no seed, is the derandomized stream the CI test uses).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter

from tests.fuzz.engine import fuzz_operation, load_schema, schema_operations
from tests.fuzz.target import FuzzTarget

APIS = ("client-server", "server-server")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=200, help="Examples per operation.")
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--seed", type=int, default=None, help="Random seed (default: derandomized).")
    p.add_argument("--only", default="", help="Fuzz only operations whose label contains this.")
    p.add_argument("--api", choices=APIS, action="append", help="One API only (repeatable).")
    p.add_argument("--report", default="", help="Also write the summary as JSON here.")
    args = p.parse_args(argv)

    started = time.monotonic()
    total = 0
    statuses: Counter[int] = Counter()
    findings: list[tuple[str, str]] = []
    per_operation: dict[str, dict[int, int]] = {}
    operations = 0
    with (
        tempfile.TemporaryDirectory(prefix="fuzz-") as data_dir,
        FuzzTarget(data_dir, args.db) as target,
    ):
        for api in args.api or APIS:
            for op in schema_operations(load_schema(api)):
                if args.only not in op.label:
                    continue
                t0 = time.monotonic()
                report = fuzz_operation(op, target, api, args.examples, args.seed)
                operations += 1
                total += report.requests
                statuses.update(report.statuses)
                per_operation[op.label] = dict(report.statuses)
                findings += [(op.label, f) for f in report.findings]
                mark = f"  FOUND {len(report.findings)}" if report.findings else ""
                print(
                    f"{report.requests:6d} req {time.monotonic() - t0:6.1f} s  {op.label}{mark}",
                    flush=True,
                )
                for finding in report.findings:
                    print(f"    {finding}", flush=True)
    elapsed = time.monotonic() - started
    print(
        f"\n{total} requests over {operations} operations on {args.db} in {elapsed:.0f} s; "
        f"statuses {dict(sorted(statuses.items()))}; {len(findings)} findings"
    )
    for label, finding in findings:
        print(f"\n=== {label}\n{finding}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "requests": total,
                    "operations": operations,
                    "database": args.db,
                    "seconds": round(elapsed),
                    "statuses": dict(statuses),
                    "statuses_per_operation": per_operation,
                    "findings": [{"operation": op, "finding": f} for op, f in findings],
                },
                f,
                indent=1,
            )
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
