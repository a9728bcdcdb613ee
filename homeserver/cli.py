"""The ``homeserver`` command, with Synapse's flags.

homeserver --generate-config -H NAME -c FILE [--data-directory DIR] [--report-stats=no]
homeserver -c FILE [-c OVERRIDES ...]
homeserver register-user -c FILE [-u NAME] [-p PASSWORD] [--admin] [URL]
homeserver import-synapse --synapse-config SYNAPSE_YAML -c FILE
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from typing import Any

from homeserver.appservice.registration import load_configured_app_services
from homeserver.config import (
    ConfigError,
    HomeserverConfig,
    generate_config_text,
    generate_log_config,
    load_config_files,
)

logger = logging.getLogger("homeserver")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="homeserver", description="A Matrix homeserver.")
    p.add_argument(
        "-c",
        "--config-path",
        action="append",
        default=[],
        metavar="CONFIG_FILE",
        help="A config file; several may be given, later top-level keys win.",
    )
    p.add_argument(
        "--generate-config",
        action="store_true",
        help="Write a config file (and signing key) and exit.",
    )
    p.add_argument(
        "--generate-keys", action="store_true", help="Write any missing signing key and exit."
    )
    p.add_argument("-H", "--server-name", help="The server name, with --generate-config.")
    p.add_argument(
        "--data-directory",
        help="Where data files go, with --generate-config (default: the config file's folder).",
    )
    p.add_argument(
        "--report-stats",
        choices=["yes", "no"],
        default="no",
        help="Accepted for compatibility; nothing is ever reported.",
    )
    p.add_argument(
        "--enable-registration",
        action="store_true",
        help="With --generate-config: allow open registration without verification.",
    )
    p.add_argument(
        "--listen-port",
        type=int,
        default=8008,
        help="With --generate-config: the client/federation port (default 8008).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="Log at DEBUG.")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "register-user":
        from synapse_compat.register_user import main as register_main

        return register_main(argv[1:])
    if argv and argv[0] == "import-synapse":
        from synapse_compat.import_synapse import main as import_main

        return import_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.generate_config:
        return generate(args)
    if not args.config_path:
        print("Must supply a config file (-c); create one with --generate-config.", file=sys.stderr)
        return 1
    try:
        config = load_config_files(args.config_path)
        # Application service registrations are named by the configuration: a bad
        # one is reported like any configuration error, before anything starts.
        load_configured_app_services(config)
    except ConfigError as e:
        print(f"Error in configuration: {e}", file=sys.stderr)
        return 1
    if args.generate_keys:
        from crypto.signing_key import load_or_generate_signing_key

        load_or_generate_signing_key(config.signing_key_path)
        return 0
    return run(config, verbose=args.verbose)


def generate(args: argparse.Namespace) -> int:
    if not args.server_name or not args.config_path:
        print("--generate-config needs -H/--server-name and -c/--config-path", file=sys.stderr)
        return 1
    config_path = os.path.abspath(args.config_path[0])
    data_dir = os.path.abspath(args.data_directory or os.path.dirname(config_path))
    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(os.path.dirname(config_path), exist_ok=True)
    if os.path.exists(config_path):
        print(f"Config file {config_path} already exists: not overwriting it.")
    else:
        text = generate_config_text(
            args.server_name,
            data_dir,
            registration_shared_secret=secrets.token_urlsafe(32),
            macaroon_secret_key=secrets.token_urlsafe(32),
            form_secret=secrets.token_urlsafe(32),
            report_stats=args.report_stats == "yes",
            enable_registration=args.enable_registration,
            port=args.listen_port,
        )
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        print(
            f"A config file has been generated in {config_path} for server name "
            f"{args.server_name!r}. Please review it before starting the server."
        )
    log_config = os.path.join(data_dir, "log.config")
    if not os.path.exists(log_config):
        with open(log_config, "w", encoding="utf-8") as f:
            f.write(generate_log_config(os.path.join(data_dir, "homeserver.log")))
    try:
        config = load_config_files([config_path])
    except ConfigError as e:
        print(f"Error in configuration: {e}", file=sys.stderr)
        return 1
    from crypto.signing_key import load_or_generate_signing_key

    if not os.path.exists(config.signing_key_path):
        load_or_generate_signing_key(config.signing_key_path)
        print(f"Generated a signing key in {config.signing_key_path}")
    return 0


def run(config: HomeserverConfig, *, verbose: bool = False) -> int:
    from twisted.internet import defer, reactor

    from homeserver.logging_context import setup_logging
    from homeserver.server import HomeServer, build_homeserver

    setup_logging(config.log_config, verbose=verbose)
    from homeserver.workers import unsupported_topology

    refused = unsupported_topology(config.workers)
    if refused is not None:
        # Refused rather than half-honoured: a main process told that another instance
        # writes events would write none, and a second writer would corrupt streams.
        logger.error("Unsupported worker configuration: %s", refused)
        return 1
    r: Any = reactor
    state: dict[str, Any] = {"hs": None, "exit": 0}

    async def _start() -> None:
        try:
            hs = await build_homeserver(config, r)
            # Set before listening: if listening fails, shutdown still closes the
            # database pool, whose threads would otherwise keep the process alive.
            state["hs"] = hs
            hs.listen()
        except Exception as e:
            logger.error("Start-up failed: %s", e, exc_info=not isinstance(e, RuntimeError))
            state["exit"] = 1
            r.stop()
            return
        if config.pid_file:
            with open(config.pid_file, "w", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
        logger.info("homeserver %s running", config.server_name)

    async def _shutdown() -> None:
        hs: HomeServer | None = state["hs"]
        if hs is not None:
            logger.info("Shutting down: finishing in-flight work")
            await hs.stop()
        if config.pid_file and os.path.exists(config.pid_file):
            os.unlink(config.pid_file)

    r.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(_shutdown()))
    r.callWhenRunning(lambda: defer.ensureDeferred(_start()))
    # reactor.run installs handlers turning SIGINT and SIGTERM into an orderly stop.
    r.run()
    return int(state["exit"])


if __name__ == "__main__":
    sys.exit(main())
