"""Schedules: when a pipeline fires, and which fires are due at a given moment.

Policy. A schedule is one of five kinds (``ScheduleSpec.kind``):

- ``cron``: a 5-field cron expression (``minute hour day-of-month month day-of-week``,
  parsed by croniter; ``@daily`` and the other ``@`` shorthands too), read as wall-clock
  time in ``timezone`` (an IANA name, ``UTC`` by default).
- ``interval``: every ``every_seconds``, at ``start + k * every_seconds`` (``k >= 0``);
  without ``start``, at ``k * every_seconds`` counted from the epoch (aligned: an
  hourly interval fires on the hour, UTC).
- ``once``: exactly once, at ``at``.
- ``event``: on each ``POST /api/v1/events/<event>`` (``operations.fire_event``), never
  at a time: it has no fire times (``next_after`` is ``None``, ``upcoming`` and ``due``
  empty), so the schedule loop never fires it; ``start``, ``end`` and ``catchup`` do not
  apply to it and are refused.
- ``after``: each time a run of the pipeline ``after`` ends in one of ``after_states``
  (``success`` by default; ``failed`` and ``cancelled`` too), never at a time: like
  ``event``, it has no fire times and refuses ``start``, ``end`` and ``catchup``; the
  schedule loop reads the upstream runs that ended (``Store.ended_runs_after``) and fires
  once for each.

``start`` and ``end`` bound the three timed kinds: no fire before ``start``, none after ``end``
(both inclusive). A fire time is the run's logical time and its identity for the
schedule: a ``Tick`` carries it with the data interval the run covers,
``[previous fire time, at)``; the previous fire time is the schedule's own, whether
it fired or not (``start`` and ``end`` do not cut it; ``once`` covers ``[at, at)``).

Due ticks (``due``). Given the last fire time handled (``last``) and ``now``, the
fire times in ``(last, now]`` are due: all of them, oldest first, with ``catchup``
(at most ``limit`` per call: the caller comes back with the last one for the rest);
without it, only the latest (the missed ones are skipped). A schedule that never
fired (``last=None``) fires from ``start`` when it has one, else from ``now``: a new
schedule does not fire for the past. A caller that keeps a schedule without
``start`` therefore records the time it first saw it and hands it in as ``last``.

Daylight saving time (cron). Matches are found on the local wall clock (croniter
walks naive wall times; its own zone handling is not used), then each is placed on
the timeline with zoneinfo:

- A wall time that does not exist (spring forward: 02:00-03:00 in Europe/Berlin or
  America/New_York) fires once, at the first instant after the gap (03:00 local):
  ``30 2 * * *`` fires at 03:00 that day, at 02:30 on every other day. The missing
  wall times of one gap all land there, and fire there once.
- A wall time that happens twice (fall back: 02:00-03:00 in Europe/Berlin,
  01:00-02:00 in America/New_York) fires at its first occurrence only:
  ``30 1 * * *`` in New York fires at the first 01:30, once; ``*/20 1 * * *`` fires
  at 01:00, 01:20 and 01:40 of the first occurrence, then not until the next day.
- A schedule whose hour field takes every hour (``*``, ``0-23``, ``@hourly``,
  ``*/15 * * * *``) follows real time instead, as cron does for such jobs: it
  fires in both occurrences of a repeated hour and skips wall times that do not
  exist. ``0 * * * *`` fires 25 times on the fall-back day and 23 on the
  spring-forward day, always 3600 s apart.

So fire times strictly increase, no two fall on the same instant, and a schedule
with a fixed hour fires once per local day it matches.

Pure: handed the time; no clock, no I/O. Times are float epoch seconds (UTC).
"""

from __future__ import annotations

import copy
import heapq
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, cast

from croniter import CroniterBadDateError, croniter

from stageflow.engine.zones import zone_or_none

if TYPE_CHECKING:
    from stageflow.engine.run_retry import RunRetryPolicy
    from stageflow.spec.models import ScheduleEntry

__all__ = [
    "AFTER_STATES",
    "DEFAULT_CATCHUP_LIMIT",
    "EVENT_NAME",
    "ScheduleKind",
    "ScheduleSpec",
    "Tick",
    "due",
    "entry_problems",
    "entry_spec",
    "next_after",
    "problems",
    "spec_of",
    "upcoming",
    "written_problems",
]

ScheduleKind = Literal["cron", "interval", "once", "event", "after", "object"]

#: The most ticks ``due`` hands back in one call when catching up.
DEFAULT_CATCHUP_LIMIT = 1000

_KINDS = ("cron", "interval", "once", "event", "after", "object")
#: The end states of an upstream run that an ``after`` schedule may fire on.
AFTER_STATES = ("success", "failed", "cancelled")
#: Each kind's own field, and an example of it for messages.
_OWN_FIELD = {
    "cron": "cron",
    "interval": "every_seconds",
    "once": "at",
    "event": "event",
    "after": "after",
    "object": "object_url",
}
_EXAMPLE = {
    "cron": 'cron="0 2 * * *" (every day at 02:00)',
    "every_seconds": "every_seconds=3600 (hourly)",
    "at": "at=1798761600.0 (2027-01-01 00:00:00 UTC, in epoch seconds)",
    "event": 'event="model-pushed" (fires on POST /api/v1/events/model-pushed)',
    "after": 'after="extract" (fires when a run of pipeline extract succeeds)',
    "object_url": "'file:///data/incoming/*.csv' or 's3://bucket/in/*.parquet'",
}
#: An object schedule's URL: an fsspec protocol, ``://``, then a path or glob.
OBJECT_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
#: How often an object schedule lists its URL by default, and the bounds of ``poll``.
DEFAULT_POLL_SECONDS = 30.0
POLL_BOUNDS = (1.0, 86400.0)
#: An event's name: it is a path segment of ``POST /api/v1/events/<event>``.
EVENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
#: An upstream pipeline's name (``after``): what ``spec.validate`` takes as a pipeline name.
AFTER_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9](?:[A-Za-z0-9 _.-]{0,126}[A-Za-z0-9_.-])?")
_CRON_EXAMPLE = '"0 2 * * *" (every day at 02:00)'
_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-6 or SUN-SAT"),
)
_EPOCH = datetime(1970, 1, 1)  # naive UTC: the epoch on a wall clock without zone
_MINUTE = timedelta(minutes=1)
#: What calendar arithmetic raises past datetime's range (years 1-9999) or on no match.
_OUT_OF_RANGE = (OverflowError, ValueError, OSError)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """When a pipeline fires. ``kind`` picks the field that says when: ``cron``,
    ``every_seconds``, ``at``, ``event`` or ``after``; the others stay ``None``.
    ``problems`` checks it."""

    kind: ScheduleKind
    cron: str | None = None  # kind cron: 5-field cron expression
    every_seconds: float | None = None  # kind interval
    at: float | None = None  # kind once: epoch seconds
    timezone: str = "UTC"  # IANA name; cron is read in it
    start: float | None = None  # no fire before it; an interval's anchor
    end: float | None = None  # no fire after it
    catchup: bool = False  # fire every missed time (True) or the latest only (False)
    event: str | None = None  # kind event: the event's name (POST /api/v1/events/<event>)
    after: str | None = None  # kind after: the upstream pipeline's name
    after_states: tuple[str, ...] = ("success",)  # kind after: the upstream run's end states
    # Any kind, for the runs it fires (``engine.run_retry``; ``None``: not set): its
    # run-level retry policy, which wins over the pipeline's ``run_retries``, and its
    # execution timeout (seconds: a fired run still unfinished after it is cancelled).
    run_retries: int | None = None
    retry_strategy: str | None = None
    retry_delay: float | None = None
    execution_timeout: float | None = None
    # Kind object: an fsspec URL with a glob; each new object fires a run. Listed every
    # ``poll_seconds`` (``None``: ``DEFAULT_POLL_SECONDS``).
    object_url: str | None = None
    poll_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """One fire: its logical time ``at`` (unique per schedule) and the data interval
    the run covers, ``[interval_start, interval_end)`` with ``interval_end == at``."""

    at: float
    interval_start: float
    interval_end: float


# --- as people write them -------------------------------------------------------


def spec_of(
    *,
    cron: str | None = None,
    every: str | float | None = None,
    at: str | None = None,
    timezone: str = "UTC",
    start: str | None = None,
    end: str | None = None,
    catchup: bool = False,
    event: str | None = None,
    after: str | None = None,
    after_states: Sequence[str] | None = None,
    run_retries: int | None = None,
    retry_strategy: str | None = None,
    retry_delay: str | float | None = None,
    execution_timeout: str | float | None = None,
    on_object: str | None = None,
    poll: str | float | None = None,
    prefix: str = "--",
) -> ScheduleSpec:
    """A ``ScheduleSpec`` from its fields as a person writes them (the CLI's options,
    an API body, a spec's ``schedules:`` entry): ``every`` a duration (``10m``), ``at``,
    ``start`` and ``end`` ISO-8601 times, ``event`` an event's name, ``after`` a pipeline's
    name (with ``after_states``; ``None``: ``success``). ``UsageError`` naming the field
    (``prefix`` + its name: ``--every``, ``schedules[0].every``) when none or two of
    ``cron``, ``every``, ``at``, ``event`` and ``after`` are given, ``after_states``
    without ``after``, or a duration or a time does not parse. The timing itself is
    checked by ``problems``."""
    from stageflow.errors import UsageError
    from stageflow.spec.times import parse_duration, parse_instant

    # The CLI's option for ``event`` is ``--on-event`` (the API's field ``on_event``).
    event_name = "on-event" if prefix == "--" else "event"
    timings = (
        ("cron", cron),
        ("every", every),
        ("at", at),
        (event_name, event),
        ("after", after),
        ("on-object" if prefix == "--" else "object", on_object),
    )
    given = [k for k, v in timings if v is not None]
    if len(given) != 1:
        names = " or ".join(f"{prefix}{k}" for k, _ in timings)
        got = f" (got {', '.join(prefix + k for k in given)})" if given else ""
        raise UsageError(f"give exactly one of {names}{got}", field=f"{prefix}timing")
    states_name = f"{prefix}after-state" if prefix == "--" else f"{prefix}after_states"
    if after_states is not None and after is None:
        raise UsageError(
            f"{states_name} is for a schedule with {prefix}after PIPELINE (it fires when a run "
            f"of PIPELINE ends in one of them); remove {states_name}, or give {prefix}after",
            field=states_name,
        )
    kind: ScheduleKind = (
        "cron"
        if cron is not None
        else "interval"
        if every is not None
        else "once"
        if at is not None
        else "event"
        if event is not None
        else "after"
        if after is not None
        else "object"
    )
    poll_name = f"{prefix}poll"
    if poll is not None and on_object is None:
        raise UsageError(
            f"{poll_name} is for an object schedule ({prefix}on-object URL): it says how "
            f"often the URL is listed; remove {poll_name}, or give {prefix}on-object",
            field=poll_name.lstrip("-"),
        )
    return ScheduleSpec(
        kind=kind,
        cron=cron,
        every_seconds=parse_duration(every, f"{prefix}every") if every is not None else None,
        at=parse_instant(at, f"{prefix}at") if at is not None else None,
        timezone=timezone,
        start=parse_instant(start, f"{prefix}start") if start is not None else None,
        end=parse_instant(end, f"{prefix}end") if end is not None else None,
        catchup=catchup,
        event=event,
        after=after,
        # Duplicates dropped, in the order given.
        after_states=("success",) if after_states is None else tuple(dict.fromkeys(after_states)),
        **run_fields(run_retries, retry_strategy, retry_delay, execution_timeout, prefix),
        object_url=on_object,
        poll_seconds=parse_duration(poll, poll_name) if poll is not None else None,
    )


def run_fields(
    run_retries: int | None,
    retry_strategy: str | None,
    retry_delay: str | float | None,
    execution_timeout: str | float | None,
    prefix: str = "--",
) -> dict[str, Any]:
    """A schedule's fields for the runs it fires (``run_retries``, ``retry_strategy``,
    ``retry_delay``, ``execution_timeout``; durations as ``spec_of`` reads them), checked:
    ``UsageError`` naming the field (``--run-retries``, ``schedules[0].run_retries``)
    and the fix. A strategy or delay alone means a retry policy with ``run_retries`` 0."""
    from stageflow.engine.run_retry import RunRetryPolicy, policy_problems
    from stageflow.errors import UsageError
    from stageflow.spec.times import parse_duration

    def name(field: str) -> str:
        return f"--{field.replace('_', '-')}" if prefix == "--" else f"{prefix}{field}"

    def duration(value: str | float | None, field: str) -> float | None:
        try:
            return None if value is None else parse_duration(value, name(field))
        except UsageError as exc:  # the field as the other run fields name it
            raise UsageError(str(exc), field=name(field).lstrip("-").replace("-", "_")) from None

    delay = duration(retry_delay, "retry_delay")
    timeout = duration(execution_timeout, "execution_timeout")
    if timeout is not None and not (0 < timeout <= 366 * 86400.0):
        raise UsageError(
            f"{name('execution_timeout')} {execution_timeout!r} must be more than 0 and at most "
            "a year (2h, 30m, 90s); leave it out for no timeout",
            field=name("execution_timeout").lstrip("-").replace("-", "_"),
        )
    if run_retries is None and retry_strategy is None and delay is None:
        return {"execution_timeout": timeout}
    policy = RunRetryPolicy(
        strategy=cast("Any", retry_strategy or "fixed"),
        max_retries=0 if run_retries is None else run_retries,
        retry_delay=0.0 if delay is None else delay,
    )
    renamed = {"max_retries": "run_retries", "strategy": "retry_strategy"}
    for field, message in policy_problems(policy):
        option = name(renamed.get(field, field))
        message = message.replace(field, option, 1)
        raise UsageError(message, field=option.lstrip("-").replace("-", "_"))
    return {
        "run_retries": policy.max_retries,
        "retry_strategy": policy.strategy,
        "retry_delay": policy.retry_delay,
        "execution_timeout": timeout,
    }


def retry_policy_of(spec: ScheduleSpec) -> RunRetryPolicy | None:
    """The run-level retry policy ``spec`` gives its runs; ``None`` when it sets none
    (its pipeline's ``run_retries`` applies)."""
    from stageflow.engine.run_retry import RunRetryPolicy

    if spec.run_retries is None:
        return None
    return RunRetryPolicy(
        strategy=cast("Any", spec.retry_strategy or "fixed"),
        max_retries=spec.run_retries,
        retry_delay=spec.retry_delay or 0.0,
    )


def written_problems(spec: ScheduleSpec, now: float, prefix: str = "--") -> list[tuple[str, str]]:
    """``problems`` in the words of ``spec_of``'s caller: (the field as written, e.g.
    ``every``, not ``every_seconds``; the message led by the option, ``--every ...``)."""
    written = []
    for f, m in problems(spec, now):
        option, message = _as_written(f, m, prefix)
        lead = message if message.startswith(option) else f"{option}: {message}"
        written.append((option.removeprefix(prefix), lead))
    return written


def entry_spec(entry: ScheduleEntry, prefix: str = "") -> ScheduleSpec:
    """``spec_of`` a spec's ``schedules:`` entry (its fields named behind ``prefix``)."""
    return spec_of(
        run_retries=entry.run_retries,
        retry_strategy=entry.retry_strategy,
        retry_delay=entry.retry_delay,
        execution_timeout=entry.execution_timeout,
        on_object=entry.object,
        poll=entry.poll,
        cron=entry.cron,
        every=entry.every,
        at=entry.at,
        timezone=entry.timezone,
        start=entry.start,
        end=entry.end,
        catchup=entry.catchup,
        event=entry.event,
        after=entry.after,
        after_states=entry.after_states,
        prefix=prefix,
    )


def entry_problems(entry: ScheduleEntry, where: str) -> list[tuple[str, str]]:
    """(field, message) for each problem of a spec's ``schedules:`` entry (``where``:
    its place, e.g. ``schedules[0]``), ``problems`` without the check that a ``once``
    is still ahead (a spec stays valid after its time has passed)."""
    from stageflow.errors import UsageError

    try:
        spec = entry_spec(entry, prefix=f"{where}.")
    except UsageError as exc:
        return [(str(exc.field or where), str(exc))]
    return [_as_written(f, m, f"{where}.") for f, m in _spec_problems(spec)]


def _as_written(field: str, message: str, prefix: str) -> tuple[str, str]:
    """A problem of a ``ScheduleSpec`` in the words its writer used (``spec_of``'s
    fields, behind ``prefix``): ``every_seconds`` was written ``every``."""
    if field == "every_seconds":
        return f"{prefix}every", message.replace("every_seconds", f"{prefix}every").replace(
            "e.g. 3600", "e.g. 3600 or 1h"
        )
    if field == "event" and prefix == "--":  # the CLI's option (the API's on_event)
        return "--on-event", message
    if field == "after_states" and prefix == "--":  # the CLI's option, once per state
        return "--after-state", message.replace("after_states", "--after-state")
    if field == "object_url":  # --on-object (the API's on_object, a spec's object)
        written = "--on-object" if prefix == "--" else f"{prefix}object"
        return written, f"{written}: {message}"
    if field == "poll_seconds":
        return f"{prefix}poll", message.replace("poll_seconds", f"{prefix}poll")
    return f"{prefix}{field}", message


# --- checking ---------------------------------------------------------------------


def problems(spec: ScheduleSpec, now: float) -> list[tuple[str, str]]:
    """What is wrong with ``spec`` at ``now``: ``(field, message)`` per problem, each
    message saying how to fix it. An empty list: the schedule is valid."""
    found = _spec_problems(spec)
    at = spec.at
    if spec.kind == "once" and _is_number(at) and math.isfinite(at) and at < now:
        found.append(
            (
                "at",
                f"at ({_utc(at)}) is in the past (now is {_utc(now)}): a once schedule "
                "fires at a time to come; set a later at",
            )
        )
    return found


def _spec_problems(spec: ScheduleSpec) -> list[tuple[str, str]]:
    """The problems that do not depend on the time: the ones that make a spec unusable."""
    found: list[tuple[str, str]] = []
    kind: str = spec.kind
    if kind not in _KINDS:
        found.append(
            (
                "kind",
                f'unknown schedule kind "{kind}": use "cron", "interval", "once", "event" '
                'or "after"',
            )
        )
    for owner, field in _OWN_FIELD.items():
        value = getattr(spec, field)
        if kind == owner:
            if value is None:
                found.append((field, f'kind "{kind}" needs {field}, e.g. {_EXAMPLE[field]}'))
            else:
                message = _field_problem(field, value)
                if message is not None:
                    found.append((field, message))
        elif kind in _KINDS and value is not None:
            found.append(
                (
                    field,
                    f'{field} is for kind "{owner}" and this schedule is kind "{kind}": '
                    f'remove {field}, or set kind="{owner}"',
                )
            )
    if zone_or_none(spec.timezone) is None:
        found.append(
            (
                "timezone",
                f"unknown time zone {spec.timezone!r}: use an IANA time zone name such as "
                '"Europe/Paris", "America/New_York" or "UTC"',
            )
        )
    bounds_ok = True
    for field in ("start", "end"):
        value = getattr(spec, field)
        if value is not None and not (_is_number(value) and math.isfinite(value)):
            found.append((field, f"{field} must be a finite time in epoch seconds, got {value!r}"))
            bounds_ok = False
    if bounds_ok and spec.start is not None and spec.end is not None and spec.end <= spec.start:
        found.append(
            (
                "end",
                f"end ({_utc(spec.end)}) must be after start ({_utc(spec.start)}): "
                "the schedule would never fire; move end later, or drop it",
            )
        )
    if kind in ("event", "after"):
        found.extend(_untimed_problems(spec))
    found.extend(_object_problems(spec))
    found.extend(_after_states_problems(spec))
    at = spec.at
    if bounds_ok and kind == "once" and _is_number(at) and math.isfinite(at):
        if spec.start is not None and at < spec.start:
            found.append(
                (
                    "at",
                    f"at ({_utc(at)}) is before start ({_utc(spec.start)}): the schedule "
                    "would never fire; drop start, or set at within start and end",
                )
            )
        if spec.end is not None and at > spec.end:
            found.append(
                (
                    "at",
                    f"at ({_utc(at)}) is after end ({_utc(spec.end)}): the schedule "
                    "would never fire; drop end, or set at within start and end",
                )
            )
    return found


def _object_problems(spec: ScheduleSpec) -> list[tuple[str, str]]:
    """``poll_seconds`` out of bounds or on another kind; ``start``/``end`` on an object
    schedule (it fires when an object appears, not at times)."""
    found: list[tuple[str, str]] = []
    poll = spec.poll_seconds
    if poll is not None:
        if spec.kind != "object":
            found.append(("poll_seconds", 'poll_seconds is for kind "object"; remove it'))
        elif not (_is_number(poll) and POLL_BOUNDS[0] <= poll <= POLL_BOUNDS[1]):
            found.append(
                (
                    "poll_seconds",
                    f"poll is {poll!r} seconds; give 1s to 1d (how often the URL is listed)",
                )
            )
    if spec.kind == "object":
        for name in ("start", "end"):
            if getattr(spec, name) is not None:
                found.append(
                    (
                        name,
                        f"{name} does not apply to an object schedule: it fires when an "
                        f"object appears, not at times; remove {name}",
                    )
                )
    return found


def _untimed_problems(spec: ScheduleSpec) -> list[tuple[str, str]]:
    """``start``, ``end`` and ``catchup`` on an event or after schedule: it has no times
    to bound or to catch up on."""
    if spec.kind == "event":
        event = spec.event
        name = event if isinstance(event, str) and EVENT_NAME.fullmatch(event) else "EVENT"
        fires = f"an event schedule fires on each POST /api/v1/events/{name}, not at times"
    else:
        upstream = spec.after if isinstance(spec.after, str) and spec.after else "PIPELINE"
        fires = f"an after schedule fires when a run of {upstream} ends, not at times"
    found: list[tuple[str, str]] = []
    for field in ("start", "end"):
        if getattr(spec, field) is not None:
            found.append((field, f"{field} does not apply: {fires}; remove {field}"))
    if spec.catchup:
        found.append(
            ("catchup", f"catchup does not apply: {fires} (none is missed); remove catchup")
        )
    return found


def _after_states_problems(spec: ScheduleSpec) -> list[tuple[str, str]]:
    """``after_states``: on an after schedule, one or more of ``AFTER_STATES``; on any
    other, left as it is (``success``)."""
    states = spec.after_states
    allowed = ", ".join(AFTER_STATES)
    if spec.kind != "after":
        if tuple(states) != ("success",):
            return [
                (
                    "after_states",
                    f'after_states is for kind "after" and this schedule is kind '
                    f'"{spec.kind}": remove after_states',
                )
            ]
        return []
    if isinstance(states, str) or not states:
        return [
            (
                "after_states",
                f"after_states must list one or more end states of the upstream run "
                f"({allowed}), got {states!r}",
            )
        ]
    return [
        (
            "after_states",
            f"after_states: {state!r} is not an end state of a run: use {allowed}",
        )
        for state in states
        if state not in AFTER_STATES
    ]


def _field_problem(field: str, value: object) -> str | None:
    if field == "cron":
        return _cron_problem(value)
    if field == "after":
        if isinstance(value, str) and AFTER_NAME.fullmatch(value):
            return None
        return (
            f"after {value!r} must be a pipeline's name (1-128 letters, digits, spaces, "
            f"'_', '.' or '-'); e.g. {_EXAMPLE['after']}"
        )
    if field == "event":
        if isinstance(value, str) and EVENT_NAME.fullmatch(value):
            return None
        return (
            f"event name {value!r} must be 1-100 letters, digits, '_', '.' or '-', starting "
            f"with a letter or digit; e.g. {_EXAMPLE['event']}"
        )
    if field == "object_url":
        if isinstance(value, str) and OBJECT_URL.fullmatch(value) and len(value) <= 1000:
            return None
        return (
            f"object URL {value!r} must be an fsspec URL with a protocol and a path or glob "
            f"(at most 1000 characters), e.g. {_EXAMPLE['object_url']}"
        )
    if field == "every_seconds":
        if _is_number(value) and math.isfinite(value) and value > 0:
            return None
        return f"every_seconds must be a finite number of seconds > 0, got {value!r}; e.g. 3600"
    if _is_number(value) and math.isfinite(value):  # at
        return None
    return f"at must be a finite time in epoch seconds, got {value!r}; e.g. {_EXAMPLE['at']}"


def _cron_problem(expr: object) -> str | None:
    """Why croniter rejects ``expr`` (``None``: it takes it), naming the bad cron field."""
    if not isinstance(expr, str):
        return f"cron must be a string such as {_CRON_EXAMPLE}, got {expr!r}"
    text = expr.strip()
    fields = text.split()
    if not text.startswith("@") and len(fields) != len(_CRON_FIELDS):
        return (
            f'cron expression "{expr}" has {len(fields)} fields; it needs 5, "minute hour '
            f'day-of-month month day-of-week", e.g. {_CRON_EXAMPLE}'
        )
    if not croniter.is_valid(text):
        if not text.startswith("@"):
            for index, (name, allowed) in enumerate(_CRON_FIELDS):
                probe = ["*"] * len(_CRON_FIELDS)
                probe[index] = fields[index]
                if not croniter.is_valid(" ".join(probe)):
                    return (
                        f'cron expression "{expr}": its {name} field "{fields[index]}" is not '
                        f'valid: it takes {allowed}, "*", lists (1,15), ranges (1-5) and '
                        f"steps (*/10); e.g. {_CRON_EXAMPLE}"
                    )
        return f'cron expression "{expr}" is not valid; e.g. {_CRON_EXAMPLE}'
    try:
        croniter(text, _EPOCH).get_next(datetime)
    except CroniterBadDateError:
        return (
            f'cron expression "{expr}" never matches a date (like the 30th of February); '
            f"e.g. {_CRON_EXAMPLE}"
        )
    return None


# --- fire times -------------------------------------------------------------------


def next_after(spec: ScheduleSpec, t: float) -> float | None:
    """The first fire time strictly after ``t``; ``None`` when none is left (a ``once``
    already past, or past ``end``; an ``event`` or ``after`` schedule, always). Raises
    ``ValueError``
    for an invalid spec."""
    return _first_after(_plan(spec), t)


def upcoming(spec: ScheduleSpec, after: float, n: int) -> list[float]:
    """The next ``n`` fire times strictly after ``after``, oldest first (fewer when the
    schedule ends before)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(islice(_fires(_plan(spec), after), n))


def due(
    spec: ScheduleSpec, last: float | None, now: float, *, limit: int = DEFAULT_CATCHUP_LIMIT
) -> list[Tick]:
    """The ticks to fire at ``now``, oldest first, given that the last fire time
    handled was ``last``.

    ``last=None``: the schedule never fired; it fires from ``start`` (inclusive), or,
    without ``start``, from ``now``: a new schedule does not fire for the past.
    ``catchup``: every fire time in ``(last, now]``, at most ``limit`` (call again with
    the last tick's ``at`` for the rest). Without it: the latest fire time in
    ``(last, now]`` alone, or nothing."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    plan = _plan(spec)
    if last is not None:
        after = last
    elif spec.start is not None:
        after = math.nextafter(spec.start, -math.inf)
    else:
        after = math.nextafter(now, -math.inf)
    if spec.catchup:
        times: list[float] = []
        for at in _fires(plan, after):
            if at > now:
                break
            times.append(at)
            if len(times) == limit:
                break
    else:
        latest = _latest(plan, now)
        times = [latest] if latest is not None and latest > after else []
    ticks: list[Tick] = []
    for at in times:
        begin = ticks[-1].at if ticks else _interval_start(plan, at)
        ticks.append(Tick(at=at, interval_start=begin, interval_end=at))
    return ticks


# --- arithmetic -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """A checked spec, with its zone and parsed cron expression."""

    spec: ScheduleSpec
    zone: tzinfo
    cron: Any  # croniter: copied for each walk (its position is its only state)
    every_hour: bool  # the cron hour field takes every hour: follow real time


@lru_cache(maxsize=512)
def _plan(spec: ScheduleSpec) -> _Plan:
    found = _spec_problems(spec)
    if found:
        listed = "; ".join(f"{field}: {message}" for field, message in found)
        raise ValueError(f"invalid schedule: {listed}")
    zone = zone_or_none(spec.timezone)
    assert zone is not None
    if spec.kind != "cron":
        return _Plan(spec, zone, None, False)
    assert spec.cron is not None
    parsed = croniter(spec.cron.strip(), _EPOCH)
    hours = parsed.expanded[1]
    return _Plan(spec, zone, parsed, hours == ["*"] or len(hours) == 24)


def _fires(plan: _Plan, after: float) -> Iterator[float]:
    """The fire times strictly after ``after``, within ``start`` and ``end``, ascending."""
    spec = plan.spec
    if spec.start is not None:
        after = max(after, math.nextafter(spec.start, -math.inf))
    if spec.kind in ("event", "after", "object"):  # fired by an event, a run's end or an
        return  # object, never by time
    if spec.kind == "once":
        assert spec.at is not None
        raw: Iterator[float] = iter([spec.at] if spec.at > after else [])
    elif spec.kind == "interval":
        raw = _interval_after(plan, after)
    else:
        raw = _cron_after(plan, after)
    for at in raw:
        if spec.end is not None and at > spec.end:
            return
        yield at


def _latest(plan: _Plan, now: float) -> float | None:
    """The last fire time at or before ``now``, within ``start`` and ``end``."""
    spec = plan.spec
    upto = now if spec.end is None else min(now, spec.end)
    at = _raw_before(plan, math.nextafter(upto, math.inf))
    if at is None or (spec.start is not None and at < spec.start):
        return None
    return at


def _interval_start(plan: _Plan, at: float) -> float:
    """The fire time before ``at``, bounds aside: where ``at``'s data interval starts."""
    spec = plan.spec
    if spec.kind == "interval":
        anchor, every = _interval_terms(spec)
        k = round((at - anchor) / every)
        return anchor + (k - 1) * every
    if spec.kind == "cron":
        before = _raw_before(plan, at)
        return at if before is None else before
    return at


# Many schedules share a timing, and one pass asks each the same questions (the latest
# fire time before now, the one after a tick): remembered, pure answers (bounded).
@lru_cache(maxsize=4096)
def _first_after(plan: _Plan, t: float) -> float | None:
    return next(_fires(plan, t), None)


@lru_cache(maxsize=4096)
def _raw_before(plan: _Plan, t: float) -> float | None:
    """The last fire time strictly before ``t``, ``end`` aside (``start`` too, but
    for an interval's anchor)."""
    spec = plan.spec
    if spec.kind in ("event", "after", "object"):
        return None
    if spec.kind == "once":
        assert spec.at is not None
        return spec.at if spec.at < t else None
    if spec.kind == "interval":
        anchor, every = _interval_terms(spec)
        try:
            k = math.ceil((t - anchor) / every) - 1
        except _OUT_OF_RANGE:
            return None
        while anchor + k * every >= t:
            k -= 1
        while anchor + (k + 1) * every < t:
            k += 1
        return anchor + k * every if k >= 0 else None
    return next(_cron_before(plan, t), None)


def _interval_terms(spec: ScheduleSpec) -> tuple[float, float]:
    assert spec.every_seconds is not None
    return (0.0 if spec.start is None else spec.start), spec.every_seconds


def _interval_after(plan: _Plan, after: float) -> Iterator[float]:
    anchor, every = _interval_terms(plan.spec)
    try:
        k = max(0, math.floor((after - anchor) / every) + 1)
    except _OUT_OF_RANGE:
        return
    # The division rounds: step to the exact first k whose time is after ``after``.
    while k > 0 and anchor + (k - 1) * every > after:
        k -= 1
    while anchor + k * every <= after:
        k += 1
    last = after
    while True:
        at = anchor + k * every
        if at > last:  # a period below the float spacing of the times repeats them
            yield at
            last = at
        k += 1


def _cron_after(plan: _Plan, after: float) -> Iterator[float]:
    """Cron fire times strictly after ``after``, ascending, bounds aside.

    Walks the matching wall times forward and places each on the timeline
    (``_instants``). The earliest instant of a wall time never decreases as the wall
    time grows, but a repeated hour's second occurrence comes after later wall
    times' first ones: a heap holds instants until no later wall time can come
    before them."""
    try:
        wall, spread = _wall(plan.zone, math.floor(after))
        walker = copy.copy(plan.cron)
        # From a repeated hour's first occurrence, its second one lies after ``after``.
        walker.set_current(wall - spread - _MINUTE, force=True)
    except _OUT_OF_RANGE:
        return
    pending: list[float] = []
    last = after
    while True:
        try:
            match: datetime = walker.get_next(datetime)
            instants = _instants(plan, match)
        except _OUT_OF_RANGE:  # croniter's no-match error is a ValueError too
            break
        if not instants:
            continue
        floor = instants[0]
        while pending and pending[0] <= floor:
            at = heapq.heappop(pending)
            if at > last:
                yield at
                last = at
        for at in instants:
            if at > last:
                heapq.heappush(pending, at)
    while pending:
        at = heapq.heappop(pending)
        if at > last:
            yield at
            last = at


def _cron_before(plan: _Plan, before: float) -> Iterator[float]:
    """Cron fire times strictly before ``before``, latest first: ``_cron_after`` in
    reverse (the latest instant of a wall time never decreases as it grows)."""
    try:
        wall, spread = _wall(plan.zone, math.ceil(before))
        walker = copy.copy(plan.cron)
        walker.set_current(wall + spread + _MINUTE, force=True)
    except _OUT_OF_RANGE:
        return
    pending: list[float] = []  # negated: a max-heap
    last = before
    while True:
        try:
            match: datetime = walker.get_prev(datetime)
            instants = _instants(plan, match)
        except _OUT_OF_RANGE:
            break
        if not instants:
            continue
        ceiling = instants[-1]
        while pending and -pending[0] >= ceiling:
            at = -heapq.heappop(pending)
            if at < last:
                yield at
                last = at
        for at in instants:
            if at < last:
                heapq.heappush(pending, -at)
    while pending:
        at = -heapq.heappop(pending)
        if at < last:
            yield at
            last = at


def _instants(plan: _Plan, wall: datetime) -> tuple[float, ...]:
    """Where the wall time ``wall`` (naive, in the plan's zone) fires, ascending.

    One instant, but around a clock change (module docstring): a repeated wall time
    fires at its first occurrence (both when the hour field takes every hour); a
    missing one at the end of the gap (none when the hour field takes every hour)."""
    first = _offset_of_wall(plan.zone, wall, 0)
    second = _offset_of_wall(plan.zone, wall, 1)
    if first == second:
        return (_epoch(wall - first),)
    if first > second:  # repeated: fold 0 is the earlier occurrence
        early = _epoch(wall - first)
        return (early, _epoch(wall - second)) if plan.every_hour else (early,)
    if plan.every_hour:  # missing
        return ()
    return (_gap_end(plan.zone, _epoch(wall - second), _epoch(wall - first)),)


def _gap_end(zone: tzinfo, low: float, high: float) -> float:
    """The instant the clocks jump forward, found between ``low`` (still before it)
    and ``high`` (after it): zone transitions fall on whole seconds."""
    before = _offset_at(zone, low)
    lo, hi = math.floor(low), math.ceil(high)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(zone, mid) == before:
            lo = mid
        else:
            hi = mid
    return float(hi)


def _wall(zone: tzinfo, t: int) -> tuple[datetime, timedelta]:
    """The wall time at ``t`` (naive) and, when that wall time happens twice, how far
    apart its occurrences are (else zero). Whole seconds: ``fromtimestamp`` rounds to
    the microsecond, which could carry a time just before a clock change past it; the
    walks start a minute early (or late) and zone changes fall on whole seconds."""
    wall = datetime.fromtimestamp(t, zone).replace(tzinfo=None, fold=0)
    spread = abs(_offset_of_wall(zone, wall, 0) - _offset_of_wall(zone, wall, 1))
    return wall, spread


def _offset_of_wall(zone: tzinfo, wall: datetime, fold: int) -> timedelta:
    offset = wall.replace(tzinfo=zone, fold=fold).utcoffset()
    assert offset is not None
    return offset


def _offset_at(zone: tzinfo, t: float) -> timedelta:
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    assert offset is not None
    return offset


def _epoch(utc_wall: datetime) -> float:
    return (utc_wall - _EPOCH).total_seconds()


# --- helpers ----------------------------------------------------------------------


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _utc(t: float) -> str:
    """``t`` as a UTC date and time, for messages."""
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except _OUT_OF_RANGE:
        return repr(t)
