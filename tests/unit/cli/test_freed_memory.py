"""issue 4: the server asks glibc to keep freed memory for the next big request."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)

# Allocates 120 MiB in 2 MiB blocks, frees them, and prints what mallopt returned and how
# much of the 120 MiB is still resident afterwards.
_PROBE = """
import os, sys
from pyserving.process import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "call" else None
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
base = rss()
blocks = [b"\\x01" * (2 << 20) for _ in range(60)]  # (written: calloc may not touch)
del blocks
print(kept, (rss() - base) >> 20)
"""


def _probe(call: bool, **env: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "call" if call else "skip"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout.split()
    return out[0], int(out[1])


def test_freed_blocks_stay_in_the_process():
    assert _probe(call=False) == ("None", pytest.approx(0, abs=20))  # glibc's default: handed back
    kept, resident = _probe(call=True)
    assert kept == "True" and resident >= 100


@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}])
def test_glibc_settings_of_the_user_win(env):
    kept, resident = _probe(call=True, **env)
    assert kept == "False" and resident < 20
