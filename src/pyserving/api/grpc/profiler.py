"""TF's profiler service (`tensorflow.ProfilerService`) answered on the model server's gRPC port.

TF Serving registers TF's C++ `ProfilerService` on its gRPC server, so
`tf.profiler.experimental.client.trace("grpc://host:8500", logdir, duration_ms)` and
TensorBoard's "capture profile" work against it. Here `ProfilerServicer` answers the same
methods in this process: Profile starts a profiler session (TF's `ProfilerSession`, which
TF's service runs too), waits `duration_ms` or until a Terminate names its `session_id`,
stops it and writes the trace. It opens no port of its own (TF's
`tf.profiler.experimental.server.start` would listen on every interface, without TLS).

Where traces go: TF's service writes `<repository_root>/<session_id>/<host_name>.xplane.pb`,
all three taken from the request, so any client could make the server create folders and
files anywhere it may write. Here the request's `repository_root` is ignored and traces go to
`<--profiler_dir>/<session_id>/<host_name>.xplane.pb` (':' in the file name becomes '_', as
in TF); without the flag, to a private temporary directory (mode 0700) created at the first
profile and logged. `session_id` and `host_name` must each be one plain name: no '/', '\\',
NUL or '..', not absolute, at most 255 bytes, else INVALID_ARGUMENT (empty: a timestamp /
this host's name). Folders are created 0700, traces 0600, never through a symlink. A client
on another machine gets no files in its own logdir: the trace is on the server (pointing
TensorBoard at `--profiler_dir=<logdir>/plugins/profile` shows it there).

As TF's service: one profile at a time per process (a second one gets INTERNAL `Another
profiling session active.`); the tracer levels are TF's defaults (host 2, device 1, python
0) whatever the request asks; Monitor answers UNIMPLEMENTED `unimplemented.`; the
continuous-profiling methods of newer TF are not served (UNIMPLEMENTED). Ours: `duration_ms`
beyond `--profiler_max_duration_seconds` answers INVALID_ARGUMENT (a trace buffers every
event of its duration in memory). A shutdown ends running profiles (`close`): they write
what they captured.

Task-safety: the servicer's methods run on the event loop; starting, stopping and writing a
trace run on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import shutil
import socket
import tempfile
import time
from typing import Any

import grpc

from pyserving.api.grpc.status import to_grpc_status
from pyserving.errors import Code, ServingError
from pyserving.protos.profiler_protos import (
    PROFILER_SERVICE,
    ProfileResponse,
    TerminateResponse,
    XSpaceLines,
)

__all__ = ["PROFILER_SERVICE", "ProfilerServicer"]

log = logging.getLogger("pyserving.grpc")

_NAME_MAX_BYTES = 255  # NAME_MAX: one directory entry
_NOT_IN_A_NAME = ("/", "\\", "\0", "..")
_SESSION_ACTIVE = "Another profiling session active."  # TF's ProfilerLock message


def _plain_name(field: str, value: str) -> str:
    """`value` if it names one entry inside a directory, else INVALID_ARGUMENT."""
    if any(part in value for part in _NOT_IN_A_NAME) or os.path.isabs(value) \
            or len(value.encode()) > _NAME_MAX_BYTES:
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"Invalid {field} {value[:100]!r}: it must be a plain name (no '/', '\\', NUL or '..', "
            f"at most {_NAME_MAX_BYTES} bytes); traces are written under the server's --profiler_dir")
    return value


def _duration_seconds(request: Any, max_seconds: float) -> float:
    # TF's service reads opts.duration_ms; its clients also set the older top-level field.
    duration_ms = request.opts.duration_ms or request.duration_ms
    if duration_ms > max_seconds * 1000:
        raise ServingError(Code.INVALID_ARGUMENT, f"duration_ms {duration_ms} exceeds the limit of "
                           f"{max_seconds:g} s (--profiler_max_duration_seconds)")
    return duration_ms / 1000


def _start_session(staging: str) -> Any:
    """TF's profiler session, exporting to `staging` (TF picks the names below it)."""
    from tensorflow.python.profiler.internal import _pywrap_profiler  # noqa: PLC0415 - only when profiling

    session = _pywrap_profiler.ProfilerSession()
    try:
        # No options: TF's defaults. (This TF build ignores tracer levels passed from Python.)
        session.start(staging, {})
    except Exception as exc:  # TF's lock is held by another session in this process
        raise ServingError(Code.INTERNAL, str(exc) or _SESSION_ACTIVE) from None
    return session


def _export(session: Any) -> None:
    """Stop `session` and write its trace below its directory."""
    try:
        session.export_to_tb()
    except Exception as exc:
        raise ServingError(Code.INTERNAL, f"Failed to collect the profile: {exc}") from None


def _staged_trace(staging: str) -> str:
    # export_to_tb writes <staging>/plugins/profile/<timestamp>/<hostname>.xplane.pb
    found = glob.glob(os.path.join(glob.escape(staging), "plugins", "profile", "*", "*.xplane.pb"))
    if len(found) != 1:
        raise ServingError(Code.INTERNAL, f"The profiler wrote {len(found)} traces, expected one")
    return found[0]


def _is_empty(trace_path: str) -> bool:
    """TF's `IsEmpty(XSpace)`: no line of any plane has an event."""
    with open(trace_path, "rb") as f:
        space = XSpaceLines.FromString(f.read())
    return not any(line.events for plane in space.planes for line in plane.lines)


def _move_private(source: str, directory: str, name: str) -> str:
    """Move `source` to `directory/name` with mode 0600, following no symlink in
    `directory` itself or at `name`."""
    os.chmod(source, 0o600)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.replace(source, name, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return os.path.join(directory, name)


class ProfilerServicer:
    """`tensorflow.ProfilerService`: register with `_handlers.add_service(server, servicer,
    PROFILER_SERVICE)`. `directory` is `--profiler_dir` ("" for a private temporary one)."""

    def __init__(self, directory: str = "", max_duration_seconds: float = 300.0) -> None:
        self._directory = directory
        self._max_duration_seconds = max_duration_seconds
        self._busy = False
        self._stops: dict[str, asyncio.Event] = {}  # session_id -> set by Terminate / close

    async def Profile(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            return await self._profile(request)
        except ServingError as err:
            code, message = to_grpc_status(err)
        await context.abort(code, message)

    async def Terminate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        stop = self._stops.get(request.session_id)
        if stop is not None:
            stop.set()
        return TerminateResponse()

    async def Monitor(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")

    def close(self) -> None:
        """End every running profile now (each still writes what it captured)."""
        for stop in self._stops.values():
            stop.set()

    async def _profile(self, request: Any) -> Any:
        run = _plain_name("session_id", request.session_id) or time.strftime("%Y_%m_%d_%H_%M_%S")
        host = _plain_name("host_name", request.host_name) or socket.gethostname()
        seconds = _duration_seconds(request, self._max_duration_seconds)
        if self._busy:
            raise ServingError(Code.INTERNAL, _SESSION_ACTIVE)
        self._busy = True
        staging = ""
        try:
            # TF writes the trace where it likes below a directory: a private one of ours,
            # on the same file system as the destination, from which it is moved.
            staging = await asyncio.to_thread(self._staging_directory)
            await self._capture(staging, request.session_id, seconds)
            path, empty = await asyncio.to_thread(self._save, staging, run, host)
        finally:
            self._busy = False
            if staging:
                shutil.rmtree(staging, ignore_errors=True)
        log.info("Profile written to %s", path)
        return ProfileResponse(empty_trace=empty)

    async def _capture(self, staging: str, session_id: str, seconds: float) -> None:
        session = await asyncio.to_thread(_start_session, staging)
        stop = self._stops[session_id] = asyncio.Event()
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
        finally:
            self._stops.pop(session_id, None)
            # Also when the call was cancelled: the process's one session must end.
            await asyncio.to_thread(_export, session)

    def _save(self, staging: str, run: str, host: str) -> tuple[str, bool]:
        trace = _staged_trace(staging)
        empty = _is_empty(trace)
        try:
            run_dir = os.path.join(self._base_directory(), run)
            os.makedirs(run_dir, mode=0o700, exist_ok=True)
            path = _move_private(trace, run_dir, f"{host}.xplane.pb".replace(":", "_"))
        except OSError as exc:
            raise ServingError(Code.INTERNAL, f"Failed to write the profile: {exc}") from None
        return path, empty

    def _staging_directory(self) -> str:
        try:
            return tempfile.mkdtemp(prefix=".staging-", dir=self._base_directory())  # mode 0700
        except OSError as exc:
            raise ServingError(Code.INTERNAL, f"Failed to write the profile: {exc}") from None

    def _base_directory(self) -> str:
        if not self._directory:
            self._directory = tempfile.mkdtemp(prefix="pyserving-profiles-")  # mode 0700
            log.info("Profiles are written to %s (set --profiler_dir to choose)", self._directory)
        os.makedirs(self._directory, mode=0o700, exist_ok=True)
        return self._directory
