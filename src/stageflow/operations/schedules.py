"""Schedules: what fires runs of a saved pipeline, kept in the store.

``add_schedule`` checks everything before it writes: the name, the timing
(``engine.schedules.problems``: a cron expression, a time zone, an interval, a
``once`` in the past), that the pipeline is saved (its latest version is what each
tick runs) and that the run parameters fit it. Each mistake raises ``UsageError``
naming the option and the fix. The schedule loop (``runtime.schedule_loop``: in
``stageflow scheduler``, ``stageflow worker`` and ``stageflow serve``) fires them.
``trigger_schedule`` queues a run now, outside the timing (seed 003's
``trigger_manual_execution``), with parameter overrides.

Owners. A schedule belongs to its pipeline's owner (``add_schedule`` records it).
Every operation takes the caller's ``owner`` and ``see_all``: a caller that may not
see all (a non-admin over the API) sees and changes only its owner's schedules and
may schedule only its owner's pipelines; another owner's schedule or pipeline gets the
same ``NotFound`` as a missing one, and the list of names in its message holds only
the caller's. Schedule names are global: a name another owner holds is a ``Conflict``.
The CLI (a local user, no server) passes ``see_all=True``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stageflow.errors import RunNotFound, UsageError
from stageflow.operations.arguments import parse_instant
from stageflow.operations.pipelines import Conflict, NotFound
from stageflow.operations.stores import Store
from stageflow.runtime.settings import Settings

if TYPE_CHECKING:
    from stageflow.operations.commands import SubmittedRun
    from stageflow.runtime.store.base import PipelineRecord, ScheduleRecord
    from stageflow.spec.models import Pipeline

__all__ = [
    "ScheduleInfo",
    "ScheduleNotFound",
    "add_schedule",
    "apply_schedules",
    "check_spec_schedules",
    "list_schedules",
    "parse_every",
    "remove_schedule",
    "set_schedule_enabled",
    "show_schedule",
    "trigger_schedule",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
#: The longest interval (100 years): its fire times stay within what a date can show.
_MAX_EVERY = 36500 * 86400.0
#: The last instant a date can show (9999-12-31 23:59:59 UTC): later fire times are not
#: listed.
_LAST_TIME = 253402300799.0


class ScheduleNotFound(NotFound):
    """No such schedule or saved pipeline, or not the caller's to see: ``NotFound`` (the
    API's 404), and a usage mistake for the CLI (exit 2, as ``UsageError``)."""

    exit_code = 2


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
    """``--every``: seconds, or a number with a unit (``90s``, ``10m``, ``2h``, ``1d``;
    ``spec.times.parse_duration``), at most 100 years; ``UsageError`` naming ``--every``
    otherwise."""
    from stageflow.spec.times import parse_duration

    seconds = parse_duration(text, "--every")
    if seconds > _MAX_EVERY:
        raise UsageError(
            f"--every {text!r} is longer than 36500d (100 years); give a shorter interval",
            field="every",
        )
    return seconds


def add_schedule(
    store: Store,
    name: str,
    pipeline: str,
    *,
    owner: str | None,
    see_all: bool,
    now: float | None = None,
    **timing: Any,
) -> ScheduleInfo:
    """Create schedule ``name`` (or change the one of that name: where it got to stays)
    firing runs of the saved pipeline ``pipeline``; ``timing``: exactly one of
    ``cron``, ``every`` and ``at``, and ``timezone``, ``start``, ``end``, ``catchup``,
    ``params``, ``priority``, ``max_active_runs``, ``enabled``, ``check_pipeline`` (the
    caller's own check of the pipeline, the API's: who may run arbitrary code, called
    after every other check). The schedule belongs to the pipeline's owner. Nothing is
    written unless every check passes. Raises ``UsageError`` (every problem named by its
    option), ``ScheduleNotFound`` (no such pipeline, or not the caller's), ``Conflict``
    (another owner's schedule has that name), ``InvalidSpec`` (a parameter the pipeline
    does not declare), ``StoreError``."""
    now = time.time() if now is None else now
    store.put_schedule(
        _checked_schedule(store, name, pipeline, owner=owner, see_all=see_all, now=now, **timing)
    )
    return _info(store, _schedule(store, name, owner, see_all), now, detail=False)


def check_spec_schedules(
    store: Store, pipeline: Pipeline, *, owner: str | None, see_all: bool, now: float
) -> None:
    """Before a spec is saved: what would stop its schedules from registering once it
    is (a ``once`` whose time has passed, a name another owner's schedule holds), so a
    refused save writes nothing. The rest was checked with the spec (``runtime.plan``).
    Raises ``UsageError``, ``Conflict``."""
    from stageflow.engine.schedules import spec_of, written_problems

    for name, entry in pipeline.schedule_entries():
        spec = spec_of(
            cron=entry.cron,
            every=entry.every,
            at=entry.at,
            timezone=entry.timezone,
            start=entry.start,
            end=entry.end,
            catchup=entry.catchup,
        )
        found = written_problems(spec, now, prefix="")
        if found:
            raise UsageError(f"schedule '{name}': {found[0][1]}", field=found[0][0])
        old = store.get_schedule(name)
        if old is not None and not _sees(old, owner, see_all):
            raise Conflict(
                f"schedule name '{name}' is taken by another owner; give the entry another `name:`",
                field="name",
            )
        if old is not None and old.pipeline != pipeline.name:
            raise Conflict(
                f"schedule '{name}' fires pipeline '{old.pipeline}'; give this entry of "
                f"'{pipeline.name}' another `name:` (or `stageflow schedules remove {name}`)",
                field="name",
            )


def apply_schedules(
    store: Store,
    pipeline: Pipeline,
    *,
    owner: str | None,
    see_all: bool,
    check_pipeline: Callable[[Pipeline], None] | None = None,
    now: float | None = None,
) -> list[ScheduleInfo]:
    """Register the schedules ``pipeline``'s spec carries (``schedule:``, ``schedules:``;
    ``Pipeline.schedule_entries`` names them), each as ``add_schedule`` would, for its
    saved version (save it first). Every entry is checked before any is written; a
    schedule of the pipeline that the spec no longer lists is left as it is (remove it
    with ``remove_schedule``). The schedules as now stored."""
    now = time.time() if now is None else now
    records = []
    for k, (name, entry) in enumerate(pipeline.schedule_entries()):
        try:
            records.append(
                _checked_schedule(
                    store,
                    name,
                    pipeline.name,
                    owner=owner,
                    see_all=see_all,
                    now=now,
                    cron=entry.cron,
                    every=None if entry.every is None else str(entry.every),
                    at=entry.at,
                    timezone=entry.timezone,
                    start=entry.start,
                    end=entry.end,
                    catchup=entry.catchup,
                    params=entry.params,
                    priority=entry.priority,
                    max_active_runs=entry.max_active_runs,
                    enabled=entry.enabled,
                    check_pipeline=check_pipeline,
                )
            )
        except UsageError as exc:  # say which entry of the spec
            raise UsageError(f"schedule '{name}' (entry {k + 1}): {exc}", field=exc.field) from None
    for record in records:
        store.put_schedule(record)
    return [
        _info(store, r, now, detail=False)
        for r in (_schedule(store, r.name, owner, see_all) for r in records)
    ]


def _checked_schedule(
    store: Store,
    name: str,
    pipeline: str,
    *,
    owner: str | None,
    see_all: bool,
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
    check_pipeline: Callable[[Pipeline], None] | None = None,
    now: float | None = None,
) -> ScheduleRecord:
    """``add_schedule``'s checks, in order; the record it writes (nothing written here)."""
    from stageflow.engine.schedules import ScheduleSpec, written_problems
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
    if not -1_000_000 <= priority <= 1_000_000:
        raise UsageError(
            f"--priority {priority} is out of range -1000000..1000000", field="priority"
        )
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
    found = written_problems(spec, now)
    if found:
        field_name, message = found[0]
        more = "".join(f"; {m}" for _, m in found[1:])
        raise UsageError(f"{message}{more}", field=field_name)
    record = _saved_pipeline(store, pipeline, owner=owner, see_all=see_all)
    saved = pipeline_from_data(json.loads(record.spec_json))
    # A parameter the pipeline does not declare: InvalidSpec naming it, nothing saved.
    _check_finite(params)
    resolve_params(saved, dict(params or {}))
    old = store.get_schedule(name)
    if old is not None and not _sees(old, owner, see_all):
        raise Conflict(
            f"schedule name '{name}' is taken by another owner; choose another name",
            field="name",
        )
    if check_pipeline is not None:
        check_pipeline(saved)
    created = old.created_at if old is not None else now
    last = old.last_tick if old is not None else None
    return ScheduleRecord(
        name=name,
        pipeline=pipeline,
        spec=_spec_fields(spec),
        params=dict(params or {}),
        priority=priority,
        max_active_runs=max_active_runs,
        enabled=enabled,
        owner=record.owner,
        created_at=created,
        updated_at=now,
        next_at=first_fire(spec, last, created),
    )


def list_schedules(
    store: Store, *, owner: str | None, see_all: bool, now: float | None = None
) -> list[ScheduleInfo]:
    """Every schedule the caller may see, by name, with when it fires next."""
    now = time.time() if now is None else now
    return [
        _info(store, s, now, detail=False) for s in store.schedules() if _sees(s, owner, see_all)
    ]


def show_schedule(
    store: Store, name: str, *, owner: str | None, see_all: bool, now: float | None = None
) -> ScheduleInfo:
    """Schedule ``name`` with its next 5 fire times and its latest 10 runs."""
    now = time.time() if now is None else now
    return _info(store, _schedule(store, name, owner, see_all), now, detail=True)


def set_schedule_enabled(
    store: Store, name: str, enabled: bool, *, owner: str | None, see_all: bool
) -> ScheduleInfo:
    """Pause (``enabled=False``: it fires nothing) or resume schedule ``name``. A resumed
    schedule without catch-up fires its latest due tick, not the ones it missed."""
    now = time.time()
    _schedule(store, name, owner, see_all)
    if not store.set_schedule_enabled(name, enabled, now):  # removed meanwhile
        raise _unknown(store, name, owner, see_all)
    return _info(store, _schedule(store, name, owner, see_all), now, detail=False)


def remove_schedule(store: Store, name: str, *, owner: str | None, see_all: bool) -> None:
    """Delete schedule ``name``; the runs it made stay."""
    _schedule(store, name, owner, see_all)
    if not store.delete_schedule(name):  # removed meanwhile
        raise _unknown(store, name, owner, see_all)


def trigger_schedule(
    settings: Settings,
    store: Store,
    name: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    owner: str | None,
    see_all: bool,
    by: str | None = None,
    check_pipeline: Callable[[Pipeline], None] | None = None,
) -> SubmittedRun:
    """Queue a run of schedule ``name``'s pipeline now, with its parameters and
    ``overrides`` on top (not a tick: its timing is unchanged). Its ``triggered_by`` is
    ``schedule:NAME (manual)``, or ``schedule:NAME (manual by BY)`` when ``by`` names
    who asked (the API: the token's name). ``check_pipeline`` as for ``add_schedule``.
    The ``SubmittedRun``."""
    from stageflow.operations.commands import submit_saved
    from stageflow.spec.load import pipeline_from_data

    schedule = _schedule(store, name, owner, see_all)
    _check_finite(overrides)
    record = _saved_pipeline(store, schedule.pipeline, owner=owner, see_all=see_all)
    if check_pipeline is not None:
        check_pipeline(pipeline_from_data(json.loads(record.spec_json)))
    return submit_saved(
        settings,
        store,
        record,
        {**schedule.params, **dict(overrides or {})},
        priority=schedule.priority,
        triggered_by=f"schedule:{name} (manual by {by})" if by else f"schedule:{name} (manual)",
    )


# -- helpers -----------------------------------------------------------------------------


def _spec_fields(spec: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(spec).items() if v is not None}


def _check_finite(params: Mapping[str, Any] | None) -> None:
    """``UsageError`` naming a parameter whose value holds NaN or an infinity: JSON, which
    the store and the API speak, has neither."""
    for key, value in (params or {}).items():
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise UsageError(
                f"--param {key}: {value!r} holds a number that is not finite (NaN or "
                "infinity), which JSON cannot carry; give a finite number or a string",
                field=f"params.{key}",
            ) from None


def _sees(schedule: ScheduleRecord, owner: str | None, see_all: bool) -> bool:
    return see_all or schedule.owner == owner


def _saved_pipeline(
    store: Store, pipeline: str, *, owner: str | None, see_all: bool
) -> PipelineRecord:
    """The latest live version of ``pipeline`` if the caller may see it; else one
    ``ScheduleNotFound``, the same whether it is missing, deleted or another owner's."""
    from stageflow.errors import StoreError, StoreUnreachable

    try:
        record = store.latest_pipeline(pipeline)
    except StoreUnreachable:
        raise
    except StoreError:
        record = None
    if record is None or not (see_all or record.owner == owner):
        raise ScheduleNotFound(
            f"no saved pipeline '{pipeline}'; save it first (`stageflow run FILE`, "
            "`stageflow submit FILE`, or POST /api/v1/pipelines)",
            pipeline=pipeline,
            field="pipeline",
        )
    return record


def _schedule(store: Store, name: str, owner: str | None, see_all: bool) -> ScheduleRecord:
    """Schedule ``name`` if the caller may see it; ``ScheduleNotFound`` otherwise."""
    schedule = store.get_schedule(name)
    if schedule is None or not _sees(schedule, owner, see_all):
        raise _unknown(store, name, owner, see_all)
    return schedule


def _unknown(store: Store, name: str, owner: str | None, see_all: bool) -> ScheduleNotFound:
    names = [s.name for s in store.schedules() if _sees(s, owner, see_all)]
    hint = f"; the schedules are: {', '.join(names)}" if names else "; there are none"
    return ScheduleNotFound(f"no schedule '{name}'{hint}", field="name")


def _fires_next(spec: Any, schedule: ScheduleRecord, now: float) -> float | None:
    """The tick the schedule fires next, as of ``now``: its stored next fire time; or,
    when that is overdue (no loop ran, a pause, ``max_active_runs``) and it does not
    catch up, the latest tick due now, which is the one its next pass fires."""
    from stageflow.engine.schedules import due

    stored = schedule.next_at
    if stored is None or stored > now or spec.catchup:
        return stored
    last = schedule.last_tick
    if last is None and spec.start is None:
        last = schedule.created_at
    ticks = due(spec, last, now, limit=1)
    return ticks[-1].at if ticks else stored


def _info(store: Store, schedule: ScheduleRecord, now: float, *, detail: bool) -> ScheduleInfo:
    from stageflow.engine.schedules import upcoming
    from stageflow.runtime.schedule_loop import schedule_spec

    name = schedule.name
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
        next_at=_fires_next(spec, schedule, now) if schedule.enabled else None,
        last_tick=schedule.last_tick,
        active_runs=store.active_schedule_runs(name),
        max_active_runs=schedule.max_active_runs,
        priority=schedule.priority,
        params=schedule.params,
        catchup=spec.catchup,
        upcoming=[t for t in upcoming(spec, after, 5) if t <= _LAST_TIME]
        if detail and schedule.enabled
        else [],
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
