"""The merged version state the supervisor reports from its workers' states."""

from __future__ import annotations

from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState as S
from pyserving.core.servable_state import ServableState
from pyserving.errors import Code, ServingError
from pyserving.workers.cluster import ClusterStates, merge

V1 = ServableId("m", 1)


def st(state: S, error: ServingError | None = None) -> ServableState:
    return ServableState(V1, state, error)


def test_available_only_once_every_worker_has_it():
    assert merge([st(S.AVAILABLE), st(S.LOADING)], aspired=True).state == S.LOADING
    assert merge([st(S.AVAILABLE), None], aspired=True).state == S.START
    assert merge([st(S.AVAILABLE), st(S.AVAILABLE)], aspired=True).state == S.AVAILABLE


def test_unloading_as_soon_as_one_worker_unloads_and_end_when_all_have():
    assert merge([st(S.AVAILABLE), st(S.UNLOADING)], aspired=False).state == S.UNLOADING
    assert merge([st(S.AVAILABLE), st(S.END)], aspired=False).state == S.UNLOADING
    assert merge([st(S.END), st(S.END)], aspired=False).state == S.END
    # a worker that never loaded a version no longer aspired does not hold it back
    assert merge([st(S.END), None], aspired=False).state == S.END


def test_a_failure_anywhere_is_reported_with_its_error():
    error = ServingError(Code.INVALID_ARGUMENT, "bad graph")
    merged = merge([st(S.AVAILABLE), st(S.END, error)], aspired=True)
    assert merged.state == S.END and merged.error is error


def test_unknown_everywhere_is_no_state():
    assert merge([None, None], aspired=True) is None


def test_a_replacement_counts_only_once_it_has_joined():
    published: list[ServableState] = []
    cluster = ClusterStates(published.append, lambda sid: True)
    cluster.add(1, counted=True)
    cluster.add(2, counted=True)
    cluster.update(1, st(S.AVAILABLE))
    assert published[-1].state == S.START  # worker 2 has not reported it
    cluster.update(2, st(S.AVAILABLE))
    assert published[-1].state == S.AVAILABLE
    cluster.remove(2)  # died
    cluster.add(3, counted=False)  # its replacement, loading
    cluster.update(3, st(S.LOADING))
    assert cluster.state(V1).state == S.AVAILABLE
    cluster.join(3)
    assert cluster.state(V1).state == S.LOADING
    cluster.update(3, st(S.AVAILABLE))
    assert cluster.state(V1).state == S.AVAILABLE
    assert cluster.joined() == 1


def test_with_no_worker_left_the_last_states_stand():
    published: list[ServableState] = []
    cluster = ClusterStates(published.append, lambda sid: True)
    cluster.add(1, counted=True)
    cluster.update(1, st(S.AVAILABLE))
    count = len(published)
    cluster.remove(1)
    assert cluster.state(V1).state == S.AVAILABLE and len(published) == count


def test_events_of_a_worker_already_gone_are_ignored():
    published: list[ServableState] = []
    cluster = ClusterStates(published.append, lambda sid: True)
    cluster.update(7, st(S.AVAILABLE))
    assert published == [] and cluster.state(V1) is None
