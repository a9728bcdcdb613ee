"""``homeserver import-synapse``: move a stopped Synapse server's data into ours.

homeserver import-synapse --synapse-config SYNAPSE_YAML -c homeserver.yaml
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Any

import yaml

from crypto.signing_key import decode_verify_key, key_id, read_signing_keys, verify_key_base64
from synapse_compat.import_synapse.importer import (
    ImportRefused,
    SynapseImporter,
    copy_signing_key,
    target_is_empty,
)
from synapse_compat.import_synapse.rooms import (
    ImportInterrupted,
    Progress,
    RoomImporter,
    get_checkpoints,
    set_checkpoint_txn,
)
from synapse_compat.import_synapse.source import SynapseDatabase


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="homeserver import-synapse",
        description="Import a stopped Synapse server's database into an empty one of ours.",
    )
    p.add_argument("--synapse-config", required=True, help="Synapse's homeserver.yaml.")
    p.add_argument(
        "-c",
        "--config-path",
        action="append",
        default=[],
        required=True,
        metavar="CONFIG_FILE",
        help="Our config file(s); the import writes to its database and signing key.",
    )
    p.add_argument("--batch-size", type=int, default=1000, help="Rows written per transaction.")
    # For tests of resuming: stop after this many event batches, as an interruption.
    p.add_argument("--stop-after-batches", type=int, default=None, help=argparse.SUPPRESS)
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _is_synapse_command(args: list[str]) -> bool:
    """Synapse's main process or a worker (``python -m synapse.app.X``, the
    ``synapse_homeserver``/``synapse_worker`` scripts), not this import."""
    if "import-synapse" in args:
        return False
    return any(
        "synapse.app." in a or os.path.basename(a) in ("synapse_homeserver", "synapse_worker")
        for a in args
    )


def _synapse_processes(config_path: str) -> list[int]:
    """Processes (Linux /proc) running Synapse with this config file."""
    target = os.path.realpath(config_path)
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if not _is_synapse_command(args):
            continue
        values = [a.split("=", 1)[1] if a.startswith("--config-path=") else a for a in args]
        cwd = ""
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            pass
        for value in values:
            path = value if os.path.isabs(value) else os.path.join(cwd, value)
            if os.path.realpath(path) == target:
                found.append(int(entry))
                break
    return found


def _listening_ports(synapse_config: dict[str, Any]) -> list[int]:
    """Synapse's TCP listener ports that accept connections right now."""
    busy = []
    for listener in synapse_config.get("listeners") or []:
        port = listener.get("port")
        if not isinstance(port, int) or listener.get("path"):
            continue
        addresses = listener.get("bind_addresses") or ["127.0.0.1"]
        for address in addresses:
            host = "127.0.0.1" if address in ("0.0.0.0", "", "::") else address
            try:
                with socket.create_connection((host, port), timeout=1):
                    busy.append(port)
                    break
            except OSError:
                continue
    return busy


def synapse_running(synapse_config: dict[str, Any], config_path: str) -> str | None:
    """Why Synapse looks alive (its pid file's process, a process run with its config,
    or something answering on its listener ports), or None."""
    pid_file = synapse_config.get("pid_file")
    if pid_file and os.path.exists(pid_file):
        try:
            with open(pid_file, encoding="utf-8") as f:
                pid = int(f.read().strip())
            if _pid_alive(pid):
                return f"pid {pid} from {pid_file} is alive"
        except (OSError, ValueError):
            pass
    pids = _synapse_processes(config_path)
    if pids:
        return f"process {', '.join(map(str, pids))} runs Synapse with {config_path}"
    ports = _listening_ports(synapse_config)
    if ports:
        return f"something answers on its listener port(s) {', '.join(map(str, ports))}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from homeserver.config import ConfigError, load_config_files

    try:
        with open(args.synapse_config, encoding="utf-8") as f:
            synapse_config = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        print(f"Cannot read Synapse's config {args.synapse_config}: {e}", file=sys.stderr)
        return 1
    try:
        config = load_config_files(args.config_path)
    except ConfigError as e:
        print(f"Error in configuration: {e}", file=sys.stderr)
        return 1
    if synapse_config.get("server_name") != config.server_name:
        print(
            f"Server names differ: Synapse is {synapse_config.get('server_name')!r}, this"
            f" config is {config.server_name!r}. Use the same server_name.",
            file=sys.stderr,
        )
        return 1
    running = synapse_running(synapse_config, args.synapse_config)
    if running is not None:
        print(
            f"Synapse is still running ({running}): stop it before importing.",
            file=sys.stderr,
        )
        return 1
    if not synapse_config.get("database"):
        print("Synapse's config has no database section.", file=sys.stderr)
        return 1
    try:
        source = SynapseDatabase(synapse_config["database"])
    except Exception as e:
        print(f"Cannot open Synapse's database: {e}", file=sys.stderr)
        return 1

    from twisted.internet import task

    state = {"exit": 0}

    async def _run(reactor: Any) -> None:
        from storage.database import Database, make_engine
        from storage.storage import Storage

        db = Database(make_engine(config.database), reactor, cp_min=1, cp_max=1)
        try:
            storage = await Storage.open(db)
            checkpoints = await storage.db.run_interaction("import_checkpoints", get_checkpoints)
            if checkpoints.get("finished", (0, False))[1]:
                raise ImportRefused("This database already holds a finished import.")
            resuming = checkpoints.get("accounts", (0, False))[1]
            if "accounts" in checkpoints and not resuming:
                raise ImportRefused(
                    "An earlier import stopped while importing accounts, which cannot be"
                    " resumed: drop the target database, create it empty and run again."
                )
            if not resuming and not await target_is_empty(storage):
                raise ImportRefused(
                    "The target database already holds users or rooms: import only into a"
                    " new, empty database."
                )
            print(f"Importing Synapse server {config.server_name} ({source.kind})")
            started = time.monotonic()
            importer = SynapseImporter(source, storage, config.server_name)
            if resuming:
                print("Resuming an interrupted import (accounts were imported then).")
            else:
                await storage.db.run_interaction(
                    "import_start", lambda txn: set_checkpoint_txn(txn, "accounts", 0)
                )
                await importer.run()
                synapse_media = synapse_config.get("media_store_path")
                if synapse_media and os.path.isdir(synapse_media):
                    await importer.import_media(
                        synapse_media, config.media_store_path, int(config.max_image_pixels)
                    )
                    await importer.import_remote_media(
                        synapse_media, config.media_store_path, int(config.max_image_pixels)
                    )
                else:
                    print("Synapse's media_store_path is not a folder here: media not imported")
                key_path = synapse_config.get("signing_key_path")
                if key_path:
                    kid = copy_signing_key(key_path, config.signing_key_path)
                    print(f"Copied the signing key {kid} to {config.signing_key_path}")
                else:
                    print("Synapse's config names no signing_key_path: signing key not copied")
                await storage.db.run_interaction(
                    "import_accounts_done",
                    lambda txn: set_checkpoint_txn(txn, "accounts", 0, True),
                )
            rooms = RoomImporter(
                source,
                storage,
                config.server_name,
                Progress(print, sys.stdout.isatty()),
                batch_size=args.batch_size,
                stop_after_batches=args.stop_after_batches,
            )
            await rooms.run()
            elapsed = time.monotonic() - started
            await storage.db.run_interaction(
                "import_finished", lambda txn: set_checkpoint_txn(txn, "finished", 0, True)
            )
            print("Verification (rows in Synapse / rows here):")
            for name, theirs, ours in await importer.verify():
                print(f"  {name:<24} {theirs:>9} {ours:>9}")
            key_path = synapse_config.get("signing_key_path")
            local_keys = (
                [
                    decode_verify_key(key_id(k), verify_key_base64(k))
                    for k in read_signing_keys(key_path)
                ]
                if key_path
                else []
            )
            check = await rooms.check_events(local_keys)
            print(
                f"Events checked: {check.checked} sampled; ids {check.ids_ok} ok;"
                f" content hashes {check.hashes_ok} ok ({check.hashes_skipped} redacted);"
                f" signatures {check.signatures_ok} ok"
                f" ({check.signatures_skipped} from other servers not checked)"
            )
            for failure in check.failures or []:
                print(f"  FAILED: {failure}")
            skipped = len(importer.report.skipped) + len(rooms.skipped)
            if skipped:
                print(f"{skipped} item(s) skipped (listed above).")
            print(f"Import took {elapsed:.1f}s.")
            print(
                "Not imported: undelivered application service transactions, presence (see docs)."
            )
            if check.failures:
                state["exit"] = 2
        except ImportInterrupted as e:
            print(f"Import interrupted ({e}); run the same command again to resume.")
            state["exit"] = 3
        except ImportRefused as e:
            print(str(e), file=sys.stderr)
            state["exit"] = 1
        finally:
            db.close()
            source.close()

    try:
        # react stops the reactor when _run is done and exits with its outcome.
        task.react(lambda reactor: _run_deferred(reactor, _run), [])
    except SystemExit as e:
        if e.code:
            return int(e.code) if isinstance(e.code, int) else 1
    return state["exit"]


def _run_deferred(reactor: Any, fn: Any) -> Any:
    from twisted.internet import defer

    return defer.ensureDeferred(fn(reactor))
