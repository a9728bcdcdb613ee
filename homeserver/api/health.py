"""GET /health: ``OK`` in plain text while the process serves requests (as Synapse's,
for load balancers and container health checks; no authentication, no database)."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource, MatrixRequest, RawResponse

_OK = b"OK"


class _PlainOk(RawResponse):
    async def write(self, request: MatrixRequest, status: int) -> None:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/plain")
        request.setHeader(b"Content-Length", str(len(_OK)).encode())
        if request.method != b"HEAD":
            request.write(_OK)
        request.finish()


_PLAIN_OK = _PlainOk()


class HealthServlet:
    def register(self, resource: JsonResource) -> None:
        resource.register("GET", "/health", self.on_get)

    async def on_get(self, request: MatrixRequest) -> tuple[int, Any]:
        return 200, _PLAIN_OK
