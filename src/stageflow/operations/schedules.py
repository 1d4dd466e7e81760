"""Schedules: what fires runs of a saved pipeline, kept in the store.

``add_schedule`` checks everything before it writes: the name, the timing
(``engine.schedules.problems``: a cron expression, a time zone, an interval, a
``once`` in the past), that the pipeline is saved (its latest version is what each
tick runs) and that the run parameters fit it. Each mistake raises ``UsageError``
naming the option and the fix. The schedule loop (``runtime.schedule_loop``: in
``stageflow scheduler``, ``stageflow worker`` and ``stageflow serve``) fires them.
``trigger_schedule`` queues a run now, outside the timing (seed 003's
``trigger_manual_execution``), with parameter overrides.

Events. A schedule added with ``on_event`` (``--on-event E``; kind ``event``) has no
timing: the loop never fires it (its ``next_at`` is ``None``). ``fire_event`` (``POST
/api/v1/events/E``, ``stageflow schedules fire E``) queues one run for each enabled
schedule listening to ``E`` that the caller may see, with the schedule's parameters and
the event's payload on top. The payload is checked against every one of them first
(each key a parameter that schedule's pipeline declares, every value finite): one
mistake refuses the whole event, and nothing is queued.

After another pipeline. A schedule added with ``after`` (``--after P``; kind ``after``)
fires a run each time a run of the saved pipeline ``P`` ends in one of ``after_states``
(``--after-state``: ``success`` by default, ``failed``, ``cancelled``): the schedule loop
reads the upstream runs that ended and fires once for each (``runtime.schedule_loop``).
``P`` must be saved (and the caller's to see), and may not be the schedule's own
pipeline (each run would fire the next); a backfill refuses it (it has no ticks).

Owners. A schedule belongs to its pipeline's owner (``add_schedule`` records it).
Every operation takes the caller's ``owner`` and ``see_all``: a caller that may not
see all (a non-admin over the API) sees and changes only its owner's schedules and
may schedule only its owner's pipelines; another owner's schedule or pipeline gets the
same ``NotFound`` as a missing one, and the list of names in its message holds only
the caller's. Schedule names are global: a name another owner holds is a ``Conflict``.
The CLI (a local user, no server) passes ``see_all=True``.

Backfills. ``start_backfill`` makes the runs of a schedule's past ticks between two
times as one tracked object: a schedule record of its own (``backfill-<schedule>-<UTC
stamp>``) with that schedule's timing bounded by the two times and catch-up on, so the
schedule loop fires its ticks oldest first, each once, ``max_active_runs`` at a time.
``backfill_status`` and ``list_backfills`` count its ticks and its runs' states;
``cancel_backfill`` disables it and cancels its unfinished runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from stageflow.errors import InvalidSpec, Problem, RunNotFound, UsageError
from stageflow.operations.arguments import parse_instant
from stageflow.operations.pipelines import Conflict, NotFound
from stageflow.operations.stores import Store
from stageflow.runtime.settings import Settings

if TYPE_CHECKING:
    from stageflow.engine.schedules import ScheduleSpec
    from stageflow.operations.access import Confinement
    from stageflow.operations.commands import SubmittedRun
    from stageflow.runtime.store.base import PipelineRecord, ScheduleRecord
    from stageflow.spec.models import Pipeline

__all__ = [
    "BACKFILL_PREFIX",
    "MAX_BACKFILL_RUNS",
    "BackfillInfo",
    "EventFired",
    "EventRefused",
    "ScheduleInfo",
    "ScheduleNotFound",
    "add_schedule",
    "apply_schedules",
    "backfill_status",
    "cancel_backfill",
    "check_spec_schedules",
    "fire_event",
    "list_backfills",
    "list_schedules",
    "parse_every",
    "remove_schedule",
    "set_schedule_enabled",
    "show_schedule",
    "start_backfill",
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
    # "cron 0 2 * * * (Europe/Paris)", "every 600s", "once at ...", "on event E", "after P
    # succeeds"
    timing: str
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
    # Its runs' retry policy ({strategy, max_retries, retry_delay}; None: the pipeline's)
    # and execution timeout (seconds); an object schedule's URL and poll (seconds).
    run_retries: dict[str, Any] | None = None
    execution_timeout: float | None = None
    object_url: str | None = None
    poll_seconds: float | None = None

    def as_json(self) -> dict[str, Any]:
        from stageflow.runtime.result import iso

        return {
            "run_retries": self.run_retries,
            "execution_timeout": self.execution_timeout,
            "object_url": self.object_url,
            "poll_seconds": self.poll_seconds,
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
    ``cron``, ``every``, ``at``, ``on_event`` (an event's name: ``fire_event`` fires
    it, the loop never does) and ``after`` (a saved pipeline's name: a run when one of its
    runs ends in one of ``after_states``), and ``timezone``, ``start``, ``end``, ``catchup``,
    ``params``, ``priority``, ``max_active_runs``, ``enabled``, ``check_pipeline`` (the
    caller's own check of the pipeline, the API's: who may run arbitrary code, called
    after every other check), ``confine`` (what a non-admin's runs may reach,
    ``access.confinement``: a file outside its data roots, a host that is not public nor
    allowed, another team's pipeline read by a task sensor is ``Forbidden``). The schedule
    belongs to the pipeline's owner. Nothing is written unless every check passes. Raises
    ``UsageError`` (every problem named by its option), ``ScheduleNotFound`` (no such
    pipeline, or not the caller's), ``Conflict`` (another owner's schedule has that name),
    ``InvalidSpec`` (a parameter the pipeline does not declare), ``StoreError``."""
    now = time.time() if now is None else now
    _put_schedule(
        store,
        _checked_schedule(store, name, pipeline, owner=owner, see_all=see_all, now=now, **timing),
        now,
    )
    return _info(store, _schedule(store, name, owner, see_all), now, detail=False)


def check_spec_schedules(
    store: Store,
    pipeline: Pipeline,
    *,
    owner: str | None,
    see_all: bool,
    now: float,
    confine: Confinement | None = None,
) -> None:
    """Before a spec is saved: what would stop its schedules from registering once it
    is (a ``once`` whose time has passed, a name another owner's schedule holds; with
    ``confine``, a file, host or pipeline its parameters make it reach beyond it,
    ``access.check_confined``), so a refused save
    writes nothing. The rest was checked with the spec (``runtime.plan``). Raises
    ``UsageError``, ``Conflict``, ``Forbidden``."""
    from stageflow.engine.schedules import entry_spec, written_problems
    from stageflow.operations.access import check_confined, check_object_path

    for name, entry in pipeline.schedule_entries():
        check_confined(store, pipeline, entry.params, confine)
        if entry.object is not None:
            check_object_path(entry.object, confine, field="object", where=f"schedule '{name}'")
        spec = entry_spec(entry, prefix="--")
        found = written_problems(spec, now, prefix="")
        if found:
            raise UsageError(f"schedule '{name}': {found[0][1]}", field=found[0][0])
        if spec.after is not None:
            try:
                _check_upstream(store, spec.after, pipeline.name, owner=owner, see_all=see_all)
            except UsageError as exc:
                raise UsageError(f"schedule '{name}': {exc}", field="after") from None
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
                    on_event=entry.event,
                    after=entry.after,
                    after_states=entry.after_states,
                    params=entry.params,
                    priority=entry.priority,
                    max_active_runs=entry.max_active_runs,
                    enabled=entry.enabled,
                    check_pipeline=check_pipeline,
                    run_retries=entry.run_retries,
                    retry_strategy=entry.retry_strategy,
                    retry_delay=entry.retry_delay,
                    execution_timeout=entry.execution_timeout,
                    on_object=entry.object,
                    poll=entry.poll,
                )
            )
        except UsageError as exc:  # say which entry of the spec
            raise UsageError(f"schedule '{name}' (entry {k + 1}): {exc}", field=exc.field) from None
    for record in records:
        _put_schedule(store, record, now)
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
    on_event: str | None = None,
    after: str | None = None,
    after_states: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    priority: int = 0,
    max_active_runs: int | None = None,
    enabled: bool = True,
    check_pipeline: Callable[[Pipeline], None] | None = None,
    now: float | None = None,
    run_retries: int | None = None,
    retry_strategy: str | None = None,
    retry_delay: str | float | None = None,
    execution_timeout: str | float | None = None,
    on_object: str | None = None,
    poll: str | float | None = None,
    confine: Confinement | None = None,
) -> ScheduleRecord:
    """``add_schedule``'s checks, in order; the record it writes (nothing written here).
    ``confine``: what its runs may reach (``access.confinement``, ``check_confined``)."""
    from stageflow.engine.schedules import spec_of, written_problems
    from stageflow.operations.access import check_confined, check_object_path
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
    timings = (
        ("cron", cron),
        ("every", every),
        ("at", at),
        ("on-event", on_event),
        ("after", after),
        ("on-object", on_object),
    )
    kinds = [k for k, v in timings if v is not None]
    if len(kinds) != 1:
        raise UsageError(
            "give exactly one of --cron EXPR, --every DURATION or --at TIME"
            + (f" (got {', '.join('--' + k for k in kinds)})" if kinds else "")
            + ", or --on-event EVENT (it fires on each POST /api/v1/events/EVENT), or "
            "--after PIPELINE (it fires when a run of PIPELINE ends), or --on-object URL "
            "(it fires when an object appears under URL)",
            field="timing",
        )
    if after_states is not None and after is None:
        raise UsageError(
            "--after-state is for a schedule with --after PIPELINE (it fires when a run of "
            "PIPELINE ends in one of them); remove --after-state, or give --after",
            field="after_state",
        )
    if max_active_runs is not None and max_active_runs < 1:
        raise UsageError(f"--max-active {max_active_runs} must be at least 1", field="max_active")
    if not -1_000_000 <= priority <= 1_000_000:
        raise UsageError(
            f"--priority {priority} is out of range -1000000..1000000", field="priority"
        )
    spec = spec_of(
        cron=cron,
        every=parse_every(every) if every is not None else None,  # at most 100 years
        at=at,
        timezone=timezone,
        start=start,
        end=end,
        catchup=catchup,
        event=on_event,
        after=after,
        after_states=after_states,
        run_retries=run_retries,
        retry_strategy=retry_strategy,
        retry_delay=retry_delay,
        execution_timeout=execution_timeout,
        on_object=on_object,
        poll=poll,
    )
    found = written_problems(spec, now)
    if found:
        field_name, message = found[0]
        more = "".join(f"; {m}" for _, m in found[1:])
        raise UsageError(f"{message}{more}", field=field_name.replace("-", "_"))
    if spec.object_url is not None:
        from stageflow.runtime.schedule_objects import check_object_url

        check_object_url(spec.object_url)
        check_object_path(spec.object_url, confine, field="on_object")
    record = _saved_pipeline(store, pipeline, owner=owner, see_all=see_all)
    if after is not None:
        _check_upstream(store, after, pipeline, owner=owner, see_all=see_all)
    saved = pipeline_from_data(json.loads(record.spec_json))
    # A parameter the pipeline does not declare: InvalidSpec naming it, nothing saved.
    _check_finite(params)
    resolve_params(saved, dict(params or {}))
    check_confined(store, saved, dict(params or {}), confine)
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
    confine: Confinement | None = None,
) -> SubmittedRun:
    """Queue a run of schedule ``name``'s pipeline now, with its parameters and
    ``overrides`` on top (not a tick: its timing is unchanged). Its ``triggered_by`` is
    ``schedule:NAME (manual)``, or ``schedule:NAME (manual by BY)`` when ``by`` names
    who asked (the API: the token's name). ``check_pipeline`` and ``confine`` as for
    ``add_schedule``. The ``SubmittedRun``."""
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
        confine=confine,
    )


# -- events ------------------------------------------------------------------------------


class EventRefused(InvalidSpec):
    """An event's payload does not fit a schedule listening to it (the API's 422, exit 2
    for the CLI): every problem, each naming ``payload.KEY`` and the schedule; nothing
    was queued."""

    def __init__(self, event: str, problems: list[Problem]) -> None:
        super().__init__(problems)
        count = len(problems)
        lines = [f"  - {p.render()}" for p in problems]
        head = (
            f"event '{event}' refused, nothing queued ({count} problem{'s' if count != 1 else ''}):"
        )
        self.args = ("\n".join([head, *lines]),)


@dataclass(frozen=True, slots=True)
class EventFired:
    """What ``fire_event`` queued: one run per schedule listening to ``event``, as
    (schedule, pipeline, run id), by schedule name."""

    event: str
    runs: list[tuple[str, str, str]]

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "runs": [
                {"schedule": schedule, "pipeline": pipeline, "run_id": run_id}
                for schedule, pipeline, run_id in self.runs
            ],
        }


def fire_event(
    settings: Settings,
    store: Store,
    event: str,
    payload: Mapping[str, Any] | None,
    *,
    owner: str | None,
    see_all: bool,
    by: str,
    check_pipeline: Callable[[Pipeline], None] | None = None,
    confine: Confinement | None = None,
) -> EventFired:
    """Queue a run for each enabled schedule listening to ``event`` (kind ``event``) that
    the caller may see: its pipeline's latest version, the schedule's parameters with
    ``payload`` on top, its priority, ``triggered_by`` ``event:EVENT (by BY)`` (``by``:
    the token's name, the CLI's operating-system user). Every schedule is checked first
    (``payload``'s keys declared by its pipeline, its values finite, ``check_pipeline``,
    the API's check of who may run arbitrary code, and with ``confine`` that nothing the
    parameters put in a task reaches beyond it, ``access.check_confined``: ``Forbidden``);
    one problem refuses them all and queues nothing: ``EventRefused`` naming each schedule and
    ``payload.KEY``.
    ``ScheduleNotFound`` when no enabled schedule the caller sees listens to it;
    ``UsageError`` a name no schedule could listen to."""
    from stageflow.engine.schedules import EVENT_NAME
    from stageflow.operations.access import check_confined
    from stageflow.operations.commands import submit_saved
    from stageflow.runtime.plan import resolve_params
    from stageflow.runtime.schedule_loop import schedule_spec
    from stageflow.spec.load import pipeline_from_data

    if not EVENT_NAME.fullmatch(event):
        raise UsageError(
            f"event name {event!r} must be 1-100 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit",
            field="event",
        )
    data = dict(payload or {})
    listening = [
        s
        for s in store.schedules()
        if s.enabled
        and _sees(s, owner, see_all)
        and s.spec.get("kind") == "event"
        and schedule_spec(s).event == event
    ]
    if not listening:
        raise ScheduleNotFound(
            f"no schedule listens to event '{event}'; add one: stageflow schedules add NAME "
            f"PIPELINE --on-event {event}",
            field="event",
        )
    problems: list[Problem] = []
    for key, value in data.items():
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            problems.append(
                Problem(
                    f"{value!r} holds a number that is not finite (NaN or "
                    "infinity), which JSON cannot carry; send a finite number or a string",
                    field=f"payload.{key}",
                )
            )
    ready: list[tuple[ScheduleRecord, PipelineRecord]] = []
    for schedule in listening:
        where = f"schedule '{schedule.name}' (pipeline '{schedule.pipeline}')"
        try:
            record = _saved_pipeline(store, schedule.pipeline, owner=owner, see_all=see_all)
        except ScheduleNotFound:
            problems.append(
                Problem(
                    f"{where}: its pipeline is no longer saved; save it again, or remove the "
                    f"schedule (`stageflow schedules remove {schedule.name}`)",
                    field="pipeline",
                )
            )
            continue
        saved = pipeline_from_data(json.loads(record.spec_json))
        declared = ", ".join(sorted(saved.params)) or "none"
        undeclared = [k for k in data if k not in saved.params]
        for key in undeclared:
            problems.append(
                Problem(
                    f"schedule '{schedule.name}': its pipeline '{schedule.pipeline}' "
                    f"declares no parameter '{key}' (declared: "
                    f"{declared}); leave '{key}' out of the payload, or add it under the "
                    "pipeline's `params:`",
                    field=f"payload.{key}",
                )
            )
        if undeclared:
            continue
        try:  # a secret parameter given as a value, say
            resolve_params(saved, {**schedule.params, **data})
        except InvalidSpec as exc:
            problems.extend(Problem(f"{where}: {p.message}", field=p.field) for p in exc.problems)
            continue
        if check_pipeline is not None:
            check_pipeline(saved)
        check_confined(store, saved, {**schedule.params, **data}, confine)
        ready.append((schedule, record))
    if problems:
        raise EventRefused(event, problems)
    runs = []
    for schedule, record in ready:
        run = submit_saved(
            settings,
            store,
            record,
            {**schedule.params, **data},
            priority=schedule.priority,
            triggered_by=f"event:{event} (by {by})",
        )
        runs.append((schedule.name, schedule.pipeline, run.run_id))
    return EventFired(event, runs)


# -- helpers -----------------------------------------------------------------------------


def _put_schedule(store: Store, record: ScheduleRecord, now: float) -> None:
    """Write ``record``; a new object schedule without catch-up first records the
    objects under its URL as seen, so only objects that appear later fire. A listing
    that fails is a ``UsageError`` naming ``--on-object`` (nothing written)."""
    from stageflow.runtime.schedule_loop import schedule_spec

    spec = schedule_spec(record)
    if spec.object_url is not None and not spec.catchup and store.get_schedule(record.name) is None:
        from stageflow.runtime.schedule_objects import list_objects

        try:
            present = list_objects(spec.object_url)
        except Exception as exc:  # a filesystem's own errors: any kind
            raise UsageError(
                f"--on-object {spec.object_url}: could not list it ({exc}); check the URL "
                "and that it can be read from here",
                field="on_object",
            ) from None
        store.record_objects(record.name, [key for _, key in present], now)
    store.put_schedule(record)


def _spec_fields(spec: Any) -> dict[str, Any]:
    """The spec's fields to store (JSON): those set, ``after_states`` only on an ``after``
    schedule (as a list)."""
    from dataclasses import asdict

    fields = {k: v for k, v in asdict(spec).items() if v is not None}
    states = fields.pop("after_states", None)
    if spec.kind == "after" and states is not None:
        fields["after_states"] = list(states)
    return fields


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


def _check_upstream(
    store: Store, upstream: str, pipeline: str, *, owner: str | None, see_all: bool
) -> None:
    """``--after UPSTREAM`` of a schedule of ``pipeline``: a saved pipeline the caller may
    see, not ``pipeline`` itself; ``UsageError`` naming ``--after`` otherwise."""
    if upstream == pipeline:
        raise UsageError(
            f"--after {upstream}: a schedule of pipeline '{pipeline}' may not fire after "
            "its own runs (each run would fire the next, for ever); give another pipeline",
            field="after",
        )
    try:
        _saved_pipeline(store, upstream, owner=owner, see_all=see_all)
    except ScheduleNotFound:
        raise UsageError(
            f"--after {upstream}: no saved pipeline '{upstream}'; save it first (`stageflow "
            "run FILE`, `stageflow submit FILE`, or POST /api/v1/pipelines), or name another",
            field="after",
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
    from stageflow.runtime.schedule_loop import handled_until

    if spec.kind == "after":  # next_at is 0.0: it fires when an upstream run ends
        return None
    stored = schedule.next_at
    if stored is None or stored > now or spec.catchup:
        return stored
    ticks = due(spec, handled_until(schedule, spec), now, limit=1)
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
        run_retries=None
        if spec.run_retries is None
        else {
            "strategy": spec.retry_strategy or "fixed",
            "max_retries": spec.run_retries,
            "retry_delay": spec.retry_delay or 0.0,
        },
        execution_timeout=spec.execution_timeout,
        object_url=spec.object_url,
        poll_seconds=_poll_of(spec) if spec.kind == "object" else None,
    )


def _poll_of(spec: Any) -> float:
    from stageflow.engine.schedules import DEFAULT_POLL_SECONDS

    return float(spec.poll_seconds) if spec.poll_seconds is not None else DEFAULT_POLL_SECONDS


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
    if spec.kind == "event":
        return f"on event {spec.event}"
    if spec.kind == "after":
        states = tuple(spec.after_states)
        if states == ("success",):
            return f"after {spec.after} succeeds"
        return f"after {spec.after} ends in {'|'.join(states)}"
    if spec.kind == "object":
        return f"on object {spec.object_url}"
    return f"once at {iso(spec.at)}"


# -- backfills ---------------------------------------------------------------------------
#
# A backfill is a schedule record of its own, named ``backfill-<schedule>-<UTC stamp>``:
# the timing of a schedule of the pipeline, bounded by ``start`` and ``end`` (both in the
# past), with catch-up on. So the schedule loop (every worker, ``stageflow scheduler``)
# fires its ticks as it fires any schedule's: oldest first, each exactly once, at most
# ``max_active_runs`` unfinished at a time. Its progress is read back from the store:
# the fire times in its bounds, the ticks fired (``schedule_runs``) and their runs' states.

#: The prefix of a backfill's schedule name; ``list_backfills`` lists the schedules so named.
BACKFILL_PREFIX = "backfill-"
#: The most runs one backfill makes.
MAX_BACKFILL_RUNS = 10_000
_BACKFILL_NAME = re.compile(r"backfill-(.+)-\d{8}T\d{6}(?:-\d+)?")
_RUN_STATES = ("queued", "running", "paused", "success", "failed", "cancelled")
_UNFINISHED = ("queued", "running", "paused")


@dataclass(frozen=True, slots=True)
class BackfillInfo:
    """A backfill and its progress: the ticks in ``[start, end]`` (``total``), those the
    schedule loop has handled (``handled``; ``fired``: those that made a run, the rest
    were skipped because the pipeline could not run) and its runs counted by state.
    ``state``: ``running`` (ticks to fire or runs unfinished), ``done`` (every tick
    handled and every run ended), ``cancelled`` (its schedule is disabled).
    ``cancelled_runs`` (``cancel_backfill``): the runs it cancelled, each with
    ``cancelled`` (ended in the store at once) or ``stopping`` (its worker was asked)."""

    name: str
    pipeline: str
    schedule: str | None  # the schedule whose timing it takes (from its name)
    timing: str
    start: float
    end: float
    max_active_runs: int | None
    priority: int
    params: dict[str, Any]
    enabled: bool
    total: int
    handled: int
    fired: int
    runs: dict[str, int]
    created_at: float
    cancelled_runs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def unfinished(self) -> int:
        return sum(self.runs.get(s, 0) for s in _UNFINISHED)

    @property
    def done(self) -> bool:
        """Every tick handled and every run ended."""
        return self.handled >= self.total and self.unfinished == 0

    @property
    def state(self) -> str:
        if not self.enabled:
            return "cancelled"
        return "done" if self.done else "running"

    def as_json(self) -> dict[str, Any]:
        from stageflow.runtime.result import iso

        return {
            "name": self.name,
            "pipeline": self.pipeline,
            "schedule": self.schedule,
            "timing": self.timing,
            "from": iso(self.start),
            "to": iso(self.end),
            "max_active_runs": self.max_active_runs,
            "priority": self.priority,
            "params": self.params,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "handled": self.handled,
            "fired": self.fired,
            "skipped": max(0, self.handled - self.fired),
            "runs": dict(self.runs),
            "created_at": iso(self.created_at),
            "cancelled_runs": [
                {"run_id": run_id, "outcome": outcome} for run_id, outcome in self.cancelled_runs
            ],
        }


def start_backfill(
    store: Store,
    pipeline: str,
    *,
    start: str | float,
    end: str | float,
    schedule: str | None = None,
    max_active_runs: int = 1,
    overrides: Mapping[str, Any] | None = None,
    owner: str | None,
    see_all: bool,
    now: float | None = None,
) -> BackfillInfo:
    """Create a backfill of the saved ``pipeline``: one run per fire time of its schedule
    ``schedule`` (default: its only one) in ``[start, end]`` (ISO-8601 text or epoch
    seconds; ``end`` not after ``now``), fired oldest first by the schedule loop, at most
    ``max_active_runs`` unfinished at once, with the schedule's parameters and
    ``overrides`` on top and its priority. Nothing is written unless every check passes;
    each mistake raises ``UsageError`` naming its option (``--from``, ``--to``,
    ``--schedule``, ``--max-active``, ``--param``), and ``ScheduleNotFound`` an unknown
    pipeline (or not the caller's)."""
    from stageflow.runtime.plan import resolve_params
    from stageflow.runtime.schedule_loop import first_fire, schedule_spec
    from stageflow.runtime.store.base import ScheduleRecord
    from stageflow.spec.load import pipeline_from_data

    now = time.time() if now is None else now
    if max_active_runs < 1:
        raise UsageError(
            f"--max-active {max_active_runs} must be at least 1 (the runs of the backfill "
            "unfinished at once)",
            field="max_active",
        )
    begin = parse_instant(start, "--from") if isinstance(start, str) else float(start)
    until = parse_instant(end, "--to") if isinstance(end, str) else float(end)
    for option, value in (("from", begin), ("to", until)):
        if not math.isfinite(value):
            raise UsageError(f"--{option} must be a finite time, got {value!r}", field=option)
    if begin >= until:
        raise UsageError(
            f"--from ({_utc(begin)}) must be before --to ({_utc(until)}); swap them",
            field="from",
        )
    if until > now:
        raise UsageError(
            f"--to ({_utc(until)}) is in the future (now is {_utc(now)}): a backfill makes "
            "the runs of past ticks (the schedule fires the ones to come); give --to at or "
            "before now",
            field="to",
        )
    saved_record = _saved_pipeline(store, pipeline, owner=owner, see_all=see_all)
    source = _backfill_source(store, pipeline, schedule, owner, see_all)
    _check_finite(overrides)
    params = {**source.params, **dict(overrides or {})}
    saved = pipeline_from_data(json.loads(saved_record.spec_json))
    try:
        resolve_params(saved, params)
    except InvalidSpec as exc:  # an undeclared --param (or a secret given as a value)
        message = "; ".join(p.message for p in exc.problems)
        raise UsageError(message, field="param") from None
    source_spec = schedule_spec(source)
    if source_spec.kind == "after":
        raise UsageError(
            f"schedule {source.name} fires after pipeline {source_spec.after}'s runs end: it "
            "has no ticks to backfill; give --schedule NAME of a schedule with a timing (or "
            f"queue a run with `stageflow schedules trigger {source.name}`)",
            field="schedule",
        )
    if source_spec.kind == "event":
        raise UsageError(
            f"schedule {source.name} fires on event {source_spec.event}: it has no ticks to "
            "backfill; give --schedule NAME of a schedule with a timing (or queue runs with "
            f"`stageflow schedules fire {source_spec.event}`)",
            field="schedule",
        )
    spec = _backfill_spec(source_spec, begin, until)
    total = 0 if spec is None else _count_ticks(spec, until)
    between = f"between --from {_utc(begin)} and --to {_utc(until)}"
    timing = _timing(schedule_spec(source))
    if spec is None or total == 0:
        raise UsageError(
            f"no tick of schedule '{source.name}' ({timing}) {between}: nothing to backfill; "
            "widen --from/--to",
            field="to",
        )
    if total > MAX_BACKFILL_RUNS:
        raise UsageError(
            f"schedule '{source.name}' ({timing}) has more than {MAX_BACKFILL_RUNS:,} ticks "
            f"{between}; a backfill makes at most {MAX_BACKFILL_RUNS:,} runs: split it into "
            "narrower --from/--to",
            field="to",
        )
    name = _backfill_name(store, source.name, now)
    store.put_schedule(
        ScheduleRecord(
            name=name,
            pipeline=pipeline,
            spec=_spec_fields(spec),
            params=params,
            priority=source.priority,
            max_active_runs=max_active_runs,
            enabled=True,
            owner=saved_record.owner,
            created_at=now,
            updated_at=now,
            next_at=first_fire(spec, None, now),
        )
    )
    return _backfill_info(store, _schedule(store, name, owner, see_all))


def backfill_status(store: Store, name: str, *, owner: str | None, see_all: bool) -> BackfillInfo:
    """Backfill ``name`` and its progress; ``ScheduleNotFound`` (exit 2) when there is no
    such backfill, or it is not the caller's."""
    return _backfill_info(store, _backfill(store, name, owner, see_all))


def list_backfills(store: Store, *, owner: str | None, see_all: bool) -> list[BackfillInfo]:
    """Every backfill the caller may see (the schedules named ``backfill-...``), by name,
    with its progress."""
    return [
        _backfill_info(store, s)
        for s in store.schedules()
        if _is_backfill(s) and _sees(s, owner, see_all)
    ]


def cancel_backfill(
    settings: Settings,
    store: Store,
    name: str,
    *,
    owner: str | None,
    see_all: bool,
    by: str | None = None,
) -> BackfillInfo:
    """Stop backfill ``name`` as a whole: disable its schedule (no more ticks) and cancel
    its unfinished runs as ``stageflow cancel`` does (``operations.cancel``): a run no
    live process runs (queued, not taken yet) ends ``cancelled`` in the store at once,
    a running one's worker is asked to cancel it. A backfill that is done already is left
    as it is. Its ``cancelled_runs`` name the runs cancelled."""
    from stageflow.engine.states import FINAL_RUN_STATES
    from stageflow.errors import ControlRefused
    from stageflow.operations.commands import cancel
    from stageflow.runtime.claim import live_owner

    record = _backfill(store, name, owner, see_all)
    if _backfill_info(store, record).done:
        return _backfill_info(store, record)
    store.set_schedule_enabled(name, False, time.time())
    outcomes: dict[str, str] = {}
    # A pass of a schedule loop that read the schedule before it was disabled may still
    # make a run: sweep again until a sweep finds no unfinished run not yet cancelled.
    for _sweep in range(5):
        pending = [
            run
            for run in store.query_runs(
                triggered_by=f"schedule:{name}", states=_UNFINISHED, limit=MAX_BACKFILL_RUNS + 1
            )
            if run.run_id not in outcomes
        ]
        if not pending:
            break
        # Runs nobody holds first: cancelling a held run frees its worker's slot, and
        # a worker with a free slot would take a waiting run before its cancel came.
        now = time.time()
        pending.sort(key=lambda r: (live_owner(r, now) is not None, r.created_at))
        for run in pending:
            # ControlRefused: it ended meanwhile, or a worker took it just now (the request
            # is stored, and the worker acts on it); read its state below either way.
            with contextlib.suppress(ControlRefused, RunNotFound):
                cancel(settings, run.run_id, by=by)
            try:
                state = store.get_run(run.run_id).state
            except RunNotFound:
                continue
            if state == "cancelled":
                outcomes[run.run_id] = "cancelled"
            elif state not in FINAL_RUN_STATES:
                outcomes[run.run_id] = "stopping"  # its owner acts on the request
            else:
                outcomes[run.run_id] = ""  # it ended by itself: not cancelled here
    info = _backfill_info(store, _schedule(store, name, owner, see_all))
    return replace(
        info, cancelled_runs=[(run_id, what) for run_id, what in outcomes.items() if what]
    )


def _backfill_source(
    store: Store, pipeline: str, schedule: str | None, owner: str | None, see_all: bool
) -> ScheduleRecord:
    """The schedule whose timing a backfill of ``pipeline`` takes: ``schedule``, or the
    pipeline's only one (backfills aside); ``UsageError`` naming ``--schedule``."""
    own = [
        s
        for s in store.schedules()
        if s.pipeline == pipeline
        and _sees(s, owner, see_all)
        and not s.name.startswith(BACKFILL_PREFIX)
    ]
    names = ", ".join(s.name for s in own)
    if schedule is None:
        if len(own) == 1:
            return own[0]
        if not own:
            raise UsageError(
                f"pipeline '{pipeline}' has no schedule, and a backfill takes its timing from "
                f"one: add one (`stageflow schedules add NAME {pipeline} --cron EXPR --paused`) "
                "and give --schedule NAME",
                field="schedule",
            )
        raise UsageError(
            f"pipeline '{pipeline}' has {len(own)} schedules ({names}); give --schedule NAME "
            "to say whose timing the backfill takes",
            field="schedule",
        )
    found = next((s for s in own if s.name == schedule), None)
    if found is None:
        record = store.get_schedule(schedule)
        if record is not None and _sees(record, owner, see_all):
            why = (
                f"'{schedule}' is a backfill, not a schedule"
                if schedule.startswith(BACKFILL_PREFIX)
                else f"schedule '{schedule}' fires pipeline '{record.pipeline}'"
            )
        else:
            why = f"no schedule '{schedule}'"
        listed = f"its schedules are: {names}" if own else "it has none"
        raise UsageError(
            f"--schedule {schedule}: {why}; give a schedule of pipeline '{pipeline}' ({listed})",
            field="schedule",
        )
    return found


def _backfill_spec(spec: ScheduleSpec, begin: float, until: float) -> ScheduleSpec | None:
    """``spec``'s timing bounded by ``[begin, until]``, with catch-up; ``None`` when it
    fires nowhere in them. Its own ``start`` and ``end`` are not kept, but an interval
    keeps its ticks where they fall (``start`` is its anchor): the bounded one starts at
    its first tick at or after ``begin``."""
    if spec.kind == "once":
        assert spec.at is not None
        if not begin <= spec.at <= until:
            return None
        return replace(spec, start=begin, end=until, catchup=True)
    if spec.kind == "interval":
        anchor = 0.0 if spec.start is None else spec.start
        assert spec.every_seconds is not None
        every = spec.every_seconds
        first = anchor + math.ceil((begin - anchor) / every) * every
        while first < begin:  # the division rounds
            first += every
        while first - every >= begin:
            first -= every
        if first > until:
            return None
        # end == start would be refused (the schedule "never fires"): one ulp later, and
        # the next tick, a whole interval on, is still past it.
        return replace(
            spec, start=first, end=max(until, math.nextafter(first, math.inf)), catchup=True
        )
    return replace(spec, start=begin, end=until, catchup=True)


def _count_ticks(spec: ScheduleSpec, until: float) -> int:
    """How many fire times ``spec`` has from its start to ``until`` (at most
    ``MAX_BACKFILL_RUNS + 1``: more is refused anyway)."""
    from stageflow.engine.schedules import due

    return len(due(spec, None, until, limit=MAX_BACKFILL_RUNS + 1))


def _backfill_name(store: Store, schedule: str, now: float) -> str:
    from datetime import UTC, datetime

    base = f"{BACKFILL_PREFIX}{schedule}-{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%S}"
    name, k = base, 1
    while store.get_schedule(name) is not None:
        k += 1
        name = f"{base}-{k}"
    return name


def _backfill(store: Store, name: str, owner: str | None, see_all: bool) -> ScheduleRecord:
    """Backfill ``name`` if the caller may see it; ``ScheduleNotFound`` otherwise."""
    record = store.get_schedule(name)
    if record is None or not _is_backfill(record) or not _sees(record, owner, see_all):
        names = [s.name for s in store.schedules() if _is_backfill(s) and _sees(s, owner, see_all)]
        hint = (
            f"; the backfills are: {', '.join(names)}"
            if names
            else "; there are none (`stageflow backfill PIPELINE --from TIME --to TIME` starts one)"
        )
        raise ScheduleNotFound(f"no backfill '{name}'{hint}", field="name")
    return record


def _is_backfill(record: ScheduleRecord) -> bool:
    """A schedule ``start_backfill`` made: its name, and both bounds (a schedule someone
    named ``backfill-...`` by hand without them is not one)."""
    spec = record.spec
    return record.name.startswith(BACKFILL_PREFIX) and "start" in spec and "end" in spec


def _backfill_info(store: Store, record: ScheduleRecord) -> BackfillInfo:
    from stageflow.runtime.schedule_loop import schedule_spec

    spec = schedule_spec(record)
    assert spec.start is not None and spec.end is not None  # a backfill has both
    start, end = spec.start, spec.end
    total = _count_ticks(spec, end)
    last = record.last_tick
    handled = 0 if last is None else _count_ticks(spec, min(last, end))
    fired = store.schedule_runs(record.name, MAX_BACKFILL_RUNS + 1)
    made = {run_id for _, run_id in fired}
    runs = dict.fromkeys(_RUN_STATES, 0)
    for run in store.query_runs(
        triggered_by=f"schedule:{record.name}", limit=MAX_BACKFILL_RUNS + 1
    ):
        if run.run_id in made:
            runs[run.state] = runs.get(run.state, 0) + 1
    source = _BACKFILL_NAME.fullmatch(record.name)
    return BackfillInfo(
        name=record.name,
        pipeline=record.pipeline,
        schedule=source.group(1) if source else None,
        timing=_timing(spec),
        start=start,
        end=end,
        max_active_runs=record.max_active_runs,
        priority=record.priority,
        params=record.params,
        enabled=record.enabled,
        total=total,
        handled=max(handled, len(fired)),
        fired=len(fired),
        runs=runs,
        created_at=record.created_at,
    )


def _utc(t: float) -> str:
    from datetime import UTC, datetime

    return f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S} UTC"
