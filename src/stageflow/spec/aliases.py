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

__all__ = ["normalize_pipeline", "normalize_task"]

_TASK_RENAMES = {
    "task_id": "id",
    "dependencies": "upstream",
    "upstream_tasks": "upstream",
    "depends_on": "upstream",
    "task_type": "operator",
    "retry_policy": "retry",
    "timeout": "timeout_seconds",
}
_RETRY_RENAMES = {"retry_delay": "delay_seconds", "retries": "max_retries"}
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


def _normalize_policies(task: dict[str, Any]) -> dict[str, Any]:
    retry = task.get("retry")
    if isinstance(retry, dict):
        r = {_RETRY_RENAMES.get(k, k): v for k, v in retry.items()}
        if "exponential_backoff" in r:
            flag = r.pop("exponential_backoff")
            if isinstance(flag, bool):
                r.setdefault("backoff", "exponential" if flag else "fixed")
            else:
                r["exponential_backoff"] = flag  # not a bool: let validation name it
        task["retry"] = r
    res = task.get("resources")
    if isinstance(res, dict):
        r2 = {_RESOURCE_RENAMES.get(k, k): v for k, v in res.items()}
        if "memory_mb" in r2:
            mb = r2.pop("memory_mb")
            if isinstance(mb, int | float) and not isinstance(mb, bool):
                r2.setdefault("memory_gb", mb / 1024)
            else:
                r2["memory_mb"] = mb
        if "timeout_seconds" in r2:  # seed 000 keeps the timeout with the resources
            task.setdefault("timeout_seconds", r2.pop("timeout_seconds"))
        task["resources"] = r2
    return task
