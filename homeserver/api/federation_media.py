"""The content repository for other servers: ``/_matrix/federation/v1/media/...``.

Answers are ``multipart/mixed`` (server-server API, "Content Repository"): a JSON part
(always ``{}`` for now) and then the file with its ``Content-Type`` and
``Content-Disposition``.

Every request is authenticated first by ``authenticate`` (the X-Matrix request
signature check of the federation layer, returning the origin server name). Without
one configured, every request is refused with 401 ``M_UNAUTHORIZED``: media is never
served to an unauthenticated caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from homeserver.api.client.media import parse_thumbnail_params, thumbnail_name
from homeserver.errors import Codes, MatrixError
from homeserver.http.responses import MultipartFileResponse
from homeserver.http.server import JsonResource, MatrixRequest
from homeserver.http.servlet import parse_integer
from homeserver.media.headers import content_disposition, response_content_type
from homeserver.media.repository import (
    DEFAULT_TIMEOUT_MS,
    MAX_TIMEOUT_MS,
    MediaRepository,
    ServedFile,
)

Authenticator = Callable[[Request], Awaitable[str]]
PREFIX = "/_matrix/federation/v1/media"


async def refuse_unauthenticated(request: Request) -> str:
    """The authenticator in force until federation request signatures are checked."""
    raise MatrixError(401, Codes.UNAUTHORIZED, "Federation request authentication is unavailable")


class FederationMediaServlets:
    def __init__(
        self, repository: MediaRepository, authenticate: Authenticator | None = None
    ) -> None:
        self._repo = repository
        self._authenticate = authenticate or refuse_unauthenticated

    def register(self, resource: JsonResource) -> None:
        resource.register("GET", f"{PREFIX}/download/{{mediaId}}", self.on_download)
        resource.register("GET", f"{PREFIX}/thumbnail/{{mediaId}}", self.on_thumbnail)

    async def on_download(self, request: MatrixRequest, mediaId: str) -> tuple[int, Any]:
        await self._authenticate(request)
        record = await self._repo.get_local_media(mediaId, _timeout_ms(request))
        served = self._repo.original(record)
        disposition = content_disposition(served.content_type, record.upload_name)
        return 200, self._multipart(served, disposition)

    async def on_thumbnail(self, request: MatrixRequest, mediaId: str) -> tuple[int, Any]:
        await self._authenticate(request)
        width, height, method, animated = parse_thumbnail_params(request)
        record = await self._repo.get_local_media(mediaId, _timeout_ms(request))
        served = await self._repo.get_thumbnail(record, width, height, method, animated)
        disposition = content_disposition(served.content_type, thumbnail_name(served), inline=True)
        return 200, self._multipart(served, disposition)

    def _multipart(self, served: ServedFile, disposition: str) -> MultipartFileResponse:
        return MultipartFileResponse(
            open_file=self._repo.open_file(served.key),
            size=served.size,
            part_headers={
                "Content-Type": response_content_type(served.content_type),
                "Content-Disposition": disposition,
            },
        )


def _timeout_ms(request: MatrixRequest) -> int:
    value = parse_integer(
        request, "timeout_ms", default=DEFAULT_TIMEOUT_MS, minimum=0, maximum=MAX_TIMEOUT_MS
    )
    assert value is not None
    return value
