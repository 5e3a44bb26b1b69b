"""Random lifecycles against the real server: a few fixed seeds of `tests/lifecycle_fuzz.py`.

Each seed starts its own server and runs 18 random steps (versions added, added slowly,
broken, removed; policy and label changes by file and by gRPC; slow requests with
lifecycle steps done while they run; clients that disconnect or cancel; bad bodies),
with small REST and gRPC predicts in the background and, in half of them, a CPU burner.
After every step the driver checks its invariants (answers, convergence of the served
versions, bounded unloading, responsiveness) and at the end that the idle server holds no
handle and burns no CPU. The seeds were picked to cover every kind of step, both APIs'
slow requests, and a rollback while a slow request holds the replaced version.

A failure message carries the step list, the failing step, the replay command and the
server log's tail. Longer runs: `python tests/lifecycle_fuzz.py --seeds 0-199 --steps 40`.
This file takes about two minutes on a 2-core machine.
"""

from __future__ import annotations

import pytest

import lifecycle_fuzz as fuzz

SEEDS = (42, 64, 33, 36)
STEPS = 18


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> fuzz.Store:
    return fuzz.build_store(tmp_path_factory.mktemp("lifecycle-store"))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_lifecycle_keeps_the_invariants(seed, store, tmp_path):
    result = fuzz.run_seed(fuzz.plan(seed, STEPS, "ci"), store, tmp_path)
    assert result.ok, result.report()
