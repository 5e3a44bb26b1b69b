"""The manager stepped by hand: inline loads, no threads, no sleeps."""

import logging
import threading
import time

import pytest

from pyserving.core.aspired_versions_manager import AspiredVersionsManager, ServableData
from pyserving.core.event_bus import EventBus
from pyserving.core.servable_handle import ServableRequest
from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState as S
from pyserving.core.state_monitor import ServableStateMonitor
from pyserving.errors import Code, ServingError


class FakeLoader:
    def __init__(self, name, version, fail_times=0):
        self.name, self.version = name, version
        self.fail_times = fail_times
        self.loads = 0
        self.unloaded = False

    def load(self):
        self.loads += 1
        if self.loads <= self.fail_times:
            raise ServingError(Code.DATA_LOSS, f"broken {self.version}")

    def unload(self):
        self.unloaded = True

    def servable(self):
        return f"{self.name}:{self.version}"


@pytest.fixture
def env():
    bus = EventBus()
    events = []
    bus.subscribe(events.append)
    monitor = ServableStateMonitor(bus)
    manager = AspiredVersionsManager(bus, max_num_load_retries=2, load_retry_interval_seconds=0)
    return manager, monitor, events


def aspire(manager, name, loaders):
    manager.set_aspired_versions(name, [ServableData(ServableId(name, l.version), l) for l in loaders])


def settle(manager):
    steps = 0
    while manager.reconcile_once():
        steps += 1
        assert steps < 100


def serving(manager, name):
    with manager.get_handle(ServableRequest.latest(name)) as h:
        return h.servable


def test_load_then_serve_latest(env):
    manager, monitor, events = env
    aspire(manager, "m", [FakeLoader("m", 1)])
    settle(manager)
    assert serving(manager, "m") == "m:1"
    assert [e.state for e in events] == [S.START, S.LOADING, S.AVAILABLE]
    assert monitor.state("m", 1).state == S.AVAILABLE


def test_new_version_loads_before_old_unloads(env):
    manager, monitor, events = env
    v1, v2 = FakeLoader("m", 1), FakeLoader("m", 2)
    aspire(manager, "m", [v1])
    settle(manager)
    aspire(manager, "m", [v2])
    manager.reconcile_once()  # v2 START -> LOADING -> AVAILABLE (inline load)
    assert monitor.state("m", 2).state == S.AVAILABLE
    assert monitor.state("m", 1).state == S.AVAILABLE  # both served for a moment
    settle(manager)
    assert v1.unloaded and monitor.state("m", 1).state == S.END
    assert serving(manager, "m") == "m:2"


def test_rollback_when_newest_removed(env):
    manager, monitor, _ = env
    aspire(manager, "m", [FakeLoader("m", 2)])
    settle(manager)
    aspire(manager, "m", [FakeLoader("m", 1)])
    settle(manager)
    assert serving(manager, "m") == "m:1"
    assert monitor.state("m", 2).state == S.END


def test_failed_version_keeps_old_serving_and_reports_error(env):
    manager, monitor, _ = env
    aspire(manager, "m", [FakeLoader("m", 1)])
    settle(manager)
    broken = FakeLoader("m", 3, fail_times=99)
    aspire(manager, "m", [broken])
    settle(manager)
    assert broken.loads == 3  # first try + 2 retries
    state = monitor.state("m", 3)
    assert state.state == S.END and state.error.code == Code.DATA_LOSS
    assert serving(manager, "m") == "m:1"
    # the source keeps asking for 3: no reload storm
    aspire(manager, "m", [broken])
    settle(manager)
    assert broken.loads == 3


def test_retry_succeeds(env):
    manager, monitor, _ = env
    flaky = FakeLoader("m", 1, fail_times=2)
    aspire(manager, "m", [flaky])
    settle(manager)
    assert serving(manager, "m") == "m:1" and flaky.loads == 3


def test_empty_aspired_set_unloads_everything(env):
    manager, monitor, _ = env
    aspire(manager, "m", [FakeLoader("m", 1)])
    settle(manager)
    aspire(manager, "m", [])
    settle(manager)
    with pytest.raises(ServingError) as err:
        manager.get_handle(ServableRequest.latest("m"))
    assert err.value.code == Code.NOT_FOUND
    assert str(err.value.message) == "Servable not found for request: Latest(m)"


def test_specific_version_requests(env):
    manager, _, _ = env
    aspire(manager, "m", [FakeLoader("m", 1), FakeLoader("m", 2)])
    settle(manager)
    with manager.get_handle(ServableRequest.specific("m", 1)) as h:
        assert h.servable == "m:1"
    with pytest.raises(ServingError) as err:
        manager.get_handle(ServableRequest.specific("m", 7))
    assert err.value.message == "Servable not found for request: Specific(m, 7)"


def test_source_error_becomes_end_state(env):
    manager, monitor, _ = env
    manager.set_aspired_versions("m", [ServableData(ServableId("m", 4), error=ServingError(Code.INVALID_ARGUMENT, "no platform"))])
    settle(manager)
    assert monitor.state("m", 4).state == S.END
    assert monitor.state("m", 4).error.message == "no platform"


def test_unload_waits_for_in_flight_handles(env):
    manager, monitor, _ = env
    v1 = FakeLoader("m", 1)
    aspire(manager, "m", [v1])
    settle(manager)
    handle = manager.get_handle(ServableRequest.latest("m"))
    aspire(manager, "m", [])
    # the unload runs on another thread here, so it can block on the handle
    manager._submit_unload = lambda fn: threading.Thread(target=fn).start()
    manager.reconcile_once()
    # no new handles while unloading
    with pytest.raises(ServingError):
        manager.get_handle(ServableRequest.latest("m"))
    assert not v1.unloaded
    done = threading.Event()
    manager._on_change = done.set
    handle.release()
    assert done.wait(5)
    assert v1.unloaded and monitor.state("m", 1).state == S.END


def test_reaspired_unloading_version_waits_until_ended(env):
    manager, monitor, _ = env
    v1 = FakeLoader("m", 1)
    aspire(manager, "m", [v1])
    settle(manager)
    aspire(manager, "m", [])
    settle(manager)
    v1b = FakeLoader("m", 1)
    aspire(manager, "m", [v1b])
    settle(manager)
    assert v1b.loads == 1
    assert serving(manager, "m") == "m:1"


def _threaded_unloads(manager):
    """Unloads on their own threads (they block on handles); `changed` is set when one ends."""
    changed = threading.Event()
    manager._submit_unload = lambda fn: threading.Thread(target=fn, daemon=True).start()
    manager._on_change = changed.set
    return changed


def test_rollback_while_the_old_version_drains_does_not_spin_and_brings_it_back(env):
    """Roll forward during a slow request, then roll back before it ends: the re-aspired
    version waits for its unload to end (no busy loop), then loads again."""
    manager, monitor, _ = env
    v1, v2, v1b = FakeLoader("m", 1), FakeLoader("m", 2), FakeLoader("m", 1)
    aspire(manager, "m", [v1])
    settle(manager)
    slow = manager.get_handle(ServableRequest.latest("m"), deadline=time.monotonic() + 30)
    changed = _threaded_unloads(manager)
    aspire(manager, "m", [v2])  # roll forward: 2 loads, 1 starts draining
    settle(manager)
    assert monitor.state("m", 1).state == S.UNLOADING and serving(manager, "m") == "m:2"
    aspire(manager, "m", [v1b])  # roll back while 1 still drains
    settle(manager)  # returns: a deferred set is no change
    assert serving(manager, "m") == "m:2" and not v1.unloaded
    changed.clear()
    slow.release()
    assert changed.wait(5)
    settle(manager)  # the unload of 1 ended: the rollback applies
    assert changed.wait(5)
    for _ in range(100):  # 2 unloads on its thread once 1 is back
        if monitor.state("m", 2).state == S.END:
            break
        changed.clear()
        changed.wait(5)
        settle(manager)
    assert v1.unloaded and v1b.loads == 1 and v2.unloaded
    assert serving(manager, "m") == "m:1"
    assert manager.is_settled()


def test_drain_gives_up_after_the_holders_deadline_and_names_them(env, caplog, monkeypatch):
    import pyserving.core.loader_harness as harness_module

    monkeypatch.setattr(harness_module, "DRAIN_SLACK_SECONDS", 0.05)
    manager, monitor, _ = env
    v1 = FakeLoader("m", 1)
    aspire(manager, "m", [v1])
    settle(manager)
    stuck = manager.get_handle(ServableRequest.latest("m"), deadline=time.monotonic() + 0.1, owner="grpc predict X")
    assert manager.handles_in_use() == {ServableId("m", 1): 1}
    aspire(manager, "m", [])
    with caplog.at_level(logging.WARNING, logger="pyserving.manager"):
        settle(manager)  # the inline unload returns once the deadline and the slack passed
    assert v1.unloaded and monitor.state("m", 1).state == S.END
    assert "grpc predict X" in caplog.text and "deadline passed" in caplog.text
    stuck.release()  # late release of an unloaded version is harmless


def test_drain_without_deadline_waits_for_the_no_deadline_bound(env):
    manager, _, _ = env
    manager._drain_no_deadline_seconds = 0.0
    v1 = FakeLoader("m", 1)
    aspire(manager, "m", [v1])
    settle(manager)
    manager.get_handle(ServableRequest.latest("m"))
    aspire(manager, "m", [])
    started = time.monotonic()
    settle(manager)
    assert v1.unloaded and time.monotonic() - started < 5


def test_handles_in_use_counts_each_loaded_version(env):
    manager, _, _ = env
    aspire(manager, "m", [FakeLoader("m", 1)])
    settle(manager)
    assert manager.handles_in_use() == {ServableId("m", 1): 0}
    a = manager.get_handle(ServableRequest.latest("m"))
    b = manager.get_handle(ServableRequest.latest("m"))
    assert manager.handles_in_use() == {ServableId("m", 1): 2}
    a.release()
    a.release()  # idempotent
    release = b.transfer()
    b.release()  # no-op: the duty moved
    assert manager.handles_in_use() == {ServableId("m", 1): 1}
    release()
    assert manager.handles_in_use() == {ServableId("m", 1): 0}


def test_a_load_past_its_timeout_is_failed_at_once_and_its_late_result_dropped(env):
    manager, monitor, _ = env
    manager._load_timeout = 0.1
    go, ended = threading.Event(), threading.Event()

    class StuckLoader(FakeLoader):
        def load(self):
            go.wait(10)  # stuck on I/O until the test lets it go
            super().load()

    stuck = StuckLoader("m", 1)
    manager._submit = lambda fn: threading.Thread(target=lambda: (fn(), ended.set()), daemon=True).start()
    failed = threading.Event()
    manager._bus.subscribe(lambda e: failed.set() if e.state == S.END else None)
    aspire(manager, "m", [stuck])
    settle(manager)
    assert failed.wait(5)
    state = monitor.state("m", 1)
    assert state.state == S.END and state.error.code == Code.DEADLINE_EXCEEDED
    assert "--load_timeout_seconds" in state.error.message
    assert manager.threads_working() == 0 and manager.abandoned_loads() == 1 and manager.is_settled()
    go.set()
    assert ended.wait(5)
    assert stuck.unloaded  # loaded too late: dropped, never served
    assert manager.threads_working() == 0 and manager.abandoned_loads() == 0
    assert monitor.state("m", 1).state == S.END
    with pytest.raises(ServingError):
        manager.get_handle(ServableRequest.latest("m"))
