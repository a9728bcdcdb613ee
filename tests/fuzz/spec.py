"""Bundle the Matrix spec's OpenAPI files into one self-contained document per API.

The spec keeps one OpenAPI 3.1 file per feature (``data/api/client-server/profile.yaml``),
each with its own ``servers`` base path (``/_matrix/client/v3``, ``/_matrix/media/v3``,
``/_matrix/federation/v1``...) and ``$ref``s into sibling files (``definitions/``,
``../../event-schemas/``, JSON examples). A fuzzer wants one document whose paths are
absolute, so :func:`bundle` prefixes each file's paths with its base path and inlines
every ``$ref`` (file-relative or ``#/...`` within the file that holds it). A reference
cycle (a schema that contains itself) is cut to ``{}``, "any value": the generator
then makes up that part freely.
"""

from __future__ import annotations

import copy
import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support.samples import REPO_ROOT

SPEC_ROOT = Path(
    os.environ.get("MATRIX_SPEC_ROOT", str(REPO_ROOT.parent / "shared" / "matrix-spec"))
)
API_DIRS = {
    "client-server": SPEC_ROOT / "data" / "api" / "client-server",
    "server-server": SPEC_ROOT / "data" / "api" / "server-server",
}


def spec_missing_reason() -> str | None:
    if all(d.is_dir() for d in API_DIRS.values()):
        return None
    return f"no Matrix spec at {SPEC_ROOT} (set MATRIX_SPEC_ROOT)"


HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@cache
def _load_file(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _pointer(doc: Any, fragment: str) -> Any:
    node = doc
    for part in fragment.lstrip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _inline(node: Any, path: Path, stack: tuple[tuple[Path, str], ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, path, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return {key: _inline(value, path, stack) for key, value in node.items()}
    file_part, _, fragment = ref.partition("#")
    target = (path.parent / file_part).resolve() if file_part else path
    key = (target, fragment)
    if key in stack:
        return {}
    resolved = _inline(_pointer(_load_file(target), fragment), target, (*stack, key))
    siblings = {k: _inline(v, path, stack) for k, v in node.items() if k != "$ref"}
    if siblings and isinstance(resolved, dict):
        return {**resolved, **siblings}
    return copy.deepcopy(resolved)


def _base_path(doc: dict[str, Any]) -> str:
    servers = doc.get("servers") or [{}]
    variables = servers[0].get("variables", {})
    return str(variables.get("basePath", {}).get("default", ""))


@cache
def bundle(api: str) -> dict[str, Any]:
    """One OpenAPI 3.1 document with every operation of ``api`` ('client-server' or
    'server-server'), paths absolute from the server root, no ``$ref`` left."""
    directory = API_DIRS[api]
    paths: dict[str, Any] = {}
    security_schemes: dict[str, Any] = {}
    for file in sorted(directory.glob("*.yaml")):
        raw = _load_file(file.resolve())
        if not isinstance(raw, dict) or "paths" not in raw:
            continue
        doc = _inline(raw, file.resolve(), ())
        prefix = _base_path(doc)
        for template, item in (doc.get("paths") or {}).items():
            merged = paths.setdefault(prefix + template, {})
            merged.update(item)
        security_schemes.update(doc.get("components", {}).get("securitySchemes", {}))
    return {
        "openapi": "3.1.0",
        "info": {"title": f"Matrix {api} API (bundled)", "version": "1.19"},
        "paths": paths,
        "components": {"securitySchemes": security_schemes},
    }


def operations(api: str) -> list[tuple[str, str]]:
    """Every (METHOD, path template) of the bundled ``api``."""
    return [
        (method.upper(), template)
        for template, item in bundle(api)["paths"].items()
        for method in HTTP_METHODS
        if method in item
    ]
