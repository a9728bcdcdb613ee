"""``homeserver register-user`` / ``register_new_matrix_user``: create an account
through the shared-secret admin endpoint, exactly as Synapse's tool does."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import urllib.error
import urllib.request
from typing import Any

import yaml

from synapse_compat.admin_register import compute_registration_mac


def _client_url_from_config(config: dict[str, Any]) -> str:
    for listener in config.get("listeners") or []:
        names = {n for res in listener.get("resources", []) for n in res.get("names", [])}
        if "client" in names:
            scheme = "https" if listener.get("tls") else "http"
            return f"{scheme}://localhost:{listener['port']}"
    return "http://localhost:8008"


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read())
        except ValueError:
            err = {"error": str(e)}
        raise SystemExit(f"ERROR! Received {e.code} {e.reason}: {err.get('error', err)}") from None


def register(
    url: str, secret: str, user: str, password: str, admin: bool, user_type: str | None = None
) -> dict[str, Any]:
    endpoint = url.rstrip("/") + "/_synapse/admin/v1/register"
    nonce = _request("GET", endpoint)["nonce"]
    body: dict[str, Any] = {
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": admin,
        "mac": compute_registration_mac(secret, nonce, user, password, admin, user_type),
    }
    if user_type:
        body["user_type"] = user_type
    return _request("POST", endpoint, body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="register_new_matrix_user",
        description="Register a new user on the homeserver using the shared secret.",
    )
    p.add_argument("-u", "--user", help="Local part of the new user.")
    p.add_argument("-p", "--password", help="New password for user (prompted if missing).")
    p.add_argument("-t", "--user_type", default=None, help="User type, as Synapse's.")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-a", "--admin", action="store_true", help="Make the user an admin.")
    group.add_argument("--no-admin", action="store_true", help="The user is not an admin.")
    p.add_argument("-c", "--config", help="The homeserver config with registration_shared_secret.")
    p.add_argument("-k", "--shared-secret", help="The shared secret (instead of -c).")
    p.add_argument(
        "server_url",
        nargs="?",
        default=None,
        help="The client API URL (default: from the config, else http://localhost:8008).",
    )
    args = p.parse_args(argv)

    config: dict[str, Any] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    secret = args.shared_secret or config.get("registration_shared_secret")
    if not secret:
        print("No 'registration_shared_secret' is set in the config (or use -k).", file=sys.stderr)
        return 1
    url = args.server_url or _client_url_from_config(config)
    user = args.user or input("New user localpart: ").strip()
    if not user:
        print("Invalid user name", file=sys.stderr)
        return 1
    password = args.password
    if password is None:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Confirm password: "):
            print("Passwords do not match", file=sys.stderr)
            return 1
    if not password:
        print("Password cannot be blank.", file=sys.stderr)
        return 1
    result = register(url, secret, user, password, args.admin, args.user_type)
    print(f"Success! Registered {result['user_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
