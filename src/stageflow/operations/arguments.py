"""Checking what an interface hands the operations: run and task ids, instants.

Every operation that takes a run id or a task id checks it here first, so a
mistyped id gets the same message from the CLI and the API (``UsageError``,
exit 2 / HTTP 400) before any store is read. No state.
"""

from __future__ import annotations

from stageflow.errors import UsageError
from stageflow.spec.times import parse_instant

__all__ = ["check_run_id", "check_task_id", "parse_instant"]


def check_run_id(run_id: str, what: str = "") -> None:
    """``UsageError`` (field ``run_id``) when ``run_id`` cannot be a run id; ``what``
    (the argument's name, e.g. ``RUN_A``) is put in front of the message when given."""
    from stageflow.spec.validate import id_problem

    why = id_problem(run_id, "run id")
    if why is not None:
        text = f"{why}; see `stageflow runs list`"
        raise UsageError(f"{what}: {text}" if what else text, field="run_id")


def check_task_id(task: str, what: str = "", *, mapped: bool = False) -> None:
    """``UsageError`` (field ``task``) for a bad task id (``what``: the argument, put in
    front of the message when given); ``mapped``: a mapped task's run ``ID[K]`` is accepted."""
    from stageflow.spec.validate import id_problem

    base, bracket, rest = task.partition("[") if mapped and task.endswith("]") else (task, "", "")
    why = id_problem(base)
    if why is None and bracket and not rest[:-1].isdigit():
        why = f"task {task!r}: a mapped task's run is ID[K] with K a number, e.g. {base}[0]"
    if why is not None:
        raise UsageError(f"{what}: {why}" if what else why, field="task")
