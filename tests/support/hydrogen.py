"""Hydrogen (npm ``hydrogen-view-sdk``, a complete Matrix web client) served on loopback.

``tests/e2e/js/hydrogen/main.js`` starts Hydrogen's whole app (``RootViewModel``: login
form, session, room list, rooms) as its own web app does; esbuild bundles it into
``app.js``. A small threaded HTTP server serves that bundle, the SDK's assets, its
service worker (authenticated media goes through it) and olm, on its own port, so the
page talks to the homeserver cross-origin as a deployed Hydrogen does.
"""

from __future__ import annotations

import mimetypes
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.js_clients import ensure_node_modules

INDEX_HTML = b"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Hydrogen</title>
<link rel="stylesheet" href="/assets/theme-element-light.css">
</head>
<body class="hydrogen">
<div id="app" class="hydrogen"></div>
<script type="module" src="/app.js"></script>
</body>
</html>
"""

EXTRA_TYPES = {".js": "text/javascript", ".wasm": "application/wasm", ".mjs": "text/javascript"}


def build_bundle(out_dir: Path) -> dict[str, Path]:
    """Bundle the app with esbuild; the URL path -> file map the server serves."""
    js_dir = ensure_node_modules()
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = out_dir / "app.js"
    result = subprocess.run(
        [
            str(js_dir / "node_modules" / ".bin" / "esbuild"),
            "hydrogen/main.js",
            "--bundle",
            "--format=esm",
            "--platform=browser",
            "--log-level=warning",
            # olm.js's Node branch, never taken in a browser.
            "--external:fs",
            "--external:path",
            "--external:crypto",
            f"--outfile={bundle}",
        ],
        cwd=js_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"esbuild failed:\n{result.stdout}\n{result.stderr}"
    modules = js_dir / "node_modules"
    sdk = modules / "hydrogen-view-sdk"
    files: dict[str, Path] = {"/app.js": bundle, "/sw.js": sdk / "lib-build" / "sw.js"}
    for path in (sdk / "asset-build" / "assets").iterdir():
        files[f"/assets/{path.name}"] = path
    for path in (modules / "@matrix-org" / "olm").iterdir():
        files[f"/olm/{path.name}"] = path
    return files


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, Path] = {}

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            body, content_type = INDEX_HTML, "text/html; charset=utf-8"
        elif path in self.files:
            file = self.files[path]
            body = file.read_bytes()
            content_type = EXTRA_TYPES.get(file.suffix) or (
                mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            )
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def serve_hydrogen(out_dir: Path) -> Iterator[str]:
    """Serve Hydrogen on a free loopback port; yields its base URL."""
    files = build_bundle(out_dir)
    handler = type("HydrogenHandler", (_Handler,), {"files": files})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
