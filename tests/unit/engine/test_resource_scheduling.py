"""Resource-aware scheduling in the pure engine, driven by hand with a fake clock.

``Run`` wraps one ``Scheduler`` and checks every transition it returns (legal,
timed ``now``, from the state the mirror holds). After every call, ``budget``
checks every run sharing the ``Admission``: the running tasks' requests fit the
capacity in every dimension (CPU, memory, disk, custom resources, pool slots),
whole GPUs are distinct devices, fractional ones never overfill a device nor
share one with a whole holder, an exclusive task runs alone, and what the
admission says is free is the capacity less what is held.

Covered: the order tasks start in (priority, upward rank, readiness), bounded
backfilling and its reservation, release of resources on every outcome, GPU
device assignment, exclusive tasks, pools, runs sharing one budget, infeasible
requests, and the spec side (``resources:``, ``exclusive``, operator defaults).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stageflow.engine import EnginePlan, RunState, Scheduler, TaskState, Transition
from stageflow.engine.admission import Admission, Capacity, Grant, Request
from stageflow.engine.scheduler import to_request
from stageflow.engine.states import FINAL_TASK_STATES, TASK_TRANSITIONS
from stageflow.errors import InvalidSpec, Problem
from stageflow.spec.load import pipeline_from_data
from stageflow.spec.models import Pipeline, Resources, RetryPolicy, Task, TaskDefaults
from stageflow.spec.models import TriggerRule as TR
from stageflow.spec.validate import pipeline_problems

S = TaskState
EPS = 1e-9
NO_RETRY = RetryPolicy()
NOTHING = Request(cpu=0.0)


# -- helpers -------------------------------------------------------------------------


def plan_of(
    upstream: Mapping[str, list[str]],
    *,
    requests: Mapping[str, Request] | None = None,
    priorities: Mapping[str, int] | None = None,
    estimates: Mapping[str, float] | None = None,
    exclusive: Iterable[str] = (),
    retries: Mapping[str, RetryPolicy] | None = None,
    mapped: Mapping[str, float] | None = None,
) -> EnginePlan:
    """An ``EnginePlan`` with requests by task id (deduplicated as ``from_pipeline``
    does); a task not in ``requests`` asks for nothing."""
    ids = list(upstream)
    index = {tid: i for i, tid in enumerate(ids)}
    table: list[Request] = []
    request_of: list[int] = []
    if requests:
        for tid in ids:
            request = requests.get(tid, NOTHING)
            if request not in table:
                table.append(request)
            request_of.append(table.index(request))
    lone = set(exclusive)
    return EnginePlan(
        ids=ids,
        upstream=[[index[u] for u in upstream[t]] for t in ids],
        rules=[TR.ALL_SUCCESS] * len(ids),
        retries=[(retries or {}).get(t, NO_RETRY) for t in ids],
        priorities=[(priorities or {}).get(t, 0) for t in ids],
        mapped=[(mapped or {}).get(t) for t in ids] if mapped else [],
        requests=table,
        request_of=request_of,
        exclusive=[t in lone for t in ids] if lone else [],
        estimates=[(estimates or {}).get(t, 1.0) for t in ids] if estimates else [],
    )


class Run:
    """One scheduler under test; ``peers`` are every run sharing its admission."""

    def __init__(
        self,
        plan: EnginePlan,
        admission: Admission | None,
        *,
        peers: list[Run] | None = None,
        failure_strategy: str = "continue",
        map_size: Callable[[str], int | str] | None = None,
    ) -> None:
        self.plan = plan
        self.admission = admission
        self.sched = Scheduler(
            plan, failure_strategy=failure_strategy, admission=admission, map_size=map_size
        )
        self.mirror: dict[str, TaskState] = self.sched.states()
        self.exclusive = {t for t, x in zip(plan.ids, plan.exclusive, strict=False) if x}
        self.peers = peers if peers is not None else []
        self.peers.append(self)
        self.started: list[str] = []  # every start, in order
        self.closed = False
        self.max_running = 0

    # -- checked calls -------------------------------------------------------------

    def _check(self, out: list[Transition], now: float) -> list[tuple[str, TaskState]]:
        for t in out:
            assert t.at == now, t
            old = self.mirror.get(t.task_id, S.PENDING)  # mapped children appear
            assert t.old is old, t
            assert t.new in TASK_TRANSITIONS[t.old], t
            self.mirror[t.task_id] = t.new
        assert self.mirror == self.sched.states()
        budget(self.peers)
        self.max_running = max(self.max_running, len(self.working()))
        return [(t.task_id, t.new) for t in out]

    def start(self, now: float = 0.0) -> list[tuple[str, TaskState]]:
        return self._check(self.sched.start(now), now)

    def pop(self, limit: int = 1000, now: float = 0.0) -> list[str]:
        pairs = self._check(self.sched.pop_ready(limit, now), now)
        assert all(new is S.RUNNING for _, new in pairs)
        ids = [t for t, _ in pairs]
        self.started.extend(ids)
        return ids

    def ok(self, tid: str, now: float = 0.0) -> list[tuple[str, TaskState]]:
        return self._check(self.sched.record(tid, self.sched.attempt(tid), True, now), now)

    def fail(
        self, tid: str, now: float = 0.0, *, fatal: bool = False, retryable: bool = True
    ) -> list[tuple[str, TaskState]]:
        out = self.sched.record(
            tid, self.sched.attempt(tid), False, now, "boom", fatal=fatal, retryable=retryable
        )
        return self._check(out, now)

    def late(self, tid: str, attempt: int, ok: bool, now: float = 0.0) -> list[Transition]:
        out = self.sched.record(tid, attempt, ok, now, "late")
        self._check(out, now)
        return out

    def due(self, now: float) -> list[tuple[str, TaskState]]:
        return self._check(self.sched.due(now), now)

    def cancel(self, now: float = 0.0) -> list[tuple[str, TaskState]]:
        return self._check(self.sched.cancel(now), now)

    def abort(self, now: float = 0.0) -> list[tuple[str, TaskState]]:
        return self._check(self.sched.abort(now, "run_timeout_seconds reached"), now)

    # -- views ---------------------------------------------------------------------

    def alone(self, tid: str) -> bool:
        """Whether ``tid`` must run alone (exclusive, or a child of an exclusive task)."""
        parent = self.sched.parent(tid)
        return tid in self.exclusive or (parent is not None and parent[0] in self.exclusive)

    def close(self) -> None:
        """End the run however it stands: it holds nothing afterwards."""
        self.sched.close()
        self.closed = True
        budget(self.peers)

    def working(self) -> list[str]:
        """Running tasks that hold a worker (not mapped parents)."""
        return [t for t, s in self.mirror.items() if s is S.RUNNING and not self.sched.children(t)]

    def grants(self) -> list[tuple[str, Grant]]:
        out: list[tuple[str, Grant]] = []
        if self.closed:
            for tid in self.working():
                assert self.sched.grant(tid) is None
            return out
        for tid in self.working():
            grant = self.sched.grant(tid)
            if self.admission is not None:
                assert grant is not None, f"{tid} runs without a grant"
                out.append((tid, grant))
        return out

    def drain(self, now: float = 0.0, fail: Iterable[str] = ()) -> list[str]:
        """Run to the end, one finish at a time (oldest start first)."""
        failing = set(fail)
        while not self.sched.finished:
            self.pop(now=now)
            working = [t for t in self.started if self.mirror[t] is S.RUNNING]
            assert working, f"stalled: {self.sched.states()}"
            tid = working[0]
            if tid in failing:
                self.fail(tid, now)
            else:
                self.ok(tid, now)
        return self.started


def budget(runs: list[Run]) -> None:
    """Everything running across ``runs`` fits their shared admission's capacity."""
    adm = runs[0].admission
    if adm is None:
        return
    cap = adm.capacity
    held = [(run, tid, g) for run in runs for tid, g in run.grants()]
    cpu = sum(g.request.cpu for _, _, g in held)
    memory = sum(g.request.memory_gb for _, _, g in held)
    disk = sum(g.request.disk_gb for _, _, g in held)
    assert cpu <= cap.cpu + EPS, held
    assert memory <= cap.memory_gb + EPS, held
    assert disk <= cap.disk_gb + EPS, held
    custom: dict[str, float] = {}
    pools: dict[str, int] = {}
    whole: list[int] = []
    shared: dict[int, float] = {}
    for _, _, g in held:
        for name, amount in g.request.custom.items():
            custom[name] = custom.get(name, 0.0) + amount
        if g.request.pool is not None:
            pools[g.request.pool] = pools.get(g.request.pool, 0) + 1
        if g.request.gpu >= 1:
            assert len(g.gpu_devices) == int(g.request.gpu)
            whole.extend(g.gpu_devices)
        elif g.request.gpu > 0:
            assert len(g.gpu_devices) == 1
            d = g.gpu_devices[0]
            shared[d] = shared.get(d, 0.0) + g.request.gpu
        else:
            assert g.gpu_devices == ()
    for name, amount in custom.items():
        assert amount <= cap.custom[name] + EPS, (name, held)
    for name, count in pools.items():
        assert count <= cap.pools[name], (name, held)
    assert len(whole) == len(set(whole)), held  # no device held whole twice
    assert all(0 <= d < cap.gpu for d in [*whole, *shared]), held
    assert not set(whole) & set(shared), held  # no sharing with a whole holder
    assert all(v <= 1.0 + EPS for v in shared.values()), held
    for run, tid, _ in held:
        if run.alone(tid):
            assert len(held) == 1, f"exclusive {tid} runs with {held}"
    assert adm.held == len(held)
    free = adm.free()
    assert free["cpu"] == pytest.approx(cap.cpu - cpu)
    assert free["memory_gb"] == pytest.approx(cap.memory_gb - memory)
    assert free["gpu"] == pytest.approx(cap.gpu - len(whole) - sum(shared.values()))
    for name, slots in cap.pools.items():
        assert free[f"pool.{name}"] == slots - pools.get(name, 0)
    for name, amount in cap.custom.items():
        assert free[f"custom.{name}"] == pytest.approx(amount - custom.get(name, 0.0))


def idle(adm: Admission) -> None:
    """Nothing is held or reserved and everything is free again."""
    cap = adm.capacity
    assert adm.held == 0
    assert adm.reserved is None
    assert adm.free() == pytest.approx(
        {
            "cpu": cap.cpu,
            "memory_gb": cap.memory_gb,
            "disk_gb": cap.disk_gb,
            "gpu": float(cap.gpu),
            **{f"custom.{k}": v for k, v in cap.custom.items()},
            **{f"pool.{k}": float(v) for k, v in cap.pools.items()},
        }
    )


def cpu(n: float) -> Request:
    return Request(cpu=n)


def reserver(adm: Admission) -> object | None:
    """The scheduler whose task holds the reservation, or ``None``."""
    reserved = adm.reserved
    return reserved[0] if isinstance(reserved, tuple) else None


def key(run: Run, tid: str) -> tuple[Scheduler, int]:
    """The admission key of ``tid`` in ``run``."""
    return (run.sched, run.plan.ids.index(tid))


CAP4 = Capacity(cpu=4, memory_gb=8)


# -- order ---------------------------------------------------------------------------

WITH_AND_WITHOUT = pytest.mark.parametrize("admitted", [False, True], ids=["plain", "admission"])


def _ordered(plan: EnginePlan, admitted: bool) -> Run:
    run = Run(plan, Admission(Capacity(cpu=64, memory_gb=64)) if admitted else None)
    run.start()
    return run


def _small(ids: Iterable[str]) -> dict[str, Request]:
    return dict.fromkeys(ids, cpu(1))


@WITH_AND_WITHOUT
def test_priority_comes_before_rank(admitted: bool) -> None:
    upstream: dict[str, list[str]] = {"lo": [], "lo2": ["lo"], "lo3": ["lo2"], "hi": []}
    run = _ordered(plan_of(upstream, requests=_small(upstream), priorities={"hi": 5}), admitted)
    assert run.sched.rank("lo") == 3.0 and run.sched.rank("hi") == 1.0
    assert run.pop(limit=1) == ["hi"]
    assert run.pop(limit=1) == ["lo"]


@WITH_AND_WITHOUT
def test_higher_upward_rank_goes_first(admitted: bool) -> None:
    upstream: dict[str, list[str]] = {
        "a": [],
        "b": [],
        "b2": ["b"],
        "b3": ["b2"],
        "c": [],
        "c2": ["c"],
    }
    run = _ordered(plan_of(upstream, requests=_small(upstream)), admitted)
    assert [run.sched.rank(t) for t in upstream] == [1.0, 3.0, 2.0, 1.0, 2.0, 1.0]
    assert run.pop(limit=1) == ["b"]
    assert run.pop(limit=1) == ["c"]
    assert run.pop(limit=1) == ["a"]


@WITH_AND_WITHOUT
def test_estimated_seconds_change_the_rank(admitted: bool) -> None:
    upstream: dict[str, list[str]] = {"a": [], "a2": ["a"], "b": []}
    plain = plan_of(upstream, requests=_small(upstream))
    timed = plan_of(upstream, requests=_small(upstream), estimates={"b": 10.0, "a2": 2.5})
    run = _ordered(plain, admitted)
    assert run.pop(limit=1) == ["a"]  # a heads a chain of two
    run = _ordered(timed, admitted)
    assert run.sched.rank("a") == 3.5  # 1 + 2.5
    assert run.sched.rank("b") == 10.0
    assert run.pop(limit=1) == ["b"]


def test_from_pipeline_reads_estimated_seconds() -> None:
    pipe = Pipeline(
        "p",
        tasks=[
            Task("a", call="m:f"),
            Task("a2", call="m:f", upstream=["a"], estimated_seconds=30),
            Task("b", call="m:f", estimated_seconds=20),
        ],
    )
    plan = EnginePlan.from_pipeline(pipe)
    assert plan.estimates == [1.0, 30.0, 20.0]
    sched = Scheduler(plan)
    assert (sched.rank("a"), sched.rank("a2"), sched.rank("b")) == (31.0, 30.0, 20.0)
    assert EnginePlan.from_pipeline(Pipeline("p", tasks=[Task("a", call="m:f")])).estimates == []


@WITH_AND_WITHOUT
def test_ties_go_in_the_order_tasks_became_ready(admitted: bool) -> None:
    upstream: dict[str, list[str]] = {"a": [], "b": [], "c": ["a"], "d": ["b"]}
    run = _ordered(plan_of(upstream, requests=_small(upstream)), admitted)
    assert run.pop() == ["a", "b"]
    run.ok("b")
    run.ok("a")
    assert run.pop(limit=1) == ["d"]  # ready before c, same rank
    assert run.pop(limit=1) == ["c"]


@WITH_AND_WITHOUT
def test_order_across_different_requests(admitted: bool) -> None:
    """Heads of every request class are compared: the order does not depend on
    which tasks share a request."""
    upstream: dict[str, list[str]] = {"a": [], "b": [], "c": [], "d": [], "d2": ["d"]}
    requests = {"a": cpu(1), "b": cpu(2), "c": cpu(1), "d": cpu(3), "d2": cpu(3)}
    plan = plan_of(upstream, requests=requests, priorities={"c": 2, "b": 1})
    run = _ordered(plan, admitted)
    assert [run.pop(limit=1)[0] for _ in range(4)] == ["c", "b", "d", "a"]


def test_mapped_children_inherit_the_parents_rank_request_and_priority() -> None:
    upstream: dict[str, list[str]] = {"load": [], "side": [], "train": ["load"], "pick": ["train"]}
    plan = plan_of(
        upstream,
        requests={"train": Request(cpu=1, memory_gb=6), "side": cpu(1)},
        priorities={"train": 3},
        mapped={"train": 1.0},
    )
    adm = Admission(CAP4)
    run = Run(plan, adm, map_size=lambda t: 3)
    run.start()
    assert run.pop(limit=1) == ["load"]
    run.ok("load")
    kids = ["train[0]", "train[1]", "train[2]"]
    assert [run.sched.rank(k) for k in kids] == [run.sched.rank("train")] * 3 == [2.0] * 3
    assert run.sched.grant("train") is None  # the parent holds nothing
    assert run.pop(limit=1) == ["train[0]"]  # priority 3, before the older 'side'
    grant = run.sched.grant("train[0]")
    assert grant is not None and grant.request == Request(cpu=1, memory_gb=6)
    # 6 GB each on 8 GB: one child at a time, 'side' backfills
    assert run.pop() == ["side"]
    assert run.sched.state("train[1]") is S.QUEUED
    run.ok("train[0]")
    assert run.pop() == ["train[1]"]
    run.drain()
    assert run.sched.run_state() is RunState.SUCCESS
    assert run.max_running == 2
    idle(adm)


def test_mapped_children_of_an_exclusive_task_run_alone() -> None:
    upstream: dict[str, list[str]] = {"load": [], "train": ["load"], "other": []}
    plan = plan_of(upstream, exclusive=["train"], mapped={"train": 1.0}, priorities={"train": 1})
    adm = Admission(CAP4, backfill_limit=0)
    run = Run(plan, adm, map_size=lambda t: 2)
    run.start()
    assert run.pop(limit=1) == ["load"]
    run.ok("load")
    assert run.pop() == ["train[0]"]  # alone: 'other' waits, then the sibling
    run.ok("train[0]")
    assert run.pop() == ["train[1]"]
    run.ok("train[1]")
    assert run.pop() == ["other"]
    run.drain()
    assert run.max_running == 1
    idle(adm)


# -- admission -----------------------------------------------------------------------


def test_two_6gb_tasks_never_run_together_on_8gb_while_small_ones_backfill() -> None:
    upstream: dict[str, list[str]] = {"m1": [], "m2": [], "s1": [], "s2": [], "s3": [], "s4": []}
    big = Request(cpu=1, memory_gb=6)
    small = Request(cpu=0.5, memory_gb=1)
    requests = {"m1": big, "m2": big, **dict.fromkeys(["s1", "s2", "s3", "s4"], small)}
    adm = Admission(CAP4)
    run = Run(plan_of(upstream, requests=requests), adm)
    run.start()
    assert run.pop() == ["m1", "s1", "s2"]  # m2 waits (reserved); small ones fill 8 GB
    assert adm.reserved == key(run, "m2")
    run.ok("s1")
    assert run.pop() == ["s3"]  # 1 GB free: a small one, never m2
    run.ok("m1")
    assert run.pop() == ["m2"]  # 6 GB free: m2 at last; s4 does not fit beside it
    assert adm.reserved == key(run, "s4")
    run.ok("s2")
    assert run.pop() == ["s4"]
    run.drain()
    assert run.started.index("m2") > run.started.index("m1")
    idle(adm)


def test_a_walk_never_runs_both_memory_heavy_tasks() -> None:
    """Pop, record, pop: at no point do both 6 GB tasks run."""
    upstream: dict[str, list[str]] = {"m1": [], "m2": [], **{f"s{k}": [] for k in range(6)}}
    requests = {
        "m1": Request(memory_gb=6),
        "m2": Request(memory_gb=6),
        **{f"s{k}": Request(cpu=0.25, memory_gb=1) for k in range(6)},
    }
    adm = Admission(CAP4)
    run = Run(plan_of(upstream, requests=requests), adm)
    run.start()
    while not run.sched.finished:
        run.pop()
        assert not {"m1", "m2"} <= set(run.working())
        run.ok(run.working()[-1])  # finish the newest first
    idle(adm)


def test_a_one_cpu_task_starts_while_a_four_cpu_one_waits() -> None:
    upstream: dict[str, list[str]] = {"pre": [], "big": [], "one": []}
    requests = {"pre": cpu(1), "big": cpu(4), "one": cpu(1)}
    adm = Admission(CAP4)
    run = Run(plan_of(upstream, requests=requests, priorities={"pre": 1}), adm)
    run.start()
    assert run.pop() == ["pre", "one"]
    assert run.sched.state("big") is S.QUEUED
    assert adm.reserved == key(run, "big")
    run.ok("pre")
    assert run.pop() == []  # 3 CPUs free: not enough
    run.ok("one")
    assert run.pop() == ["big"]
    assert adm.reserved is None
    run.ok("big")
    idle(adm)


@pytest.mark.parametrize("limit", [0, 1, 2, 5])
def test_the_reserved_task_waits_at_most_backfill_limit_starts(limit: int) -> None:
    """A stream of small tasks cannot starve a big one: after ``backfill_limit``
    starts around its reservation nothing else starts until it fits."""
    smalls = [f"t{k}" for k in range(12)]
    upstream: dict[str, list[str]] = {
        "s0": [],
        "s1": [],
        "s2": [],
        "big": [],
        **{t: [] for t in smalls},
    }
    requests = {"big": cpu(4), **dict.fromkeys(["s0", "s1", "s2", *smalls], cpu(1))}
    priorities = {"s0": 5, "s1": 5, "s2": 5, "big": 1}
    adm = Admission(CAP4, backfill_limit=limit)
    run = Run(plan_of(upstream, requests=requests, priorities=priorities), adm)
    run.start()
    first = run.pop()
    assert first[:3] == ["s0", "s1", "s2"]
    assert adm.reserved == key(run, "big")
    # finish the oldest task each time; count the small ones started around 'big'
    while run.sched.state("big") is S.QUEUED:
        oldest = next(t for t in run.started if run.mirror[t] is S.RUNNING)
        run.ok(oldest)
        run.pop()
    around = run.started[3 : run.started.index("big")]
    assert around == smalls[:limit]
    assert run.working() == ["big"]
    assert run.pop() == []  # it holds all 4 CPUs
    run.ok("big")
    assert run.pop() == smalls[limit : limit + 4]
    run.drain()
    idle(adm)


def test_the_reservation_goes_to_the_best_task_that_does_not_fit() -> None:
    upstream: dict[str, list[str]] = {"run": [], "b3": [], "b4": [], "s": []}
    requests = {"run": cpu(2), "b3": cpu(3), "b4": cpu(4), "s": cpu(1)}
    adm = Admission(CAP4, backfill_limit=1)
    run = Run(plan_of(upstream, requests=requests), adm)
    run.start()
    assert run.pop() == ["run", "s"]  # b3 reserved; s backfills (the 1 allowed)
    assert adm.reserved == key(run, "b3")
    assert not adm.may_backfill(key(run, "b4"))
    assert adm.may_backfill(key(run, "b3"))
    run.ok("s")
    run.ok("run")
    assert run.pop() == ["b3"]  # b4 is next in line, but b3 was first
    assert adm.reserved == key(run, "b4")
    run.drain()
    idle(adm)


def test_a_reserved_task_starts_when_a_higher_priority_task_arrives_later() -> None:
    """The reservation is kept for 'big'; a task that became ready after it, with
    a higher priority and the backfill allowance used up, must not stop 'big'
    from starting once it fits (nothing runs, every CPU is free)."""
    upstream: dict[str, list[str]] = {"a": [], "big": [], "s": [], "h": ["a"]}
    requests = {"a": cpu(1), "big": cpu(2), "s": cpu(1), "h": cpu(1)}
    adm = Admission(Capacity(cpu=2, memory_gb=8), backfill_limit=1)
    run = Run(plan_of(upstream, requests=requests, priorities={"h": 10}), adm)
    run.start()
    assert run.pop() == ["a", "s"]  # a has the higher rank; big reserved; s backfills
    assert adm.reserved == key(run, "big")
    run.ok("a")  # h (priority 10) is queued now
    assert run.pop() == []  # the backfill allowance is used up
    run.ok("s")
    assert run.working() == [] and adm.free()["cpu"] == 2
    assert run.pop() == ["big"]
    run.drain()
    assert run.sched.run_state() is RunState.SUCCESS
    idle(adm)


def test_a_reserved_task_starts_when_a_better_one_with_its_request_arrives_later() -> None:
    """As above, when the later task shares the reserved task's request."""
    upstream: dict[str, list[str]] = {"a": [], "big": [], "s": [], "h": ["a"]}
    requests = {"a": cpu(1), "big": cpu(2), "s": cpu(1), "h": cpu(2)}
    adm = Admission(Capacity(cpu=2, memory_gb=8), backfill_limit=1)
    run = Run(plan_of(upstream, requests=requests, priorities={"h": 10}), adm)
    run.start()
    assert run.pop() == ["a", "s"]
    run.ok("a")
    run.ok("s")
    assert run.pop() == ["big"]
    run.drain()
    assert run.sched.run_state() is RunState.SUCCESS
    idle(adm)


def test_has_ready_is_false_once_the_reserved_task_started() -> None:
    """The reserved task is started by its key: nothing is queued afterwards, so
    ``has_ready`` (which the runner uses to tell a stuck run) must say so."""
    upstream: dict[str, list[str]] = {"a": [], "big": []}
    adm = Admission(CAP4)
    run = Run(plan_of(upstream, requests={"a": cpu(2), "big": cpu(4)}, priorities={"a": 1}), adm)
    run.start()
    assert run.pop(limit=1) == ["a"]
    assert run.pop(limit=1) == []
    assert adm.reserved == key(run, "big")
    assert run.sched.has_ready
    run.ok("a")
    assert run.pop(limit=1) == ["big"]
    assert [t for t, s in run.mirror.items() if s is S.QUEUED] == []
    assert not run.sched.has_ready


def test_tasks_that_ask_for_nothing_are_admitted_without_limit() -> None:
    upstream: dict[str, list[str]] = {"heavy": [], **{f"n{k}": [] for k in range(5)}}
    adm = Admission(Capacity(cpu=1, memory_gb=1))
    run = Run(plan_of(upstream, requests={"heavy": cpu(1)}), adm)
    run.start()
    assert run.pop() == ["heavy", "n0", "n1", "n2", "n3", "n4"]
    assert adm.held == 6
    assert run.sched.grant("n0") == Grant(NOTHING)


def test_the_worker_limit_still_applies() -> None:
    upstream: dict[str, list[str]] = {f"t{k}": [] for k in range(5)}
    adm = Admission(CAP4)
    run = Run(plan_of(upstream, requests=_small(upstream)), adm)
    run.start()
    assert run.pop(limit=2) == ["t0", "t1"]
    assert run.pop(limit=0) == []
    assert run.pop() == ["t2", "t3"]  # then the CPUs
    assert run.sched.has_ready


# -- release on every outcome --------------------------------------------------------


def _pair(
    *,
    failure_strategy: str = "continue",
    retries: Mapping[str, RetryPolicy] | None = None,
) -> tuple[Run, Admission]:
    """a, b running (2 CPUs each) on 4 CPUs; c waits for 4 CPUs (reserved)."""
    upstream: dict[str, list[str]] = {"a": [], "b": [], "c": [], "d": ["a"]}
    requests = {"a": cpu(2), "b": cpu(2), "c": cpu(4), "d": cpu(1)}
    adm = Admission(CAP4)
    run = Run(
        plan_of(upstream, requests=requests, retries=retries),
        adm,
        failure_strategy=failure_strategy,
    )
    run.start()
    assert run.pop() == ["a", "b"]
    assert adm.reserved == key(run, "c")
    assert adm.free()["cpu"] == 0
    return run, adm


def test_success_releases() -> None:
    run, adm = _pair()
    run.ok("a")
    assert adm.free()["cpu"] == 2 and adm.held == 1
    assert run.sched.grant("a") is None
    run.drain()
    assert run.sched.run_state() is RunState.SUCCESS
    idle(adm)


def test_failure_releases() -> None:
    run, adm = _pair()
    assert run.fail("a") == [("a", S.FAILED), ("d", S.UPSTREAM_FAILED)]
    assert adm.free()["cpu"] == 2 and adm.held == 1
    run.drain()
    assert run.sched.run_state() is RunState.FAILED
    idle(adm)


def test_up_for_retry_holds_nothing_and_the_retry_acquires_again() -> None:
    run, adm = _pair(retries={"a": RetryPolicy(max_retries=1, delay_seconds=5)})
    assert run.fail("a", 1.0) == [("a", S.UP_FOR_RETRY)]
    assert adm.free()["cpu"] == 2 and adm.held == 1
    assert run.sched.grant("a") is None
    run.ok("b", 2.0)
    assert run.pop(now=2.0) == ["c"]  # the reserved task goes first
    assert run.due(6.0) == [("a", S.QUEUED)]
    assert run.pop(now=6.0) == []  # c holds all 4
    run.ok("c", 7.0)
    assert run.pop(now=7.0) == ["a"]
    assert run.sched.attempt("a") == 2
    assert adm.held == 1 and adm.free()["cpu"] == 2
    run.drain(8.0)
    assert run.sched.run_state() is RunState.SUCCESS
    idle(adm)


def test_cancel_releases_everything_and_clears_the_reservation() -> None:
    run, adm = _pair()
    out = run.cancel(3.0)
    assert {t for t, s in out if s is S.CANCELLED} == {"a", "b", "c", "d"}
    assert run.sched.run_state() is RunState.CANCELLED
    idle(adm)


def test_abort_releases_everything() -> None:
    run, adm = _pair()
    run.abort(3.0)
    assert run.sched.run_state() is RunState.FAILED
    idle(adm)


def test_fail_fast_releases_what_it_cancels() -> None:
    run, adm = _pair(failure_strategy="fail_fast")
    out = run.fail("a", 2.0)
    assert ("b", S.CANCELLED) in out and ("c", S.CANCELLED) in out
    assert run.sched.finished
    idle(adm)


def test_a_fatal_failure_releases_what_it_cancels() -> None:
    run, adm = _pair(retries={"a": RetryPolicy(max_retries=3)})
    out = run.fail("a", 2.0, fatal=True)
    assert out[0] == ("a", S.FAILED)
    assert ("b", S.CANCELLED) in out
    idle(adm)


def test_a_late_record_after_cancel_changes_nothing() -> None:
    run, adm = _pair()
    run.cancel(1.0)
    idle(adm)
    assert run.late("a", 1, True, 2.0) == []
    assert run.late("b", 1, False, 2.0) == []
    idle(adm)


def test_a_stale_attempt_does_not_release_the_current_one() -> None:
    run, adm = _pair(retries={"a": RetryPolicy(max_retries=2)})
    run.fail("a", 1.0)  # attempt 1 failed, retry due at once
    run.due(1.0)
    assert run.pop(now=1.0) == ["a"]  # backfills beside b; c still waits
    assert run.sched.attempt("a") == 2
    grant = run.sched.grant("a")
    assert run.late("a", 1, True, 3.0) == []  # attempt 1 reports late
    assert run.sched.grant("a") == grant
    assert adm.held == 2 and adm.free()["cpu"] == 0
    assert run.late("a", 1, False, 3.0) == []
    assert adm.held == 2 and adm.free()["cpu"] == 0
    run.ok("a", 4.0)
    assert run.late("a", 2, True, 5.0) == []  # a duplicate report
    run.drain(5.0)
    idle(adm)


def test_close_releases_what_is_left_and_clears_the_reservation() -> None:
    run, adm = _pair()
    run.sched.close()
    idle(adm)
    assert run.sched.grant("a") is None
    run.sched.close()  # twice is harmless
    idle(adm)


def test_close_of_a_finished_run_is_a_no_op() -> None:
    run, adm = _pair()
    run.drain()
    run.sched.close()
    idle(adm)


def test_closing_one_run_leaves_anothers_grants() -> None:
    adm = Admission(CAP4)
    peers: list[Run] = []
    one = Run(plan_of({"a": []}, requests={"a": cpu(1)}), adm, peers=peers)
    two = Run(plan_of({"a": []}, requests={"a": cpu(2)}), adm, peers=peers)
    one.start()
    two.start()
    one.pop()
    two.pop()
    one.close()
    assert adm.held == 1 and adm.free()["cpu"] == 2
    assert two.sched.grant("a") is not None
    two.ok("a")
    idle(adm)


# -- GPUs ----------------------------------------------------------------------------

GPU2 = Capacity(cpu=16, memory_gb=64, gpu=2)


def _devices(run: Run, tid: str) -> tuple[int, ...]:
    grant = run.sched.grant(tid)
    assert grant is not None
    return grant.gpu_devices


def test_whole_gpus_get_distinct_devices_and_released_ones_are_reused() -> None:
    upstream: dict[str, list[str]] = {"g1": [], "g2": [], "g3": [], "g4": []}
    adm = Admission(GPU2)
    run = Run(plan_of(upstream, requests=dict.fromkeys(upstream, Request(gpu=1))), adm)
    run.start()
    assert run.pop() == ["g1", "g2"]
    assert {_devices(run, "g1"), _devices(run, "g2")} == {(0,), (1,)}
    freed = _devices(run, "g2")
    run.ok("g2")
    assert run.pop() == ["g3"]
    assert _devices(run, "g3") == freed
    assert _devices(run, "g3") != _devices(run, "g1")
    run.ok("g1")
    assert run.pop() == ["g4"]
    run.drain()
    idle(adm)


def test_a_multi_gpu_task_gets_as_many_devices() -> None:
    upstream: dict[str, list[str]] = {"one": [], "two": [], "other": []}
    requests = {"one": Request(gpu=1), "two": Request(gpu=2), "other": Request(gpu=1)}
    adm = Admission(GPU2)
    run = Run(plan_of(upstream, requests=requests), adm)
    run.start()
    assert run.pop() == ["one", "other"]  # 'two' waits for both devices
    run.ok("one")
    assert run.pop() == []
    run.ok("other")
    assert run.pop() == ["two"]
    assert sorted(_devices(run, "two")) == [0, 1]
    run.ok("two")
    idle(adm)


def test_fractional_gpus_share_a_device_but_not_with_whole_ones() -> None:
    upstream: dict[str, list[str]] = {"f1": [], "f2": [], "f3": [], "w": [], "f4": []}
    half = Request(gpu=0.5)
    requests = {"f1": half, "f2": half, "f3": half, "w": Request(gpu=1), "f4": half}
    adm = Admission(GPU2)
    run = Run(plan_of(upstream, requests=requests), adm)
    run.start()
    assert run.pop() == ["f1", "f2", "f3", "f4"]  # w waits: both devices are in use
    assert _devices(run, "f1") == _devices(run, "f2")
    assert _devices(run, "f3") == _devices(run, "f4") != _devices(run, "f1")
    run.ok("f1")
    assert run.pop() == []  # half a device is not a whole one
    run.ok("f2")
    assert run.pop() == ["w"]
    run.drain()
    idle(adm)


def test_no_two_concurrent_tasks_share_a_whole_device_over_a_walk() -> None:
    upstream: dict[str, list[str]] = {f"g{k}": [] for k in range(8)}
    sizes = [1, 0.5, 2, 0.25, 1, 0.5, 1, 0.75]
    requests = {f"g{k}": Request(gpu=g) for k, g in enumerate(sizes)}
    adm = Admission(GPU2)
    run = Run(plan_of(upstream, requests=requests), adm)
    run.start()
    while not run.sched.finished:  # ``budget`` checks devices after every call
        run.pop()
        run.ok(run.working()[0])
    assert sorted(run.started) == sorted(upstream)
    idle(adm)


# -- exclusive (execution_mode: hybrid) ----------------------------------------------


def _hybrid(backfill_limit: int, sized: bool = False) -> tuple[Run, Admission]:
    """a, b, c ordinary, e exclusive, d after a; ``sized``: c and d ask for CPUs
    (another request than e's, so they may backfill around it)."""
    c_res = Resources(cpu=1) if sized else None
    d_res = Resources(cpu=0.5) if sized else None
    pipe = Pipeline(
        "p",
        execution_mode="hybrid",
        tasks=[
            Task("a", call="m:f"),
            Task("b", call="m:f"),
            Task("e", call="m:f", exclusive=True),
            Task("c", call="m:f", resources=c_res),
            Task("d", call="m:f", upstream=["a"], resources=d_res),
        ],
    )
    plan = EnginePlan.from_pipeline(pipe)
    assert plan.exclusive == [False, False, True, False, False]
    assert plan.needs_admission()
    adm = Admission(CAP4, backfill_limit=backfill_limit)
    run = Run(plan, adm)
    run.start()
    return run, adm


def test_an_exclusive_task_starts_only_when_nothing_runs_and_runs_alone() -> None:
    run, adm = _hybrid(backfill_limit=0)
    assert run.pop() == ["a", "b"]  # ordinary tasks run in parallel
    assert adm.reserved == key(run, "e")
    run.ok("a")  # d is queued now
    assert run.pop() == []  # e is next
    run.ok("b")
    assert run.pop() == ["e"]
    assert run.pop() == []  # nothing beside it
    assert run.sched.state("c") is S.QUEUED and run.sched.state("d") is S.QUEUED
    run.ok("e")
    assert run.pop() == ["c", "d"]  # parallel again
    run.drain()
    idle(adm)


def test_an_exclusive_task_is_backfilled_around_at_most_backfill_limit_times() -> None:
    run, adm = _hybrid(backfill_limit=1, sized=True)
    assert run.pop() == ["a", "b", "c"]  # c backfills around the waiting e
    run.ok("a")
    assert run.pop() == []  # d waits: the allowance is used
    run.ok("b")
    run.ok("c")
    assert run.pop() == ["e"]
    run.drain()
    idle(adm)


def test_an_exclusive_task_waits_for_other_runs_too() -> None:
    adm = Admission(CAP4, backfill_limit=0)
    peers: list[Run] = []
    other = Run(plan_of({"x": [], "y": []}), adm, peers=peers)
    alone = Run(plan_of({"e": []}, exclusive=["e"]), adm, peers=peers)
    other.start()
    alone.start()
    assert other.pop(limit=1) == ["x"]
    assert alone.pop() == []
    assert adm.reserved == key(alone, "e")
    assert other.pop() == []  # y waits behind the reservation
    other.ok("x")
    assert alone.pop() == ["e"]
    assert other.pop() == []  # nothing beside it, from any run
    alone.ok("e")
    assert other.pop() == ["y"]
    other.ok("y")
    idle(adm)


def test_exclusive_is_ignored_outside_hybrid_mode() -> None:
    pipe = Pipeline("p", tasks=[Task("a", call="m:f", exclusive=True), Task("b", call="m:f")])
    plan = EnginePlan.from_pipeline(pipe)
    assert plan.exclusive == []
    assert not plan.needs_admission()


# -- pools ---------------------------------------------------------------------------


def test_a_pool_with_two_slots_never_runs_three() -> None:
    tasks = [Task(f"p{k}", call="m:f", pool="gpu_box") for k in range(5)]
    pipe = Pipeline("p", tasks=[*tasks, Task("free", call="m:f")])
    plan = EnginePlan.from_pipeline(pipe)
    assert plan.request(0) == Request(cpu=0.0, pool="gpu_box")
    assert plan.request(5) == NOTHING
    adm = Admission(Capacity(cpu=8, memory_gb=8, pools={"gpu_box": 2}))
    run = Run(plan, adm)
    run.start()
    assert run.pop() == ["p0", "p1", "free"]
    concurrent = 0
    while not run.sched.finished:
        run.pop()
        in_pool = [t for t in run.working() if t.startswith("p")]
        assert len(in_pool) <= 2
        concurrent = max(concurrent, len(in_pool))
        run.ok(run.working()[0])
    assert concurrent == 2
    idle(adm)


def test_the_default_pool_applies_to_every_task() -> None:
    pipe = Pipeline(
        "p",
        defaults=TaskDefaults(pool="etl"),
        tasks=[Task("a", call="m:f"), Task("b", call="m:f", pool="other")],
    )
    plan = EnginePlan.from_pipeline(pipe)
    assert plan.request(0) == Request(cpu=0.0, pool="etl")
    assert plan.request(1) == Request(cpu=0.0, pool="other")


# -- runs sharing one admission ------------------------------------------------------


def test_two_runs_never_exceed_the_shared_budget() -> None:
    adm = Admission(CAP4)
    peers: list[Run] = []
    upstream: dict[str, list[str]] = {"x": [], "y": [], "z": []}
    one = Run(plan_of(upstream, requests=dict.fromkeys(upstream, cpu(2))), adm, peers=peers)
    two = Run(plan_of(upstream, requests=dict.fromkeys(upstream, cpu(2))), adm, peers=peers)
    one.start()
    two.start()
    assert one.pop(limit=1) == ["x"]
    assert two.pop() == ["x"]
    assert one.pop() == [] and two.pop() == []  # ``budget`` checks the sum each call
    while not (one.sched.finished and two.sched.finished):
        for run in (one, two):
            if run.working():
                run.ok(run.working()[0])
            run.pop()
        assert len(one.working()) + len(two.working()) <= 2
    idle(adm)


def test_subscribers_hear_every_release_and_withdrawal() -> None:
    adm = Admission(CAP4)
    heard: list[int] = []

    def hear() -> None:
        heard.append(adm.held)

    adm.subscribe(hear)
    run = Run(plan_of({"a": [], "b": []}, requests={"a": cpu(2), "b": cpu(4)}), adm)
    run.start()
    assert run.pop() == ["a"]
    assert heard == []  # acquiring wakes nobody
    run.ok("a")
    assert heard == [0]
    assert run.pop() == ["b"]  # b held the reservation: admitting it wakes the others
    assert heard == [0, 1]
    run.ok("b")
    assert heard == [0, 1, 0]
    adm.unsubscribe(hear)
    adm.unsubscribe(hear)  # twice is harmless
    adm.acquire("k", cpu(1))
    adm.release("k")
    assert heard == [0, 1, 0]


def test_withdrawing_a_paused_run_lets_the_other_use_the_resources() -> None:
    adm = Admission(CAP4, backfill_limit=0)
    woken: list[str] = []
    adm.subscribe(lambda: woken.append("wake"))
    peers: list[Run] = []
    paused = Run(
        plan_of({"a": [], "big": []}, requests={"a": cpu(2), "big": cpu(4)}), adm, peers=peers
    )
    other = Run(plan_of({"b": []}, requests={"b": cpu(1)}), adm, peers=peers)
    paused.start()
    other.start()
    assert paused.pop() == ["a"]
    assert adm.reserved == key(paused, "big")
    assert other.pop() == []  # held back by the reservation although 2 CPUs are free
    paused.sched.withdraw()
    assert woken == ["wake"]
    assert reserver(adm) is not paused.sched
    assert other.pop() == ["b"]
    other.ok("b")
    paused.ok("a")
    assert paused.pop() == ["big"]  # the resumed run goes on
    paused.ok("big")
    idle(adm)


def test_closing_a_run_lets_the_other_use_its_resources() -> None:
    adm = Admission(CAP4, backfill_limit=0)
    woken: list[str] = []
    adm.subscribe(lambda: woken.append("wake"))
    peers: list[Run] = []
    gone = Run(
        plan_of({"a": [], "big": []}, requests={"a": cpu(2), "big": cpu(4)}), adm, peers=peers
    )
    other = Run(plan_of({"b": []}, requests={"b": cpu(3)}), adm, peers=peers)
    gone.start()
    other.start()
    assert gone.pop() == ["a"]
    assert other.pop() == []
    gone.close()
    assert woken  # the other run is woken
    assert reserver(adm) is not gone.sched and adm.held == 0
    assert other.pop() == ["b"]
    other.ok("b")
    idle(adm)


def test_closing_a_run_that_only_held_the_reservation_wakes_the_others() -> None:
    """The reservation held other runs back; ending it must wake them, as
    ``withdraw`` does, or a run waiting for resources never looks again."""
    adm = Admission(CAP4, backfill_limit=0)
    peers: list[Run] = []
    gone = Run(
        plan_of({"a": [], "big": []}, requests={"a": cpu(2), "big": cpu(4)}), adm, peers=peers
    )
    other = Run(
        plan_of({"hold": [], "b": []}, requests={"hold": cpu(1), "b": cpu(1)}), adm, peers=peers
    )
    other.start()
    assert other.pop(limit=1) == ["hold"]  # so that 'big' will not fit
    gone.start()
    assert gone.pop() == ["a"]
    gone.ok("a")  # gone holds nothing now; its 'big' is still reserved
    assert gone.pop() == []
    assert adm.reserved == key(gone, "big")
    assert other.pop() == []  # b is held back by the reservation
    woken: list[str] = []
    adm.subscribe(lambda: woken.append("wake"))
    gone.close()
    assert reserver(adm) is not gone.sched
    assert woken == ["wake"]
    assert other.pop() == ["b"]


def test_a_cancelled_run_gives_up_its_reservation_for_the_others() -> None:
    adm = Admission(CAP4, backfill_limit=0)
    peers: list[Run] = []
    gone = Run(plan_of({"big": []}, requests={"big": cpu(4)}), adm, peers=peers)
    other = Run(plan_of({"a": [], "b": []}, requests={"a": cpu(2), "b": cpu(1)}), adm, peers=peers)
    gone.start()
    other.start()
    assert other.pop(limit=1) == ["a"]
    assert gone.pop() == []
    assert adm.reserved == key(gone, "big")
    assert other.pop() == []
    gone.cancel()
    assert reserver(adm) is not gone.sched
    assert other.pop() == ["b"]
    other.ok("a")
    other.ok("b")
    idle(adm)


def test_the_reservation_passes_in_line_across_runs() -> None:
    """The oldest waiting request holds the reservation, whichever run it is in;
    once it starts, the next in line holds it (with a fresh backfill allowance)."""
    adm = Admission(CAP4, backfill_limit=1)
    peers: list[Run] = []
    first = Run(
        plan_of({"a": [], "big": []}, requests={"a": cpu(1), "big": cpu(4)}), adm, peers=peers
    )
    second = Run(
        plan_of({"big": [], "s": [], "t": []}, requests={"big": cpu(4), "s": cpu(1), "t": cpu(1)}),
        adm,
        peers=peers,
    )
    first.start()
    second.start()
    assert first.pop() == ["a"]
    assert adm.reserved == key(first, "big")
    assert second.pop() == ["s"]  # second's big waits behind first's; s backfills
    assert adm.reserved == key(first, "big")
    assert second.pop() == []  # the allowance (1) is used
    first.ok("a")
    second.ok("s")
    assert second.pop() == []  # 4 CPUs free, but they are kept for first's big
    assert first.pop() == ["big"]
    assert adm.reserved == key(second, "big")
    first.ok("big")
    assert second.pop() == ["big"]  # t waits: big holds every CPU
    second.ok("big")
    assert second.pop() == ["t"]
    second.ok("t")
    idle(adm)


# -- infeasible requests -------------------------------------------------------------

FULL = Capacity(cpu=4, memory_gb=8, gpu=1, disk_gb=50, custom={"licenses": 2}, pools={"db": 1})


@pytest.mark.parametrize(
    ("request_", "field", "part"),
    [
        pytest.param(Request(gpu=2), "resources.gpu", "has 1 GPUs", id="gpu"),
        pytest.param(Request(gpu=1.5), "resources.gpu", "whole number", id="gpu-fraction"),
        pytest.param(Request(memory_gb=9), "resources.memory_gb", "8 GB of memory", id="memory"),
        pytest.param(Request(cpu=5), "resources.cpu", "4 CPUs", id="cpu"),
        pytest.param(Request(disk_gb=51), "resources.disk_gb", "has 50 GB", id="disk"),
        pytest.param(
            Request(custom={"licenses": 3}), "resources.licenses", "capacity is 2", id="custom"
        ),
        pytest.param(
            Request(custom={"tokens": 1}),
            "resources.tokens",
            "configured: licenses",
            id="custom-unknown",
        ),
        pytest.param(Request(pool="gpu_box"), "pool", "pools: db", id="pool"),
    ],
)
def test_why_infeasible_names_the_field(request_: Request, field: str, part: str) -> None:
    found = Admission(FULL).why_infeasible(request_)
    assert found is not None
    assert found[0] == field
    assert part in found[1]
    assert Admission(FULL).infeasible(request_) == found[1]


def test_a_feasible_request_has_no_reason() -> None:
    request = Request(cpu=4, memory_gb=8, gpu=1, disk_gb=50, custom={"licenses": 2}, pool="db")
    assert Admission(FULL).why_infeasible(request) is None
    assert Admission(FULL).why_infeasible(Request(gpu=0.5)) is None


# -- spec ----------------------------------------------------------------------------


def test_custom_resources_in_the_sdk_are_accepted() -> None:
    assert Resources(licenses=1).custom == {"licenses": 1.0}  # type: ignore[call-arg]
    res = Resources.model_validate({"cpu": 2, "licenses": 1, "fpga_slots": 0.5})
    assert res.custom == {"licenses": 1.0, "fpga_slots": 0.5}
    assert res.cpu == 2
    request = to_request(res, "db")
    assert request == Request(cpu=2, custom={"licenses": 1.0, "fpga_slots": 0.5}, pool="db")
    assert Resources.model_validate({"memory_gb": 3}).custom == {}
    assert Resources.model_validate({"memory_gb": 3}).cpu == 1.0  # the default once given


def test_to_request_of_nothing_asks_for_nothing() -> None:
    assert to_request(None) == NOTHING
    assert to_request(None, "etl") == Request(cpu=0.0, pool="etl")


def _load(resources: object) -> Pipeline:
    return pipeline_from_data(
        {"name": "p", "tasks": [{"id": "a", "call": "m:f", "resources": resources}]}
    )


def _problems(resources: object) -> list[Problem]:
    with pytest.raises(InvalidSpec) as caught:
        _load(resources)
    return caught.value.problems


def test_custom_resources_in_a_spec_are_accepted() -> None:
    res = _load({"memory_gb": 2, "licenses": 1}).tasks[0].resources
    assert res is not None
    assert res.custom == {"licenses": 1.0}
    assert (res.cpu, res.memory_gb) == (1.0, 2.0)
    assert to_request(res) == Request(cpu=1, memory_gb=2, custom={"licenses": 1.0})


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("memroy_gb", "memory_gb"), ("cpus", "cpu"), ("gpus", "gpu"), ("disk", "disk_gb")],
)
def test_a_misspelt_resource_is_rejected_with_a_suggestion(typo: str, meant: str) -> None:
    problems = _problems({typo: 3})
    assert len(problems) == 1
    assert problems[0].task == "a"
    assert typo in (problems[0].field or "")
    assert f"did you mean '{meant}'" in problems[0].message
    with pytest.raises(ValidationError):
        Resources.model_validate({typo: 3})  # not taken as a custom resource


@pytest.mark.parametrize(
    "value",
    [-1, -0.5, True, False, "one", None, [1], float("nan")],
    ids=["negative-int", "negative-float", "true", "false", "string", "none", "list", "nan"],
)
def test_a_custom_amount_must_be_a_non_negative_number(value: object) -> None:
    problems = _problems({"licenses": value})
    assert len(problems) == 1
    assert problems[0].task == "a"
    assert "licenses" in problems[0].render()
    with pytest.raises(ValidationError):
        Resources.model_validate({"licenses": value})


def test_a_custom_resource_name_must_be_an_identifier() -> None:
    problems = _problems({"my-licenses": 1})
    assert len(problems) == 1
    assert "my-licenses" in problems[0].render()


def test_exclusive_outside_hybrid_mode_is_a_problem() -> None:
    pipe = Pipeline("p", tasks=[Task("a", call="m:f", exclusive=True), Task("b", call="m:f")])
    found = [p for p in pipeline_problems(pipe) if p.field == "exclusive"]
    assert len(found) == 1
    assert found[0].task == "a"
    assert "execution_mode: hybrid" in found[0].message
    assert "parallel" in found[0].message
    hybrid = pipe.model_copy(update={"execution_mode": "hybrid"})
    assert not [p for p in pipeline_problems(hybrid) if p.field == "exclusive"]


def test_operator_defaults_apply_to_tasks_that_declare_nothing() -> None:
    pipe = Pipeline(
        "p",
        tasks=[
            Task("fit", operator="train_model"),
            Task("fit2", operator="train_model", resources=Resources(cpu=1, memory_gb=2)),
            Task("sh", operator="bash"),
            Task("py", call="m:f"),
            Task("sh2", operator="bash", resources=Resources(cpu=1, memory_gb=2)),
        ],
    )
    defaults = {"train_model": Resources(cpu=4, memory_gb=16, gpu=1), "python": Resources(cpu=2)}
    plan = EnginePlan.from_pipeline(pipe, defaults)
    assert plan.request(0) == Request(cpu=4, memory_gb=16, gpu=1)
    assert plan.request(1) == Request(cpu=1, memory_gb=2)
    assert plan.request(2) == NOTHING
    assert plan.request(3) == Request(cpu=2)
    assert plan.request(4) == plan.request(1)
    assert plan.request_of[1] == plan.request_of[4]  # one class per distinct request
    assert len(plan.requests) == 4
    assert plan.needs_admission()
    assert EnginePlan.from_pipeline(pipe).request(0) == NOTHING  # no defaults given


def test_pipeline_default_resources_come_before_operator_defaults() -> None:
    pipe = Pipeline(
        "p",
        defaults=TaskDefaults(resources=Resources(cpu=0.5)),
        tasks=[Task("fit", operator="train_model")],
    )
    plan = EnginePlan.from_pipeline(pipe, {"train_model": Resources(cpu=4)})
    assert plan.request(0) == Request(cpu=0.5)


def test_a_plan_where_nothing_is_declared_needs_no_admission() -> None:
    pipe = Pipeline("p", tasks=[Task("a", call="m:f"), Task("b", operator="bash")])
    plan = EnginePlan.from_pipeline(pipe, {"train_model": Resources(cpu=4)})
    assert not plan.needs_admission()
    assert plan.requests == [] and plan.request_of == []
    assert plan.request(0) is None
    hybrid = Pipeline("p", execution_mode="hybrid", tasks=[Task("a", call="m:f")])
    assert not EnginePlan.from_pipeline(hybrid).needs_admission()  # nobody exclusive
    pooled = Pipeline("p", tasks=[Task("a", call="m:f", pool="etl")])
    assert EnginePlan.from_pipeline(pooled).needs_admission()


def test_a_plan_without_requests_runs_under_admission_unhindered() -> None:
    pipe = Pipeline("p", tasks=[Task(f"t{k}", call="m:f") for k in range(4)])
    adm = Admission(Capacity(cpu=0, memory_gb=0))
    run = Run(EnginePlan.from_pipeline(pipe), adm)
    run.start()
    assert run.pop() == ["t0", "t1", "t2", "t3"]
    run.drain()
    idle(adm)


# -- property ------------------------------------------------------------------------

CAPS = st.builds(
    Capacity,
    cpu=st.sampled_from([1, 2, 4]),
    memory_gb=st.sampled_from([4, 8]),
    gpu=st.integers(0, 2),
    disk_gb=st.sampled_from([10.0, float("inf")]),
    custom=st.sampled_from([{}, {"licenses": 1}, {"licenses": 2}]),
    pools=st.sampled_from([{}, {"db": 1}, {"db": 2}]),
)


def _fit(raw: Request, cap: Capacity) -> Request:
    """``raw`` cut down to what ``cap`` can ever hold (the runner refuses the rest)."""
    gpu = raw.gpu if raw.gpu < 1 else min(raw.gpu, cap.gpu)
    return Request(
        cpu=min(raw.cpu, cap.cpu),
        memory_gb=min(raw.memory_gb, cap.memory_gb),
        gpu=gpu if cap.gpu else 0.0,
        disk_gb=min(raw.disk_gb, cap.disk_gb),
        custom={k: min(v, cap.custom[k]) for k, v in raw.custom.items() if k in cap.custom},
        pool=raw.pool if raw.pool in cap.pools else None,
    )


RAW = st.builds(
    Request,
    cpu=st.sampled_from([0, 0.5, 1, 2, 4]),
    memory_gb=st.sampled_from([0, 1, 3, 6]),
    gpu=st.sampled_from([0, 0, 0.25, 0.5, 1, 2]),
    disk_gb=st.sampled_from([0, 5]),
    custom=st.sampled_from([{}, {"licenses": 1}]),
    pool=st.sampled_from([None, None, "db"]),
)


@dataclass(frozen=True)
class Case:
    cap: Capacity
    backfill_limit: int
    upstream: dict[str, list[str]]
    requests: dict[str, Request]
    priorities: dict[str, int]
    estimates: dict[str, float]
    exclusive: list[str]
    fails: dict[str, int]  # failed attempts before a success
    retries: dict[str, RetryPolicy]
    failure_strategy: str

    def plan(self) -> EnginePlan:
        return plan_of(
            self.upstream,
            requests=self.requests,
            priorities=self.priorities,
            estimates=self.estimates,
            exclusive=self.exclusive,
            retries=self.retries,
        )


@st.composite
def cases(draw: st.DrawFn, cap: Capacity | None = None) -> Case:
    """A random DAG of up to 8 tasks with requests that ``cap`` can hold."""
    if cap is None:
        cap = draw(CAPS)
    n = draw(st.integers(1, 8))
    ids = [f"t{k}" for k in range(n)]
    upstream: dict[str, list[str]] = {
        t: sorted(draw(st.sets(st.sampled_from(ids[:k]), max_size=2))) if k else []
        for k, t in enumerate(ids)
    }
    return Case(
        cap=cap,
        backfill_limit=draw(st.integers(0, 3)),
        upstream=upstream,
        requests={t: _fit(draw(RAW), cap) for t in ids},
        priorities={t: draw(st.integers(0, 2)) for t in ids},
        estimates=draw(
            st.sampled_from([{}, {t: float(k % 3 + 1) for k, t in enumerate(reversed(ids))}])
        ),
        exclusive=draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)),
        fails={t: draw(st.integers(0, 2)) for t in ids},
        retries={t: RetryPolicy(max_retries=draw(st.integers(0, 1)), delay_seconds=1) for t in ids},
        failure_strategy=draw(st.sampled_from(["continue", "fail_fast"])),
    )


def _finish_one(
    run: Run, rnd: random.Random, now: float, failed: dict[str, int], case: Case
) -> None:
    """End one random running attempt: a failure while it has failures left, else
    a success; now and then a late report of an older attempt first."""
    tid = rnd.choice(run.working())
    if rnd.random() < 0.1:
        assert run.late(tid, run.sched.attempt(tid) - 1, True, now) == []
    if failed[tid] < case.fails[tid]:
        failed[tid] += 1
        run.fail(tid, now)
    else:
        run.ok(tid, now)


@settings(max_examples=200, deadline=None)
@given(cases(), st.randoms(use_true_random=False), st.one_of(st.none(), st.integers(0, 30)))
def test_random_runs_stay_within_the_budget_and_release_everything(
    case: Case, rnd: random.Random, stop_at: int | None
) -> None:
    """Random outcomes (failures, retries, stale reports, a cancel or an abort):
    ``budget`` holds after every call, the run always progresses, every task
    ends final, and nothing is held or reserved at the end."""
    adm = Admission(case.cap, backfill_limit=case.backfill_limit)
    run = Run(case.plan(), adm, failure_strategy=case.failure_strategy)
    failed = dict.fromkeys(case.upstream, 0)
    now = 0.0
    run.start(now)
    for step in range(500):
        if run.sched.finished:
            break
        if step == stop_at:
            (run.cancel if rnd.random() < 0.5 else run.abort)(now)
            continue
        run.pop(limit=rnd.randint(1, 4), now=now)
        if not run.working():
            due = run.sched.next_due()
            assert due is not None, f"stalled: {run.sched.states()}, free {adm.free()}"
            now = max(now, due)
            run.due(now)
            continue
        now += rnd.choice([0.0, 0.5, 1.0])
        _finish_one(run, rnd, now, failed, case)
    assert run.sched.finished
    assert all(s in FINAL_TASK_STATES for s in run.sched.states().values())
    assert run.sched.running == 0
    idle(adm)
    run.sched.close()
    idle(adm)


@settings(max_examples=100, deadline=None)
@given(st.data(), st.randoms(use_true_random=False))
def test_two_runs_sharing_a_budget_stay_within_it_and_both_finish(
    data: st.DataObject, rnd: random.Random
) -> None:
    """Two random runs on one ``Admission``, interleaved at random; now and then
    one pauses (``withdraw``, no starts for a while). ``budget`` holds for both
    after every call, neither stalls, and at the end nothing is held."""
    cap = data.draw(CAPS)
    adm = Admission(cap, backfill_limit=data.draw(st.integers(0, 3)))
    both = [data.draw(cases(cap)), data.draw(cases(cap))]
    peers: list[Run] = []
    runs = [Run(c.plan(), adm, peers=peers, failure_strategy=c.failure_strategy) for c in both]
    failed = [dict.fromkeys(c.upstream, 0) for c in both]
    paused = [0, 0]  # steps each run stays paused
    now = 0.0
    for run in runs:
        run.start(now)
    for _ in range(1500):
        live = [k for k, run in enumerate(runs) if not run.sched.finished]
        if not live:
            break
        k = rnd.choice(live)
        run = runs[k]
        if paused[k]:
            paused[k] -= 1
        elif rnd.random() < 0.05:
            run.sched.withdraw()
            assert reserver(adm) is not run.sched
            paused[k] = rnd.randint(1, 6)
        else:
            run.pop(limit=rnd.randint(1, 4), now=now)
        if run.working():
            now += rnd.choice([0.0, 0.5, 1.0])
            _finish_one(run, rnd, now, failed[k], both[k])
            continue
        if any(r.working() for r in runs):
            continue
        # nothing runs anywhere: every run resumes; something must start or be due
        paused = [0, 0]
        started = [r.pop(now=now) for r in runs if not r.sched.finished]
        if any(started):
            continue
        dues = [d for r in runs if (d := r.sched.next_due()) is not None]
        states = [r.sched.states() for r in runs]
        assert dues or all(r.sched.finished for r in runs), f"stalled: {states}"
        if dues:
            now = max(now, min(dues))
            for r in runs:
                r.due(now)
    assert all(r.sched.finished for r in runs)
    idle(adm)
