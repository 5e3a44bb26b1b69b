"""How many cores this process may use: `--workers=0` starts one worker per core.

The smaller of the CPU affinity (`taskset`, a cpuset) and the cgroup CPU quota rounded up
(a container's `--cpus=1.5`, a Kubernetes CPU limit: cgroup v2 `cpu.max`, v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`); at least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit"]


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _quota(quota: float, period: float) -> float | None:
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def _v2_dirs(root: Path, proc_cgroup: str) -> list[Path]:
    """This process's cgroup v2 directory and its parents (a limit may be set on any)."""
    dirs: list[Path] = []
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            path = root / line[3:].lstrip("/")
            while True:
                dirs.append(path)
                if path == root or root not in path.parents:
                    break
                path = path.parent
    if root not in dirs:
        dirs.append(root)
    return dirs


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None) -> float | None:
    """CPUs the cgroup quota allows (1.5 for `--cpus=1.5`), None when unlimited or unknown."""
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    limits: list[float] = []
    for directory in _v2_dirs(root, proc_cgroup):
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max":
            limit = _quota(float(quota), float(period))
            if limit is not None:
                limits.append(limit)
    if not limits:  # cgroup v1
        try:
            quota_v1 = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period_v1 = float((root / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            return None
        limit = _quota(quota_v1, period_v1)
        return limit
    return min(limits)


def available_cpus() -> int:
    cpus = _affinity()
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)
