"""Run-level retries and schedules' execution timeouts: two background duties.

Retries (``RetryDuty``). A run that ended ``failed`` whose policy leaves a retry
(``engine.run_retry``: the policy of the schedule whose tick made the chain's first
run, else the pipeline's ``run_retries``) is queued again as a new run: the same
pipeline version, parameters, priority and owner, ``triggered_by`` ``retry:<first
run id>``, attempt ``n + 1``, not claimable before its due time (``runs.not_before``).
Exactly once: the retry is created with a ``run_retries`` row whose ``retry_of`` is
unique (``Store.create_run(retry=...)``), so of the processes that see the failure (the
run's own as it ends, ``Runner._queue_retry``; any number of workers and schedulers
running this duty) one creates it and the others meet the key. A pass reads the
failed runs without a retry that ended in the last ``LOOK_BACK`` seconds (a failure
older than that, while no process ran the duty, is left alone: a retry a day late is a
surprise, not a help). A cancelled run is never retried: it does not end ``failed``.

Timeouts (``TimeoutDuty``). A run a schedule's tick made that is still unfinished
``execution_timeout`` seconds after it started (a queued run waiting for a worker is
not executing yet) is cancelled through ``runtime.control.cancel_run``, the path of
``stageflow cancel``: its worker stops it, and the cancel names the schedule and the
timeout. The pipeline's ``run_timeout_seconds`` is enforced by the run's own process;
both apply, so the smaller wins.

Both keep their own cadence (``interval`` seconds) and are safe with several processes
doing them at once: a second cancel of a cancelling run is refused and ignored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from stageflow.engine.run_retry import RunRetryPolicy, effective_policy, next_retry_at
from stageflow.errors import (
    ControlRefused,
    RetryTaken,
    RunNotFound,
    StageflowError,
    StoreUnreachable,
)
from stageflow.runtime.settings import Settings
from stageflow.runtime.store.base import RetryLink, RunRecord, Store

__all__ = [
    "LATE_ENDS",
    "LOOK_BACK",
    "RetryDuty",
    "TimeoutDuty",
    "retry_failed_run",
    "retry_policy_for",
]

logger = logging.getLogger(__name__)

#: How far back (seconds) a pass looks for failed runs without a retry.
LOOK_BACK = 24 * 3600.0
#: How far behind the latest end it saw a pass looks again (an end committed late).
LATE_ENDS = 300.0
_PAGE = 100


def retry_policy_for(store: Store, run: RunRecord) -> tuple[RunRetryPolicy | None, RetryLink]:
    """The retry policy ``run`` follows, and where it stands in its chain (its own
    link when it is a retry; else attempt 1 of a chain it starts, due at its end)."""
    from stageflow.engine.schedules import retry_policy_of
    from stageflow.runtime.schedule_loop import schedule_spec
    from stageflow.spec.load import pipeline_from_data

    link = store.retry_link(run.run_id) or RetryLink("", run.run_id, 1, run.ended_at or 0.0)
    scheduled: RunRetryPolicy | None = None
    tick = store.tick_of_run(link.first_run_id)
    if tick is not None:
        record = store.get_schedule(tick[0])
        if record is not None:
            scheduled = retry_policy_of(schedule_spec(record))
    own: RunRetryPolicy | None = None
    try:
        saved = store.get_pipeline(run.pipeline, run.pipeline_version)
        declared = pipeline_from_data(json.loads(saved.spec_json)).run_retries
    except StageflowError:  # its version is gone or no longer loads: nothing declared
        declared = None
    if declared is not None:
        own = RunRetryPolicy(declared.strategy, declared.max_retries, declared.retry_delay)
    return effective_policy(scheduled, own), link


def retry_failed_run(store: Store, run: RunRecord, now: float) -> RunRecord | None:
    """Queue the retry of the ended ``run`` if its policy leaves one; the retry run, or
    ``None`` (no retry due, or another process created it first)."""
    from stageflow.spec.load import pipeline_from_data

    if run.ended_at is None:
        return None
    policy, link = retry_policy_for(store, run)
    due = next_retry_at(policy, link.attempt, run.state, run.ended_at)
    if due is None:
        return None
    saved = store.get_pipeline(run.pipeline, run.pipeline_version)
    tasks = [t.id for t in pipeline_from_data(json.loads(saved.spec_json)).tasks]
    from stageflow.runtime.runner import new_run_id

    retry = RunRecord(
        new_run_id(now),
        run.pipeline,
        run.pipeline_version,
        "queued",
        dict(run.params),
        now,
        executor=run.executor,
        source=run.source,
        priority=run.priority,
        owner=run.owner,
        triggered_by=f"retry:{link.first_run_id}",
    )
    try:
        store.create_run(
            retry, tasks, retry=RetryLink(run.run_id, link.first_run_id, link.attempt + 1, due)
        )
    except RetryTaken:
        return None
    logger.warning(
        "run %s failed (attempt %d): retry %s queued, due in %.0fs",
        run.run_id,
        link.attempt,
        retry.run_id,
        max(0.0, due - now),
    )
    return retry


@dataclass
class RetryDuty:
    """Queue the retries of failed runs (module docstring).

    A pass reads the failed runs without a retry page by page, from where the last pass
    got to less ``LATE_ENDS`` (an end committed late) or ``LOOK_BACK`` ago at first;
    a run decided to get no retry (no policy, used up) is remembered, so it is not
    decided again each second, and forgotten once past ``LOOK_BACK``."""

    store: Store
    interval: float = 1.0
    name: str = "run retries"
    _last: float = field(default=float("-inf"), repr=False)
    _seen_until: float = field(default=float("-inf"), repr=False)
    _decided: dict[str, float] = field(default_factory=dict, repr=False)

    def run_pass(self, now: float) -> None:
        if now - self._last < self.interval:
            return
        self._last = now
        since = max(now - LOOK_BACK, self._seen_until - LATE_ENDS)
        while True:
            page = self.store.failed_unretried(since, _PAGE)
            for run in page:
                ended = run.ended_at or 0.0
                if run.run_id not in self._decided:
                    try:
                        made = retry_failed_run(self.store, run, now)
                    except StoreUnreachable:
                        raise  # the store went away: the next pass tries again
                    except StageflowError as exc:  # its pipeline is gone: say so once
                        logger.warning("run %s: no retry: %s", run.run_id, exc)
                        made = None
                    if made is None:
                        self._decided[run.run_id] = ended
                since = max(since, ended)
                self._seen_until = max(self._seen_until, ended)
            if len(page) < _PAGE:
                break
        horizon = now - LOOK_BACK
        self._decided = {k: t for k, t in self._decided.items() if t >= horizon}


@dataclass
class TimeoutDuty:
    """Cancel the scheduled runs past their schedule's execution timeout (module docstring)."""

    settings: Settings
    store: Store
    interval: float = 1.0
    name: str = "schedule execution timeouts"
    _last: float = field(default=float("-inf"), repr=False)

    def run_pass(self, now: float) -> None:
        from stageflow.runtime.control import cancel_run
        from stageflow.runtime.schedule_loop import schedule_spec

        if now - self._last < self.interval:
            return
        self._last = now
        # The started runs first (as many as run at once; a queued run has no clock yet),
        # then only their schedules: a pass costs nothing however many schedules exist.
        timeouts: dict[str, float | None] = {}
        for name, run in self.store.started_schedule_runs():
            if name not in timeouts:
                record = self.store.get_schedule(name)
                timeouts[name] = None if record is None else schedule_spec(record).execution_timeout
            timeout = timeouts[name]
            if timeout is None or run.started_at is None or now - run.started_at < timeout:
                continue
            try:
                cancel_run(
                    run.run_id,
                    by=f"schedule '{name}' (its execution timeout of {timeout:g}s passed)",
                    settings=self.settings,
                )
            except (ControlRefused, RunNotFound):  # it ended meanwhile
                continue
            logger.warning(
                "run %s of schedule %s cancelled: execution timeout %gs passed",
                run.run_id,
                name,
                timeout,
            )
