"""ServerCore in-process: version folders on a temp dir, served by the numpy platform
through the real registry, source, manager and thread pools. Waits are on the core's own
events (state changes, load completion), never on sleeps."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time

import pytest

from numpy_platform import model, reach, run, started, write_broken_version, write_version
from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState as S
from pyserving.errors import Code, ServingError
from pyserving.server.server_core import VersionStatus
from pyserving.sources.version_policy import All, Latest, Specific


pytestmark = pytest.mark.usefixtures("numpy_platform")


@pytest.fixture
def base(tmp_path):
    """Versions 1, 2, 3 of one model, each with its own intercept (= its version)."""
    path = tmp_path / "m"
    for v in (1, 2, 3):
        write_version(path, v, slope=2.0, intercept=float(v))
    return path


def _statuses(core, name):
    return [(s.version, s.state) for s in core.model_status(name)]


async def _error(awaitable):
    with pytest.raises(ServingError) as err:
        await awaitable
    return err.value.code, err.value.message


def _sync_error(fn, *args, **kwargs):
    with pytest.raises(ServingError) as err:
        fn(*args, **kwargs)
    return err.value.code, err.value.message


def test_initial_load_serves_only_the_latest_version(base):
    journal = []

    async def main():
        async with started([model("m", base)], loader_options={"journal": journal}) as core:
            assert core.model_status("m") == [VersionStatus(3, S.AVAILABLE, Code.OK, "")]
            assert core.is_ready() == (True, "")
            handle = await core.get_handle("m")
            with handle:
                assert handle.id == ServableId("m", 3)
                assert handle.servable.intercept == 3.0

    run(main())
    # The loader options reached the platform's loader; only the latest version was loaded.
    assert journal == [("load", str(base / "3")), ("unload", str(base / "3"))]


def test_version_policies_choose_what_is_served(base):
    models = [model("latest2", base, Latest(2)), model("all", base, All()),
              model("some", base, Specific(frozenset({1, 3})))]

    async def main():
        async with started(models) as core:
            served = {m.name: core.manager.available_versions(m.name) for m in models}
            assert served == {"latest2": [3, 2], "all": [3, 2, 1], "some": [3, 1]}
            assert _statuses(core, "some") == [(3, S.AVAILABLE), (1, S.AVAILABLE)]
            with await core.get_handle("some", 1) as handle:
                assert handle.servable.intercept == 1.0
            # A version on disk that the policy leaves out is not served.
            assert _sync_error(core.model_status, "some", 2) == (
                Code.NOT_FOUND, "Could not find version 2 of model some")
            assert await _error(core.get_handle("some", 2)) == (
                Code.NOT_FOUND, "Servable not found for request: Specific(some, 2)")

    run(main())


def test_a_new_version_replaces_the_old_and_removing_it_rolls_back(tmp_path):
    base = tmp_path / "m"
    write_version(base, 1, intercept=1.0)

    async def main():
        async with started([model("m", base)]) as core:
            write_version(base, 2, intercept=2.0)
            await core.poll_now()
            await reach(core, "m", 1, S.END)
            assert _statuses(core, "m") == [(2, S.AVAILABLE), (1, S.END)]
            with await core.get_handle("m") as handle:
                assert handle.id.version == 2

            shutil.rmtree(base / "2")
            await core.poll_now()
            await reach(core, "m", 2, S.END)
            assert _statuses(core, "m") == [(2, S.END), (1, S.AVAILABLE)]
            with await core.get_handle("m") as handle:
                assert (handle.id.version, handle.servable.intercept) == (1, 1.0)

    run(main())


def test_get_handle_by_version_label_and_latest(base):
    async def main():
        async with started([model("m", base, All(), stable=1, canary=2)]) as core:
            async def version(*args, **kwargs):
                with await core.get_handle(*args, **kwargs) as handle:
                    return handle.id.version

            assert await version("m") == 3
            assert await version("m", 2) == 2
            assert await version("m", label="stable") == 1
            assert await version("m", label="canary") == 2
            assert await version("m", 1, deadline=time.monotonic() + 5) == 1

            assert await _error(core.get_handle("m", label="nope")) == (
                Code.INVALID_ARGUMENT, "Unrecognized servable version label: nope")
            assert await _error(core.get_handle("other", label="stable")) == (
                Code.INVALID_ARGUMENT, "Unrecognized servable version label: stable")
            assert await _error(core.get_handle("m", 9)) == (
                Code.NOT_FOUND, "Servable not found for request: Specific(m, 9)")
            assert await _error(core.get_handle("nope")) == (
                Code.NOT_FOUND, "Servable not found for request: Latest(nope)")

            # A handle pins its version until released.
            handle = await core.get_handle("m", label="stable")
            assert core.manager.handles_in_use()[ServableId("m", 1)] == 1
            handle.release()
            assert core.manager.handles_in_use()[ServableId("m", 1)] == 0

    run(main())


@pytest.mark.parametrize("allow", [False, True])
def test_a_startup_label_on_an_unavailable_version_needs_the_flag(base, allow):
    async def main():
        async with started([model("m", base, stable=1, canary=3)], wait=False,
                           allow_version_labels_for_unavailable_models=allow) as core:
            if not allow:
                assert await _error(core.wait_initial_load()) == (
                    Code.FAILED_PRECONDITION,
                    "Request to assign label to version 1 of model m, which is not currently available "
                    "for inference")
                return
            await core.wait_initial_load()
            with await core.get_handle("m", label="canary") as handle:
                assert handle.id.version == 3
            assert await _error(core.get_handle("m", label="stable")) == (
                Code.NOT_FOUND, "Servable not found for request: Specific(m, 1)")

    run(main())


def test_reload_moves_labels_only_to_available_versions(base):
    async def main():
        async with started([model("m", base, All(), stable=1)]) as core:
            await core.reload_config([model("m", base, All(), stable=2)])
            assert core.resolve("m", None, "stable").version == 2

            code, message = await _error(core.reload_config([model("m", base, All(), stable=7)]))
            assert (code, message) == (
                Code.FAILED_PRECONDITION,
                "Request to assign label to version 7 of model m, which is not currently available for inference")
            assert core.resolve("m", None, "stable").version == 2  # the old config stays

    run(main())


def test_with_the_flag_only_new_labels_may_point_at_unavailable_versions(base):
    async def main():
        async with started([model("m", base, All(), stable=1)],
                           allow_version_labels_for_unavailable_models=True) as core:
            await core.reload_config([model("m", base, All(), stable=1, next=7)])
            await core.reload_config([model("m", base, All(), stable=1, next=7)])  # unchanged: still fine
            assert core.resolve("m", None, "next").version == 7

            assert await _error(core.reload_config([model("m", base, All(), stable=7, next=7)])) == (
                Code.FAILED_PRECONDITION,
                "Request to assign label to version 7 of model m, which is not currently available for inference")
            assert core.resolve("m", None, "stable").version == 1

            await core.reload_config([model("m", base, All(), stable=2)])  # to an available one: fine
            assert core.resolve("m", None, "stable").version == 2
            assert await _error(core.get_handle("m", label="next")) == (
                Code.INVALID_ARGUMENT, "Unrecognized servable version label: next")  # dropped with the config

    run(main())


def test_reload_adds_and_removes_models(tmp_path, base):
    other = tmp_path / "other"
    write_version(other, 5, intercept=5.0)

    async def main():
        async with started([model("m", base)]) as core:
            await core.reload_config([model("m", base), model("o", other)])
            assert core.is_configured("o")
            assert core.model_status("o") == [VersionStatus(5, S.AVAILABLE, Code.OK, "")]

            await core.reload_config([model("o", other)])
            await reach(core, "m", 3, S.END)
            assert not core.is_configured("m") and sorted(core.models) == ["o"]
            assert await _error(core.get_handle("m")) == (
                Code.NOT_FOUND, "Servable not found for request: Latest(m)")
            assert _statuses(core, "m") == [(3, S.END)]  # the monitor keeps its history, as TF Serving's
            assert core.is_ready() == (True, "")

            # Added again: the reload waits for it to be served again, not fooled by its END.
            await core.reload_config([model("o", other), model("m", base)])
            assert _statuses(core, "m") == [(3, S.AVAILABLE)]

    run(main())


def test_reload_rejects_a_platform_change_and_keeps_the_old_config(base):
    async def main():
        async with started([model("m", base)]) as core:
            changed = model("m", base)
            changed = type(changed)(changed.name, changed.base_path, "tensorflow", changed.policy)
            assert await _error(core.reload_config([changed])) == (
                Code.INVALID_ARGUMENT,
                "Illegal to change a model's platform. For model m platform was numpy and new platform "
                "requested is tensorflow")
            assert core.models["m"].platform == "numpy"
            assert core.manager.available_versions("m") == [3]

    run(main())


def test_reload_reports_a_new_model_that_fails_to_load(tmp_path, base):
    broken = tmp_path / "broken"
    write_broken_version(broken, 1)

    async def main():
        async with started([model("m", base)]) as core:
            code, message = await _error(core.reload_config([model("m", base), model("b", broken)]))
            assert code == Code.UNKNOWN
            assert message == ("1 servable(s) did not become available: {{name: b version: 1} due to error: "
                               f"No weights.npy in {broken / '1'}, }}")
            assert core.is_configured("b")  # the new config stays in effect, as in TF Serving
            assert core.model_status("b") == [
                VersionStatus(1, S.END, Code.NOT_FOUND, f"No weights.npy in {broken / '1'}")]
            assert core.is_ready() == (False, "model(s) without an AVAILABLE version: b")

    run(main())


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_an_initial_model_without_versions_fails_the_initial_load(tmp_path, case):
    base = tmp_path / "m"
    if case == "empty":
        base.mkdir()

    async def main():
        async with started([model("m", base)], wait=False) as core:
            code, message = await _error(core.wait_initial_load())
            assert code == Code.UNKNOWN
            if case == "missing":
                assert f"{{name: m}} due to error: Could not find base path {base} for servable m" in message
            else:
                assert f"No versions of servable m found under base path {base}" in message
            assert _sync_error(core.model_status, "m") == (Code.NOT_FOUND, "Could not find any versions of model m")

    run(main())


def test_model_status_reports_failed_versions_and_a_lost_base_path(tmp_path):
    base = tmp_path / "m"
    write_version(base, 1)

    async def main():
        async with started([model("m", base, All())]) as core:
            assert _sync_error(core.model_status, "nope") == (
                Code.NOT_FOUND, "Could not find any versions of model nope")
            assert _sync_error(core.model_status, "m", 7) == (Code.NOT_FOUND, "Could not find version 7 of model m")

            write_broken_version(base, 2)  # fails, and does not displace version 1
            await core.poll_now()
            await reach(core, "m", 2, S.END)
            assert core.model_status("m") == [
                VersionStatus(2, S.END, Code.NOT_FOUND, f"No weights.npy in {base / '2'}"),
                VersionStatus(1, S.AVAILABLE, Code.OK, ""),
            ]
            assert core.model_status("m", 1) == [VersionStatus(1, S.AVAILABLE, Code.OK, "")]

            os.rename(base, tmp_path / "elsewhere")  # still served, but its base path is in trouble
            await core.poll_now()
            (status,) = core.model_status("m", 1)
            assert (status.state, status.error_code) == (S.AVAILABLE, Code.NOT_FOUND)
            assert status.error_message.startswith(f"Could not find base path {base} for servable m with error")
            with await core.get_handle("m") as handle:
                assert handle.id.version == 1

    run(main())


def test_get_handle_waits_for_a_loading_version_until_its_deadline(tmp_path):
    base = tmp_path / "m"
    write_version(base, 1)
    gate = threading.Event()

    async def main():
        async with started([model("m", base)], wait=False, loader_options={"load_gate": gate}) as core:
            await reach(core, "m", 1, S.LOADING)
            assert await _error(core.get_handle("m", deadline=time.monotonic() + 0.2)) == (
                Code.DEADLINE_EXCEEDED,
                "Servable Latest(m) is still loading; not available before the request deadline")

            waiting = asyncio.create_task(core.get_handle("m", 1))  # no deadline: waits for the load
            await asyncio.sleep(0)  # a yield, not a wait: lets it reach its wait for the load
            assert not waiting.done()
            gate.set()
            with await waiting as handle:
                assert handle.id == ServableId("m", 1)
            await core.wait_initial_load()

    try:
        run(main())
    finally:
        gate.set()


def test_a_load_over_the_load_timeout_fails_and_stop_does_not_wait_for_it(tmp_path):
    base = tmp_path / "m"
    write_version(base, 1)
    gate = threading.Event()

    async def main():
        async with started([model("m", base)], wait=False, load_timeout_seconds=0.1,
                           loader_options={"load_gate": gate}) as core:
            code, message = await _error(core.wait_initial_load())
            assert code == Code.UNKNOWN
            assert "Loading did not finish within 0.1 s (--load_timeout_seconds)" in message
            assert core.model_status("m")[0].error_code == Code.DEADLINE_EXCEEDED
            # The load still runs on its thread: stop reports it did not settle.
            assert await core.stop(timeout=5) is False

    try:
        run(main())
    finally:
        gate.set()


def test_stop_waits_for_a_held_handle_then_unloads_every_version(base):
    journal = []

    async def main():
        async with started([model("m", base, Latest(2))], loader_options={"journal": journal}) as core:
            held = await core.get_handle("m", 2)
            stopping = asyncio.create_task(core.stop(timeout=10))
            await reach(core, "m", 2, S.UNLOADING)
            assert not stopping.done()  # version 2 drains: its handle is still held
            assert ("unload", str(base / "2")) not in journal
            held.release()
            assert await stopping is True
            assert _statuses(core, "m") == [(3, S.END), (2, S.END)]
            assert sorted(journal) == sorted([("load", str(base / "3")), ("load", str(base / "2")),
                                              ("unload", str(base / "3")), ("unload", str(base / "2"))])
            assert core.models == {}
            assert await _error(core.get_handle("m")) == (
                Code.NOT_FOUND, "Servable not found for request: Latest(m)")

    run(main())


def test_stop_during_a_poll_leaves_no_version_loaded(tmp_path):
    base = tmp_path / "m"
    write_version(base, 1)
    create_gate, created = threading.Event(), threading.Event()
    create_gate.set()

    async def main():
        async with started([model("m", base)], loader_options={"create_gate": create_gate,
                                                              "created": created}) as core:
            held = await core.get_handle("m")  # keeps stop() from settling before the poll ends
            write_version(base, 2)
            create_gate.clear()
            created.clear()
            poll = asyncio.create_task(core.poll_now())  # as the polling loop or a reload does
            assert await asyncio.to_thread(created.wait, 10)  # the poll thread is making v2's loader
            stopping = asyncio.create_task(core.stop(timeout=10))
            await reach(core, "m", 1, S.UNLOADING)
            create_gate.set()
            await poll
            held.release()
            assert await stopping is True
            assert core.manager.available_versions("m") == []
            assert core.monitor.state("m", 2) is None or core.monitor.state("m", 2).state == S.END

    try:
        run(main())
    finally:
        create_gate.set()
