"""`pyserving` / `tensorflow_model_server`: parse flags, run the server, exit codes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from pyserving.cli.flags import FlagError, parse_flags, set_flags, unknown_argument_message, usage
from pyserving.errors import StartupError
from pyserving.process import configure_logging, exit_code, keep_freed_memory, run_loop
from pyserving.platforms.tensorflow.runtime import tf_cpp_min_log_level

__all__ = ["main"]


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
