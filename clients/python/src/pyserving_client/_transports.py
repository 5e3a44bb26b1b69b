"""The four transports (gRPC and REST, blocking and asyncio): each sends one `Call` within
a timeout and returns its answer, or raises the `ServingError` it came to.

One connection per client, kept open and reused: a gRPC channel (HTTP/2, multiplexed),
or an httpx connection pool (HTTP/1.1 keep-alive). grpc and httpx are imported here, so
`import pyserving_client` does not pay for the one a program does not use.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import _json, _protos
from ._config import TLS, Target
from ._protocols import Call
from .errors import Code, DeadlineExceededError, ServingError, UnavailableError, code_for_http_status, error_for

# Tensors of any size: gRPC's default receive limit (4 MiB) would refuse a 10,000-image answer.
_UNLIMITED = -1


def grpc_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", _UNLIMITED),
        ("grpc.max_send_message_length", _UNLIMITED),
        # reconnect soon after a server restart, so a retried call finds it
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        *extra,
    ]


def _grpc_credentials(grpc: Any, tls: TLS | None) -> Any:
    roots, key, chain = (tls or TLS()).grpc_files()
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


def _grpc_error(error: Any) -> ServingError:
    code = error.code()
    try:
        number = code.value[0]
    except (AttributeError, IndexError, TypeError):
        number = Code.UNKNOWN
    return error_for(number, error.details() or code.name)


class _GrpcBase:
    def __init__(self, module: Any, target: Target, tls: TLS | None, headers: Mapping[str, str],
                 options: Sequence[tuple[str, Any]]) -> None:
        secure = target.secure or tls is not None
        all_options = grpc_options(options)
        if tls is not None and tls.server_name:
            all_options.append(("grpc.ssl_target_name_override", tls.server_name))
        if secure:
            self.channel = module.secure_channel(target.address, _grpc_credentials(module, tls), all_options)
        else:
            self.channel = module.insecure_channel(target.address, all_options)
        self.metadata = tuple((k.lower(), v) for k, v in headers.items()) or None
        self.methods = {
            name: self.channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                           response_deserializer=reply.FromString)
            for name, (path, reply) in _protos.METHODS.items()
        }


class GrpcTransport(_GrpcBase):
    def __init__(self, target: Target, tls: TLS | None, headers: Mapping[str, str],
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        import grpc

        self._rpc_error = grpc.RpcError
        super().__init__(grpc, target, tls, headers, options)

    def send(self, call: Call, timeout: float) -> Any:
        try:
            return self.methods[call.method](call.request, timeout=timeout, metadata=self.metadata)
        except self._rpc_error as error:
            raise _grpc_error(error) from None

    def close(self) -> None:
        self.channel.close()


class AsyncGrpcTransport(_GrpcBase):
    def __init__(self, target: Target, tls: TLS | None, headers: Mapping[str, str],
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        import grpc
        import grpc.aio

        self._rpc_error = grpc.RpcError
        super().__init__(grpc.aio, target, tls, headers, options)

    async def send(self, call: Call, timeout: float) -> Any:
        try:
            return await self.methods[call.method](call.request, timeout=timeout, metadata=self.metadata)
        except self._rpc_error as error:
            raise _grpc_error(error) from None

    async def close(self) -> None:
        await self.channel.close()


def _http_settings(target: Target, tls: TLS | None, headers: Mapping[str, str]) -> dict[str, Any]:
    verify: Any = True
    if tls is not None:
        verify = tls.ssl_context()
    return {"base_url": target.address, "headers": {"content-type": "application/json", **headers},
            "verify": verify, "timeout": None, "trust_env": False}


def _http_answer(response: Any) -> Any:
    if response.status_code == 200:
        return _json.loads(response.content)
    try:
        message = _json.loads(response.content)["error"]
    except Exception:
        message = response.text.strip() or response.reason_phrase
    raise error_for(code_for_http_status(response.status_code), str(message))


def _http_failure(httpx: Any, error: Exception) -> ServingError:
    if isinstance(error, httpx.TimeoutException):
        return DeadlineExceededError(f"deadline exceeded ({type(error).__name__})")
    return UnavailableError(f"{type(error).__name__}: {error}")


def _request(call: Call) -> dict[str, Any]:
    content = _json.dumps(call.request) if call.request is not None else None
    return {"method": call.method, "url": call.path, "content": content}


class RestTransport:
    def __init__(self, target: Target, tls: TLS | None, headers: Mapping[str, str]) -> None:
        import httpx

        self._httpx = httpx
        self.client = httpx.Client(**_http_settings(target, tls, headers))

    def send(self, call: Call, timeout: float) -> Any:
        try:
            response = self.client.request(**_request(call), timeout=timeout)
        except self._httpx.HTTPError as error:
            raise _http_failure(self._httpx, error) from None
        return _http_answer(response)

    def close(self) -> None:
        self.client.close()


class AsyncRestTransport:
    def __init__(self, target: Target, tls: TLS | None, headers: Mapping[str, str]) -> None:
        import httpx

        self._httpx = httpx
        self.client = httpx.AsyncClient(**_http_settings(target, tls, headers))

    async def send(self, call: Call, timeout: float) -> Any:
        try:
            response = await self.client.request(**_request(call), timeout=timeout)
        except self._httpx.HTTPError as error:
            raise _http_failure(self._httpx, error) from None
        return _http_answer(response)

    async def close(self) -> None:
        await self.client.aclose()
