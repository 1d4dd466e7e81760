"""Schedules: what fires runs of a saved pipeline, kept in the store.

``add_schedule`` checks everything before it writes: the name, the timing
(``engine.schedules.problems``: a cron expression, a time zone, an interval, a
``once`` in the past), that the pipeline is saved (its latest version is what each
tick runs) and that the run parameters fit it. Each mistake raises ``UsageError``
naming the option and the fix. The schedule loop (``runtime.schedule_loop``: in
``stageflow scheduler``, ``stageflow worker`` and ``stageflow serve``) fires them.
``trigger_schedule`` queues a run now, outside the timing (seed 003's
``trigger_manual_execution``), with parameter overrides.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stageflow.errors import RunNotFound, UsageError
from stageflow.operations.arguments import parse_instant
from stageflow.operations.stores import reading, writing
from stageflow.runtime.settings import Settings

__all__ = [
    "ScheduleInfo",
    "add_schedule",
    "list_schedules",
    "parse_every",
    "remove_schedule",
    "set_schedule_enabled",
    "show_schedule",
    "trigger_schedule",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EVERY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as a person or a program reads it: its timing in words, whether it
    is enabled, when it fires next, the tick it fired last, its unfinished runs and
    (``show_schedule``) its next fire times and latest runs (run id, state, tick)."""

    name: str
    pipeline: str
    kind: str
    timing: str  # "cron 0 2 * * * (Europe/Paris)", "every 600s", "once at ..."
    enabled: bool
    next_at: float | None
    last_tick: float | None
    active_runs: int
    max_active_runs: int | None
    priority: int
    params: dict[str, Any]
    catchup: bool
    upcoming: list[float] = field(default_factory=list)
    runs: list[tuple[float, str, str]] = field(default_factory=list)  # (tick, run id, state)

    def as_json(self) -> dict[str, Any]:
        from stageflow.runtime.result import iso

        return {
            "name": self.name,
            "pipeline": self.pipeline,
            "kind": self.kind,
            "timing": self.timing,
            "enabled": self.enabled,
            "next_at": iso(self.next_at) if self.next_at is not None else None,
            "last_tick": iso(self.last_tick) if self.last_tick is not None else None,
            "active_runs": self.active_runs,
            "max_active_runs": self.max_active_runs,
            "priority": self.priority,
            "params": self.params,
            "catchup": self.catchup,
            "upcoming": [iso(t) for t in self.upcoming],
            "runs": [
                {"tick": iso(t), "run_id": run_id, "state": state} for t, run_id, state in self.runs
            ],
        }


def parse_every(text: str) -> float:
    """``--every``: seconds, or a number with a unit (``90s``, ``10m``, ``2h``, ``1d``);
    ``UsageError`` naming ``--every`` otherwise."""
    match = _EVERY.fullmatch(text)
    if match is None:
        raise UsageError(
            f"--every {text!r} is not a duration; give seconds or a number with a unit: "
            "90s, 10m, 2h, 1d",
            field="every",
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def add_schedule(
    settings: Settings,
    name: str,
    pipeline: str,
    *,
    cron: str | None = None,
    every: str | None = None,
    at: str | None = None,
    timezone: str = "UTC",
    start: str | None = None,
    end: str | None = None,
    catchup: bool = False,
    params: Mapping[str, Any] | None = None,
    priority: int = 0,
    max_active_runs: int | None = None,
    enabled: bool = True,
    now: float | None = None,
) -> ScheduleInfo:
    """Create schedule ``name`` (or change the one of that name: where it got to stays)
    firing runs of the saved pipeline ``pipeline``; exactly one of ``cron``, ``every``
    and ``at``. Raises ``UsageError`` (every problem named by its option), ``StoreError``."""
    from stageflow.engine.schedules import ScheduleSpec, problems
    from stageflow.runtime.plan import resolve_params
    from stageflow.runtime.schedule_loop import first_fire
    from stageflow.runtime.store.base import ScheduleRecord
    from stageflow.spec.load import pipeline_from_data

    now = time.time() if now is None else now
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"schedule name {name!r} must be 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    kinds = [k for k, v in (("cron", cron), ("every", every), ("at", at)) if v is not None]
    if len(kinds) != 1:
        raise UsageError(
            "give exactly one of --cron EXPR, --every DURATION or --at TIME"
            + (f" (got {', '.join('--' + k for k in kinds)})" if kinds else ""),
            field="timing",
        )
    if max_active_runs is not None and max_active_runs < 1:
        raise UsageError(f"--max-active {max_active_runs} must be at least 1", field="max_active")
    spec = ScheduleSpec(
        kind="cron" if cron is not None else "interval" if every is not None else "once",
        cron=cron,
        every_seconds=parse_every(every) if every is not None else None,
        at=parse_instant(at, "--at") if at is not None else None,
        timezone=timezone,
        start=parse_instant(start, "--start") if start is not None else None,
        end=parse_instant(end, "--end") if end is not None else None,
        catchup=catchup,
    )
    found = problems(spec, now)
    if found:
        field_name, message = found[0]
        more = "".join(f"; {m}" for _, m in found[1:])
        raise UsageError(f"{message}{more}", field=field_name)
    with writing(settings) as store:
        record = _saved_pipeline(store, pipeline)
        # A parameter the pipeline does not declare: InvalidSpec naming it, nothing saved.
        resolve_params(pipeline_from_data(json.loads(record.spec_json)), dict(params or {}))
        old = store.get_schedule(name)
        created = old.created_at if old is not None else now
        last = old.last_tick if old is not None else None
        store.put_schedule(
            ScheduleRecord(
                name=name,
                pipeline=pipeline,
                spec=_spec_fields(spec),
                params=dict(params or {}),
                priority=priority,
                max_active_runs=max_active_runs,
                enabled=enabled,
                created_at=created,
                updated_at=now,
                next_at=first_fire(spec, last, created),
            )
        )
        return _info(store, name, now, detail=False)


def list_schedules(settings: Settings, *, now: float | None = None) -> list[ScheduleInfo]:
    """Every schedule, by name, with when it fires next."""
    now = time.time() if now is None else now
    with reading(settings) as store:
        return [_info(store, s.name, now, detail=False) for s in store.schedules()]


def show_schedule(settings: Settings, name: str, *, now: float | None = None) -> ScheduleInfo:
    """Schedule ``name`` with its next 5 fire times and its latest 10 runs."""
    now = time.time() if now is None else now
    with reading(settings) as store:
        return _info(store, name, now, detail=True)


def set_schedule_enabled(settings: Settings, name: str, enabled: bool) -> ScheduleInfo:
    """Pause (``enabled=False``: it fires nothing) or resume schedule ``name``. A resumed
    schedule without catch-up fires its latest due tick, not the ones it missed."""
    now = time.time()
    with writing(settings) as store:
        if not store.set_schedule_enabled(name, enabled, now):
            raise _unknown(store, name)
        return _info(store, name, now, detail=False)


def remove_schedule(settings: Settings, name: str) -> None:
    """Delete schedule ``name``; the runs it made stay."""
    with writing(settings) as store:
        if not store.delete_schedule(name):
            raise _unknown(store, name)


def trigger_schedule(
    settings: Settings, name: str, overrides: Mapping[str, Any] | None = None
) -> Any:
    """Queue a run of schedule ``name``'s pipeline now, with its parameters and
    ``overrides`` on top (not a tick: its timing is unchanged). The ``SubmittedRun``."""
    from stageflow.operations.commands import submit_saved

    with writing(settings) as store:
        schedule = store.get_schedule(name)
        if schedule is None:
            raise _unknown(store, name)
        record = _saved_pipeline(store, schedule.pipeline)
        return submit_saved(
            settings,
            store,
            record,
            {**schedule.params, **dict(overrides or {})},
            priority=schedule.priority,
            triggered_by=f"schedule:{name} (manual)",
        )


# -- helpers -----------------------------------------------------------------------------


def _spec_fields(spec: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(spec).items() if v is not None}


def _saved_pipeline(store: Any, pipeline: str) -> Any:
    from stageflow.errors import StoreError, StoreUnreachable

    try:
        return store.latest_pipeline(pipeline)
    except StoreUnreachable:
        raise
    except StoreError:
        raise UsageError(
            f"no saved pipeline '{pipeline}'; save it first (`stageflow run FILE`, "
            "`stageflow submit FILE`, or POST /api/v1/pipelines)",
            field="pipeline",
        ) from None


def _unknown(store: Any, name: str) -> UsageError:
    names = [s.name for s in store.schedules()]
    hint = f"; the schedules are: {', '.join(names)}" if names else "; there are none"
    return UsageError(f"no schedule '{name}'{hint}", field="name")


def _info(store: Any, name: str, now: float, *, detail: bool) -> ScheduleInfo:
    from stageflow.engine.schedules import upcoming
    from stageflow.runtime.schedule_loop import schedule_spec

    schedule = store.get_schedule(name)
    if schedule is None:
        raise _unknown(store, name)
    spec = schedule_spec(schedule)
    after = max(now, schedule.last_tick or schedule.created_at)
    runs: list[tuple[float, str, str]] = []
    if detail:
        for tick, run_id in store.schedule_runs(name, 10):
            try:
                state = store.get_run(run_id).state
            except RunNotFound:  # deleted between the two reads
                continue
            runs.append((tick, run_id, state))
    return ScheduleInfo(
        name=schedule.name,
        pipeline=schedule.pipeline,
        kind=spec.kind,
        timing=_timing(spec),
        enabled=schedule.enabled,
        next_at=schedule.next_at if schedule.enabled else None,
        last_tick=schedule.last_tick,
        active_runs=store.active_schedule_runs(name),
        max_active_runs=schedule.max_active_runs,
        priority=schedule.priority,
        params=schedule.params,
        catchup=spec.catchup,
        upcoming=upcoming(spec, after, 5) if detail and schedule.enabled else [],
        runs=runs,
    )


def _timing(spec: Any) -> str:
    from stageflow.runtime.result import iso

    if spec.kind == "cron":
        return f"cron {spec.cron} ({spec.timezone})"
    if spec.kind == "interval":
        seconds = float(spec.every_seconds)
        for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
            if seconds >= size and math.isclose(seconds % size, 0.0, abs_tol=1e-9):
                return f"every {seconds / size:g}{unit}"
        return f"every {seconds:g}s"
    return f"once at {iso(spec.at)}"
