"""Resource-aware scheduling on real runs: memory, GPUs, pools, custom resources,
execution modes, priority and critical-path order, infeasible requests.

Every test runs a real pipeline (real threads or worker processes, bash ``sleep``
tasks, SQLite in a ``tmp_path`` home) and proves what it claims from the attempt
rows the store recorded: which attempts overlapped, in which order they started,
which GPU devices they held. No assertion depends on how long anything took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import helpers_tasks as h
import pytest

from stageflow.engine.admission import Admission, Capacity
from stageflow.errors import InvalidSpec
from stageflow.runtime.result import RunResult
from stageflow.runtime.runner import Runner, run_pipeline
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import AttemptRecord
from stageflow.spec.load import pipeline_from_text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

STAGEFLOW = Path(sys.executable).with_name("stageflow")
EXECUTORS = ["thread", "process"]
MEMORY = Capacity(cpu=4, memory_gb=8)


@pytest.fixture(autouse=True)
def _no_settings_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STAGEFLOW_* settings, and no GPU devices named by the host: an attempt
    sees CUDA_VISIBLE_DEVICES only when its grant set it."""
    for name in set(os.environ) - set(h.clean_environ(os.environ)):
        monkeypatch.delenv(name)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# -- helpers -------------------------------------------------------------------------------


@dataclass
class Ran:
    result: RunResult
    runner: Runner | None  # None: run through run_pipeline
    attempts: list[AttemptRecord]

    def of(self, task_id: str) -> list[AttemptRecord]:
        return [a for a in self.attempts if a.task_id == task_id]

    def one(self, task_id: str) -> AttemptRecord:
        (attempt,) = self.of(task_id)
        return attempt

    def states(self) -> dict[str, str]:
        return {tid: str(t.state) for tid, t in self.result.tasks.items()}

    def start_order(self) -> list[str]:
        return [a.task_id for a in sorted(self.attempts, key=lambda a: _span(a)[0])]


def execute(
    text: str,
    home: Path,
    *,
    executor: str = "thread",
    max_parallel: int = 4,
    capacity: Capacity | None = None,
    admission: Admission | None = None,
) -> Ran:
    """Run the YAML pipeline ``text`` with a ``Runner`` built here (so its admission
    can be inspected afterwards); return the result and the stored attempts."""
    settings = Settings(home=home)
    store = open_store(settings.database_url, settings.home)
    try:
        runner = Runner(
            pipeline_from_text(text, fmt="yaml"),
            store=store,
            settings=settings,
            executor=executor,
            max_parallel=max_parallel,
            capacity=capacity,
            admission=admission,
        )
        result = runner.run_new({})
        return Ran(result, runner, store.attempts(result.run_id))
    finally:
        store.close()


def execute_detected(text: str, home: Path, *, max_parallel: int = 4) -> Ran:
    """Run with the capacity detected from the environment (STAGEFLOW_POOLS etc.)."""
    result = run_pipeline(
        pipeline_from_text(text, fmt="yaml"),
        max_parallel=max_parallel,
        settings=Settings(home=home),
    )
    store = open_store(None, home)
    try:
        return Ran(result, None, store.attempts(result.run_id))
    finally:
        store.close()


def admission_of(ran: Ran) -> Admission:
    assert ran.runner is not None and ran.runner.admission is not None
    return ran.runner.admission


def recorded_runs(home: Path) -> list[str]:
    store = open_store(None, home)
    try:
        return [r.run_id for r in store.list_runs()]
    finally:
        store.close()


def _span(a: AttemptRecord) -> tuple[float, float]:
    assert a.started_at is not None and a.ended_at is not None, a
    return a.started_at, a.ended_at


def overlap(a: AttemptRecord, b: AttemptRecord) -> bool:
    """Whether two attempts ran at the same instant (one ending as the other starts
    does not count: the engine starts the next in the tick that ended the first)."""
    (s1, e1), (s2, e2) = _span(a), _span(b)
    return s1 < e2 and s2 < e1


def max_overlap(attempts: list[AttemptRecord]) -> int:
    """The most attempts open at one instant (an end at t closes before a start at t)."""
    points = sorted([(_span(a)[0], 1) for a in attempts] + [(_span(a)[1], -1) for a in attempts])
    most = current = 0
    for _, step in points:
        current += step
        most = max(most, current)
    return most


def assert_disjoint(attempts: list[AttemptRecord]) -> None:
    for a, b in combinations(attempts, 2):
        assert not overlap(a, b), f"{a.task_id}#{a.attempt} overlapped {b.task_id}#{b.attempt}"


def bash(task_id: str, command: str, extra: str = "") -> str:
    """One YAML task list entry running ``command`` with bash."""
    lines = [
        f"  - id: {task_id}",
        "    operator: bash",
        f"    parameters: {{command: {json.dumps(command)}}}",
    ]
    lines += [f"    {line}" for line in extra.strip().splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


def spec(name: str, *tasks: str, head: str = "") -> str:
    return f"name: {name}\n{head}tasks:\n" + "".join(tasks)


# -- memory: no overlap of what does not fit, backfill of what does -----------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_memory_heavy_tasks_never_overlap_while_a_small_one_backfills(
    tmp_path: Path, executor: str
) -> None:
    text = spec(
        "memory",
        bash("big_a", "sleep 0.5", "resources: {memory_gb: 6}"),
        bash("big_b", "sleep 0.5", "resources: {memory_gb: 6}"),
        bash("small", "sleep 0.3", "resources: {memory_gb: 1}"),
    )
    ran = execute(text, tmp_path / "home", executor=executor, capacity=MEMORY)
    assert ran.states() == {"big_a": "success", "big_b": "success", "small": "success"}
    big_a, big_b, small = ran.one("big_a"), ran.one("big_b"), ran.one("small")
    assert not overlap(big_a, big_b)  # 6 + 6 GB never fit in 8 at once
    # The small one did not queue behind big_b, which waited for memory: it started
    # around it (backfill), while big_a ran.
    assert overlap(small, big_a)
    assert _span(small)[0] < _span(big_b)[0]
    assert admission_of(ran).held == 0


# -- resources are released on every outcome -------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_memory_is_released_after_failure_timeout_and_retry(tmp_path: Path, executor: str) -> None:
    heavy = "resources: {memory_gb: 6}"
    text = spec(
        "release",
        bash("fails", "sleep 0.2; exit 1", f"{heavy}\npriority: 4"),
        bash("times_out", "sleep 30", f"{heavy}\npriority: 3\ntimeout_seconds: 0.3"),
        bash(
            "retried",
            'sleep 0.2; [ "$STAGEFLOW_ATTEMPT" -ge 2 ]',
            f"{heavy}\npriority: 2\nretry: {{max_retries: 1}}",
        ),
        bash("last", "sleep 0.2", f"{heavy}\npriority: 1"),
    )
    ran = execute(text, tmp_path / "home", executor=executor, max_parallel=2, capacity=MEMORY)
    assert ran.states() == {
        "fails": "failed",
        "times_out": "failed",
        "retried": "success",
        "last": "success",
    }
    assert "timed out" in (ran.result.tasks["times_out"].error or "")
    assert [a.state for a in ran.of("retried")] == ["up_for_retry", "success"]
    # Five attempts of 6 GB each, one at a time: each outcome gave the memory back,
    # or the ones after it could never have started.
    assert len(ran.attempts) == 5
    assert_disjoint(ran.attempts)
    admission = admission_of(ran)
    assert admission.held == 0 and admission.reserved is None
    assert admission.free()["memory_gb"] == 8 and admission.free()["cpu"] == 4


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_cancelled_run_releases_everything_it_held_or_reserved(
    tmp_path: Path, executor: str
) -> None:
    text = spec(
        "cancelled",
        bash("breaks", "sleep 0.3; exit 1", "resources: {memory_gb: 6}\npriority: 2"),
        bash("waiting", "sleep 0.2", "resources: {memory_gb: 6}\npriority: 1"),
        bash("running", "sleep 30", "resources: {memory_gb: 1}"),
        head="failure_strategy: fail_fast\n",
    )
    ran = execute(text, tmp_path / "home", executor=executor, max_parallel=2, capacity=MEMORY)
    assert ran.states() == {"breaks": "failed", "waiting": "cancelled", "running": "cancelled"}
    assert overlap(ran.one("breaks"), ran.one("running"))  # it held memory when cancelled
    assert ran.of("waiting") == []  # it waited for memory (the reservation) and never ran
    admission = admission_of(ran)
    assert admission.held == 0 and admission.reserved is None
    assert admission.free()["memory_gb"] == 8
    # The same budget serves the next run in full: nothing leaked.
    again = spec(
        "after_cancel",
        bash("one", "sleep 0.2", "resources: {memory_gb: 6}"),
        bash("two", "sleep 0.2", "resources: {memory_gb: 6}"),
    )
    second = execute(again, tmp_path / "home", executor=executor, admission=admission)
    assert second.states() == {"one": "success", "two": "success"}
    assert_disjoint(second.attempts)
    assert admission.held == 0


# -- GPUs ------------------------------------------------------------------------------------

# The GPUs are simulated: no GPU is needed here. The capacity says 2 devices, and
# what is real is the assignment (which attempt holds which device, never two
# whole-GPU attempts on one device) and the environment each attempt runs with
# (CUDA_VISIBLE_DEVICES, which a CUDA program would obey).


def test_concurrent_gpu_tasks_never_share_a_device(tmp_path: Path) -> None:
    python = "call: gpu_tasks:show_devices\n    parameters: {seconds: 0.3}\n    resources: {gpu: 1}"
    text = spec(
        "gpus",
        *(f"  - id: {tid}\n    {python}\n" for tid in ("py_a", "py_b", "py_c")),
        bash("sh", 'sleep 0.3; echo "devices=$CUDA_VISIBLE_DEVICES"', "resources: {gpu: 1}"),
        "  - id: plain\n    call: gpu_tasks:no_devices\n    after: [py_a, py_b, py_c, sh]\n",
    )
    capacity = Capacity(cpu=8, memory_gb=16, gpu=2)
    ran = execute(text, tmp_path / "home", executor="process", capacity=capacity)
    assert set(ran.states().values()) == {"success"}, ran.states()
    gpu_attempts = [a for a in ran.attempts if a.task_id != "plain"]
    devices = {a.task_id: a.gpu_devices for a in gpu_attempts}
    assert set(devices.values()) <= {"0", "1"}, devices
    outputs = {tid: ran.result.tasks[tid].output for tid in devices}
    assert outputs == {
        "py_a": devices["py_a"],
        "py_b": devices["py_b"],
        "py_c": devices["py_c"],
        "sh": f"devices={devices['sh']}",
    }
    for tid in ("py_a", "py_b", "py_c"):  # what the task printed is in its log
        log = tmp_path / "home" / "logs" / ran.result.run_id / tid / "attempt-1.log"
        assert f"CUDA_VISIBLE_DEVICES={devices[tid]}" in log.read_text()
    pairs = [(a, b) for a, b in combinations(gpu_attempts, 2) if overlap(a, b)]
    assert pairs, "no two GPU tasks ran at once"
    for a, b in pairs:
        assert a.gpu_devices != b.gpu_devices, f"{a.task_id} and {b.task_id} shared a device"
    assert max_overlap(gpu_attempts) <= 2
    # An attempt that asked for no GPU is not left the previous attempt's devices.
    assert ran.result.tasks["plain"].output is None
    assert ran.one("plain").gpu_devices is None


def test_fractional_gpu_requests_share_one_device(tmp_path: Path) -> None:
    def task(tid: str, gpu: float) -> str:
        return (
            f"  - id: {tid}\n    call: gpu_tasks:show_devices\n"
            f"    parameters: {{seconds: 0.4}}\n    resources: {{gpu: {gpu}}}\n"
        )

    text = spec("halves", task("half_a", 0.5), task("half_b", 0.5), task("whole", 1))
    capacity = Capacity(cpu=8, memory_gb=16, gpu=2)
    ran = execute(text, tmp_path / "home", executor="process", capacity=capacity)
    assert set(ran.states().values()) == {"success"}, ran.states()
    half_a, half_b, whole = ran.one("half_a"), ran.one("half_b"), ran.one("whole")
    assert half_a.gpu_devices == half_b.gpu_devices  # two halves packed on one device
    assert whole.gpu_devices not in (None, half_a.gpu_devices)
    assert overlap(half_a, half_b) and overlap(half_a, whole)  # all three at once
    for a in (half_a, half_b, whole):
        assert ran.result.tasks[a.task_id].output == a.gpu_devices


# -- pools and custom resources ---------------------------------------------------------------


def test_a_pool_bounds_how_many_of_its_tasks_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGEFLOW_POOLS", "training=2")
    text = spec("pooled", *(bash(f"t{k}", "sleep 0.3", "pool: training") for k in range(4)))
    ran = execute_detected(text, tmp_path / "home", max_parallel=4)
    assert set(ran.states().values()) == {"success"}
    assert max_overlap(ran.attempts) == 2  # two slots: never three, and both used
    assert all(json.loads(a.request_json or "{}") == {"pool": "training"} for a in ran.attempts)


def test_a_custom_resource_bounds_its_holders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGEFLOW_CUSTOM_RESOURCES", "licenses=1")
    monkeypatch.setenv("STAGEFLOW_MAX_CPU_CORES", "8")  # CPUs are not what limits here
    text = spec(
        "licensed",
        bash("lic_a", "sleep 0.3", "resources: {licenses: 1}"),
        bash("lic_b", "sleep 0.3", "resources: {licenses: 1}"),
        bash("free", "sleep 0.3"),
    )
    ran = execute_detected(text, tmp_path / "home")
    assert set(ran.states().values()) == {"success"}
    assert not overlap(ran.one("lic_a"), ran.one("lic_b"))
    assert overlap(ran.one("free"), ran.one("lic_a"))  # the rest still runs in parallel


def test_an_unconfigured_custom_resource_is_refused_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGEFLOW_CUSTOM_RESOURCES", "licenses=1")
    text = spec("unlicensed", bash("needs_seat", "echo hi", "resources: {seats: 1}"))
    with pytest.raises(InvalidSpec) as info:
        execute_detected(text, tmp_path / "home")
    (problem,) = info.value.problems
    assert (problem.task, problem.field) == ("needs_seat", "resources.seats")
    assert "no custom resource 'seats' is configured (configured: licenses)" in problem.message
    assert recorded_runs(tmp_path / "home") == []


def test_operator_defaults_apply_to_tasks_that_declare_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGEFLOW_DEFAULT_TASK_RESOURCES", '{"bash": {"memory_gb": 6}}')
    monkeypatch.setenv("STAGEFLOW_MAX_MEMORY_GB", "8")
    monkeypatch.setenv("STAGEFLOW_MAX_CPU_CORES", "8")
    text = spec(
        "defaulted",
        bash("first", "sleep 0.3"),
        bash("second", "sleep 0.3"),
        bash("own", "sleep 0.3", "resources: {memory_gb: 1}"),  # its own request wins
    )
    ran = execute_detected(text, tmp_path / "home")
    assert set(ran.states().values()) == {"success"}
    first, second, own = ran.one("first"), ran.one("second"), ran.one("own")
    assert not overlap(first, second)  # 6 + 6 GB by default: one at a time
    assert overlap(own, first)
    assert json.loads(first.request_json or "null") == {"cpu": 1, "memory_gb": 6}
    assert json.loads(own.request_json or "null") == {"cpu": 1, "memory_gb": 1}


# -- execution modes ---------------------------------------------------------------------------


def test_sequential_mode_runs_one_task_at_a_time(tmp_path: Path) -> None:
    text = spec(
        "one_by_one",
        *(bash(f"s{k}", "sleep 0.2") for k in range(4)),
        head="execution_mode: sequential\n",
    )
    ran = execute(text, tmp_path / "home", max_parallel=4)
    assert set(ran.states().values()) == {"success"}
    assert len(ran.attempts) == 4
    assert_disjoint(ran.attempts)


def test_hybrid_mode_runs_an_exclusive_task_alone(tmp_path: Path) -> None:
    text = spec(
        "hybrid",
        bash("a", "sleep 0.3"),
        bash("b", "sleep 0.3"),
        bash("c", "sleep 0.3"),
        bash("alone", "sleep 0.2", "exclusive: true"),
        bash("d", "sleep 0.2"),
        bash("e", "sleep 0.2"),
        head="execution_mode: hybrid\n",
    )
    ran = execute(text, tmp_path / "home", max_parallel=4)
    assert set(ran.states().values()) == {"success"}
    alone = ran.one("alone")
    others = [a for a in ran.attempts if a.task_id != "alone"]
    for other in others:
        assert not overlap(alone, other), f"the exclusive task overlapped {other.task_id}"
    assert any(overlap(a, b) for a, b in combinations(others, 2))  # the rest in parallel


def test_exclusive_outside_hybrid_mode_is_refused_before_running(tmp_path: Path) -> None:
    text = spec("not_hybrid", bash("alone", "echo hi", "exclusive: true"), bash("b", "echo b"))
    with pytest.raises(InvalidSpec) as info:
        execute(text, tmp_path / "home")
    problems = [p for p in info.value.problems if p.field == "exclusive"]
    assert problems and problems[0].task == "alone"
    assert "execution_mode: hybrid" in problems[0].message
    assert "task 'alone'" in str(info.value) and "field 'exclusive'" in str(info.value)
    assert recorded_runs(tmp_path / "home") == []


# -- order: priority, then the critical path ---------------------------------------------------


def _ordered(short_estimate: str, with_resources: bool) -> str:
    """Roots ``short`` (declared first), ``long`` (a chain of three) and ``urgent``
    (priority 10), with optional requests in distinct classes."""
    urgent = "priority: 10" + ("\nresources: {cpu: 1, memory_gb: 1}" if with_resources else "")
    long = "resources: {cpu: 2}" if with_resources else ""
    return spec(
        "ordered",
        bash("short", "sleep 0.2", short_estimate),
        bash("long", "sleep 0.2", long),
        bash("long2", "sleep 0.2", "after: [long]"),
        bash("long3", "sleep 0.2", "after: [long2]"),
        bash("urgent", "sleep 0.2", urgent),
    )


@pytest.mark.parametrize("with_resources", [False, True], ids=["no-admission", "admission"])
def test_start_order_is_priority_then_the_longer_downstream_chain(
    tmp_path: Path, with_resources: bool
) -> None:
    capacity = MEMORY if with_resources else None
    by_rank = execute(
        _ordered("", with_resources), tmp_path / "a", max_parallel=1, capacity=capacity
    )
    assert set(by_rank.states().values()) == {"success"}
    # urgent: priority; long before short: its chain is longer (3 tasks of 1 s
    # estimated each); long2 (rank 2) before short (rank 1); short before long3:
    # equal ranks, short became ready first.
    assert by_rank.start_order() == ["urgent", "long", "long2", "short", "long3"]
    assert_disjoint(by_rank.attempts)
    # An estimate makes short's path the longest: it goes before long's chain.
    by_estimate = execute(
        _ordered("estimated_seconds: 10", with_resources),
        tmp_path / "b",
        max_parallel=1,
        capacity=capacity,
    )
    assert by_estimate.start_order() == ["urgent", "short", "long", "long2", "long3"]


# -- what is stored with each attempt ----------------------------------------------------------


def test_attempts_store_their_request_and_when_they_became_ready(tmp_path: Path) -> None:
    text = spec(
        "recorded",
        bash("heavy_a", "sleep 0.3", "resources: {cpu: 2, memory_gb: 6}\npriority: 1"),
        bash("heavy_b", "sleep 0.2", "resources: {cpu: 2, memory_gb: 6}"),
        bash(
            "retried",
            'sleep 0.2; [ "$STAGEFLOW_ATTEMPT" -ge 2 ]',
            "resources: {cpu: 1}\nretry: {max_retries: 1}",
        ),
        bash("plain", "sleep 0.2"),
    )
    ran = execute(text, tmp_path / "home", capacity=MEMORY)
    assert set(ran.states().values()) == {"success"}
    heavy_a, heavy_b = ran.one("heavy_a"), ran.one("heavy_b")
    for a in (heavy_a, heavy_b):
        assert json.loads(a.request_json or "null") == {"cpu": 2, "memory_gb": 6}
        assert a.gpu_devices is None
    # heavy_b was ready from the start and waited for heavy_a's memory.
    assert heavy_b.queued_at is not None and heavy_a.started_at is not None
    assert heavy_b.queued_at <= heavy_a.started_at
    assert heavy_b.started_at is not None and heavy_a.ended_at is not None
    assert heavy_b.started_at >= heavy_a.ended_at
    first, second = ran.of("retried")
    assert json.loads(first.request_json or "null") == {"cpu": 1}
    assert json.loads(second.request_json or "null") == {"cpu": 1}
    # The retry became ready again only after the first attempt ended.
    assert second.queued_at is not None and first.ended_at is not None
    assert second.queued_at >= first.ended_at
    # A task that declared nothing holds nothing; its wait for a worker is still kept.
    plain = ran.one("plain")
    assert plain.request_json is None and plain.gpu_devices is None
    assert plain.queued_at is not None and plain.started_at is not None
    assert plain.queued_at <= plain.started_at


# -- requests that can never fit: the CLI refuses them before running ------------------------

TOO_BIG = """\
name: too_big
tasks:
  - id: train
    operator: bash
    parameters: {command: 'echo "devices=$CUDA_VISIBLE_DEVICES"'}
    resources: {gpu: 4}
  - id: load
    operator: bash
    parameters: {command: "echo loaded"}
    resources: {memory_gb: 100000}
"""


def sf(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, on a machine configured with 0 GPUs and 64 GB of memory."""
    env = {
        **h.clean_environ(os.environ),
        "STAGEFLOW_HOME": str(home),
        "STAGEFLOW_MAX_GPU_COUNT": "0",
        "STAGEFLOW_MAX_MEMORY_GB": "64",
        "STAGEFLOW_MAX_CPU_CORES": "4",
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [str(STAGEFLOW), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.parametrize("command", ["run", "validate"])
def test_requests_that_can_never_fit_are_refused_naming_task_field_and_capacity(
    tmp_path: Path, command: str
) -> None:
    """``run`` refuses them; ``validate`` warns (the pipeline may be meant for a
    bigger machine), naming the same task, field and capacity."""
    path = tmp_path / "too_big.yaml"
    path.write_text(TOO_BIG)
    home = tmp_path / "home"
    proc = sf(home, command, path, *(["--format", "json"] if command == "validate" else []))
    assert proc.returncode == (2 if command == "run" else 0), proc.stderr
    if command == "validate":
        report = json.loads(proc.stdout)
        assert report["valid"] is True and report["errors"] == []
        assert {(e["task"], e["field"]) for e in report["warnings"]} == {
            ("train", "resources.gpu"),
            ("load", "resources.memory_gb"),
        }
    err = proc.stderr
    assert "task 'train'" in err and "field 'resources.gpu'" in err
    assert "resources.gpu is 4 but this machine has 0 GPUs" in err
    assert "task 'load'" in err and "field 'resources.memory_gb'" in err
    assert "resources.memory_gb is 100000 but this machine has 64 GB of memory" in err
    listed = sf(home, "runs", "list", "--format", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_capacity_flags_make_run_accept_what_fits_them(tmp_path: Path) -> None:
    path = tmp_path / "too_big.yaml"
    path.write_text(TOO_BIG)
    home = tmp_path / "home"
    only_gpus = sf(home, "run", path, "--gpus", "4")
    assert only_gpus.returncode == 2  # the memory request still cannot fit
    assert "resources.gpu" not in only_gpus.stderr
    assert "resources.memory_gb is 100000" in only_gpus.stderr
    proc = sf(home, "run", path, "--gpus", "4", "--memory-gb", "100000", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert {tid: t["state"] for tid, t in run["tasks"].items()} == {
        "train": "success",
        "load": "success",
    }
    store = open_store(None, home)
    try:
        (train,) = store.attempts(run["run_id"], "train")
    finally:
        store.close()
    assert train.gpu_devices == "0,1,2,3"
    log = home / "logs" / run["run_id"] / "train" / "attempt-1.log"
    assert "devices=0,1,2,3" in log.read_text()
    listed = sf(home, "runs", "list", "--format", "json")
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run["run_id"]]
