"""Global pools through an injected gate: pure admission and scheduler tests.

An ``Admission`` given a ``PoolGate`` asks it for a slot once the rest of a pooled
request fits, grants only when the gate gives one, gives it back on every
release, and lets a refused request wait outside the reservation line
(``waits_for_pool`` tells its owner to ask again). The gate is a fake with a
fixed number of slots that counts every call.
"""

from __future__ import annotations

import pytest

from stageflow.engine.admission import Admission, Capacity, Request
from stageflow.engine.scheduler import EnginePlan, Scheduler
from stageflow.engine.states import TaskState as S
from stageflow.spec.models import RetryPolicy, TriggerRule

CAP = Capacity(cpu=4, memory_gb=8, pools={"lic": 1})
LIC = Request(cpu=1, pool="lic")


class FakeGate:
    """Slots of each pool held by key, as a store would keep them."""

    def __init__(self, slots: dict[str, int]) -> None:
        self.slots = dict(slots)
        self.held: dict[object, str] = {}
        self.calls: list[tuple[str, object, str]] = []

    def take(self, key: object, pool: str) -> bool:
        self.calls.append(("take", key, pool))
        used = sum(1 for p in self.held.values() if p == pool)
        if used >= self.slots.get(pool, 0):
            return False
        self.held[key] = pool
        return True

    def give_back(self, key: object, pool: str) -> None:
        self.calls.append(("give_back", key, pool))
        assert self.held.pop(key) == pool


def test_the_gate_decides_not_the_local_count() -> None:
    gate = FakeGate({"lic": 2})  # the store says 2 although this machine was told 1
    adm = Admission(CAP, gate=gate)
    assert adm.acquire(("r", 1), LIC) is not None
    assert adm.acquire(("r", 2), LIC) is not None
    assert adm.acquire(("r", 3), LIC) is None
    assert gate.held == {("r", 1): "lic", ("r", 2): "lic"}


def test_a_release_gives_the_slot_back_once() -> None:
    gate = FakeGate({"lic": 1})
    adm = Admission(CAP, gate=gate)
    assert adm.acquire(("r", 1), LIC) is not None
    adm.release(("r", 1))
    adm.release(("r", 1))  # holds nothing now: the gate is not called again
    assert gate.calls == [("take", ("r", 1), "lic"), ("give_back", ("r", 1), "lic")]
    assert adm.acquire(("r", 2), LIC) is not None


def test_forget_gives_back_every_slot_of_an_owner() -> None:
    gate = FakeGate({"lic": 2})
    adm = Admission(CAP, gate=gate)
    adm.acquire(("a", 1), LIC)
    adm.acquire(("b", 1), LIC)
    adm.forget("a")
    assert gate.held == {("b", 1): "lic"}


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(Request(cpu=1), id="no-pool"),
        pytest.param(Request(cpu=8, pool="lic"), id="rest-does-not-fit"),
    ],
)
def test_the_gate_is_asked_only_for_a_pooled_request_that_otherwise_fits(
    request_: Request,
) -> None:
    gate = FakeGate({"lic": 1})
    Admission(CAP, gate=gate).acquire(("r", 1), request_)
    assert gate.calls == []


def test_the_gate_is_not_asked_while_the_reservation_holds_others_back() -> None:
    gate = FakeGate({"lic": 1})
    adm = Admission(CAP, gate=gate, backfill_limit=0)
    assert adm.acquire(("r", "big"), Request(cpu=8)) is None  # waits, holds the reservation
    assert adm.acquire(("r", 1), LIC) is None
    assert gate.calls == []


def test_a_refused_request_waits_outside_the_line_and_its_owner_polls() -> None:
    gate = FakeGate({"lic": 1})
    gate.held["elsewhere"] = "lic"  # another process holds the one slot
    adm = Admission(CAP, gate=gate)
    assert adm.acquire(("r", 1), LIC) is None
    assert adm.waits_for_pool("r") and not adm.waits_for_pool("other")
    assert adm.reserved is None  # local resources are not kept for it
    assert adm.acquire(("s", 1), Request(cpu=4)) is not None  # others still start
    adm.release(("s", 1))
    del gate.held["elsewhere"]  # freed in the other process: no local release
    assert adm.acquire(("r", 1), LIC) is not None
    assert not adm.waits_for_pool("r")


def test_a_refused_request_that_held_the_reservation_passes_it_on() -> None:
    gate = FakeGate({"lic": 0})
    adm = Admission(CAP, gate=gate, backfill_limit=0)
    woken: list[str] = []
    adm.subscribe(lambda: woken.append("wake"))
    held = adm.acquire(("x", 0), Request(cpu=4))
    assert adm.acquire(("r", 1), Request(cpu=1, pool="lic")) is None  # cpu: in line
    assert adm.reserved == ("r", 1)
    adm.release(("x", 0))  # cpu frees: now only the gate refuses it
    assert held is not None and woken == ["wake"]
    assert adm.acquire(("r", 1), Request(cpu=1, pool="lic")) is None
    assert adm.reserved is None and woken == ["wake", "wake"]
    assert adm.waits_for_pool("r")


@pytest.mark.parametrize("how", ["withdraw", "forget", "granted"])
def test_the_poll_flag_clears_when_the_key_stops_waiting(how: str) -> None:
    gate = FakeGate({"lic": 0})
    adm = Admission(CAP, gate=gate)
    assert adm.acquire(("r", 1), LIC) is None
    if how == "withdraw":
        adm.withdraw(("r", 1))
    elif how == "forget":
        adm.forget("r")
    else:
        gate.slots["lic"] = 1
        assert adm.acquire(("r", 1), LIC) is not None
    assert not adm.waits_for_pool("r")


def test_without_a_gate_the_pool_is_counted_here() -> None:
    adm = Admission(CAP)
    assert adm.acquire(("r", 1), LIC) is not None
    assert adm.acquire(("r", 2), LIC) is None
    assert not adm.waits_for_pool("r")  # it waits in line for a local release
    assert adm.reserved == ("r", 2)


# -- through the scheduler ---------------------------------------------------------------


def plan(n: int) -> EnginePlan:
    ids = [f"t{k}" for k in range(n)]
    return EnginePlan(
        ids=ids,
        upstream=[[] for _ in ids],
        rules=[TriggerRule.ALL_SUCCESS] * n,
        retries=[RetryPolicy()] * n,
        priorities=[0] * n,
        requests=[LIC],
        request_of=[0] * n,
    )


def test_two_runs_share_one_global_slot_through_the_gate() -> None:
    """Two schedulers (as in two processes, each with its own admission) and one
    gate: never two pooled tasks at once; each start waits for the other's end."""
    gate = FakeGate({"lic": 1})
    a = Scheduler(plan(2), admission=Admission(CAP, gate=gate))
    b = Scheduler(plan(2), admission=Admission(CAP, gate=gate))
    a.start(0.0)
    b.start(0.0)
    assert [t.task_id for t in a.pop_ready(10, 0.0)] == ["t0"]
    assert b.pop_ready(10, 0.0) == []
    assert b.state("t0") is S.QUEUED and b.running == 0
    a.record("t0", 1, True, 1.0)  # gives the slot back
    started = b.pop_ready(10, 1.0)
    assert [t.task_id for t in started] == ["t0"] and a.pop_ready(10, 1.0) == []
    assert len(gate.held) == 1
    b.close()  # a run that ends gives back what it holds
    assert gate.held == {}
    assert [t.task_id for t in a.pop_ready(10, 2.0)] == ["t1"]
