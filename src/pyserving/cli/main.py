"""`pyserving` / `tensorflow_model_server`: parse flags, run the server, exit codes."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from typing import Any

from pyserving.cli.flags import FlagError, parse_flags, set_flags, unknown_argument_message, usage
from pyserving.errors import StartupError
from pyserving.platforms.tensorflow.runtime import tf_cpp_min_log_level

__all__ = ["main"]


def configure_logging(level: str, tag: str = "") -> None:
    """TF Serving's log layout; `tag` starts every message (a worker says which it is)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s] " + tag.replace("%", "%%") + "%(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def _import_tensorflow(verbose: bool = False) -> None:
    from pyserving.platforms.tensorflow.runtime import import_tensorflow

    import_tensorflow(verbose)


# Exit statuses (README, "Exit status"): 0 after a clean stop, 2 for a mistake on the command
# line, 255 when the server cannot start (TF Serving's `return -1` from main), 1 when
# interrupted before it was ready.
EXIT_USAGE = 2


def _usage_error(message: str) -> int:
    print(f"{message}\nRun with --help for the list of flags.", file=sys.stderr)
    return EXIT_USAGE


# glibc's mallopt parameters (malloc.h) and the values the server sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD = 1 << 30
_MMAP_THRESHOLD = 32 << 20  # glibc's largest
_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the next request instead of handing it back to the
    system at once (heap trimmed only above 1 GiB free; blocks up to 32 MiB from the heap,
    not from mmap). A big request (10,000 images over REST: ~200 MB of body, parsed numbers
    and input besides TensorFlow's) otherwise faults all of it in afresh every time
    (17,000-18,400 page faults back to back, 1,600-2,700 with this; ~5% of the request's
    time here, more on a VM whose balloon takes freed pages back: bench/RESULTS.md). The
    idle RSS is unchanged; after a big request the process keeps its peak. glibc's own
    settings win: nothing is changed when MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_,
    MALLOC_TOP_PAD_ or a `glibc.malloc` tunable is set, or when the C library has no
    mallopt (musl returns 0, macOS has none)."""
    if any(name in os.environ for name in _MALLOC_ENV) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options, unknown, help_requested = parse_flags(argv)
    except FlagError as exc:
        return _usage_error(str(exc))
    if help_requested:
        print(usage())
        return 0
    if unknown:
        # TF Serving prints the usage and serves anyway, with the mistyped feature off.
        return _usage_error("\n".join(unknown_argument_message(arg) for arg in unknown))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_cpp_min_log_level(options.log_level))
    if options.version:
        from pyserving import __version__

        _import_tensorflow()
        import tensorflow as tf

        print(f"TensorFlow ModelServer: {__version__}-pyserving\nTensorFlow Library: {tf.__version__}")
        return 0
    configure_logging(options.log_level)
    log = logging.getLogger("pyserving")
    for name in set_flags(options):
        log.warning("--%s is accepted for compatibility and has no effect in pyserving", name)
    workers = options.workers
    if workers <= 0:
        from pyserving.workers.cpus import available_cpus

        workers = available_cpus()
    if workers > 1:
        return _supervise(options, workers)
    if options.worker_max_rss_mb or options.recycle_workers_on_unload:
        log.warning("--worker_max_rss_mb and --recycle_workers_on_unload take effect with --workers=2 or more")

    keep_freed_memory()
    try:
        _import_tensorflow(verbose=options.log_level == "DEBUG")  # first: the gRPC API protos import it too
        from pyserving.model_server import Server
    except KeyboardInterrupt:  # Ctrl-C during the seconds of imports: no traceback
        return 1

    server: Server | None = None

    async def serve() -> None:
        nonlocal server
        server = Server(options)
        _stop_on_signals(server)
        await server.run()

    code = 0
    try:
        run_loop(serve())
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 1
    return exit_code(code, server is not None and server.threads_left_behind)


def _supervise(options: Any, workers: int) -> int:
    """Several worker processes under a supervisor (which never imports TensorFlow)."""
    from pyserving.workers.supervisor import Supervisor

    supervisor: Supervisor | None = None

    async def serve() -> int:
        nonlocal supervisor
        supervisor = Supervisor(options, workers)
        _stop_on_signals(supervisor)
        return await supervisor.run()

    try:
        return run_loop(serve())
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 1


def run_loop(main: Any) -> Any:
    """Run `main` (a coroutine) on uvloop when installed, else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return asyncio.run(main)
    return uvloop.run(main)


def exit_code(code: int, threads_left_behind: bool) -> int:
    """`code`, or exit at once with it: a stuck load would block the interpreter's exit forever."""
    if threads_left_behind:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _stop_on_signals(server: Any) -> None:
    """The first SIGTERM/SIGINT drains and stops the server; a second one exits at once."""
    log = logging.getLogger("pyserving")
    seen = 0

    def on_signal(signum: int) -> None:
        nonlocal seen
        seen += 1
        if seen > 1:
            log.warning("Second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("Received %s: draining requests in flight, then exiting", signal.Signals(signum).name)
        server.request_stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


if __name__ == "__main__":
    raise SystemExit(main())
