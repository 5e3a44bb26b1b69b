"""What every server process does the same way, a single server or a worker: the log
layout, the allocator setting, the event loop, the exit."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
from typing import Any

__all__ = ["configure_logging", "keep_freed_memory", "run_loop", "exit_code"]


def configure_logging(level: str, tag: str = "") -> None:
    """TF Serving's log layout; `tag` starts every message (a worker says which it is)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s] " + tag.replace("%", "%%") + "%(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


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
