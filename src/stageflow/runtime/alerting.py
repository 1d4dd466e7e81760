"""The alerting duty: deadlines of running runs, and alert rules, against the store.

``AlertDuty`` is a background duty (``runtime.duties``): every ``stageflow worker`` and
``stageflow scheduler`` runs its ``run_pass(now)`` each second, so an alert fires even
when the run's own process is stuck.

Deadlines, every pass. For each running run whose pipeline (or a running task of
which) has a ``deadline:``, ``engine.alerts.deadline_at`` says when it is due from
the run's (task run's) start; once ``now`` is past it, the duty opens an alert keyed
``deadline:<run id>`` (``deadline:<run id>:<task>``): the store's unique ``dedup_key``
makes it exactly once per run (task run) with any number of processes, while the run
is still going (airflow #18031 fires only after). The process that opened it notifies
the deadline's ``channels``. When the run ends, the deadline's alert resolves (``auto``).

Rules, every ``rules_every`` seconds (5 by default). For each enabled rule the duty
reads the metric's value per subject (``_observe``: the store's runs, task runs,
attempts and outputs, the tasks' recorded metrics, the host through psutil), and
``engine.alerts.decide`` says open, resolve (``auto``) or nothing. Opening is one
guarded insert (``Store.open_alert``); resolving a compare-and-set: of processes doing
the same pass, exactly one acts and notifies. Nothing here raises out of a pass but a
bug: a rule whose metric cannot be read this time is skipped (DEBUG).
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stageflow.engine.alerts import (
    Decision,
    condition_holds,
    deadline_at,
    decide,
    failure_rate,
)
from stageflow.runtime.settings import Settings
from stageflow.runtime.store.base import AlertRecord, AlertRuleRecord, RunRecord, Store
from stageflow.spec.models import Deadline

__all__ = ["DEADLINE_RULE", "AlertDuty", "Observation", "check_deadlines", "evaluate_rules"]

logger = logging.getLogger(__name__)

#: The rule id a deadline's alert carries.
DEADLINE_RULE = "deadline"
_ENDED = ("success", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Observation:
    """A metric's value for one subject now, with what the alert names, and (per-run
    metrics) the previous runs' values, newest first, for ``below_baseline``."""

    subject: str
    value: float | str | None
    pipeline: str | None = None
    task: str | None = None
    run_id: str | None = None
    history: list[float] = field(default_factory=list)


class AlertDuty:
    """The alerting duty (module docstring); one per scheduler loop."""

    name = "alerts"

    def __init__(self, settings: Settings, store: Store, *, rules_every: float = 5.0) -> None:
        self.settings = settings
        self.store = store
        self.rules_every = rules_every
        self._last_rules: float | None = None
        self._specs: dict[tuple[str, str], _Deadlines] = {}
        self._fired: set[str] = set()

    def run_pass(self, now: float) -> None:
        check_deadlines(self.settings, self.store, now, specs=self._specs, fired=self._fired)
        if self._last_rules is None or now - self._last_rules >= self.rules_every:
            self._last_rules = now
            evaluate_rules(self.settings, self.store, now)


@dataclass(frozen=True, slots=True)
class _Deadlines:
    run: Deadline | None
    tasks: dict[str, Deadline]


def check_deadlines(
    settings: Settings,
    store: Store,
    now: float,
    *,
    specs: dict[tuple[str, str], _Deadlines] | None = None,
    fired: set[str] | None = None,
) -> list[AlertRecord]:
    """Open the alert of every deadline a running run (task run) is past; resolve those
    whose run ended. The alerts this call opened."""
    specs = {} if specs is None else specs
    fired = set() if fired is None else fired
    opened: list[AlertRecord] = []
    running = [run for run in store.started_runs() if run.state == "running"]
    for run in running:
        found = _deadlines_of(store, run, specs)
        if found is None or run.started_at is None:
            continue
        if found.run is not None:
            key = f"deadline:{run.run_id}"
            due = _due(found.run, run.started_at)
            if key not in fired and now >= due:
                fired.add(key)
                alert = _deadline_alert(run, None, found.run, due, now, key)
                if store.open_alert(alert):
                    opened.append(alert)
                    _notify(settings, store, alert, "opened")
        if found.tasks:
            for tr in store.task_runs(run.run_id):
                deadline = found.tasks.get(tr.task_id)
                if deadline is None or tr.state != "running" or tr.started_at is None:
                    continue
                key = f"deadline:{run.run_id}:{tr.task_id}"
                due = _due(deadline, tr.started_at)
                if key not in fired and now >= due:
                    fired.add(key)
                    alert = _deadline_alert(run, tr.task_id, deadline, due, now, key)
                    if store.open_alert(alert):
                        opened.append(alert)
                        _notify(settings, store, alert, "opened")
    _resolve_ended_deadlines(store, {r.run_id for r in running}, now)
    return opened


def evaluate_rules(settings: Settings, store: Store, now: float) -> list[tuple[str, AlertRecord]]:
    """One evaluation of every enabled rule (module docstring): what this call did, as
    (``opened`` or ``resolved``, the alert)."""
    done: list[tuple[str, AlertRecord]] = []
    for rule in store.alert_rules(enabled_only=True):
        try:
            observations = observe(settings, store, rule, now)
        except Exception:  # a metric that cannot be read now: the next pass tries again
            logger.debug(
                "alert rule %s: could not read %s", rule.rule_id, rule.metric, exc_info=True
            )
            continue
        for seen in observations:
            done.extend(_apply(settings, store, rule, seen, now))
    return done


def observe(
    settings: Settings, store: Store, rule: AlertRuleRecord, now: float
) -> list[Observation]:
    """The rule's metric now, per subject (``engine.alerts.METRICS`` say what each means)."""
    metric = rule.metric
    if metric.startswith("host."):
        return [_host(metric)]
    pipelines = [rule.pipeline] if rule.pipeline is not None else store.pipeline_names()
    found: list[Observation] = []
    for pipeline in pipelines:
        found.extend(_observe_pipeline(settings, store, rule, pipeline, now))
    return found


def _observe_pipeline(
    settings: Settings, store: Store, rule: AlertRuleRecord, pipeline: str, now: float
) -> list[Observation]:
    metric, since = rule.metric, now - rule.window_seconds
    subject = f"pipeline:{pipeline}"
    if metric in ("runs.failures", "runs.failure_rate"):
        runs = store.query_runs(pipeline=pipeline, states=_ENDED, since=since, limit=10_000)
        ended = [r for r in runs if r.ended_at is not None and r.ended_at >= since]
        failed = sum(1 for r in ended if r.state == "failed")
        value = float(failed) if metric == "runs.failures" else failure_rate(failed, len(ended))
        return [Observation(subject, value, pipeline=pipeline)]
    if metric == "queue.wait_seconds":
        queued = store.query_runs(pipeline=pipeline, states=("queued",), limit=10_000)
        wait = max((now - r.created_at for r in queued), default=0.0)
        return [Observation(subject, wait, pipeline=pipeline)]
    if metric == "run.duration_seconds":
        return [_run_duration(store, rule, pipeline, now)]
    # Per task: of the pipeline's latest runs, newest first.
    runs = store.query_runs(pipeline=pipeline, limit=max(rule.runs + 1, 10))
    series: dict[str, list[tuple[float, RunRecord]]] = {}
    for run in runs:
        for task_id, value in _task_values(settings, store, rule, run, now).items():
            if rule.task is None or rule.task == task_id:
                series.setdefault(task_id, []).append((value, run))
    found = []
    for task_id, values in sorted(series.items()):
        (value, run), rest = values[0], values[1:]
        recent = run.state not in _ENDED or (run.ended_at or now) >= since
        found.append(
            Observation(
                f"task:{pipeline}.{task_id}",
                value if recent else None,
                pipeline=pipeline,
                task=task_id,
                run_id=run.run_id,
                history=[v for v, _ in rest[: rule.runs]],
            )
        )
    return found


def _run_duration(store: Store, rule: AlertRuleRecord, pipeline: str, now: float) -> Observation:
    since = now - rule.window_seconds
    runs = store.query_runs(pipeline=pipeline, limit=rule.runs + 50)
    current: list[tuple[float, str]] = []
    history: list[float] = []
    for r in runs:
        if r.started_at is None:
            continue
        if r.state in ("running", "paused"):
            current.append((now - r.started_at, r.run_id))
        elif r.ended_at is not None:
            seconds = r.ended_at - r.started_at
            if r.ended_at >= since and not history:
                current.append((seconds, r.run_id))
            elif r.state == "success" and len(history) < rule.runs:
                history.append(seconds)
    if not current:
        return Observation(f"pipeline:{pipeline}", None, pipeline=pipeline)
    value, run_id = max(current)
    return Observation(
        f"pipeline:{pipeline}", value, pipeline=pipeline, run_id=run_id, history=history
    )


def _task_values(
    settings: Settings, store: Store, rule: AlertRuleRecord, run: RunRecord, now: float
) -> dict[str, float]:
    metric = rule.metric
    if metric == "task.duration_seconds":
        return {
            tr.task_id: (tr.ended_at or now) - tr.started_at
            for tr in store.task_runs(run.run_id)
            if tr.started_at is not None and (tr.ended_at is not None or tr.state == "running")
        }
    if metric in ("task.cpu_seconds", "task.peak_memory_mb"):
        latest: dict[str, float] = {}
        for a in store.attempts(run.run_id):
            measured = a.cpu_seconds if metric == "task.cpu_seconds" else a.peak_rss_mb
            if measured is not None:
                latest[a.task_id] = float(measured)
        return latest
    # Metrics the tasks recorded: the validation operator's, or task.<id>.<name>.
    if run.state not in _ENDED:
        return {}
    if metric.startswith("task."):
        task_id, _, name = metric[len("task.") :].partition(".")
        wanted: tuple[str | None, str] = (task_id, name)
    else:
        wanted = (None, "error_rate" if metric == "validation.error_rate" else "drifted_columns")
    return _recorded(settings, store, run, wanted)


def _recorded(
    settings: Settings, store: Store, run: RunRecord, wanted: tuple[str | None, str]
) -> dict[str, float]:
    from stageflow.operators.metadata import read_metadata

    task_id, name = wanted
    values: dict[str, float] = {}
    outputs: Mapping[str, Any] | None = None
    for tr in store.task_runs(run.run_id):
        if (task_id is not None and tr.task_id != task_id) or tr.attempts < 1:
            continue
        meta = read_metadata(settings.logs_dir, run.run_id, tr.task_id, tr.attempts)
        value = (meta.get("metrics") or {}).get(name)
        if value is None and task_id is not None:  # a function's {"metrics": {...}} output
            outputs = store.outputs(run.run_id) if outputs is None else outputs
            value = _output_metric(outputs.get(tr.task_id), name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[tr.task_id] = float(value)
    return values


def _output_metric(ref: Any, name: str) -> Any:
    if ref is None or ref.kind != "inline" or ref.serializer != "json" or ref.data is None:
        return None
    try:
        data = json.loads(ref.data)
    except ValueError:
        return None
    if isinstance(data, dict):
        metrics = data.get("metrics")
        if isinstance(metrics, dict):
            return metrics.get(name)
        return data.get(name)
    return None


def _host(metric: str) -> Observation:
    import psutil

    value = (
        psutil.cpu_percent(interval=None)
        if metric == "host.cpu_percent"
        else psutil.virtual_memory().percent
    )
    return Observation(f"host:{socket.gethostname()}", float(value))


def _apply(
    settings: Settings, store: Store, rule: AlertRuleRecord, seen: Observation, now: float
) -> list[tuple[str, AlertRecord]]:
    holds = condition_holds(
        rule.condition, seen.value, rule.threshold, history=seen.history, k=rule.k
    )
    active = store.active_alert(rule.rule_id, seen.subject)
    last = store.last_alert_opened(rule.rule_id, seen.subject) if active is None else None
    decision = decide(
        holds,
        active=active is not None,
        last_opened_at=last,
        cooldown_seconds=rule.cooldown_seconds,
        now=now,
    )
    if decision is Decision.OPEN:
        alert = AlertRecord(
            alert_id=uuid.uuid4().hex[:16],
            rule_id=rule.rule_id,
            subject=seen.subject,
            state="open",
            severity=rule.severity,
            message=_rule_message(rule, seen),
            opened_at=now,
            value=seen.value,
            pipeline=seen.pipeline,
            run_id=seen.run_id,
            task=seen.task,
            owner=rule.owner,
            channels=rule.channels,
        )
        if store.open_alert(alert):
            _notify(settings, store, alert, "opened")
            return [("opened", alert)]
    elif (
        decision is Decision.RESOLVE
        and active is not None
        and store.move_alert(active.alert_id, active.state, "resolved", by="auto", now=now)
    ):
        _notify(settings, store, active, "resolved")
        return [("resolved", active)]
    return []


def _rule_message(rule: AlertRuleRecord, seen: Observation) -> str:
    where = seen.subject.split(":", 1)[1] if ":" in seen.subject else seen.subject
    value = f"{seen.value:.4g}" if isinstance(seen.value, float) else repr(seen.value)
    if rule.condition == "below_baseline":
        test = f"below the baseline of its last {len(seen.history)} runs (k={rule.k:g})"
    else:
        test = f"{rule.condition.replace('_', ' ')} {rule.threshold!r}"
    text = f"{rule.metric} of {where} is {value}, {test}"
    if seen.run_id is not None:
        text += f" (run {seen.run_id})"
    return f"alert rule '{rule.rule_id}': {text}"


def _deadline_alert(
    run: RunRecord, task: str | None, deadline: Deadline, due: float, now: float, key: str
) -> AlertRecord:
    what = f"task '{task}' of run {run.run_id}" if task else f"run {run.run_id}"
    terms = (
        f"after_seconds {deadline.after_seconds:g}"
        if deadline.after_seconds is not None
        else f"at {deadline.at} {deadline.timezone}"
    )
    return AlertRecord(
        alert_id=uuid.uuid4().hex[:16],
        rule_id=DEADLINE_RULE,
        subject=f"task-run:{run.run_id}.{task}" if task else f"run:{run.run_id}",
        state="open",
        severity=deadline.severity,
        message=(
            f"pipeline '{run.pipeline}': {what} is still running {now - due:.0f}s past its "
            f"deadline ({terms})"
        ),
        opened_at=now,
        value=round(now - due, 3),
        pipeline=run.pipeline,
        run_id=run.run_id,
        task=task,
        owner=run.owner,
        channels=[c.model_dump(exclude_none=True) for c in deadline.channels],
        dedup_key=key,
    )


def _resolve_ended_deadlines(store: Store, running: set[str], now: float) -> None:
    for state in ("open", "acknowledged"):
        for alert in store.alerts(state=state, rule_id=DEADLINE_RULE, limit=1000):
            if alert.run_id is not None and alert.run_id not in running:
                store.move_alert(alert.alert_id, alert.state, "resolved", by="auto", now=now)


def _deadlines_of(
    store: Store, run: RunRecord, specs: dict[tuple[str, str], _Deadlines]
) -> _Deadlines | None:
    key = (run.pipeline, run.pipeline_version)
    found = specs.get(key)
    if found is None:
        try:
            spec = json.loads(store.get_pipeline(*key).spec_json)
            raw = spec.get("deadline")
            tasks = {
                str(t["id"]): _checked(Deadline.model_validate(t["deadline"]))
                for t in spec.get("tasks", [])
                if isinstance(t, dict) and t.get("deadline")
            }
            found = _Deadlines(None if not raw else _checked(Deadline.model_validate(raw)), tasks)
        except Exception:  # a version saved before deadlines were checked: none, said once
            logger.warning("pipeline %s version %s: its deadlines cannot be read", *key)
            found = _Deadlines(None, {})
        specs[key] = found
    return None if found.run is None and not found.tasks else found


def _checked(deadline: Deadline) -> Deadline:
    """``deadline`` when ``engine.alerts`` can compute it, else ``ValueError``."""
    _due(deadline, 0.0)
    return deadline


def _due(deadline: Deadline, started_at: float) -> float:
    return deadline_at(
        started_at, after_seconds=deadline.after_seconds, at=deadline.at, timezone=deadline.timezone
    )


def _notify(settings: Settings, store: Store, alert: AlertRecord, what: str) -> None:
    """Send the alert's opening (resolving) to its channels, once (a stable key)."""
    if not alert.channels:
        return
    from stageflow.runtime.notify import Message, notify

    kind = (
        "deadline"
        if alert.rule_id == DEADLINE_RULE
        else ("alert" if what == "opened" else "alert_resolved")
    )
    message = Message(
        kind=kind,
        subject=f"[{alert.severity}] {alert.message}"
        if what == "opened"
        else f"resolved: {alert.message}",
        text=alert.message,
        pipeline=alert.pipeline,
        run_id=alert.run_id,
        task=alert.task,
        severity=alert.severity,
    )
    try:
        notify(
            settings,
            store,
            _channels(alert.channels),
            message,
            key=f"alert:{alert.alert_id}:{what}",
            owner=alert.owner,
        )
    except Exception:  # a channel's failure never stops alerting; notify logs it
        logger.warning("alert %s: notifying failed", alert.alert_id, exc_info=True)


def _channels(channels: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [dict(c) for c in channels]
