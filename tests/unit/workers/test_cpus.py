"""`--workers=0`: one worker per core the process may use (affinity, cgroup quota)."""

from __future__ import annotations

import os

import pytest

from pyserving.workers import cpus


def test_cgroup_v2_quota_of_this_process_or_a_parent(tmp_path):
    (tmp_path / "kubepods" / "pod").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "kubepods" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "kubepods" / "pod" / "cpu.max").write_text("max 100000\n")
    assert cpus.cgroup_cpu_limit(tmp_path, "0::/kubepods/pod\n") == 1.5


def test_cgroup_v2_without_a_limit(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus.cgroup_cpu_limit(tmp_path, "0::/\n") is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.cgroup_cpu_limit(tmp_path, "") == 2.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus.cgroup_cpu_limit(tmp_path, "") is None


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert cpus.cgroup_cpu_limit(tmp_path, "") is None


def test_available_cpus_is_the_smaller_of_affinity_and_quota_rounded_up(monkeypatch):
    monkeypatch.setattr(cpus, "_affinity", lambda: 8)
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 1.5)
    assert cpus.available_cpus() == 2
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert cpus.available_cpus() == 8
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 0.1)
    assert cpus.available_cpus() == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_this_process_affinity_bounds_the_count():
    assert 1 <= cpus.available_cpus() <= len(os.sched_getaffinity(0))
