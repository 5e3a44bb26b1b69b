"""The Open Inference Protocol's REST API (KServe V2) on the REST port, beside `/v1`.

Routes (the spec's table; a version is digits or a TF Serving version label):

    GET  /v2                                    server metadata
    GET  /v2/health/live                        200 {"live": true} while the process answers
    GET  /v2/health/ready                       200 {"ready": true}; 503 {"ready": false, ...}
    GET  /v2/models/{m}[/versions/{v}]          model metadata (`?signature_name=` for another)
    GET  /v2/models/{m}[/versions/{v}]/ready    200 {"name", "ready": true}; 503 when not ready
    POST /v2/models/{m}[/versions/{v}]/infer    inference

Errors answer `{"error": "..."}` with the status of their canonical code (the same table as
`/v1`: 400 for a bad request, 404 for an unknown model or version, 413 for a request over
the limits, 429 past the in-flight bounds, 503 while draining, 504 past the deadline).

Inference is the V1 predict call with another codec: decode (on the service's worker
thread, or on the loop for a small request to a batched model) -> `PredictionService.predict`
(batching, deadlines, admission, memory budget, metrics, drain) -> encode. The body may
carry Triton's binary data extension: an `Inference-Header-Content-Length` header gives the
JSON's length and the tensors' raw bytes follow it, in input order, each input saying its
size in `parameters.binary_data_size`; outputs come back as raw bytes when
`parameters.binary_data` (per output) or `parameters.binary_data_output` (request) says so,
and then the response has the same layout. Binary inputs are numpy views on the request's
bytes, checked against their shape first.

Request parameters read here: `signature_name` (which signature runs), `binary_data_output`;
per output `binary_data`. `classification` (Triton's classification extension) is refused.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

import orjson

from pyserving import __version__
from pyserving.api import open_inference as oip
from pyserving.api.rest._body import BodyTooLarge, Disconnected, Receive, Send, header, read_body, respond
from pyserving.api.rest._raw_array import Chunks
from pyserving.api.rest.app import RestOptions
from pyserving.api.rest.errors import http_status
from pyserving.errors import Code, RequestTooLargeError, ServingError
from pyserving.server.admission import Admission
from pyserving.server.prediction_service import SMALL_REQUEST_BYTES, ModelSpec, PredictionService, PredictResult

__all__ = ["OpenInferenceRest", "SERVER_NAME", "HEADER_LENGTH"]

log = logging.getLogger("pyserving.rest")
access_log = logging.getLogger("pyserving.access")

SERVER_NAME = "pyserving"
HEADER_LENGTH = b"inference-header-content-length"
_JSON = (b"content-type", b"application/json")
_OCTETS = (b"content-type", b"application/octet-stream")
_MODEL = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<verb>/ready|/infer)?/?")
_INLINE_PARSE_LIMIT = 256 * 1024
_LIVE = orjson.dumps({"live": True})
_READY = orjson.dumps({"ready": True})

Readiness = Callable[[], "tuple[bool, str]"]


class _MethodNotAllowed(Exception):
    def __init__(self, allowed: str) -> None:
        self.allowed = allowed


@dataclass(slots=True)
class _Input:
    name: str
    datatype: Any
    shape: Any
    data: Any = None                     # JSON values, when not binary
    raw: bytes | memoryview | None = None  # binary data extension


@dataclass(slots=True)
class _InferRequest:
    id: str | None
    signature_name: str
    inputs: list[_Input]
    outputs: list[str]
    binary: dict[str, bool] = field(default_factory=dict)  # per requested output
    binary_default: bool = False


def _error(status: int, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, [_JSON], orjson.dumps({"error": message})


class OpenInferenceRest:
    """ASGI app for every path under `/v2` (mounted on the `RestApp`). `readiness()` is the
    server's (ready, reason), as `/readyz` reports it."""

    def __init__(self, service: PredictionService, options: RestOptions, readiness: Readiness,
                 extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.service = service
        self.options = options
        self.readiness = readiness
        self._extra = list(extra_headers or [])
        self._server_metadata = orjson.dumps(
            {"name": SERVER_NAME, "version": __version__, "extensions": [oip.BINARY_EXTENSION]})

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        query = scope.get("query_string", b"").decode("latin-1")
        method = scope["method"]
        if self.options.access_log:
            access_log.info("%s %s started", method, path)
        try:
            status, headers, body = await self._route(scope, receive, method, path, query)
        except _MethodNotAllowed as exc:
            status, headers, body = _error(405, f"Method {method} is not allowed on {path}; use {exc.allowed}")
            headers = [*headers, (b"allow", exc.allowed.encode())]
        except Disconnected:
            if self.options.access_log:
                access_log.info("%s %s client disconnected", method, path)
            return
        if status == 429:  # backpressure; a client may retry after a second
            headers = [*headers, (b"retry-after", b"1")]
        if self.service.gate.draining:  # no new request on this connection
            headers = [*headers, (b"connection", b"close")]
        await respond(send, status, [*headers, *self._extra], body)
        if self.options.access_log:
            access_log.info("%s %s %s", method, path, status)

    async def _route(self, scope: dict[str, Any], receive: Receive, method: str, path: str,
                     query: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if path in ("/v2", "/v2/"):
            _only(method, "GET")
            return 200, [_JSON], self._server_metadata
        if path == "/v2/health/live":
            _only(method, "GET")
            return 200, [_JSON], _LIVE
        if path == "/v2/health/ready":
            _only(method, "GET")
            ready, reason = self.readiness()
            if ready:
                return 200, [_JSON], _READY
            return 503, [_JSON], orjson.dumps({"ready": False, "error": f"Not ready: {reason}"})
        m = _MODEL.fullmatch(path)
        if m is None:
            return _error(404, f"Not found: {path}")
        verb = m["verb"]
        _only(method, "POST" if verb == "/infer" else "GET")
        name = unquote(m["name"])
        version_text = unquote(m["version"]) if m["version"] is not None else ""
        api = {"/infer": "infer", "/ready": "model_ready"}.get(verb or "", "model_metadata")
        request = self.service.begin("rest", api, name, "predict" if verb == "/infer" else None)
        error: ServingError | None = None
        try:
            version, label = oip.parse_version(version_text)
            if verb == "/infer":
                status, headers, body = await self._infer(scope, receive, request, name, version, label)
            elif verb == "/ready":
                status, headers, body = self._model_ready(request, name, version, label)
            else:
                status, headers, body = await self._model_metadata(request, name, version, label, query)
        except ServingError as err:
            error = err
            status = 413 if isinstance(err, RequestTooLargeError) else http_status(err.code)
            headers, body = [_JSON], orjson.dumps({"error": err.message})
        except BodyTooLarge:
            message = (f"Request body exceeds the limit of {self.options.max_body_bytes} bytes "
                       "(--rest_api_max_body_bytes)")
            error = ServingError(Code.INVALID_ARGUMENT, message)
            status, headers, body = _error(413, message)
        except Disconnected:
            error = ServingError(Code.CANCELLED, "Client disconnected")
            raise
        except Exception as exc:  # never a traceback to the client
            log.exception("Internal error serving %s %s", method, path)
            message = f"Internal error: {type(exc).__name__}: {exc}"
            error = ServingError(Code.INTERNAL, message)
            status, headers, body = _error(500, message)
        finally:
            request.finish(error)
        return status, headers, body

    def _model_ready(self, request: Admission, name: str, version: int | None,
                     label: str | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        request.admit(name, bounded=False)
        try:
            ready = self.service.is_available(name, version, label)
        finally:
            request.leave()
        return (200 if ready else 503), [_JSON], orjson.dumps({"name": name, "ready": ready})

    async def _model_metadata(self, request: Admission, name: str, version: int | None, label: str | None,
                              query: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        signature_name = parse_qs(query).get("signature_name", [""])[0]
        request.admit(name, bounded=False)
        try:
            deadline = time.monotonic() + self.options.timeout_in_ms / 1000.0
            described = await self.service.describe(ModelSpec(name, version, label, signature_name),
                                                    deadline=deadline)
            versions = self.service.available_versions(name)
        finally:
            request.leave()
        sig = described.signature
        return 200, [_JSON], orjson.dumps({
            "name": name,
            "versions": [str(v) for v in versions],
            "platform": described.platform,
            "inputs": oip.tensor_metadata(sig.inputs),
            "outputs": oip.tensor_metadata(sig.outputs),
            "properties": {"signature_name": sig.name, "signatures": ",".join(described.signature_names)},
        })

    async def _infer(self, scope: dict[str, Any], receive: Receive, request: Admission, name: str,
                     version: int | None, label: str | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        request.admit(name, bounded=True)
        claim = self.service.budget.claim()
        try:
            body = await read_body(scope, receive, claim, self.options.max_body_bytes)
            deadline = time.monotonic() + self.options.timeout_in_ms / 1000.0
            header_length = _header_length(header(scope, HEADER_LENGTH), len(body))
            if len(body) <= _INLINE_PARSE_LIMIT:
                parsed = _parse_infer(body, header_length)
            else:  # answered at its deadline even if parsing goes on (it holds no model)
                try:
                    parsed = await asyncio.wait_for(asyncio.to_thread(_parse_infer, body, header_length),
                                                    deadline - time.monotonic())
                except asyncio.TimeoutError:
                    raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded while parsing the request") from None

            def decode(signature: Any) -> dict[str, Any]:
                oip.check_request(name, signature, ((i.name, i.datatype) for i in parsed.inputs), parsed.outputs)
                inputs = {}
                for i in parsed.inputs:
                    if i.raw is not None:
                        inputs[i.name] = oip.from_raw(i.name, i.datatype, i.shape, i.raw)
                    else:
                        array = oip.from_values(i.name, i.datatype, i.shape, i.data)
                        claim.add(array.nbytes, "The request's input tensors")
                        inputs[i.name] = array
                return inputs

            encoded = await self.service.predict(
                ModelSpec(name, version, label, parsed.signature_name),
                decode,
                output_filter=parsed.outputs,
                deadline=deadline,
                api="rest",
                encode=lambda result: _encode(result, parsed),
                small=len(body) <= SMALL_REQUEST_BYTES,  # batched fast path
                claim=claim,
            )
        finally:
            request.leave()
            claim.release()  # a no-op once the request's worker owns it
        body_out, json_length = encoded  # type: ignore[misc]
        if json_length is None:
            return 200, [_JSON], body_out
        return 200, [_OCTETS, (HEADER_LENGTH, str(json_length).encode())], body_out


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise _MethodNotAllowed(allowed)


def _header_length(value: bytes | None, body_length: int) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 19 or int(text) > body_length:
        raise oip.invalid(f"Inference-Header-Content-Length {value.decode('latin-1')!r} is not a number of bytes "
                          f"within the {body_length}-byte body")
    return int(text)


def _slice(body: bytes | Chunks, a: int, b: int) -> bytes | memoryview:
    """Bytes a..b of the body, without a copy when they lie in one piece."""
    if isinstance(body, Chunks):
        views = list(body.views(a, b))
        if len(views) == 1:
            return views[0]
        return b"".join(views)
    return memoryview(body)[a:b]


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise oip.invalid(f"{what} must be a JSON object")
    return value


def _flag(parameters: dict[str, Any], key: str, what: str) -> bool | None:
    value = parameters.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise oip.invalid(f"{what} parameter '{key}' must be a boolean")
    return value


def _parse_infer(body: bytes | Chunks, header_length: int | None) -> _InferRequest:
    """The inference request's JSON (and where each binary input's bytes are); no tensor is
    built here."""
    size = len(body)
    json_end = size if header_length is None else header_length
    text = _slice(body, 0, json_end)
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise oip.invalid(f"Failed to parse the request as JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise oip.invalid("The inference request must be a JSON object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise oip.invalid("The request's 'id' must be a string")
    parameters = _object(doc.get("parameters"), "The request's 'parameters'")
    signature_name = parameters.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise oip.invalid("The request parameter 'signature_name' must be a string")
    binary_default = bool(_flag(parameters, "binary_data_output", "The request"))
    inputs_doc = doc.get("inputs")
    if not isinstance(inputs_doc, list):
        raise oip.invalid("The inference request must have 'inputs', a JSON array")
    offset = json_end
    inputs: list[_Input] = []
    for i, item in enumerate(inputs_doc):
        if not isinstance(item, dict):
            raise oip.invalid(f"Input {i} must be a JSON object")
        name = item.get("name")
        if not isinstance(name, str):
            raise oip.invalid(f"Input {i} must have a 'name', a string")
        shape = item.get("shape")
        if not isinstance(shape, list):
            raise oip.invalid(f"Input '{name}' must have a 'shape', a JSON array")
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise oip.invalid(f"Input '{name}' must have a 'datatype', a string")
        item_parameters = _object(item.get("parameters"), f"Input '{name}' 'parameters'")
        binary_size = item_parameters.get("binary_data_size")
        if binary_size is None:
            if "data" not in item:
                raise oip.invalid(f"Input '{name}' has neither 'data' nor a 'binary_data_size' parameter")
            inputs.append(_Input(name, datatype, shape, data=item["data"]))
            continue
        if "data" in item:
            raise oip.invalid(f"Input '{name}' has both 'data' and a 'binary_data_size' parameter")
        if header_length is None:
            raise oip.invalid(f"Input '{name}' has a 'binary_data_size' parameter, but the request has no "
                              "Inference-Header-Content-Length header")
        if type(binary_size) is not int or binary_size < 0:
            raise oip.invalid(f"Input '{name}' has an invalid 'binary_data_size' {binary_size!r}")
        if offset + binary_size > size:
            raise oip.invalid(f"Input '{name}' has a 'binary_data_size' of {binary_size} bytes, but only "
                              f"{size - offset} bytes of binary data are left")
        inputs.append(_Input(name, datatype, shape, raw=_slice(body, offset, offset + binary_size)))
        offset += binary_size
    if offset != size:
        raise oip.invalid(f"The request has {size - offset} bytes of binary data that no input's "
                          "'binary_data_size' accounts for")
    outputs: list[str] = []
    binary: dict[str, bool] = {}
    outputs_doc = doc.get("outputs")
    if outputs_doc is not None:
        if not isinstance(outputs_doc, list):
            raise oip.invalid("The request's 'outputs' must be a JSON array")
        for i, item in enumerate(outputs_doc):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise oip.invalid(f"Output {i} must be a JSON object with a 'name', a string")
            name = item["name"]
            item_parameters = _object(item.get("parameters"), f"Output '{name}' 'parameters'")
            if item_parameters.get("classification") is not None:
                raise oip.invalid(f"Output '{name}': the classification extension is not supported")
            flag = _flag(item_parameters, "binary_data", f"Output '{name}'")
            if flag is not None:
                binary[name] = flag
            outputs.append(name)
    return _InferRequest(request_id, signature_name, inputs, outputs, binary, binary_default)


def _encode(result: PredictResult, request: _InferRequest) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary data, the length of its JSON part."""
    names = request.outputs or [n for n in result.signature.outputs if n in result.outputs]
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        array = result.outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": oip.datatype_of(array.dtype), "shape": list(array.shape)}
        values = None
        if not request.binary.get(name, request.binary_default):
            values = oip.to_json_values(array)
        if values is None:  # binary asked for, or BYTES that are not UTF-8
            raw = oip.to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = values
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": result.name, "model_version": str(result.version)}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = entries
    text = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)
