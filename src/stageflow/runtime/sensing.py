"""Pokes: the checks of a run's waiting sensors, made off the workers.

Policy. The engine decides when each waiting sensor is checked
(``Scheduler.pokes_due``, ``engine.sensors``); ``Pokes.submit`` makes the check
(``operators.sensor.poke``) on a small thread pool this process shares between
its runs (``POKE_THREADS`` threads), never on a worker, so a waiting sensor
holds no worker slot, resources or pool slot. A finished check waits in
``take`` for the run's next step, which records it in the engine (and stores a
met sensor's output before its success is committed: the durability rule), and
wakes the run's thread. A check is bounded by what it does (an HTTP check by
``request_timeout``); a check still in flight when the run ends is dropped.
``${secret:NAME}`` in a sensor's parameters (an HTTP header's token) is resolved
in the checking thread, as an attempt resolves its own (``runtime.secrets``); a
check's message, and what a sensor given a secret found (its output), are masked.

State: each sensor's parameters (validated on its first check), the finished
checks not yet taken, the store (a ``task`` sensor reads the other pipeline's
latest run from it) and the run's clock and wake-up.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stageflow.engine.sensors import SensorPolicy
from stageflow.operators.sensor import Poke, SensorParams, poke, sensor_policy
from stageflow.runtime import secrets
from stageflow.runtime.store.base import Store
from stageflow.spec.models import Pipeline, Task

__all__ = ["POKE_THREADS", "Pokes", "sensor_policies"]

#: Threads checking sensors, shared by every run of this process.
POKE_THREADS = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def sensor_policies(
    pipeline: Pipeline, parameters: Callable[[Task], Mapping[str, Any]]
) -> list[SensorPolicy | None]:
    """Each task's ``SensorPolicy`` (``None``: not a sensor), for ``EnginePlan.sensors``;
    empty when the pipeline has no sensor. ``parameters``: a task's parameters with
    the run's substituted. The tasks were validated (``plan.check``)."""
    if not any(t.operator_name == "sensor" for t in pipeline.tasks):
        return []
    return [
        sensor_policy(SensorParams.model_validate(dict(parameters(t))))
        if t.operator_name == "sensor"
        else None
        for t in pipeline.tasks
    ]


class Pokes:
    """One run's sensor checks in flight and done (module docstring)."""

    def __init__(
        self,
        tasks: Mapping[str, Task],
        parameters: Callable[[Task], Mapping[str, Any]],
        *,
        pipeline_dir: str,
        store: Store,
        clock: Callable[[], float],
        wake: Callable[[], None],
    ) -> None:
        self._tasks = tasks
        self._parameters = parameters
        self._pipeline_dir = pipeline_dir
        self._store = store
        self._clock = clock
        self._wake = wake
        self._params: dict[str, SensorParams | dict[str, Any]] = {}  # dict: holds secrets
        self._done: collections.deque[tuple[str, Poke]] = collections.deque()

    def submit(self, task_id: str) -> None:
        """Check sensor ``task_id`` on the shared pool; its result waits in ``take``."""
        params = self._params.get(task_id)
        if params is None:
            given = dict(self._parameters(self._tasks[task_id]))
            params = given if secrets.uses_secrets(given) else SensorParams.model_validate(given)
            self._params[task_id] = params
        _shared_pool().submit(self._check, task_id, params)

    def take(self) -> list[tuple[str, Poke]]:
        """The checks finished since the last call, oldest first."""
        done = self._done
        out = []
        while done:
            out.append(done.popleft())
        return out

    def _check(self, task_id: str, given: SensorParams | dict[str, Any]) -> None:
        try:
            params = (
                given
                if isinstance(given, SensorParams)
                else SensorParams.model_validate(secrets.resolve(given))
            )
            found = poke(
                params, pipeline_dir=self._pipeline_dir, now=self._clock(), lookup=self._latest
            )
        except Exception as exc:  # never strand a sensor in flight: "not yet", said why
            found = Poke(False, message=f"the check failed: {exc}")
        if secrets.active():  # what it found is stored: a secret it was given is not
            value = found.value if isinstance(given, SensorParams) else _masked(found.value)
            found = Poke(found.met, value, secrets.mask(found.message))
        self._done.append((task_id, found))
        self._wake()

    def _latest(self, pipeline: str, task: str) -> tuple[str, str | None] | None:
        """(run id, ``task``'s state) of ``pipeline``'s newest run, ``None`` without one."""
        runs = self._store.list_runs(limit=1, pipeline=pipeline)
        if not runs:
            return None
        run_id = runs[0].run_id
        states = {r.task_id: r.state for r in self._store.task_runs(run_id)}
        return run_id, states.get(task)


def _masked(value: Any) -> Any:
    """``value`` with every secret this process resolved masked in its strings."""
    if isinstance(value, str):
        return secrets.mask(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(POKE_THREADS, thread_name_prefix="stageflow-poke")
        return _pool
