"""`Client` and `AsyncClient`: the same methods, blocking or awaitable.

Both drive the operations of `_protocols` (written once) over their transports; what
differs is only how a call is sent and how a retry waits. Every call has a deadline
(`timeout`, seconds, default the client's), which bounds its retries too.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from . import _transports
from ._config import TLS, Retry, Target, parse_target
from ._protocols import Call, Example, GrpcProtocol, Inputs, Operation, RestProtocol, Session, Spec
from ._types import ModelMetadata, ModelVersionStatus
from .errors import DeadlineExceededError, ServingError

__all__ = ["Client", "AsyncClient"]


async def _sleep(seconds: float) -> None:
    import asyncio  # here: a blocking client's program need not import asyncio

    await asyncio.sleep(seconds)

DEFAULT_TIMEOUT_SECONDS = 30.0


class _Base:
    def __init__(self, target: str, *, timeout: float | None = DEFAULT_TIMEOUT_SECONDS, retry: Retry | None = None,
                 tls: TLS | bool | None = None, headers: Mapping[str, str] | None = None,
                 grpc_options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target: Target = parse_target(target)
        self.timeout = timeout
        self.retry = retry if retry is not None else Retry()
        self._tls = TLS() if tls is True else (tls or None)
        self._headers = dict(headers or {})
        self._grpc_options = tuple(grpc_options)
        self._session = Session(GrpcProtocol() if self.target.protocol == "grpc" else RestProtocol())

    def _deadline(self, timeout: float | None) -> float:
        seconds = self.timeout if timeout is None else timeout
        return time.monotonic() + seconds if seconds is not None else float("inf")

    @staticmethod
    def _remaining(deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError("deadline exceeded")
        return min(remaining, 1e9)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target.address!r})"


class Client(_Base):
    """A blocking client of TF Serving's API (pyserving or TF Serving itself).

        with Client("localhost:8500") as client:               # gRPC
            y = client.predict("half_plus_two", np.array([1.0, 2.0], np.float32))["y"]
        client = Client("http://localhost:8501")               # REST

    Keyword arguments: `timeout` (seconds per call, retries included; None: none),
    `retry` (`Retry`), `tls` (`TLS`, or True for the system's CAs; implied by https://
    and grpcs://), `headers` (sent with every call, as HTTP headers or gRPC metadata,
    e.g. {"authorization": "Bearer ..."}), `grpc_options` (extra channel arguments).
    Safe to share between threads."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        if self.target.protocol == "grpc":
            self._transport: Any = _transports.GrpcTransport(self.target, self._tls, self._headers, self._grpc_options)
        else:
            self._transport = _transports.RestTransport(self.target, self._tls, self._headers)

    def _run(self, operation: Operation, timeout: float | None) -> Any:
        deadline = self._deadline(timeout)
        try:
            call = next(operation)
            while True:
                try:
                    answer = self._send(call, deadline)
                except ServingError as error:
                    call = operation.throw(error)
                else:
                    call = operation.send(answer)
        except StopIteration as done:
            return done.value

    def _send(self, call: Call, deadline: float) -> Any:
        attempt = 0
        while True:
            try:
                return self._transport.send(call, self._remaining(deadline))
            except ServingError as error:
                wait = self.retry.delay(error, attempt, call.idempotent, deadline - time.monotonic())
                if wait is None:
                    raise
            time.sleep(wait)
            attempt += 1

    def predict(self, model: str, inputs: Inputs, *, version: int | None = None, label: str | None = None,
                signature: str | None = None, output_filter: Sequence[str] | None = None,
                timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run a signature (default `serving_default`): `inputs` is one array (for a
        signature with one input) or a mapping name -> array; returns name -> array."""
        return self._run(self._session.predict(Spec(model, version, label, signature), inputs, output_filter), timeout)

    def classify(self, model: str, examples: Sequence[Example], *, context: Example | None = None,
                 version: int | None = None, label: str | None = None, signature: str | None = None,
                 timeout: float | None = None) -> list[list[tuple[str, float]]]:
        """Classify `tf.train.Example`s given as dicts feature -> value(s); one list of
        (label, score) per example."""
        return self._run(self._session.classify(Spec(model, version, label, signature), examples, context), timeout)

    def regress(self, model: str, examples: Sequence[Example], *, context: Example | None = None,
                version: int | None = None, label: str | None = None, signature: str | None = None,
                timeout: float | None = None) -> np.ndarray:
        """Regress examples given as dicts; one float32 value per example."""
        return self._run(self._session.regress(Spec(model, version, label, signature), examples, context), timeout)

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None,
                 timeout: float | None = None) -> ModelMetadata:
        """The model's signatures, with numpy dtypes and shapes."""
        return self._run(self._session.metadata(Spec(model, version, label)), timeout)

    def status(self, model: str, *, version: int | None = None, label: str | None = None,
               timeout: float | None = None) -> list[ModelVersionStatus]:
        """The state of each version of the model (or of the one asked for)."""
        return self._run(self._session.status(Spec(model, version, label)), timeout)

    def reload_config(self, config: Any, *, timeout: float | None = None) -> None:
        """Replace the server's model config (gRPC only): a `ModelServerConfig` as text
        (the --model_config_file format), as a dict in protobuf's JSON mapping, or as a
        message. Never retried: it changes the server."""
        return self._run(self._session.reload_config(config), timeout)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """`Client`'s twin for asyncio: the same arguments and methods, awaited.

        async with AsyncClient("localhost:8500") as client:
            outputs = await client.predict("mnist", images)
    """

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        if self.target.protocol == "grpc":
            self._transport: Any = _transports.AsyncGrpcTransport(
                self.target, self._tls, self._headers, self._grpc_options)
        else:
            self._transport = _transports.AsyncRestTransport(self.target, self._tls, self._headers)

    async def _run(self, operation: Operation, timeout: float | None) -> Any:
        deadline = self._deadline(timeout)
        try:
            call = next(operation)
            while True:
                try:
                    answer = await self._send(call, deadline)
                except ServingError as error:
                    call = operation.throw(error)
                else:
                    call = operation.send(answer)
        except StopIteration as done:
            return done.value

    async def _send(self, call: Call, deadline: float) -> Any:
        attempt = 0
        while True:
            try:
                return await self._transport.send(call, self._remaining(deadline))
            except ServingError as error:
                wait = self.retry.delay(error, attempt, call.idempotent, deadline - time.monotonic())
                if wait is None:
                    raise
            await _sleep(wait)
            attempt += 1

    async def predict(self, model: str, inputs: Inputs, *, version: int | None = None, label: str | None = None,
                      signature: str | None = None, output_filter: Sequence[str] | None = None,
                      timeout: float | None = None) -> dict[str, np.ndarray]:
        return await self._run(self._session.predict(Spec(model, version, label, signature), inputs, output_filter),
                               timeout)

    async def classify(self, model: str, examples: Sequence[Example], *, context: Example | None = None,
                       version: int | None = None, label: str | None = None, signature: str | None = None,
                       timeout: float | None = None) -> list[list[tuple[str, float]]]:
        return await self._run(self._session.classify(Spec(model, version, label, signature), examples, context),
                               timeout)

    async def regress(self, model: str, examples: Sequence[Example], *, context: Example | None = None,
                      version: int | None = None, label: str | None = None, signature: str | None = None,
                      timeout: float | None = None) -> np.ndarray:
        return await self._run(self._session.regress(Spec(model, version, label, signature), examples, context),
                               timeout)

    async def metadata(self, model: str, *, version: int | None = None, label: str | None = None,
                       timeout: float | None = None) -> ModelMetadata:
        return await self._run(self._session.metadata(Spec(model, version, label)), timeout)

    async def status(self, model: str, *, version: int | None = None, label: str | None = None,
                     timeout: float | None = None) -> list[ModelVersionStatus]:
        return await self._run(self._session.status(Spec(model, version, label)), timeout)

    async def reload_config(self, config: Any, *, timeout: float | None = None) -> None:
        return await self._run(self._session.reload_config(config), timeout)

    async def aclose(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
