"""`pyserving` / `tensorflow_model_server`: parse flags, run the server, exit codes."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys

from pyserving.cli.flags import FlagError, parse_flags, set_flags, usage

__all__ = ["main"]


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


# Packages `import tensorflow` pulls in when they are installed and a model server never
# uses: Keras (TF imports it eagerly for its optimizer registrations, which only Keras-level
# loading needs; SavedModels are loaded here as graphs), Keras's optional scikit-learn
# wrappers, and SciPy (TF's legacy Keras checks for sparse inputs with it).
_NOT_NEEDED_BY_TENSORFLOW = ("keras", "sklearn", "scipy")


def _import_tensorflow() -> None:
    """Import TensorFlow with the packages above hidden (measured: 2.5 s and 538 MiB instead
    of 3.8 s and 631 MiB). The hiding ends with the import, so `tf.keras` and anything
    imported later may still use them."""
    if "tensorflow" in sys.modules:
        return
    hidden = [name for name in _NOT_NEEDED_BY_TENSORFLOW if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        import tensorflow  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


# issue 4: glibc's mallopt parameters (malloc.h) and the values the server sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD = 1 << 30
_MMAP_THRESHOLD = 32 << 20  # glibc's largest
_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def _keep_freed_memory() -> bool:
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
        print(f"{exc}\n{usage()}", file=sys.stderr)
        return 255
    if help_requested:
        print(usage())
        return 0
    for arg in unknown:
        print(f"unknown argument: {arg}\n{usage()}", file=sys.stderr)
    if options.version:
        from pyserving import __version__

        _import_tensorflow()
        import tensorflow as tf

        print(f"TensorFlow ModelServer: {__version__}-pyserving\nTensorFlow Library: {tf.__version__}")
        return 0
    _configure_logging(options.log_level)
    log = logging.getLogger("pyserving")
    for name in set_flags(options):
        log.warning("--%s is accepted for compatibility and has no effect in pyserving", name)

    _keep_freed_memory()  # issue 4
    _import_tensorflow()  # first: the gRPC API protos import TensorFlow too
    from pyserving.server.lifecycle import StartupError, serve, threads_left_behind

    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - optional speed-up
            code = asyncio.run(serve(options))
        else:
            code = uvloop.run(serve(options))
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 1
    if threads_left_behind():  # a stuck load would block the interpreter's exit forever
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
