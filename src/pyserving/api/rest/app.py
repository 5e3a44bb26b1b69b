"""The REST front end: an ASGI app serving TF Serving's `/v1/models/...` API.

With a `guard` (`--auth_config_file`), every request but the health probes is checked
first (`_access.py`: the scope each path needs; 401/403/429 answered there).
It only routes, decodes, delegates to `PredictionService` and encodes; JSON rules live
in `request_json` (bodies in) and `response_json` (bodies out). Large bodies are parsed on
a worker thread so the loop never blocks on them; model execution and tensor encoding run
on the service's worker thread.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, cast
from urllib.parse import unquote

from google.protobuf import json_format

from pyserving.api.rest import request_json, response_json
from pyserving.api.rest._access import authorize
from pyserving.api.rest._body import (
    INT64_DIGITS,
    BodyTooLarge,
    Disconnected,
    Receive,
    Send,
    header,
    read_body,
    respond,
)
from pyserving.api.rest._rapidjson import INT64_MAX
from pyserving.api.rest._raw_array import Chunks
from pyserving.api.rest.errors import http_status
from pyserving.auth import Guard
from pyserving.errors import Code, RequestTooLargeError, ServingError
from pyserving.server.admission import Admission
from pyserving.server.budget import Claim
from pyserving.server.prediction_service import SMALL_REQUEST_BYTES, ModelSpec, PredictionService

__all__ = ["RestOptions", "RestApp"]

log = logging.getLogger("pyserving.rest")
access_log = logging.getLogger("pyserving.access")

# TF Serving's grammar (case-insensitive match, case-sensitive verbs afterwards).
_MODEL_PATH = re.compile(
    r"/v1/models(?:/(?P<name>[^/:]+))?"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>[^/:]+))?"
    r"(?:/(?P<sub>[^/:]+))?",
    re.IGNORECASE,
)
_V1 = re.compile(r"/v1/", re.IGNORECASE)
_JSON = [(b"content-type", b"application/json")]
_INLINE_PARSE_LIMIT = 256 * 1024


@dataclass(frozen=True)
class RestOptions:
    timeout_in_ms: int = 30000
    max_body_bytes: int = 1 << 30
    enable_cors: bool = False
    access_log: bool = False


def _not_found_page(path: str) -> bytes:
    # The path is the client's: escaped as libevent's evhttp_htmlescape does (TF Serving's
    # page), so a path cannot inject markup or script into the page.
    escaped = html.escape(path).replace("&#x27;", "&#039;")
    return (
        "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
        f"<p>The requested URL {escaped} was not found on this server.</p></body></html>"
    ).encode()


class RestApp:
    def __init__(self, service: PredictionService, options: RestOptions) -> None:
        self.service = service
        self.options = options
        self._headers = list(_JSON)
        if options.enable_cors:
            self._headers += [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-allow-methods", b"POST, GET"),
                (b"access-control-allow-headers", b"Content-Type"),
            ]
        self._metadata_cache: dict[tuple[str, int], tuple[Any, bytes]] = {}
        # Extra exact-path GET handlers (metrics, health); path -> handler.
        self.extra_routes: dict[str, Callable[[], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]]] = {}
        # Other APIs on the same port: path prefix (e.g. "/v2") -> ASGI app serving every path
        # under it. They see the CORS headers this app answers with in `cors_headers`.
        self.mounts: dict[str, Callable[[dict[str, Any], Receive, Send], Awaitable[None]]] = {}
        # Authentication and scopes (`auth.Guard`); None: every request is let in.
        self.guard: Guard | None = None

    @property
    def cors_headers(self) -> list[tuple[bytes, bytes]]:
        return self._headers[1:]

    def mount(self, prefix: str, app: Callable[[dict[str, Any], Receive, Send], Awaitable[None]]) -> None:
        """Serve `prefix` and every path under it with `app`."""
        self.mounts[prefix.rstrip("/")] = app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        method = scope["method"]
        if self.options.access_log:
            access_log.info("%s %s started", method, path)
        if self.guard is not None and not await authorize(self.guard, scope, method, path, send, self._headers[1:]):
            self._log_end(method, path, "denied")
            return
        extra = self.extra_routes.get(path)
        if extra is not None:
            status, headers, body = await extra()
            await respond(send, status, headers, body)
            self._log_end(method, path, status)
            return
        for prefix, mounted in self.mounts.items():
            if path == prefix or path.startswith(prefix + "/"):
                await mounted(scope, receive, send)
                return
        if not _V1.match(path):
            await respond(send, 404, [(b"content-type", b"text/html")], _not_found_page(path))
            self._log_end(method, path, 404)
            return
        if method == "OPTIONS":
            origin = header(scope, b"origin")
            ok = origin is not None and (b"http://" in origin or b"https://" in origin)
            headers = self._headers[1:] if self.options.enable_cors else []
            await respond(send, 200 if ok else 400, headers, b"")
            self._log_end(method, path, 200 if ok else 400)
            return
        # Every /v1 request is counted and timed (TF Serving's request_count covers
        # status and metadata too); the record travels to the service in `current_request`.
        request = self.service.begin("rest", tf_api="")
        error: ServingError | None = None
        try:
            status, body = await self._dispatch(scope, receive, method, path, request)
        except ServingError as err:
            error = err
            status = 413 if isinstance(err, RequestTooLargeError) else http_status(err.code)
            body = response_json.encode_error(err.message)
        except BodyTooLarge:
            status = 413
            body = response_json.encode_error(
                f"Request body exceeds the limit of {self.options.max_body_bytes} bytes "
                "(--rest_api_max_body_bytes)"
            )
            error = ServingError(Code.INVALID_ARGUMENT, body.decode())
        except Disconnected:
            error = ServingError(Code.CANCELLED, "Client disconnected")
            self._log_end(method, path, "client disconnected")
            return
        except Exception as exc:  # never a traceback to the client
            log.exception("Internal error serving %s %s", method, path)
            status, body = 500, response_json.encode_error(f"Internal error: {type(exc).__name__}: {exc}")
            error = ServingError(Code.INTERNAL, body.decode())
        finally:
            request.finish(error)
        headers = self._headers
        if status == 429:  # backpressure; a client may retry after a second
            headers = [*headers, (b"retry-after", b"1")]
        if self.service.gate.draining:  # no new request on this connection
            headers = [*headers, (b"connection", b"close")]
        await respond(send, status, headers, body)
        if self.options.access_log:
            self._log_end(method, path, status)

    def _log_end(self, method: str, path: str, outcome: int | str) -> None:
        """The access log's second line for a request: its status, or why there is none."""
        if self.options.access_log:
            access_log.info("%s %s %s", method, path, outcome)

    async def _dispatch(
        self, scope: dict[str, Any], receive: Receive, method: str, path: str, request: Admission
    ) -> tuple[int, bytes]:
        malformed = ServingError(Code.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        m = _MODEL_PATH.fullmatch(path)
        if m is None:
            raise malformed
        name = unquote(m["name"]) if m["name"] else ""
        label = unquote(m["label"]) if m["label"] else None
        version = None if m["version"] is None else _parse_version(m["version"])
        verb, sub = m["verb"], m["sub"]
        record = request.record
        record.model = name  # metrics labels
        if method == "GET" and verb is None:
            if sub is not None and sub.lower() != "metadata":
                raise malformed
            if not name:
                raise ServingError(Code.INVALID_ARGUMENT, "Missing model name in request.")
            record.api = "metadata" if sub == "metadata" else "status"
            request.admit(name, bounded=False)
            try:
                if sub == "metadata":
                    return 200, await self._metadata(name, version, label)
                return 200, self._status(name, version)
            finally:
                request.leave()
        if method == "POST" and verb is not None and sub is None and name:
            if verb not in ("predict", "classify", "regress"):
                raise malformed
            record.api = record.tf_api = verb
            request.admit(name, bounded=True)
            claim = self.service.budget.claim()
            try:
                body = await read_body(scope, receive, claim, self.options.max_body_bytes)
                deadline = time.monotonic() + self.options.timeout_in_ms / 1000.0
                if verb == "predict":
                    return 200, await self._predict(name, version, label, body, deadline, claim)
                return 200, await self._examples(verb, name, version, label, body, deadline)
            finally:
                request.leave()
                claim.release()  # a no-op once the request's worker owns it
        raise malformed

    def _status(self, name: str, version: int | None) -> bytes:
        statuses = self.service.status(name, version)
        return response_json.encode_status(
            [(s.version, s.state.name, s.error_code.name, s.error_message) for s in statuses]
        )

    async def _metadata(self, name: str, version: int | None, label: str | None) -> bytes:
        resolved_name, resolved_version, sigdefs = await self.service.metadata(
            ModelSpec(name, version, label), deadline=time.monotonic() + self.options.timeout_in_ms / 1000.0
        )
        key = (resolved_name, resolved_version)
        cached = self._metadata_cache.get(key)
        if cached is None or cached[0] is not sigdefs:
            as_dict = json_format.MessageToDict(
                sigdefs, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            cached = (sigdefs, response_json.encode_metadata(name, resolved_version, as_dict))
            self._metadata_cache[key] = cached
        return cached[1]

    async def _parse(self, body: bytes | Chunks, deadline: float) -> Any:
        if len(body) <= _INLINE_PARSE_LIMIT:
            return request_json.parse_body(body)
        # The request is answered at its deadline even if parsing goes on (it holds no model).
        try:
            return await asyncio.wait_for(asyncio.to_thread(request_json.parse_body, body),
                                          deadline - time.monotonic())
        except asyncio.TimeoutError:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded while parsing the request") from None

    async def _predict(
        self, name: str, version: int | None, label: str | None, body: bytes | Chunks, deadline: float,
        claim: Claim,
    ) -> bytes:
        doc = await self._parse(body, deadline)
        signature_name, fmt, value = request_json.parse_predict(doc)
        encoded = await self.service.predict(
            ModelSpec(name, version, label, signature_name),
            lambda sig: request_json.predict_inputs(fmt, value, sig),
            deadline=deadline,
            api="rest",
            encode=lambda r: response_json.encode_predict(r.outputs, fmt, r.signature),
            small=len(body) <= SMALL_REQUEST_BYTES,  # batched fast path
            claim=claim,
        )
        return cast(bytes, encoded)  # `encode` given: the encoded answer

    async def _examples(
        self, verb: str, name: str, version: int | None, label: str | None, body: bytes | Chunks, deadline: float
    ) -> bytes:
        doc = await self._parse(body, deadline)
        signature_name, examples = request_json.parse_examples(doc, verb)
        spec = ModelSpec(name, version, label, signature_name)
        if verb == "classify":
            result = await self.service.classify(spec, lambda: examples, deadline=deadline)
            return response_json.encode_classify(result.classifications)
        regressed = await self.service.regress(spec, lambda: examples, deadline=deadline)
        return response_json.encode_regress(regressed.values)


def _parse_version(digits: str) -> int:
    """A URL's version digits as int64 (TF Serving's `absl::SimpleAtoi`); the length is
    checked first so that a huge digit run never reaches int() (which refuses 4300+ digits)."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > INT64_DIGITS or int(significant) > INT64_MAX:
        raise ServingError(Code.INVALID_ARGUMENT, f"Failed to convert version: {digits} to numeric.")
    return int(significant)


