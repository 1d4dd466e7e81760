"""The ``sensor`` operator: wait for a time, a file, an HTTP answer or another pipeline's task.

A sensor waits in the task state ``sensing`` without a worker slot, resources or
a pool slot: the run checks its condition (a "poke", ``poke``) at once and then
every ``poke_interval`` seconds, off the workers, until it holds (the task
succeeds, its output is what was found) or ``timeout`` seconds have passed (the
task fails; with ``soft_fail: true`` it is skipped, and its downstream follow
their trigger rules). A thousand waiting sensors leave the workers to the other
tasks. After a crash, ``stageflow resume`` makes a sensor that had not succeeded
wait again, from the start of its timeout. The kinds (``kind:``):

========  ===========================================  ==============================
kind      waits until                                  output
========  ===========================================  ==============================
time      ``not_before`` (an ISO-8601 time, or a time  ``{"at": now (ISO 8601)}``
          of day ``HH:MM``) has come, and/or the time
          of day is ``within`` a window
          (``HH:MM-HH:MM``, may wrap past midnight),
          in ``timezone``
file      a file matches ``path``: a local path        the matching files, sorted
          (relative to the pipeline's folder) or an    (a list of paths or URLs)
          fsspec URL (``s3://bucket/in/*.csv``), glob
          allowed
http      ``url`` (GET) answers ``status``, its body   ``{"url", "status", "body"}``
          holds ``contains`` and, as JSON, has the     (``body``: the JSON, else the
          ``json`` fields (dotted keys) at the values  text)
          given
task      task ``task`` of pipeline ``pipeline``'s     ``{"pipeline", "task",
          latest run succeeded                         "run_id", "state"}``
========  ===========================================  ==============================

A file sensor on a URL lists it through ``operators/object_storage.py`` (``s3://``'s
endpoint and credentials from the environment), afresh at each poke: a listing
cached at an earlier poke never hides a new object. A check that cannot be made
(an unreachable URL, a bucket that does not answer, refused credentials) counts
as "not yet" and is said in the task's message when the sensor times out. An
HTTP check waits at most ``request_timeout`` seconds. Run on its own
(``Operator.run``, outside a run's loop) a sensor pokes in its attempt, holding
its slot.

Example (wait for the day's file, then for the upstream pipeline's export)::

    - id: wait_for_file
      operator: sensor
      parameters:
        kind: file
        path: incoming/${params.day}/*.csv
        poke_interval: 30s
        timeout: 6h
    - id: wait_for_export
      operator: sensor
      parameters:
        kind: task
        pipeline: nightly_export
        task: publish
        poke_interval: 5m
        timeout: 2h
        soft_fail: true
    - id: business_hours
      operator: sensor
      parameters: {kind: time, within: "09:00-17:00", timezone: Europe/Paris}
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as time_of_day
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from stageflow.engine.sensors import SensorPolicy, span
from stageflow.errors import MissingExtra, ObjectStorageError, Problem, UsageError
from stageflow.operators import object_storage
from stageflow.operators.addresses import urlopen
from stageflow.operators.base import Operator, TaskContext, TaskFailed
from stageflow.operators.paths import is_local_path, resolve_path
from stageflow.spec.times import parse_duration, parse_instant

if TYPE_CHECKING:
    from stageflow.spec.models import Pipeline, Task

__all__ = ["Poke", "SensorOperator", "SensorParams", "TaskLookup", "poke", "sensor_policy"]

#: ``(pipeline, task) -> (run_id, the task's state)`` of the pipeline's latest run,
#: ``None`` when it has no run (the runtime reads its store).
TaskLookup = Callable[[str, str], "tuple[str, str | None] | None"]

_KIND_FIELDS: Mapping[str, tuple[str, ...]] = {
    "time": ("not_before", "within", "timezone"),
    "file": ("path",),
    "http": ("url", "status", "contains", "json_fields", "headers", "request_timeout"),
    "task": ("pipeline", "task"),
}
_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "file": ("path",),
    "http": ("url",),
    "task": ("pipeline", "task"),
}
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")
_BODY_LIMIT = 1 << 20  # bytes of an HTTP answer read


class SensorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["time", "file", "http", "task"] = Field(
        description="what to wait for: time, file, http or task"
    )
    poke_interval: float | str = Field(
        default=60.0, description="time between checks: seconds, or 30s, 5m, 1h"
    )
    timeout: float | str = Field(
        default="7d", description="how long to wait in all before failing: seconds, or 6h, 1d"
    )
    soft_fail: bool = Field(
        default=False, description="on timeout, skip the task instead of failing it"
    )
    not_before: str | None = Field(
        default=None,
        description="time: an ISO-8601 time (2026-03-01T06:00Z), or a time of day HH:MM",
    )
    within: str | None = Field(
        default=None, description="time: a daily window HH:MM-HH:MM (may wrap past midnight)"
    )
    timezone: str = Field(default="UTC", description="time: where times of day are read")
    path: str | None = Field(
        default=None,
        description="file: a path (relative to the pipeline's folder) or fsspec URL; glob allowed",
    )
    url: str | None = Field(default=None, description="http: the http:// or https:// URL to GET")
    status: int = Field(default=200, ge=100, le=599, description="http: the status expected")
    contains: str | None = Field(default=None, description="http: text the body must hold")
    json_fields: dict[str, Any] | None = Field(
        default=None,
        validation_alias=AliasChoices("json", "json_fields"),
        description="http (written json:): fields the JSON body must have, by dotted key, "
        "at these values: {state: ready}",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="http: request headers")
    request_timeout: float = Field(
        default=10.0, gt=0, le=300, description="http: seconds one check may take"
    )
    pipeline: str | None = Field(default=None, description="task: the other pipeline's name")
    task: str | None = Field(default=None, description="task: the task of its latest run")


@dataclass(frozen=True, slots=True)
class Poke:
    """One check's result: whether the condition holds, what was found (the task's
    output when it holds) and a message saying what was seen."""

    met: bool
    value: Any = None
    message: str = ""


class SensorOperator(Operator):
    """Wait for a time window, a file or object, an HTTP answer or another pipeline's task."""

    name = "sensor"
    Params = SensorParams

    def run(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        """Poke until met, in this attempt (the run's loop pokes without a slot instead)."""
        assert isinstance(params, SensorParams)
        policy = sensor_policy(params)
        if params.kind == "task":
            raise TaskFailed(
                "a task sensor reads the store: it runs in a run's loop (stageflow run), "
                "not on its own",
                retryable=False,
            )
        end = time.time() + policy.timeout
        while True:
            found = poke(params, pipeline_dir=str(ctx.pipeline_dir), now=time.time())
            if found.met:
                return found.value
            left = end - time.time()
            if left <= 0:
                break
            if ctx.cancelled.wait(min(policy.poke_interval, left)):
                raise TaskFailed("cancelled while waiting")
        message = f"sensor timed out after {span(policy.timeout)} (timeout)"
        raise TaskFailed(f"{message}; last check: {found.message}")

    @classmethod
    def spec_problems(
        cls,
        params: Any,
        task: Task,
        pipeline: Pipeline | None,
        run_params: Mapping[str, Any],
    ) -> list[Problem]:
        assert isinstance(params, SensorParams)
        return [
            Problem(message, task=task.id, field=field)
            for field, message in _problems(params, task)
        ]


OPERATOR = SensorOperator


def sensor_policy(params: SensorParams) -> SensorPolicy:
    """How the engine waits for this sensor (``engine.sensors``); ``UsageError`` for
    a duration that does not parse (validation reports it first)."""
    return SensorPolicy(
        poke_interval=parse_duration(params.poke_interval, "poke_interval"),
        timeout=parse_duration(params.timeout, "timeout"),
        soft_fail=params.soft_fail,
        waits_for=waits_for(params),
    )


def waits_for(params: SensorParams) -> str:
    """What the sensor waits for, in words (``file in/*.csv``)."""
    if params.kind == "file":
        return f"file {params.path}"
    if params.kind == "http":
        return f"http {params.url} to answer {params.status}"
    if params.kind == "task":
        return f"task '{params.task}' of pipeline '{params.pipeline}' to succeed"
    parts = []
    if params.not_before:
        parts.append(f"not before {params.not_before}")
    if params.within:
        parts.append(f"within {params.within}")
    return "time " + " and ".join(parts) + f" ({params.timezone})"


def poke(
    params: SensorParams,
    *,
    pipeline_dir: str,
    now: float,
    lookup: TaskLookup | None = None,
) -> Poke:
    """Check the sensor's condition once. A check that cannot be made (a refused
    connection, a listing that fails) is ``Poke(met=False)`` saying why."""
    try:
        if params.kind == "time":
            return _poke_time(params, now)
        if params.kind == "file":
            return _poke_file(params, pipeline_dir)
        if params.kind == "http":
            return _poke_http(params)
        if lookup is None:
            return Poke(False, message="no store to read the other pipeline's runs from")
        return _poke_task(params, lookup)
    except Exception as exc:  # the check failed this time: "not yet", said why
        return Poke(False, message=f"the check failed: {type(exc).__name__}: {exc}")


# -- the kinds -------------------------------------------------------------------------


def _poke_time(params: SensorParams, now: float) -> Poke:
    from stageflow.engine.zones import zone_or_none

    local = datetime.fromtimestamp(now, zone_or_none(params.timezone))
    if params.not_before:
        clock = _clock(params.not_before)
        if clock is not None:
            start = local.replace(
                hour=clock.hour, minute=clock.minute, second=clock.second, microsecond=0
            )
            if local < start:
                return Poke(False, message=f"it is {local:%H:%M:%S}, before {params.not_before}")
        elif now < parse_instant(params.not_before, "not_before"):
            return Poke(False, message=f"it is {_iso(now)}, before {params.not_before}")
    if params.within:
        begin, end = _window(params.within)
        t = local.time().replace(tzinfo=None)
        inside = begin <= t < end if begin <= end else (t >= begin or t < end)
        if not inside:
            return Poke(False, message=f"it is {local:%H:%M:%S}, outside {params.within}")
    return Poke(True, {"at": _iso(now)}, f"time reached at {_iso(now)}")


def _poke_file(params: SensorParams, pipeline_dir: str) -> Poke:
    given = params.path or ""
    if is_local_path(given):
        from fsspec.implementations.local import LocalFileSystem

        found: dict[str, Any] = LocalFileSystem().glob(
            resolve_path(given, pipeline_dir), detail=True
        )
        names = sorted(name for name, info in found.items() if info.get("type") != "directory")
    else:  # listed afresh at each poke (operators/object_storage.py)
        names = [url for url, _ in object_storage.glob(given)]
    if not names:
        return Poke(False, message=f"no file matches {given}")
    shown = names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")
    return Poke(True, names, f"found {shown}")


def _poke_http(params: SensorParams) -> Poke:
    url = params.url or ""
    if not url.startswith(("http://", "https://")):  # a ${params.*} may have made it
        return Poke(False, message=f"url {url!r} is not an http:// or https:// URL")
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url, headers=params.headers, method="GET"
    )
    try:
        with urlopen(request, timeout=params.request_timeout) as answer:
            status, raw = answer.status, answer.read(_BODY_LIMIT)
    except urllib.error.HTTPError as exc:  # an answer, with a status that is not 2xx
        status, raw = exc.code, exc.read(_BODY_LIMIT) if exc.fp is not None else b""
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Poke(False, message=f"{url} did not answer: {reason}")
    if status != params.status:
        return Poke(False, message=f"{url} answered {status}, not {params.status}")
    text = raw.decode("utf-8", errors="replace")
    if params.contains is not None and params.contains not in text:
        return Poke(False, message=f"{url} answered {status} without {params.contains!r}")
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    if params.json_fields:
        if body is None:
            return Poke(False, message=f"{url} answered {status} with a body that is not JSON")
        for key, expected in params.json_fields.items():
            value = _dotted(body, key)
            if value is _MISSING:
                return Poke(False, message=f"{url}: the JSON has no field {key!r}")
            if value != expected:
                return Poke(False, message=f"{url}: {key} is {value!r}, not {expected!r}")
    result = {"url": url, "status": status, "body": text if body is None else body}
    return Poke(True, result, f"{url} answered {status}")


def _poke_task(params: SensorParams, lookup: TaskLookup) -> Poke:
    pipeline, task = params.pipeline or "", params.task or ""
    latest = lookup(pipeline, task)
    if latest is None:
        return Poke(False, message=f"pipeline '{pipeline}' has no run yet")
    run_id, state = latest
    if state is None:
        return Poke(False, message=f"run {run_id} of pipeline '{pipeline}' has no task '{task}'")
    if state != "success":
        return Poke(False, message=f"task '{task}' of run {run_id} ({pipeline}) is {state}")
    value = {"pipeline": pipeline, "task": task, "run_id": run_id, "state": state}
    return Poke(True, value, f"task '{task}' of run {run_id} ({pipeline}) succeeded")


# -- validation --------------------------------------------------------------------------


def _problems(params: SensorParams, task: Task) -> list[tuple[str, str]]:
    """(field, message) for each mistake in a sensor task: durations, the fields its
    kind needs and those of another kind, times that do not parse, a URL without
    an http(s) scheme, a sensor that is mapped or gated (it waits on its own)."""
    out: list[tuple[str, str]] = []
    kind = params.kind
    given = params.model_fields_set
    seconds: dict[str, float] = {}
    for name in ("poke_interval", "timeout"):
        try:
            seconds[name] = parse_duration(getattr(params, name), name)
        except UsageError:
            out.append(
                (
                    f"parameters.{name}",
                    f"sensor {name} {getattr(params, name)!r} is not a duration; give seconds "
                    "or a number with a unit: 30s, 5m, 2h, 1d",
                )
            )
            continue
        if seconds[name] <= 0:
            out.append((f"parameters.{name}", f"sensor {name} must be more than 0 seconds"))
    if seconds.get("poke_interval", 0) > seconds.get("timeout", float("inf")):
        out.append(
            (
                "parameters.poke_interval",
                f"sensor poke_interval ({seconds['poke_interval']:g}s) is longer than its "
                f"timeout ({seconds['timeout']:g}s); lower poke_interval or raise timeout",
            )
        )
    for other, fields in _KIND_FIELDS.items():
        if other == kind:
            continue
        for name in fields:
            if name in given and name not in _KIND_FIELDS[kind]:
                out.append(
                    (
                        f"parameters.{_shown(name)}",
                        f"{_a(kind)} sensor takes no {_shown(name)!r} (it is for kind {other}); "
                        f"it takes: {', '.join(map(_shown, _KIND_FIELDS[kind]))}",
                    )
                )
    for name in _REQUIRED.get(kind, ()):
        if not getattr(params, name):
            out.append(
                (f"parameters.{name}", f"{_a(kind)} sensor needs {name!r}; add it under parameters")
            )
    if kind == "time":
        out.extend(_time_problems(params))
    if kind == "http" and params.url and not re.match(r"^https?://[^/\s]", params.url):
        out.append(
            (
                "parameters.url",
                f"url {params.url!r} needs an http:// or https:// scheme and a host, "
                "e.g. https://example.com/health",
            )
        )
    if kind == "file" and params.path and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", params.path):
        out.extend(_url_problems(params.path))
    if task.map_over is not None:
        out.append(
            (
                "map_over",
                "a sensor cannot be mapped: give each condition its own sensor task "
                "(a use: template with repeat: makes many)",
            )
        )
    if task.approval is not None:
        out.append(
            ("approval", "a sensor cannot have an approval gate; gate the task after it instead")
        )
    return out


def _time_problems(params: SensorParams) -> list[tuple[str, str]]:
    from stageflow.engine.zones import zone_or_none

    out: list[tuple[str, str]] = []
    if not params.not_before and not params.within:
        out.append(
            (
                "parameters.not_before",
                "a time sensor needs 'not_before' (2026-03-01T06:00Z or 06:00) and/or "
                "'within' (09:00-17:00)",
            )
        )
    if params.not_before and _clock(params.not_before) is None:
        try:
            parse_instant(params.not_before, "not_before")
        except UsageError:
            out.append(
                (
                    "parameters.not_before",
                    f"not_before {params.not_before!r} is neither an ISO-8601 time "
                    "(2026-03-01T06:00:00Z) nor a time of day (06:00)",
                )
            )
    if params.within:
        try:
            begin, end = _window(params.within)
            if begin == end:
                out.append(("parameters.within", f"within {params.within!r} is an empty window"))
        except ValueError:
            out.append(
                (
                    "parameters.within",
                    f"within {params.within!r} is not a daily window; give HH:MM-HH:MM, "
                    "e.g. 09:00-17:00 (22:00-06:00 wraps past midnight)",
                )
            )
    if zone_or_none(params.timezone) is None:
        out.append(
            (
                "parameters.timezone",
                f"unknown timezone {params.timezone!r}; give an IANA name such as UTC "
                "or Europe/Paris",
            )
        )
    return out


def _url_problems(url: str) -> list[tuple[str, str]]:
    try:
        object_storage.filesystem(url)
    except (MissingExtra, ObjectStorageError) as exc:
        return [("parameters.path", str(exc))]
    return []


# -- helpers -----------------------------------------------------------------------------


_MISSING = object()


def _shown(name: str) -> str:
    """A parameter's name as a spec writes it (``json``, not the model's ``json_fields``)."""
    return "json" if name == "json_fields" else name


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "http" else f"a {kind}"


def _dotted(value: Any, key: str) -> Any:
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _clock(text: str) -> time_of_day | None:
    """``HH:MM[:SS]`` as a time of day; ``None`` when ``text`` is not one."""
    match = _CLOCK.fullmatch(text.strip())
    if match is None:
        return None
    hour, minute, second = match.groups()
    return time_of_day(int(hour), int(minute), int(second or 0))


def _window(text: str) -> tuple[time_of_day, time_of_day]:
    """``HH:MM-HH:MM`` as (begin, end); ``ValueError`` when it is not one. An end of
    ``24:00`` is the end of the day."""
    begin_text, sep, end_text = text.partition("-")
    end_text = end_text.strip()
    begin = _clock(begin_text)
    end = time_of_day.max if end_text == "24:00" else _clock(end_text)
    if not sep or begin is None or end is None:
        raise ValueError(text)
    return begin, end


def _iso(now: float) -> str:
    moment = datetime.fromtimestamp(now, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
