"""Which scope a REST request needs, and answering a denied one.

`required(method, path)` -> (scope, model): `infer` for POSTs under `/v1/models/<name>`
(predict, classify, regress) and `/v2/models/<name>/infer`; `read` for everything else
(status, metadata, the metrics page, the V2 server metadata, and unknown paths, so that
a path probe without credentials learns nothing); None (open) for the health probes and
CORS preflights. `model` is the model the path names, None for server-wide paths.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from pyserving.api.rest import response_json
from pyserving.api.rest._body import Send, header, respond
from pyserving.api.rest.errors import http_status
from pyserving.auth import INFER, READ, Guard, bearer_token
from pyserving.errors import Code, ServingError
from pyserving.monitoring.health import HEALTHZ_PATH, READYZ_PATH

__all__ = ["required", "authorize"]

OPEN_PATHS = frozenset((HEALTHZ_PATH, READYZ_PATH, "/v2/health/live", "/v2/health/ready"))
_MODEL = re.compile(r"/v([12])/models/(?P<name>[^/:]+)(?P<rest>.*)", re.IGNORECASE | re.DOTALL)


def required(method: str, path: str) -> tuple[str | None, str | None]:
    if method == "OPTIONS" or path in OPEN_PATHS:
        return None, None
    m = _MODEL.fullmatch(path)
    if m is None:
        return READ, None
    model = unquote(m["name"])
    if m.group(1) == "1":
        return (INFER if method == "POST" else READ), model
    return (INFER if m["rest"].rstrip("/").endswith("/infer") else READ), model


def _peer_names(scope: dict[str, Any]) -> Any:
    names = scope.get("pyserving.peer_names")
    return None if names is None else (lambda: names)


async def authorize(guard: Guard, scope: dict[str, Any], method: str, path: str, send: Send,
                    extra_headers: list[tuple[bytes, bytes]]) -> bool:
    """True when the request may go on; else answers it (401, 403 or 429) and returns False."""
    needed, model = required(method, path)
    if needed is None:
        return True
    raw = header(scope, b"authorization")
    client = scope.get("client")
    error = await guard.check(
        entrypoint="rest", address=str(client[0]) if client else "unknown",
        bearer=bearer_token(raw.decode("latin-1")) if raw is not None else None,
        peer_names=_peer_names(scope), scope=needed, model=model, what=f"{method} {path}")
    if error is None:
        return True
    await answer_denial(send, error, extra_headers)
    return False


async def answer_denial(send: Send, error: ServingError, extra_headers: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), *extra_headers]
    if error.code == Code.UNAUTHENTICATED:
        headers.append((b"www-authenticate", b'Bearer realm="pyserving"'))
    elif error.code == Code.RESOURCE_EXHAUSTED:
        headers.append((b"retry-after", b"60"))
    await respond(send, http_status(error.code), headers, response_json.encode_error(error.message))
