"""What the run loop asks at dispatch and after a failure: cache, circuits, error
classes and fallbacks, for one run.

* **Dispatch** (``at_dispatch``): a task about to run is first looked up in the
  cache (``runtime.cache``), then its circuit breaker is asked (``engine.circuit``,
  state read and written in one store transaction). A hit or an open circuit is
  a ``Shortcut``: the task never reaches the executor. A hit carries what its
  producing attempt decided beside its output: its recorded metrics (copied into
  the hit's own metadata file, so a resumed run reads them as any attempt's) and
  its decision to skip its downstream.
* **Error classes** (``classify``): an attempt's exception classes (its MRO,
  ``AttemptResult.error_types``) against ``retry_on`` (only those are retried)
  and ``fatal_on`` (the run stops). A timeout counts as ``TimeoutError``; a fast
  failure of an open circuit as ``stageflow.CircuitOpen``; a worker process that
  died raised nothing, so it matches no name. ``TaskFailed(..., retryable=False)``
  adds ``stageflow.NotRetryable``: never retried, whatever ``retry_on`` says.
* **Circuits** (``circuit_result``): every admitted attempt's end is counted in
  its circuit (a timeout is a failure); fast failures and cancellations are not.
* **Fallbacks** (``fallback_value``): when a task finally fails (no retry left,
  not fatal) its ``fallback`` gives the output: a ``value``, or a ``call`` run
  inline in the loop's process, bound like a Python task's function (upstream
  outputs, task parameters, run parameters, ``context``) plus ``error``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stageflow.engine.circuit import admit, open_message, record_result
from stageflow.engine.retry import error_matches, is_retryable
from stageflow.errors import Problem
from stageflow.operators.base import TaskContext
from stageflow.operators.metadata import record_metrics
from stageflow.operators.python import bind, binding_problems, resolve_callable
from stageflow.runtime.attempt import error_types
from stageflow.runtime.cache import KeyRecipe, TaskCache
from stageflow.runtime.logs import log_path
from stageflow.runtime.store.base import CacheEntry, OutputRef, Store
from stageflow.spec.models import CircuitBreaker, Pipeline, Task

__all__ = ["CIRCUIT_OPEN_TYPES", "TIMEOUT_TYPES", "Resilience", "Shortcut", "fallback_problems"]

logger = logging.getLogger(__name__)

TIMEOUT_TYPES = error_types(TimeoutError)
CIRCUIT_OPEN_TYPES = ("stageflow.CircuitOpen",)


@dataclass(frozen=True, slots=True)
class Shortcut:
    """A task decided at dispatch without running: a cache hit (``output`` set, with
    the ``metrics`` and the ``skip_downstream`` reason of the attempt that produced
    it) or an open circuit (a failure with ``message``)."""

    message: str
    output: OutputRef | None = None
    error_types: tuple[str, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    skip_downstream: str | None = None


class Resilience:
    """One run's cache, circuit breakers, error classes and fallbacks."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: Store,
        run_id: str,
        run_params: Mapping[str, Any],
        *,
        use_cache: bool = True,
        logs_dir: Path,
        pipeline_dir: str | None = None,
    ) -> None:
        """``pipeline_dir``: where the run's relative paths start (operators/paths.py)."""
        self.pipeline = pipeline
        self.store = store
        self.run_id = run_id
        self.run_params = run_params
        self.logs_dir = logs_dir
        self.pipeline_dir = pipeline_dir
        self.cache = TaskCache(
            pipeline,
            store,
            run_params,
            lookup=use_cache,
            pipeline_dir=pipeline_dir,
            logs_dir=logs_dir,
        )
        self.cached = {t.id for t in pipeline.tasks if pipeline.cache_of(t)}
        self.breakers: dict[str, tuple[str, CircuitBreaker]] = {}
        self.fatal_on: dict[str, list[str]] = {}
        for t in pipeline.tasks:
            breaker = pipeline.circuit_breaker_of(t)
            if breaker is not None:
                self.breakers[t.id] = breaker
            fatal = pipeline.fatal_on_of(t)
            if fatal:
                self.fatal_on[t.id] = fatal
        #: tasks the loop must ask at dispatch (a set lookup for all the others)
        self.guarded = frozenset(self.cached | self.breakers.keys())
        self.recipes: dict[str, KeyRecipe] = {}  # each cached task dispatched
        self._admitted: set[tuple[str, int]] = set()  # attempts counted in a circuit

    def at_dispatch(
        self,
        task: Task,
        attempt: int,
        parameters: Mapping[str, Any],
        inputs: list[OutputRef | None],
        now: float,
    ) -> Shortcut | None:
        """A cache hit or an open circuit for this attempt, or ``None``: run it."""
        tid = task.id
        if tid in self.cached:
            try:
                recipe = self.recipes[tid] = self.cache.prepare(task, parameters, inputs)
                key = recipe.key()
                hit = self.cache.lookup(task, key, now)
                if hit is not None and hit.metrics:  # the hit's own, before its success
                    record_metrics(self.logs_dir, self.run_id, tid, attempt, hit.metrics)
            except Exception:  # a cache that cannot answer must not stop the task
                logger.warning(
                    "run %s task %s: cache lookup failed; running it uncached",
                    self.run_id,
                    tid,
                    exc_info=True,
                )
                self.recipes.pop(tid, None)
                hit = None
            if hit is not None:
                source = hit.entry.output.run_id
                return Shortcut(
                    f"cached: output of run {source} reused (cache key {key[:12]})",
                    output=self.cache.reuse(hit.entry, self.run_id, tid),
                    metrics=hit.metrics,
                    skip_downstream=hit.skip_downstream,
                )
        breaker = self.breakers.get(tid)
        if breaker is None:
            return None
        name, policy = breaker
        decision: list[str] = []

        def change(current: Any) -> Any:
            allowed, state = admit(current, name, now, policy.reset_timeout_seconds)
            if not allowed:
                decision.append(open_message(state, policy.reset_timeout_seconds))
            return state

        self.store.update_circuit(name, change)
        if decision:
            return Shortcut(decision[0], error_types=CIRCUIT_OPEN_TYPES)
        self._admitted.add((tid, attempt))
        return None

    def circuit_result(self, task_id: str, attempt: int, ok: bool, now: float) -> None:
        """Count an admitted attempt's end in its circuit (others are ignored)."""
        if (task_id, attempt) not in self._admitted:
            return
        self._admitted.discard((task_id, attempt))
        name, policy = self.breakers[task_id]

        def change(current: Any) -> Any:
            return record_result(
                current, name, ok, now, policy.failure_threshold, policy.reset_timeout_seconds
            )

        self.store.update_circuit(name, change)

    def classify(self, task: Task, types: tuple[str, ...]) -> tuple[bool, bool]:
        """``(retryable, fatal)`` for an error of these classes."""
        fatal_on = self.fatal_on.get(task.id)
        fatal = bool(fatal_on) and error_matches(fatal_on or (), types)
        return is_retryable(self.pipeline.retry_of(task), types), fatal

    def cache_entry(self, task: Task, output: OutputRef, now: float) -> CacheEntry | None:
        """The entry to write for a successful attempt of a cached task, else ``None``.
        Its key reads the files' versions again: as the task left them."""
        recipe = self.recipes.pop(task.id, None)
        if recipe is None:
            return None
        return self.cache.entry(task, recipe.key(), output, now)

    def fallback_value(
        self,
        task: Task,
        attempt: int,
        parameters: Mapping[str, Any],
        inputs: Callable[[], Mapping[str, Any]],
        error: str,
    ) -> Any:
        """The fallback output of ``task`` (which has a ``fallback``); raises what the
        ``call`` raises, or ``TypeError`` when nothing provides one of its parameters."""
        fallback = task.fallback
        assert fallback is not None
        if fallback.call is None:
            return fallback.value
        fn = resolve_callable(fallback.call)
        path = log_path(self.logs_dir, self.run_id, task.id, attempt)
        ctx = TaskContext(
            run_id=self.run_id,
            task_id=task.id,
            attempt=attempt,
            params=self.run_params,
            work_dir=path.parent / f"work-{attempt}",
            log_path=path,
            logger=logging.getLogger("stageflow.task"),
            pipeline_dir=self.pipeline_dir,
        )
        args, kwargs = bind(fn, inputs(), {**parameters, "error": error}, ctx)
        return fn(*args, **kwargs)


def fallback_problems(
    task: Task,
    parameters: Mapping[str, Any],
    run_params: Mapping[str, Any],
    *,
    import_calls: bool = True,
) -> list[Problem]:
    """Why ``task``'s ``fallback.call`` cannot be imported or called (validation);
    ``import_calls`` false: only its form is checked (``plan.check``)."""
    fallback = task.fallback
    if fallback is None or fallback.call is None:
        return []
    ref = fallback.call
    if not _CALL_PATTERN.fullmatch(ref):
        return [
            Problem(
                f"fallback call target {ref!r} is not of the form 'package.module:function'",
                task=task.id,
                field="fallback.call",
            )
        ]
    if not import_calls:
        return []
    try:
        fn = resolve_callable(ref)
    except Exception as exc:  # any import failure is the user's to fix
        return [
            Problem(
                f"cannot import fallback call target '{ref}': {type(exc).__name__}: {exc}",
                task=task.id,
                field="fallback.call",
            )
        ]
    # Everything the fallback may be given by name counts as provided.
    provided = {**run_params, **parameters, "error": ""}
    return [
        Problem(f"fallback: {p.message}", task=task.id, field="fallback.call")
        for p in binding_problems(
            fn, task=task.id, upstream=task.upstream, parameters={}, run_params=provided
        )
    ]


_CALL_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
