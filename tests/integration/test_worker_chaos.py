"""Chaos: ``stageflow worker`` processes killed and frozen while they run 300 runs.

- 3 workers on one PostgreSQL store: one SIGKILLed mid-way, another SIGSTOPped past
  its lease (until another worker took one of its runs over) and then continued;
- 2 workers on one SQLite store: one SIGSTOPped likewise, then the other SIGKILLed.

300 small runs (3 to 10 tasks in random DAGs, tasks of 0 to 30 ms; seeded) are
queued first, and 24 more whenever fewer than 8 wait while the test needs a worker
busy (to freeze it while it holds a run). Leases last 2 s (the shortest allowed),
so a silent worker's runs are taken over within seconds. What must hold whatever the timing:

- every run ends exactly once, ``success``, every task with exactly one committed
  ``success`` (the store's events: a refused commit writes nothing);
- no committed success is repeated: each task leaves ``start``/``end`` lines with
  its run, task, attempt, pid and time in a ledger (``chaos_tasks``); the attempt
  whose success was committed ran to its end (around the time its success was
  recorded), and after that no process started the task again unless it had lost
  the run (``LeaseLost`` in its output: an owner that lost the run may still start
  what it had dispatched before; it commits nothing of it);
- fencing: every run taken over from the frozen worker was refused to it when it
  came back (``LeaseLost`` in its output), and its runs were finished by others.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from helpers_places import Place, kill_group, place_on
from helpers_tasks import read_lines, wait_until

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
RUNS = 300
PIPELINES = 12
LEASE_SECONDS = 2.0  # runtime.settings.MIN_LEASE_SECONDS
SKEW = 1.0  # seconds: see check_every_run


@dataclass
class Chaos(Place):
    """One test's store, workers and ledger (a ``helpers_places.Place``)."""

    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pipelines: list[Any] = field(default_factory=list)  # stageflow Pipelines
    run_ids: list[str] = field(default_factory=list)  # every run queued, in order

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = super().env({"STAGEFLOW_LEASE_SECONDS": f"{LEASE_SECONDS:g}", **extra})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        return env

    def submit_all(self, seed: int) -> None:
        """Queue ``RUNS`` runs of ``PIPELINES`` random pipelines (in this process)."""
        from stageflow.runtime.loading import load_pipeline

        rng = random.Random(seed)
        self.pipelines = [load_pipeline(str(self._write_spec(k, rng))) for k in range(PIPELINES)]
        self.queue(RUNS)

    def queue(self, count: int) -> None:
        """Queue ``count`` more runs of the pipelines, round robin."""
        from stageflow.runtime.runner import Runner
        from stageflow.runtime.settings import load_settings

        settings = replace(load_settings({}), home=self.home, database_url=self.url)
        with self.store() as store:
            for _ in range(count):
                pipeline = self.pipelines[len(self.run_ids) % PIPELINES]
                runner = Runner(pipeline, store=store, settings=settings)
                self.run_ids.append(runner.prepare({}, hold=False).run.run_id)

    def top_up(self) -> None:
        """Queue more runs when few are left, so that a worker is busy whenever the
        test needs one to hold a run (on a fast machine the queue may drain first)."""
        with self.store() as store:
            queued = sum(1 for r in store.list_runs(limit=len(self.run_ids)) if r.state == "queued")
        if queued < 8:
            self.queue(24)

    def _write_spec(self, k: int, rng: random.Random) -> Path:
        size = rng.randint(3, 10)
        tasks = []
        for i in range(size):
            ups = sorted(rng.sample(range(i), min(i, rng.randint(1, 2)))) if i else []
            tasks.append(
                {
                    "id": f"t{i}",
                    "call": "chaos_tasks:step",
                    "upstream": [f"t{u}" for u in ups],
                    "parameters": {"pause": round(rng.uniform(0.0, 0.03), 3)},
                }
            )
        spec = {"name": f"chaos{k}", "params": {"ledger": str(self.ledger)}, "tasks": tasks}
        path = self.tmp / f"chaos{k}.json"
        path.write_text(json.dumps(spec))
        return path

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        proc = self.start(
            name,
            *("worker", "--name", name, "--concurrency", "4"),
            *("--idle-exit", "8"),  # longer than a freeze round's wait for a takeover
        )
        self.workers[name] = proc
        return proc

    def owner(self, name: str) -> str:
        import socket

        return f"{name} ({socket.gethostname()}:{self.workers[name].pid})"

    def successes(self) -> int:
        with self.store() as store:
            runs = store.list_runs(limit=len(self.run_ids))
            return sum(1 for r in runs if r.state == "success")

    def wait_for_successes(self, count: int) -> None:
        self.wait(lambda: self.successes() >= count, f"{count} runs succeeded", timeout=90)

    def kill(self, name: str) -> None:
        kill_group(self.workers[name])

    def freeze_until_taken_over(self, frozen: str, takers: list[str]) -> None:
        """SIGSTOP ``frozen`` until one of ``takers`` took a run over from it (its lease
        expired), then SIGCONT it. A worker frozen inside a SQLite write transaction
        blocks every other writer; it is then continued and frozen again later."""
        proc = self.workers[frozen]
        for _ in range(6):
            # Frozen while it holds a run (else nothing can be taken from it): wait for
            # one, stop it, look again.
            self.top_up()
            self.wait(lambda: self.holds_a_run(frozen), f"{frozen} holds a run", timeout=60)
            os.kill(proc.pid, signal.SIGSTOP)
            if not self.holds_a_run(frozen):
                os.kill(proc.pid, signal.SIGCONT)
                continue
            deadline = time.monotonic() + LEASE_SECONDS + 8
            while time.monotonic() < deadline:
                if any(taken_from(self, t, frozen) for t in takers):
                    os.kill(proc.pid, signal.SIGCONT)
                    return
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.5)
        raise AssertionError(
            f"no worker took a run over from the frozen {frozen}\n{self.diagnosis()}"
        )

    def wait(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        """``wait_until``, with ``diagnosis`` in its failure."""
        try:
            wait_until(check, what, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis()}") from None

    def diagnosis(self) -> str:
        """The unfinished runs, and each worker's state and last output, with every
        thread's stack of each live one (``stageflow worker`` prints them on SIGUSR1)."""
        for proc in self.workers.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(1.0)
        with self.store() as store:
            held = [
                (r.run_id, r.state, r.lease_owner, r.lease_epoch, r.lease_expires_at)
                for r in store.list_runs(limit=len(self.run_ids))
                if r.state in ("queued", "running")
            ]
        lines = [f"now {time.time():.3f}; {len(held)} unfinished run(s): {held[:40]}"]
        for name, proc in self.workers.items():
            lines.append(f"--- worker {name} (pid {proc.pid}, exit {proc.poll()}):")
            lines.append(self.stderr(name)[-6000:])
        return "\n".join(lines)

    def holds_a_run(self, name: str) -> bool:
        """Whether worker ``name`` holds the live lease of an unfinished run now."""
        owner, now = self.owner(name), time.time()
        with self.store() as store:
            return any(
                r.lease_owner == owner
                and r.state in ("queued", "running")
                and (r.lease_expires_at or 0.0) > now
                for r in store.list_runs(limit=len(self.run_ids))
            )


@pytest.fixture
def sqlite_chaos(tmp_path: Path) -> Iterator[Chaos]:
    with place_on("sqlite", tmp_path, Chaos) as chaos:
        yield chaos


@pytest.fixture
def postgres_chaos(tmp_path: Path) -> Iterator[Chaos]:
    with place_on("postgres", tmp_path, Chaos) as chaos:
        yield chaos


# -- the checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    event: str  # start | end
    run_id: str
    task_id: str
    attempt: int
    pid: int
    at: float


def ledger(chaos: Chaos) -> list[Line]:
    out = []
    for text in read_lines(chaos.ledger):
        event, run_id, task_id, attempt, pid, at = text.split()
        out.append(Line(event, run_id, task_id, int(attempt), int(pid), float(at)))
    return out


def lost_runs(chaos: Chaos, name: str) -> set[str]:
    """The runs worker ``name`` was refused a commit of (``LeaseLost``: taken over)."""
    pattern = re.compile(r"run (\S+): run '\S+' was taken over by ")
    return {m.group(1) for m in map(pattern.search, chaos.stderr(name).splitlines()) if m}


def taken_from(chaos: Chaos, taker: str, victim: str) -> set[str]:
    """The runs ``taker`` says it took from ``victim``: a run ``victim`` was running, or
    one it had claimed and not started yet."""
    pattern = re.compile(
        r"run (\S+) of pipeline '[^']+': (?:taking it over from|started \(claimed earlier by) "
        + re.escape(chaos.owner(victim))
    )
    return {m.group(1) for m in map(pattern.search, chaos.stderr(taker).splitlines()) if m}


def check_every_run(chaos: Chaos, run_ids: list[str], names: list[str]) -> None:
    """Every run once ``success``; every task's success committed once, the attempt
    committed ran to its end before it, and no process started the task again
    afterwards unless it had lost the run (module docstring)."""
    lines = ledger(chaos)
    by_task: dict[tuple[str, str], list[Line]] = defaultdict(list)
    for line in lines:
        by_task[(line.run_id, line.task_id)].append(line)
    lost = {chaos.workers[name].pid: lost_runs(chaos, name) for name in names}
    checked = 0
    with chaos.store() as store:
        for run_id in run_ids:
            run = store.get_run(run_id)
            assert run.state == "success", run
            events = store.events(run_id)
            finals = [
                e.to_state
                for e in events
                if e.task_id is None and e.to_state in ("success", "failed", "cancelled")
            ]
            assert finals == ["success"], (run_id, finals)
            rows = store.task_runs(run_id)
            assert {t.state for t in rows} == {"success"}, run_id
            committed = Counter(e.task_id for e in events if e.task_id and e.to_state == "success")
            assert committed == Counter({t.task_id: 1 for t in rows}), (run_id, committed)
            for e in events:
                if not (e.task_id and e.to_state == "success"):
                    continue
                ran = by_task[(run_id, e.task_id)]
                # The committed attempt ran to its end in one process, around the time its
                # success was recorded (a step may record a result with the time it read
                # just before it took the run's lock: SKEW).
                ends = {x.pid: x.at for x in ran if x.event == "end" and x.attempt == e.attempt}
                mine = [
                    x
                    for x in ran
                    if x.event == "start"
                    and x.attempt == e.attempt
                    and x.at <= e.at + SKEW
                    and ends.get(x.pid, math.inf) <= e.at + SKEW
                ]
                assert mine, (run_id, e, ran)
                # After it, no process started the task again unless it had lost the run.
                again = [
                    x
                    for x in ran
                    if x.event == "start"
                    and x.at > e.at
                    and x not in mine
                    and run_id not in lost.get(x.pid, ())
                ]
                assert again == [], (run_id, e, again)
                checked += 1
    assert checked == len({(x.run_id, x.task_id) for x in lines})  # and every task ran


def check_frozen_was_fenced(chaos: Chaos, frozen: str, takers: list[str]) -> set[str]:
    """Every run taken from the frozen worker was refused to it when it came back."""
    taken = set().union(*(taken_from(chaos, t, frozen) for t in takers))
    assert taken, f"no run was taken over from {frozen}"
    err = chaos.stderr(frozen)
    for run_id in taken:
        assert f"run {run_id}: run '{run_id}' was taken over by" in err, (run_id, err[-3000:])
    assert "committed nothing more" in err
    return taken


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_three_workers_on_postgresql_one_killed_one_frozen(postgres_chaos: Chaos) -> None:
    chaos = postgres_chaos
    chaos.submit_all(seed=12)
    names = ["a", "b", "c"]
    for name in names:
        chaos.start_worker(name)

    chaos.wait_for_successes(40)
    chaos.kill("c")
    chaos.wait_for_successes(100)
    chaos.freeze_until_taken_over("b", takers=["a"])

    for name in ("a", "b"):
        assert chaos.workers[name].wait(timeout=120) == 0, chaos.stderr(name)[-3000:]
    check_every_run(chaos, chaos.run_ids, names)
    check_frozen_was_fenced(chaos, "b", takers=["a"])
    from_killed = taken_from(chaos, "a", "c") | taken_from(chaos, "b", "c")
    assert from_killed, "the killed worker held no run"


def test_two_workers_on_sqlite_one_frozen_then_the_other_killed(sqlite_chaos: Chaos) -> None:
    chaos = sqlite_chaos
    chaos.submit_all(seed=7)
    names = ["a", "b"]
    for name in names:
        chaos.start_worker(name)

    chaos.wait_for_successes(60)
    chaos.freeze_until_taken_over("b", takers=["a"])
    chaos.wait_for_successes(150)
    chaos.kill("a")

    assert chaos.workers["b"].wait(timeout=120) == 0, chaos.stderr("b")[-3000:]
    check_every_run(chaos, chaos.run_ids, names)
    check_frozen_was_fenced(chaos, "b", takers=["a"])
    assert taken_from(chaos, "b", "a"), "the killed worker held no run"
