"""The content repository's client endpoints.

Authenticated (Matrix 1.11): ``/_matrix/client/v1/media/{download,thumbnail,config,
preview_url}``. Uploads stay under ``/_matrix/media/v3`` (``upload``, ``upload/{server}/{id}``,
``v1/create``). The deprecated unauthenticated ``/_matrix/media/{r0,v1,v3}`` download and
thumbnail endpoints only serve media uploaded while ``enable_authenticated_media`` was off
(Synapse's freeze); everything else answers 404 there.
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_reachable_server_name
from homeserver.handlers.auth import AuthHandler
from homeserver.http.ratelimit import Ratelimiter
from homeserver.http.responses import FileResponse
from homeserver.http.server import JsonResource, MatrixRequest
from homeserver.http.servlet import parse_boolean, parse_integer, parse_string
from homeserver.media.headers import (
    is_valid_content_type,
    media_headers,
    response_content_type,
)
from homeserver.media.preview import UrlPreviewer
from homeserver.media.repository import (
    DEFAULT_TIMEOUT_MS,
    MAX_TIMEOUT_MS,
    MediaRepository,
    ServedFile,
)
from storage.media import MediaRecord

CLIENT_V1 = "/_matrix/client/v1/media"
LEGACY_VERSIONS = ("v3", "r0", "v1")


def legacy_paths(path: str) -> list[str]:
    return [f"/_matrix/media/{v}{path}" for v in LEGACY_VERSIONS]


class MediaServlets:
    def __init__(
        self,
        auth: AuthHandler,
        repository: MediaRepository,
        create_limiter: Ratelimiter,
        previewer: UrlPreviewer | None,
    ) -> None:
        self._auth = auth
        self._repo = repository
        self._create_limiter = create_limiter
        self._previewer = previewer

    def register(self, resource: JsonResource) -> None:
        resource.register_many("POST", legacy_paths("/upload"), self.on_upload)
        resource.register(
            "PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}", self.on_upload_to
        )
        resource.register("POST", "/_matrix/media/v1/create", self.on_create)
        resource.register_many(
            "GET", [f"{CLIENT_V1}/config", *legacy_paths("/config")], self.on_config
        )
        for suffix in ("", "/{fileName}"):
            resource.register(
                "GET", f"{CLIENT_V1}/download/{{serverName}}/{{mediaId}}{suffix}", self.on_download
            )
            resource.register_many(
                "GET",
                legacy_paths(f"/download/{{serverName}}/{{mediaId}}{suffix}"),
                self.on_legacy_download,
            )
        resource.register(
            "GET", f"{CLIENT_V1}/thumbnail/{{serverName}}/{{mediaId}}", self.on_thumbnail
        )
        resource.register_many(
            "GET", legacy_paths("/thumbnail/{serverName}/{mediaId}"), self.on_legacy_thumbnail
        )
        if self._previewer is not None:
            resource.register("GET", f"{CLIENT_V1}/preview_url", self.on_preview_url)
        resource.register_many("GET", legacy_paths("/preview_url"), self.on_preview_url)

    # Uploads ---------------------------------------------------------------------

    async def on_upload(self, request: MatrixRequest) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        content_type, upload_name = _upload_metadata(request)
        try:
            mxc = await self._repo.upload(
                requester.user_id, _body(request), content_type, upload_name
            )
        finally:
            _release_body(request)
        return 200, {"content_uri": mxc}

    async def on_upload_to(
        self, request: MatrixRequest, serverName: str, mediaId: str
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        try:
            if serverName != self._repo.server_name:
                raise MatrixError(404, Codes.NOT_FOUND, "Non-local server name specified")
            await self._repo.check_can_upload_to(mediaId, requester.user_id)
            content_type, upload_name = _upload_metadata(request)
            await self._repo.upload(
                requester.user_id, _body(request), content_type, upload_name, media_id=mediaId
            )
        finally:
            _release_body(request)
        return 200, {}

    async def on_create(self, request: MatrixRequest) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        self._create_limiter.ratelimit(requester.user_id)
        mxc, expires_at = await self._repo.create_media_id(requester.user_id)
        return 200, {"content_uri": mxc, "unused_expires_at": expires_at}

    async def on_config(self, request: MatrixRequest) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request, allow_guest=True)
        return 200, {"m.upload.size": self._repo.settings.max_upload_size}

    # Downloads -------------------------------------------------------------------

    async def on_download(
        self, request: MatrixRequest, serverName: str, mediaId: str, fileName: str | None = None
    ) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request, allow_guest=True)
        return await self._download(request, serverName, mediaId, fileName, authenticated=True)

    async def on_legacy_download(
        self, request: MatrixRequest, serverName: str, mediaId: str, fileName: str | None = None
    ) -> tuple[int, Any]:
        return await self._download(request, serverName, mediaId, fileName, authenticated=False)

    async def _download(
        self,
        request: MatrixRequest,
        server_name: str,
        media_id: str,
        file_name: str | None,
        *,
        authenticated: bool,
    ) -> tuple[int, Any]:
        record = await self._get_media(request, server_name, media_id, authenticated)
        served = self._repo.original(record)
        name = file_name or record.upload_name
        return 200, self._file_response(served, media_headers(served.content_type, name))

    async def on_thumbnail(
        self, request: MatrixRequest, serverName: str, mediaId: str
    ) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request, allow_guest=True)
        return await self._thumbnail(request, serverName, mediaId, authenticated=True)

    async def on_legacy_thumbnail(
        self, request: MatrixRequest, serverName: str, mediaId: str
    ) -> tuple[int, Any]:
        return await self._thumbnail(request, serverName, mediaId, authenticated=False)

    async def _thumbnail(
        self, request: MatrixRequest, server_name: str, media_id: str, *, authenticated: bool
    ) -> tuple[int, Any]:
        width, height, method, animated = parse_thumbnail_params(request)
        record = await self._get_media(request, server_name, media_id, authenticated)
        served = await self._repo.get_thumbnail(record, width, height, method, animated)
        headers = media_headers(served.content_type, thumbnail_name(served), inline=True)
        return 200, self._file_response(served, headers)

    def _file_response(self, served: ServedFile, headers: dict[str, str]) -> FileResponse:
        return FileResponse(
            open_file=self._repo.open_file(served.key),
            size=served.size,
            content_type=response_content_type(served.content_type),
            headers=headers,
            etag=served.etag,
        )

    async def _get_media(
        self, request: MatrixRequest, server_name: str, media_id: str, authenticated: bool
    ) -> MediaRecord:
        if not is_reachable_server_name(server_name):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid server name")
        allow_remote = parse_boolean(request, "allow_remote", default=True)
        return await self._repo.get_media(
            server_name,
            media_id,
            _timeout_ms(request),
            allow_remote=bool(allow_remote),
            allow_authenticated=authenticated,
            requester_ip=request.client_ip(),
        )

    # URL previews ----------------------------------------------------------------

    async def on_preview_url(self, request: MatrixRequest) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        if self._previewer is None:
            # As Synapse: previews switched off look like an unknown endpoint.
            raise MatrixError(400, Codes.UNRECOGNIZED, "Unrecognized request")
        url = parse_string(request, "url", required=True)
        assert url is not None
        return 200, await self._previewer.preview(url, requester.user_id)


def parse_thumbnail_params(request: MatrixRequest) -> tuple[int, int, str, bool]:
    width = parse_integer(request, "width", required=True, minimum=1)
    height = parse_integer(request, "height", required=True, minimum=1)
    method = parse_string(request, "method", default="scale", allowed=("crop", "scale"))
    animated = parse_boolean(request, "animated", default=False)
    assert width is not None and height is not None and method is not None
    return width, height, method, animated


def thumbnail_name(served: ServedFile) -> str:
    subtype = served.content_type.split(";", 1)[0].partition("/")[2].lower()
    return f"thumbnail.{'jpg' if subtype == 'jpeg' else subtype or 'bin'}"


def _timeout_ms(request: MatrixRequest) -> int:
    value = parse_integer(
        request, "timeout_ms", default=DEFAULT_TIMEOUT_MS, minimum=0, maximum=MAX_TIMEOUT_MS
    )
    assert value is not None
    return value


def _upload_metadata(request: MatrixRequest) -> tuple[str, str | None]:
    raw_type = request.getHeader("content-type")
    content_type = raw_type.strip() if raw_type else "application/octet-stream"
    if not is_valid_content_type(content_type):
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid Content-Type")
    raw_names = (request.args or {}).get(b"filename")
    upload_name: str | None = None
    if raw_names and raw_names[0]:
        try:
            upload_name = raw_names[0].decode("utf-8")
        except UnicodeDecodeError:
            raise MatrixError(
                400, Codes.INVALID_PARAM, "Invalid UTF-8 filename parameter"
            ) from None
    return content_type, upload_name


def _body(request: MatrixRequest) -> Any:
    assert request.content is not None
    request.content.seek(0)
    return request.content


def _release_body(request: MatrixRequest) -> None:
    """Free the spooled body (a temporary file for large uploads) at once."""
    if request.content is not None:
        request.content.close()
