"""SyTest, the Matrix project's black-box homeserver suite, against our server.

    python scripts/sytest.py run [--all] [--update]   # CI: every test in tests/sytest/passing.txt must pass
    python scripts/sytest.py report [RESULTS_DIR]     # ours against Synapse's passes, by test file

SyTest itself lives beside the project in ``../shared/sytest`` (a pinned revision, a
homeserver plugin that starts our server, and ``synapse-passes.txt``: what Synapse passes
on this machine). Without it, ``run`` says so and passes: the suite is an outside
instrument, not part of the project.

``run`` runs, one SyTest process per test file (``run-files.sh``), the files that hold a
test we list in ``tests/sytest/passing.txt`` (``--all``: every file). A listed test that
does not pass makes its file run once more (SyTest starts real servers and helper servers
over the network, and a loaded machine can time one out); a listed test that fails twice
fails the run. Tests that pass but are not listed yet are printed; ``--update`` adds them
to the list, so the list only grows as the server passes more.
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
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SYTEST = Path(os.environ.get("SYTEST_DIR", REPO.parent / "shared" / "sytest"))
PASSING = REPO / "tests" / "sytest" / "passing.txt"
BIN_DIR = Path(sys.executable).parent

# SyTest's Perl dependencies from Debian (two more ship in ../shared/sytest/perl5lib).
PERL_PACKAGES = [
    "openssl",
    "libclass-method-modifiers-perl",
    "libdata-dump-perl",
    "libdbi-perl",
    "libdbd-pg-perl",
    "libdigest-hmac-perl",
    "libemail-address-xs-perl",
    "libemail-mime-perl",
    "libfile-slurper-perl",
    "libfuture-perl",
    "libio-async-perl",
    "libio-async-ssl-perl",
    "libio-socket-ip-perl",
    "libio-socket-ssl-perl",
    "libjson-perl",
    "libjson-xs-perl",
    "liblist-utilsby-perl",
    "libmodule-pluggable-perl",
    "libnet-async-http-perl",
    "libnet-ssleay-perl",
    "libstruct-dumb-perl",
    "liburi-perl",
    "libyaml-libyaml-perl",
    "libhttp-message-perl",
    "libdigest-sha-perl",
    "libcryptx-perl",
    "libmetrics-any-perl",
]

_TAP = re.compile(r"^(not ok|ok) \d+ (.*)$")
_SUBTESTS = re.compile(r" \(\d+ subtests\)$")

Test = tuple[str, str]  # (test file, test name)


def read_list(path: Path) -> list[Test]:
    tests: list[Test] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            file, name = line.split("\t", 1)
            tests.append((file, name))
    return tests


def write_list(path: Path, tests: set[Test]) -> None:
    header = (
        "# SyTest tests our server passes (test file, tab, test name): CI fails when one of\n"
        "# them fails. Grown with `python scripts/sytest.py run --all --update`.\n"
    )
    body = "".join(f"{file}\t{name}\n" for file, name in sorted(tests))
    path.write_text(header + body, encoding="utf-8")


def file_tag(test_file: str) -> str:
    """The name run-files.sh gives one test file's results."""
    return test_file.removeprefix("tests/").replace("/", "__").removesuffix(".pl")


def parse_tap(path: Path) -> dict[str, bool]:
    """Test name -> passed, from one SyTest TAP file (skips and expected failures left out)."""
    results: dict[str, bool] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _TAP.match(line)
        if match is None or "# skip" in line or "(expected fail)" in line:
            continue
        name = _SUBTESTS.sub("", match.group(2))
        results[name] = match.group(1) == "ok"
    return results


def all_test_files() -> list[str]:
    src = SYTEST / "src"
    files = []
    for path in sorted((src / "tests").rglob("*.pl")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if re.search(r"^\s*(test|multi_test)\b", text, re.MULTILINE):
            files.append(str(path.relative_to(src)))
    return files


def perl_ready() -> bool:
    check = ["perl", "-I", str(SYTEST / "perl5lib"), "-I", "lib", "-c", "run-tests.pl"]
    done = subprocess.run(check, cwd=SYTEST / "src", capture_output=True)
    return done.returncode == 0


def ensure_perl() -> None:
    if perl_ready():
        return
    print("Installing SyTest's Perl dependencies from Debian...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *PERL_PACKAGES], check=True, env=env)
    if not perl_ready():
        raise SystemExit("SyTest's Perl modules still do not load after installing them")


def run_files(files: list[str], results: Path) -> dict[Test, bool]:
    env = dict(os.environ, RESULTS=str(results), TAG="ours", OURS_BINDIR=str(BIN_DIR))
    env.setdefault("J", "2")
    subprocess.run(
        ["bash", str(SYTEST / "run-files.sh"), "ours", *files],
        env=env,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    outcome: dict[Test, bool] = {}
    for test_file in files:
        tap = results / "ours" / f"{file_tag(test_file)}.tap"
        if tap.exists():
            for name, passed in parse_tap(tap).items():
                outcome[(test_file, name)] = passed
    return outcome


def command_run(args: argparse.Namespace) -> int:
    if not (SYTEST / "run-files.sh").exists():
        print(f"SyTest skipped: {SYTEST} is absent (it ships in the project's shared/ folder).")
        return 0
    if os.environ.get("SKIP_SYTEST") == "1":
        print("SyTest skipped: SKIP_SYTEST=1.")
        return 0
    ensure_perl()
    listed = read_list(PASSING)
    files = all_test_files() if args.all else sorted({file for file, _ in listed})
    work = Path(tempfile.mkdtemp(prefix="sytest-"))
    try:
        outcome = run_files(files, work / "first")
        failing = [t for t in listed if not outcome.get(t, False)]
        if failing:
            retry_files = sorted({file for file, _ in failing})
            print(f"SyTest: {len(failing)} listed test(s) failed; retrying {retry_files}")
            outcome.update(run_files(retry_files, work / "retry"))
            flaked = [t for t in failing if outcome.get(t, False)]
            for file, name in flaked:
                print(f"  flaked (passed on retry): {file}: {name}")
            failing = [t for t in failing if not outcome.get(t, False)]
        new = sorted(t for t, ok in outcome.items() if ok and t not in set(listed))
        for file, name in new:
            print(f"  newly passing (not listed yet): {file}: {name}")
        if args.update and new:
            write_list(PASSING, set(listed) | set(new))
            print(f"Added {len(new)} test(s) to {PASSING.relative_to(REPO)}")
        for file, name in failing:
            print(f"  FAILED (listed): {file}: {name}")
        passed = len(listed) - len(failing)
        print(f"sytest: {passed} passed, {len(failing)} failed")
        if args.counts:
            Path(args.counts).write_text(json.dumps({"passed": passed, "failed": len(failing)}))
        return 1 if failing else 0
    finally:
        if args.keep:
            print(f"SyTest results kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def command_report(args: argparse.Namespace) -> int:
    synapse = read_list(SYTEST / "synapse-passes.txt")
    ours = set(read_list(PASSING))
    if args.results:
        ours |= _passes_in(Path(args.results))
    synapse_set = set(synapse)
    by_file_synapse = Counter(file for file, _ in synapse)
    by_file_ours = Counter(file for file, name in ours if (file, name) in synapse_set)
    print(f"{'test file':60} {'ours':>5} {'synapse':>7}")
    for file in sorted(by_file_synapse):
        mark = "" if by_file_ours[file] == by_file_synapse[file] else "  <"
        print(f"{file:60} {by_file_ours[file]:5} {by_file_synapse[file]:7}{mark}")
    total_ours = sum(by_file_ours.values())
    print(f"{'total':60} {total_ours:5} {len(synapse):7}")
    extra = sorted(t for t in ours if t not in synapse_set)
    if extra:
        print(f"\nPassed by ours and not by Synapse here: {len(extra)}")
        for file, name in extra:
            print(f"  {file}: {name}")
    return 0


def _passes_in(results: Path) -> set[Test]:
    tags = {file_tag(f): f for f in all_test_files()}
    passes: set[Test] = set()
    for tap in results.glob("*.tap"):
        test_file = tags.get(tap.stem)
        if test_file is not None:
            passes |= {(test_file, n) for n, ok in parse_tap(tap).items() if ok}
    return passes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run SyTest; every listed test must pass")
    run.add_argument("--all", action="store_true", help="run every test file, not only listed ones")
    run.add_argument("--update", action="store_true", help="add newly passing tests to the list")
    run.add_argument("--keep", action="store_true", help="keep the results directory")
    run.add_argument("--counts", help="write {passed, failed} of the listed tests to this file")
    run.set_defaults(func=command_run)
    report = sub.add_parser("report", help="ours against synapse-passes.txt, by test file")
    report.add_argument(
        "results", nargs="?", help="per-file TAP results of run-files.sh (RESULTS/TAG) to count too"
    )
    report.set_defaults(func=command_report)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
