"""The server under fuzz: our real ``homeserver`` command in a subprocess, plus the
things a request needs to get past authentication and the 404s.

- A **key server** (a thread serving ``/_matrix/key/v2/server`` over TLS on loopback)
  is the origin of signed federation requests: our server fetches its key from it as
  from any remote server, so a correctly signed ``X-Matrix`` header is accepted.
- **Fixtures**: a registered user (access token, device), a second user, a public room
  with an alias, a message, a state event, an uploaded file, a filter and a key backup
  version; the fuzzer puts these real ids into path parameters.

Outbound traffic stays on this machine: the server federates only with the key
server (``federation_domain_whitelist``, checked before any DNS lookup), every address
but loopback is blacklisted, and the fuzzer points pusher URLs at a closed loopback
port. The server is a separate process so that a crash or a hang is seen as one, and
its stderr (tracebacks of 500s) can be quoted in a failure.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import yaml
from signedjson.key import generate_signing_key
from signedjson.types import SigningKey

from crypto.event_hashing import compute_event_id, hash_and_sign_event
from crypto.json_signing import sign_json
from crypto.signing_key import key_id, verify_key_base64
from federation.x_matrix import sign_request
from homeserver.events.room_versions import get_room_version
from tests.support.databases import database_config
from tests.support.federation import write_self_signed_cert
from tests.support.samples import REPO_ROOT
from tests.support.server import make_config_dict
from tests.support.subprocess_server import HOMESERVER, NO_RATE_LIMITS, free_port

SERVER_NAME = "fuzz.test"
START_TIMEOUT_S = 60.0
PASSWORD = "fuzz-password-1234"
# Pushers are pointed here: loopback, nothing listening (the discard port).
PUSH_URL = "http://127.0.0.1:9/_matrix/push/v1/notify"


class KeyServer:
    """A remote server that only publishes its signing key (over TLS, as federation
    requires); every other path is 404 ``M_UNRECOGNIZED``, so whatever our server asks
    of it fails fast."""

    def __init__(self, data_dir: str) -> None:
        self.key: SigningKey = generate_signing_key("fuzz")
        self.port = 0
        cert, key = write_self_signed_cert(data_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def key_response(self) -> dict[str, Any]:
        body = {
            "server_name": self.server_name,
            "valid_until_ts": int(time.time() * 1000) + 24 * 3600 * 1000,
            "verify_keys": {key_id(self.key): {"key": verify_key_base64(self.key)}},
            "old_verify_keys": {},
        }
        return sign_json(body, self.server_name, self.key)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                if self.path.split("?")[0].startswith("/_matrix/key/v2/server"):
                    code, body = 200, outer.key_response()
                else:
                    code, body = 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized"}
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign(self, method: str, path_and_query: str, destination: str, content: Any) -> str:
        return sign_request(
            self.key, method, path_and_query, self.server_name, destination, content
        )


@dataclass
class Fixtures:
    """Real ids on the server, by the path parameter names the spec uses."""

    user_id: str = ""
    access_token: str = ""
    room_id: str = ""
    # By parameter name (path and query), the first the likeliest to be drawn.
    real_values: dict[str, list[str]] = field(default_factory=dict)


class FuzzTarget:
    def __init__(self, data_dir: str, db_kind: str = "sqlite") -> None:
        self.data_dir = data_dir
        self.db_kind = db_kind
        self.base_url = ""
        self.server_name = SERVER_NAME
        self.fixtures = Fixtures()
        self.session = requests.Session()
        self._stack = ExitStack()
        self._proc: subprocess.Popen[bytes] | None = None
        self.key_server = KeyServer(data_dir)
        self._serial = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.key_server.start()
        self._stack.callback(self.key_server.stop)
        database = self._stack.enter_context(database_config(self.db_kind, self.data_dir))
        port = free_port()
        config = make_config_dict(
            self.data_dir,
            database,
            server_name=SERVER_NAME,
            public_baseurl=f"http://127.0.0.1:{port}/",
            listeners=[
                {
                    "port": port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "resources": [{"names": ["client", "federation", "keys", "media"]}],
                }
            ],
            federation_verify_certificates=False,
            federation_domain_whitelist=[self.key_server.server_name],
            ip_range_blacklist=["0.0.0.0/0", "::/0"],
            ip_range_whitelist=["127.0.0.0/8"],
            trusted_key_servers=[],
            allow_public_rooms_over_federation=True,
            **NO_RATE_LIMITS,
        )
        config_path = Path(self.data_dir) / "homeserver.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.stderr_path = Path(self.data_dir) / "stderr.log"
        with open(self.stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                [HOMESERVER, "-c", str(config_path)],
                cwd=self.data_dir,
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                # This checkout's code, whichever checkout the venv was installed from.
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )
        self._stack.callback(self._stop_process)
        self.base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.alive():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"homeserver did not start:\n{self.stderr_tail()}")
            time.sleep(0.1)
        self.provision()

    def _stop_process(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        self.session.close()
        self._stack.close()

    def __enter__(self) -> FuzzTarget:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stderr_tail(self, since: int = 0, limit: int = 6000) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return "<no stderr>"
        return text[-limit:]

    def stderr_size(self) -> int:
        try:
            return os.path.getsize(self.stderr_path)
        except OSError:
            return 0

    def alive(self) -> bool:
        """The property checked after every operation: ``/versions`` still answers."""
        try:
            resp = self.session.get(self.base_url + "/_matrix/client/versions", timeout=10)
        except requests.RequestException:
            return False
        return resp.status_code == 200 and "versions" in resp.json()

    # -- fixtures ----------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = self.session.request(
            method, self.base_url + path, json=body, headers=headers, timeout=30
        )
        if resp.status_code != 200:
            raise AssertionError(f"fixture {method} {path}: {resp.status_code} {resp.text}")
        result: dict[str, Any] = resp.json()
        return result

    def _federation_call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        auth = self.key_server.sign(method, path, self.server_name, body)
        resp = self.session.request(
            method,
            self.base_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": auth, "Content-Type": "application/json"},
            timeout=30,
        )
        if resp.status_code != 200:
            raise AssertionError(f"fixture {method} {path}: {resp.status_code} {resp.text}")
        result: dict[str, Any] = resp.json()
        return result

    def _join_remote(self, room_id: str, user_id: str) -> str:
        """The key server's user joins ``room_id`` over federation (make_join, then a
        signed send_join), so federation requests from it get past "not in room"."""
        room, user = quote(room_id, safe=""), quote(user_id, safe="")
        template = self._federation_call(
            "GET", f"/_matrix/federation/v1/make_join/{room}/{user}?ver=10&ver=11&ver=12"
        )
        version = get_room_version(template["room_version"])
        assert version is not None
        event = dict(template["event"], origin_server_ts=int(time.time() * 1000))
        origin = self.key_server.server_name
        event = hash_and_sign_event(event, origin, self.key_server.key, version)
        event_id = compute_event_id(event, version)
        self._federation_call(
            "PUT", f"/_matrix/federation/v2/send_join/{room}/{quote(event_id, safe='')}", event
        )
        return event_id

    def _register(self, localpart: str) -> dict[str, Any]:
        return self._call(
            "POST",
            "/_matrix/client/v3/register",
            {"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
        )

    def provision(self) -> None:
        """(Re)create the fixtures: a fresh user, room and ids. Called at start and
        whenever an operation has broken them (logged out, deactivated, left the room)."""
        self._serial += 1
        tag = f"{self._serial}{uuid.uuid4().hex[:6]}"
        me = self._register(f"fuzz{tag}")
        other = self._register(f"other{tag}")
        token = me["access_token"]
        v3 = "/_matrix/client/v3"
        room = self._call(
            "POST",
            f"{v3}/createRoom",
            {"preset": "public_chat", "room_alias_name": f"fuzz{tag}", "name": "fuzz"},
            token,
        )
        room_id = room["room_id"]
        q_room = quote(room_id, safe="")
        self._call("POST", f"{v3}/rooms/{q_room}/join", {}, other["access_token"])
        event = self._call(
            "PUT",
            f"{v3}/rooms/{q_room}/send/m.room.message/t{tag}",
            {"msgtype": "m.text", "body": "hello"},
            token,
        )
        state = self._call(
            "PUT", f"{v3}/rooms/{q_room}/state/m.room.topic/", {"topic": "fuzzing"}, token
        )
        resp = self.session.post(
            self.base_url + "/_matrix/media/v3/upload",
            data=b"fuzz",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
            timeout=30,
        )
        resp.raise_for_status()
        media_id = resp.json()["content_uri"].rsplit("/", 1)[1]
        user_id = me["user_id"]
        q_user = quote(user_id, safe="")
        filter_id = self._call("POST", f"{v3}/user/{q_user}/filter", {}, token)["filter_id"]
        backup = self._call(
            "POST",
            f"{v3}/room_keys/version",
            {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {}},
            token,
        )
        remote_user = f"@fuzz:{self.key_server.server_name}"
        remote_join = self._join_remote(room_id, remote_user)
        other_id, alias = other["user_id"], f"#fuzz{tag}:{SERVER_NAME}"
        event_id, state_id = event["event_id"], state["event_id"]
        since = self._call("GET", f"{v3}/sync?timeout=0", None, token)["next_batch"]
        fx = Fixtures(user_id=user_id, access_token=token, room_id=room_id)
        fx.real_values = {
            "userId": [user_id, user_id, other_id, remote_user],
            "user_id": [user_id, other_id, remote_user],
            "room_id": [room_id],
            "event_id": [event_id, remote_join],
            "since": [since],
            "from": [since],
            "to": [since],
            "filter": [filter_id],
            "via": [SERVER_NAME, self.key_server.server_name],
            "server_name": [SERVER_NAME, self.key_server.server_name],
            "ver": ["12", "11", "10"],
            "roomId": [room_id],
            "roomIdOrAlias": [room_id, alias],
            "roomAlias": [alias],
            "eventId": [event_id, state_id, remote_join],
            "deviceId": [me["device_id"]],
            "filterId": [filter_id],
            "mediaId": [media_id],
            "serverName": [SERVER_NAME, self.key_server.server_name],
            "version": [str(backup["version"])],
            "eventType": ["m.room.message", "m.room.topic", "m.room.member"],
            "type": ["m.room.message", "m.tag", "m.fully_read"],
            "stateKey": ["", user_id],
            "keyName": ["displayname", "avatar_url", "m.tz"],
            "kind": ["override", "content", "room", "sender", "underride"],
            "ruleId": [".m.rule.master", ".m.rule.message", room_id],
            "relType": ["m.annotation", "m.thread", "m.reference"],
            "receiptType": ["m.read", "m.read.private", "m.fully_read"],
            "tag": ["m.favourite", "u.fuzz"],
            "queryType": ["profile", "directory"],
        }
        self.fixtures = fx

    def fixtures_intact(self) -> bool:
        """Whether the fuzz user can still act: its token works and it is in its room."""
        fx = self.fixtures
        try:
            resp = self.session.get(
                f"{self.base_url}/_matrix/client/v3/rooms/{quote(fx.room_id, safe='')}"
                f"/state/m.room.member/{quote(fx.user_id, safe='')}",
                headers={"Authorization": f"Bearer {fx.access_token}"},
                timeout=10,
            )
        except requests.RequestException:
            return False
        return resp.status_code == 200 and resp.json().get("membership") == "join"
