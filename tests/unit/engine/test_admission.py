"""Admission by resources: fit, GPU assignment, release on every outcome, infeasibility."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stageflow.engine.admission import Admission, Capacity, Request

CAP = Capacity(
    cpu=4, memory_gb=8, gpu=2, disk_gb=100, custom={"licenses": 2}, pools={"training": 1}
)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        pytest.param(Request(gpu=4), "resources.gpu is 4 but this machine has 2 GPUs", id="gpus"),
        pytest.param(
            Request(memory_gb=64), "resources.memory_gb is 64 but this machine has 8", id="memory"
        ),
        pytest.param(Request(cpu=16), "resources.cpu is 16", id="cpu"),
        pytest.param(Request(disk_gb=500), "resources.disk_gb is 500", id="disk"),
        pytest.param(Request(gpu=1.5), "must be a whole number", id="fractional-above-one"),
        pytest.param(
            Request(custom={"tokens": 1}), "no custom resource 'tokens'", id="unknown-custom"
        ),
        pytest.param(Request(custom={"licenses": 3}), "resources.licenses is 3", id="custom"),
        pytest.param(Request(pool="etl"), "pool 'etl' is not configured", id="pool"),
    ],
)
def test_infeasible_requests_are_named(request_: Request, message: str) -> None:
    why = Admission(CAP).infeasible(request_)
    assert why is not None and message in why


def test_a_request_that_fits_the_machine_is_feasible() -> None:
    assert Admission(CAP).infeasible(Request(cpu=4, memory_gb=8, gpu=2, pool="training")) is None


def test_two_memory_heavy_tasks_do_not_both_fit() -> None:
    adm = Admission(CAP)
    assert adm.acquire("a", Request(memory_gb=6)) is not None
    assert not adm.fits(Request(memory_gb=6))
    assert adm.acquire("b", Request(memory_gb=6)) is None
    assert adm.held == 1
    adm.release("a")
    assert adm.acquire("b", Request(memory_gb=6)) is not None


def test_whole_gpus_get_distinct_devices() -> None:
    adm = Admission(CAP)
    a = adm.acquire("a", Request(gpu=1))
    b = adm.acquire("b", Request(gpu=1))
    assert a is not None and b is not None
    assert {a.gpu_devices, b.gpu_devices} == {(0,), (1,)}
    assert adm.acquire("c", Request(gpu=1)) is None
    assert adm.acquire("d", Request(gpu=0.5)) is None  # no sharing with a whole holder
    adm.release("a")
    c = adm.acquire("c", Request(gpu=1))
    assert c is not None and c.gpu_devices == a.gpu_devices


def test_fractional_gpus_share_a_device_best_fit() -> None:
    adm = Admission(CAP)
    grants = [adm.acquire(k, Request(cpu=0, gpu=0.5)) for k in "abc"]
    assert [g.gpu_devices for g in grants if g] == [(0,), (0,), (1,)]
    assert adm.acquire("whole", Request(cpu=0, gpu=1)) is None  # both devices partly used
    assert adm.acquire("d", Request(cpu=0, gpu=0.5)) is not None
    assert adm.acquire("e", Request(cpu=0, gpu=0.25)) is None


def test_pools_limit_slots() -> None:
    adm = Admission(CAP)
    assert adm.acquire("a", Request(cpu=0.1, pool="training")) is not None
    assert adm.acquire("b", Request(cpu=0.1, pool="training")) is None
    adm.release("a")
    assert adm.acquire("b", Request(cpu=0.1, pool="training")) is not None


def test_acquiring_twice_for_one_key_is_a_bug() -> None:
    adm = Admission(CAP)
    adm.acquire("a", Request())
    with pytest.raises(RuntimeError):
        adm.acquire("a", Request())


REQUESTS = st.builds(
    Request,
    cpu=st.sampled_from([0, 0.5, 1, 2]),
    memory_gb=st.sampled_from([0, 1, 3, 6]),
    gpu=st.sampled_from([0, 0.25, 0.5, 1, 2]),
    custom=st.sampled_from([{}, {"licenses": 1}]),
    pool=st.sampled_from([None, "training"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(REQUESTS, st.booleans()), max_size=30))
def test_release_on_every_outcome_restores_everything(steps: list[tuple[Request, bool]]) -> None:
    """Whatever is acquired and released in any order, nothing leaks and nothing
    is ever over-committed."""
    adm = Admission(CAP)
    start = adm.free()
    held: list[int] = []
    for n, (request, release_one) in enumerate(steps):
        if adm.acquire(n, request) is not None:
            held.append(n)
        free = adm.free()
        assert all(v >= -1e-9 for v in free.values()), free
        devices = list(
            itertools.chain.from_iterable(
                adm._grants[k].gpu_devices for k in held if adm._grants[k].request.gpu >= 1
            )
        )
        assert len(devices) == len(set(devices))  # no two whole holders share a device
        if release_one and held:
            adm.release(held.pop(0))
    for key in held:
        adm.release(key)
    assert adm.free() == pytest.approx(start)
    assert adm.held == 0
