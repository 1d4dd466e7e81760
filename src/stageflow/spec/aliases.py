"""Map the seed documents' spellings onto the canonical model's fields.

Seed 000 (workflow JSON): ``task_id``, ``name`` (a display name), ``task_type``,
``dependencies``, ``priority`` low/normal/high/critical,
``retry_policy.{max_retries,retry_delay,exponential_backoff}``,
``resources.{cpu_cores,memory_mb,gpu_count,timeout_seconds}``.
Seed 001 (pipeline JSON): ``name`` is the task id, ``operator``,
``upstream_tasks``, top-level ``cpu``/``memory_gb``/``gpu``, ``owner``.
Seed 002 (``PipelineDefinition`` and Airflow's ``default_args``): ``pipeline_id``
is the pipeline's name (its ``name`` beside it is a display ``title``);
``default_args`` become the pipeline's ``defaults`` (``retries``,
``retry_delay``, ``max_retry_delay``, ``retry_exponential_backoff``,
``execution_timeout``, ``pool``, ``priority_weight``, ``trigger_rule``) and its
``owner``. Durations are seconds, ``"0:05:00"`` (a printed ``timedelta``),
``"5m"``/``"2h"``/``"1h30m"``, ``timedelta(minutes=5)`` or ``{minutes: 5}``.
``email`` with ``email_on_failure`` (true, or left out as in Airflow) becomes an
``on_failure`` hook ``{email: [...]}``, with ``email_on_retry: true`` an ``on_retry``
one (``runtime.notify`` sends them over SMTP); ``seed_notes`` says when a flag asks for
mail but no ``email`` is given.
``depends_on_past`` is accepted when false. Operator ``deployment`` (seed 002's
``TaskType.DEPLOYMENT``) is ``model_deployment``.

These are aliases onto one model, not a second model: the mapping rewrites a
raw mapping before validation. A mapping that uses both an alias and its
canonical key is left for validation to report (no silent precedence); so is a
``default_args`` key that cannot be mapped (``default_args_message`` says why).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "DEFAULT_ARGS",
    "OPERATOR_ALIASES",
    "alias_message",
    "default_args_message",
    "normalize_pipeline",
    "normalize_task",
    "parse_duration",
    "seed_notes",
]

#: Operator names of the seeds that are another operator's (seed 002's ``deployment``).
OPERATOR_ALIASES: Mapping[str, str] = MappingProxyType({"deployment": "model_deployment"})

_TASK_RENAMES = {
    "task_id": "id",
    "dependencies": "upstream",
    "upstream_tasks": "upstream",
    "depends_on": "upstream",
    "task_type": "operator",
    "retry_policy": "retry",
    "timeout": "timeout_seconds",
}
_RETRY_RENAMES = {"retry_delay": "delay_seconds", "retries": "max_retries", "strategy": "backoff"}
_RESOURCE_RENAMES = {"cpu_cores": "cpu", "gpu_count": "gpu"}
_TOP_LEVEL_RESOURCES = ("cpu", "memory_gb", "gpu", "disk_gb", "cpu_cores", "memory_mb", "gpu_count")


def normalize_pipeline(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw pipeline mapping with its (and its tasks') seed spellings mapped."""
    out = dict(raw)
    tasks = out.get("tasks")
    if isinstance(tasks, list):
        out["tasks"] = [normalize_task(t) if isinstance(t, dict) else t for t in tasks]
    defaults = out.get("defaults")
    if isinstance(defaults, dict):
        out["defaults"] = _normalize_policies(dict(defaults))
    _pipeline_id(out)
    if isinstance(out.get("default_args"), dict):
        _default_args(out)
    return out


def normalize_task(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of one raw task mapping in canonical spelling."""
    task: dict[str, Any] = {}
    for key, value in raw.items():
        new = _TASK_RENAMES.get(key, key) if isinstance(key, str) else key
        if new in task or (new != key and new in raw):
            task[key] = value  # both spellings given: keep both, validation reports it
        else:
            task[new] = value
    operator = task.get("operator")
    if isinstance(operator, str) and operator in OPERATOR_ALIASES:
        task["operator"] = OPERATOR_ALIASES[operator]
    # Seed 001 names a task by ``name``; seed 000 has ``task_id`` and a display name.
    if "id" not in task and isinstance(task.get("name"), str):
        task["id"] = task.pop("name")
    # Seed 001 puts resources at the top level of a task.
    loose = {k: task.pop(k) for k in _TOP_LEVEL_RESOURCES if k in task}
    if loose:
        res = task.get("resources")
        if res is None:
            task["resources"] = loose
        elif isinstance(res, dict):
            task["resources"] = {**loose, **res}
    # Seed 001's owner is per pipeline in our model; a task-level owner is kept as metadata.
    if "owner" in task and isinstance(task["owner"], str):
        owner = task.pop("owner")
        task.setdefault("description", f"owner: {owner}")
    return _normalize_policies(task)


def alias_message(section: str, key: str, value: object) -> str | None:
    """Why a seed spelling was left unmapped in a ``section`` (task, retry, resources)
    mapping, for validation to say instead of "unknown key"; ``None`` if not an alias."""
    renames = {"task": _TASK_RENAMES, "retry": _RETRY_RENAMES, "resources": _RESOURCE_RENAMES}
    canonical = renames.get(section, {}).get(key)
    if canonical is not None:
        return f"'{key}' is another spelling of '{canonical}', which is also given; keep one"
    if section in ("task", "defaults") and key == "retry_on":
        return "retry_on belongs to the retry policy: write `retry: {retry_on: [...]}`"
    if section == "retry" and key == "exponential_backoff":
        if isinstance(value, bool):
            return "exponential_backoff and backoff are both given; keep one"
        return f"exponential_backoff must be true or false, got {value!r}"
    if section == "resources" and key == "memory_mb":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return "memory_mb and memory_gb are both given; keep one"
        return f"memory_mb must be a number of megabytes, got {value!r}"
    if section == "resources" and key == "timeout_seconds":
        return "timeout_seconds is given both here and on the task; keep one"
    if section == "pipeline" and key == "pipeline_id":
        if not isinstance(value, str):
            return f"pipeline_id is the pipeline's name and must be text, got {value!r}"
        return (
            "pipeline_id, name and title are all given; pipeline_id is the name and a "
            "different name is the title: keep two of them"
        )
    return None


#: Airflow's ``default_args`` keys that stageflow maps: key -> where it goes.
DEFAULT_ARGS: Mapping[str, str] = MappingProxyType(
    {
        "owner": "owner",
        "retries": "defaults.retry.max_retries",
        "retry_delay": "defaults.retry.delay_seconds",
        "max_retry_delay": "defaults.retry.max_delay_seconds",
        "retry_exponential_backoff": "defaults.retry.backoff",
        "execution_timeout": "defaults.timeout_seconds",
        "pool": "defaults.pool",
        "priority_weight": "defaults.priority",
        "trigger_rule": "defaults.trigger_rule",
        "depends_on_past": "(accepted when false)",
        "email": "on_failure / on_retry: [{email: ...}]",
        "email_on_failure": "on_failure: [{email: ...}]",
        "email_on_retry": "on_retry: [{email: ...}]",
    }
)


def default_args_message(key: str, value: object) -> str:
    """Why ``default_args.KEY`` was left unmapped (normalisation maps every other key)."""
    from stageflow.spec.suggest import did_you_mean

    target = DEFAULT_ARGS.get(key)
    if target is None:
        hint = did_you_mean(key, list(DEFAULT_ARGS))
        return f"unknown default_args key '{key}'" + (
            f"; did you mean '{hint}'?"
            if hint
            else f"; stageflow maps: {', '.join(DEFAULT_ARGS)} (other task settings go "
            "under `defaults:`)"
        )
    why = _default_arg_error(key, value)
    if why is not None:
        return why
    if key == "depends_on_past":
        return (
            "depends_on_past: true is not supported: a stageflow run never waits for the "
            "previous run's tasks; remove it or set it to false"
        )
    return f"default_args.{key} and {target} are both given; keep one"


def parse_duration(value: object) -> float | None:
    """Seconds in ``value`` (a number, ``"0:05:00"``, ``"5m"``, ``"1h30m"``,
    ``"timedelta(minutes=5)"``, ``{minutes: 5}``), or ``None`` when it is not a
    duration (negative ones included)."""
    seconds: float | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, Mapping):
        seconds = _timedelta_parts(value)
    elif isinstance(value, str):
        text = value.strip()
        call = _TIMEDELTA_CALL.fullmatch(text)
        if call is not None:
            parts: dict[str, object] = {}
            for item in filter(None, (i.strip() for i in call.group(1).split(","))):
                name, _, number = item.partition("=")
                try:
                    parts[name.strip()] = float(number)
                except ValueError:
                    return None
            seconds = _timedelta_parts(parts)
        elif (clock := _CLOCK.fullmatch(text)) is not None:
            days, hours, minutes, secs = clock.groups()
            seconds = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(secs)
        elif _UNITS.fullmatch(text):
            seconds = sum(
                float(n) * _UNIT_SECONDS[u.lower()] for n, u in _UNIT.findall(text.replace(" ", ""))
            )
        else:
            try:
                seconds = float(text)
            except ValueError:
                return None
    if seconds is None or seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return seconds


def seed_notes(raw: object) -> list[str]:
    """What a raw pipeline mapping asks for that stageflow accepts but does not do
    (to show beside a valid result): Airflow's email on failure or retry with no
    ``email`` to send it to."""
    if not isinstance(raw, dict) or not isinstance(raw.get("default_args"), dict):
        return []
    args = raw["default_args"]
    email = args.get("email")
    wanted = [
        k
        for k in ("email_on_failure", "email_on_retry")
        # Airflow mails on failure by default once `email` is set.
        if args.get(k) is True or (k == "email_on_failure" and email and k not in args)
    ]
    if not wanted or email:
        return []
    return [
        f"default_args.{' and '.join(wanted)}: no mail goes out without default_args.email "
        "(the addresses); add it, or write `on_failure: [{email: [...]}]`"
    ]


def _normalize_policies(task: dict[str, Any]) -> dict[str, Any]:
    retry = task.get("retry")
    if isinstance(retry, dict):
        r = _rename(retry, _RETRY_RENAMES)
        if "exponential_backoff" in r:
            flag = r.pop("exponential_backoff")
            if isinstance(flag, bool) and "backoff" not in r:
                r["backoff"] = "exponential" if flag else "fixed"
            else:
                r["exponential_backoff"] = flag  # not a bool, or a clash: validation names it
        task["retry"] = r
    res = task.get("resources")
    if isinstance(res, dict):
        r2 = _rename(res, _RESOURCE_RENAMES)
        if "memory_mb" in r2:
            mb = r2.pop("memory_mb")
            if isinstance(mb, int | float) and not isinstance(mb, bool) and "memory_gb" not in r2:
                r2["memory_gb"] = mb / 1024
            else:
                r2["memory_mb"] = mb
        if "timeout_seconds" in r2 and "timeout_seconds" not in task:
            # seed 000 keeps the timeout with the resources
            task["timeout_seconds"] = r2.pop("timeout_seconds")
        task["resources"] = r2
    return task


def _rename(raw: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        new = renames.get(key, key)
        # Both spellings given: keep both, validation reports it (no silent precedence).
        out[key if new != key and new in raw else new] = value
    return out


# -- seed 002: PipelineDefinition and Airflow's default_args -------------------------

_TIMEDELTA_CALL = re.compile(r"(?:datetime\.)?timedelta\(([^()]*)\)")
_CLOCK = re.compile(r"(?:(\d+) days?, )?(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)")
_UNIT = re.compile(r"(\d+(?:\.\d+)?)([a-zA-Z]+)")
_UNITS = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*(?:[wdhms]|ms)\s*)+", re.IGNORECASE)
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_TIMEDELTA_SECONDS = {
    "weeks": 604800.0,
    "days": 86400.0,
    "hours": 3600.0,
    "minutes": 60.0,
    "seconds": 1.0,
    "milliseconds": 0.001,
    "microseconds": 0.000001,
}
_DURATIONS = frozenset({"retry_delay", "max_retry_delay", "execution_timeout"})
_BOOLS = frozenset(
    {"retry_exponential_backoff", "depends_on_past", "email_on_failure", "email_on_retry"}
)


def _timedelta_parts(parts: Mapping[Any, object]) -> float | None:
    total = 0.0
    for name, number in parts.items():
        unit = _TIMEDELTA_SECONDS.get(name) if isinstance(name, str) else None
        if unit is None or isinstance(number, bool) or not isinstance(number, int | float):
            return None
        total += float(number) * unit
    return total


def _pipeline_id(out: dict[str, Any]) -> None:
    """Seed 002: ``pipeline_id`` is the name; a different ``name`` is the display title."""
    pid = out.get("pipeline_id")
    if not isinstance(pid, str):
        return  # absent, or not text: validation names it
    name = out.get("name")
    if name is None or name == pid:
        out["name"] = out.pop("pipeline_id")
    elif "title" not in out:
        out["title"] = name
        out["name"] = out.pop("pipeline_id")
    # else all three are given: pipeline_id stays for validation to name


def _default_arg_error(key: str, value: object) -> str | None:
    """Why ``value`` is not usable for the known key ``key``; ``None`` when it is."""
    if key in _DURATIONS:
        if parse_duration(value) is None:
            return (
                f'{key} must be a duration: seconds, "0:05:00", "5m", '
                f'"timedelta(minutes=5)" or {{minutes: 5}}; got {value!r}'
            )
        if key == "execution_timeout" and parse_duration(value) == 0:
            return "execution_timeout must be more than 0 seconds"
        return None
    if key in _BOOLS:
        return None if isinstance(value, bool) else f"{key} must be true or false, got {value!r}"
    if key in ("retries", "priority_weight"):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (key == "retries" and value < 0)
        ):
            kind = "a whole number of retries (0 or more)" if key == "retries" else "an integer"
            return f"{key} must be {kind}, got {value!r}"
        return None
    if key == "email":
        ok = isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
        return None if ok else f"email must be an address or a list of them, got {value!r}"
    if not isinstance(value, str):  # owner, pool, trigger_rule
        return f"{key} must be text, got {value!r}"
    return None


def _default_args(out: dict[str, Any]) -> None:
    """Map ``out["default_args"]`` onto ``owner`` and ``defaults``; what cannot be
    mapped (unknown, bad value, also given canonically) stays under ``default_args``."""
    args: dict[str, Any] = out.pop("default_args")
    defaults = out.get("defaults")
    if defaults is None:
        defaults = {}
    elif not isinstance(defaults, dict):
        out["default_args"] = args  # `defaults` is wrong itself: validation names both
        return
    else:
        defaults = dict(defaults)
    retry_raw = defaults.get("retry")
    if retry_raw is not None and not isinstance(retry_raw, dict):
        out["default_args"] = args
        return
    retry: dict[str, Any] = dict(retry_raw or {})
    left: dict[str, Any] = {}
    for key, value in args.items():
        target = DEFAULT_ARGS.get(key) if isinstance(key, str) else None
        if target is None or _default_arg_error(key, value) is not None:
            left[key] = value
            continue
        if key in ("email", "email_on_failure", "email_on_retry"):
            continue  # hooks: ``_email_hooks`` below
        if key == "depends_on_past":
            if value:
                left[key] = value
            continue
        mapped: Any = value
        if key in _DURATIONS:
            mapped = parse_duration(value)
        elif key == "retry_exponential_backoff":
            mapped = "exponential" if value else "fixed"
        path = target.split(".")
        if path == ["owner"]:
            holder: dict[str, Any] = out
        elif path[1] == "retry":
            holder = retry
        else:
            holder = defaults
        field = path[-1]
        if field in holder and holder[field] != mapped:
            left[key] = value  # given both ways: validation names it, nothing wins silently
        else:
            holder[field] = mapped
    if retry:
        defaults["retry"] = retry
    if defaults:
        out["defaults"] = defaults
    if left:
        out["default_args"] = left
    _email_hooks(out, args, left)


def _email_hooks(out: dict[str, Any], args: Mapping[str, Any], left: Mapping[str, Any]) -> None:
    """Airflow's ``email``/``email_on_failure``/``email_on_retry`` as an ``{email: ...}``
    channel appended to ``on_failure``/``on_retry`` (on failure by default once
    ``email`` is set, as in Airflow)."""
    email = args.get("email")
    if not email or "email" in left:
        return
    channel = {"email": [email] if isinstance(email, str) else list(email)}
    for hook, flag, default in (
        ("on_failure", "email_on_failure", True),
        ("on_retry", "email_on_retry", False),
    ):
        if flag in left or not args.get(flag, default):
            continue
        hooks = out.get(hook)
        if hooks is None:
            out[hook] = [channel]
        elif isinstance(hooks, list):
            out[hook] = [*hooks, channel]
        # else: not a list; validation names it
