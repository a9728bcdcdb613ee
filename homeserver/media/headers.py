"""Response headers for served media: type, disposition and the security headers.

Invariants:
- ``Content-Disposition`` is ``inline`` only for the spec's list of types that cannot
  run script when rendered (no HTML, no SVG); everything else is ``attachment``.
- Every media response carries a sandboxing ``Content-Security-Policy``,
  ``X-Content-Type-Options: nosniff`` and ``Cross-Origin-Resource-Policy: cross-origin``.
- Header values are ASCII: non-token file names are sent as RFC 5987 ``filename*``.
"""

from __future__ import annotations

import re
import urllib.parse

# The spec's "Serving inline content" list (also Synapse's).
INLINE_CONTENT_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

# Text types served with a UTF-8 charset when the upload named none.
TEXT_CONTENT_TYPES = frozenset(
    {
        "text/css",
        "text/csv",
        "text/html",
        "text/calendar",
        "text/plain",
        "text/javascript",
        "application/json",
        "application/ld+json",
        "application/rtf",
        "image/svg+xml",
        "text/xml",
    }
)

CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Security-Policy": "sandbox;",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow, noarchive, noimageindex",
}

# Media never changes under its id.
CACHE_CONTROL = "public,max-age=86400,s-maxage=86400"

_CONTENT_TYPE_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;.*)?$")
# RFC 2616 token separators: a file name with none of these (nor CTLs, space or
# non-ASCII) can be sent bare as filename=...
_SEPARATORS = set('()<>@,;:\\"/[]?={}')


def is_valid_content_type(value: str) -> bool:
    return (
        len(value) <= 255
        and value.isascii()
        and value.isprintable()
        and bool(_CONTENT_TYPE_RE.match(value))
    )


def base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def response_content_type(content_type: str) -> str:
    if base_type(content_type) in TEXT_CONTENT_TYPES and "charset" not in content_type.lower():
        return f"{content_type}; charset=UTF-8"
    return content_type


def _is_token(name: str) -> bool:
    return all(32 < ord(c) < 127 and c not in _SEPARATORS for c in name)


def content_disposition(content_type: str, filename: str | None, *, inline: bool = False) -> str:
    disposition = (
        "inline" if inline or base_type(content_type) in INLINE_CONTENT_TYPES else ("attachment")
    )
    if not filename:
        return disposition
    if _is_token(filename):
        return f"{disposition}; filename={filename}"
    return f"{disposition}; filename*=utf-8''{urllib.parse.quote(filename, safe='')}"


def media_headers(
    content_type: str, filename: str | None, *, inline: bool = False
) -> dict[str, str]:
    return {
        **SECURITY_HEADERS,
        "Content-Disposition": content_disposition(content_type, filename, inline=inline),
        "Cache-Control": CACHE_CONTROL,
    }


_DISPOSITION_PARAM_RE = re.compile(
    r";\s*(filename\*?)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;]*)", re.IGNORECASE
)


def filename_from_disposition(value: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` (``filename*`` first, as RFC 6266 says)."""
    if not value:
        return None
    plain: str | None = None
    for name, raw in _DISPOSITION_PARAM_RE.findall(value):
        raw = raw.strip()
        if name.lower() == "filename*":
            charset, _, rest = raw.partition("'")
            _lang, _, encoded = rest.partition("'")
            if charset.lower() == "utf-8" and encoded:
                try:
                    return urllib.parse.unquote(encoded, errors="strict") or None
                except UnicodeDecodeError:
                    continue
        elif plain is None:
            if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            plain = raw or None
    return plain
