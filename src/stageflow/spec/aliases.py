"""Map the seed documents' spellings onto the canonical model's fields.

Seed 000 (workflow JSON): ``task_id``, ``name`` (a display name), ``task_type``,
``dependencies``, ``priority`` low/normal/high/critical,
``retry_policy.{max_retries,retry_delay,exponential_backoff}``,
``resources.{cpu_cores,memory_mb,gpu_count,timeout_seconds}``.
Seed 001 (pipeline JSON): ``name`` is the task id, ``operator``,
``upstream_tasks``, top-level ``cpu``/``memory_gb``/``gpu``, ``owner``.

These are aliases onto one model, not a second model: the mapping rewrites a
raw task mapping before validation. A mapping that uses both an alias and its
canonical key is left for validation to report (no silent precedence).
"""

from __future__ import annotations

from typing import Any

__all__ = ["alias_message", "normalize_pipeline", "normalize_task"]

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
    """A copy of a raw pipeline mapping with its tasks' seed spellings mapped."""
    out = dict(raw)
    tasks = out.get("tasks")
    if isinstance(tasks, list):
        out["tasks"] = [normalize_task(t) if isinstance(t, dict) else t for t in tasks]
    defaults = out.get("defaults")
    if isinstance(defaults, dict):
        out["defaults"] = _normalize_policies(dict(defaults))
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
    return None


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
