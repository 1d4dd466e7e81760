"""Pipeline templates: a task that ``use:``s another pipeline as a task group.

``{id: prep, use: preprocessing.yaml, with: {threshold: 0.5}, upstream: [ingest]}``
is replaced by the other pipeline's tasks, namespaced ``prep.<task id>``:

* its parameters are its own ``params`` overridden by ``with`` (a key it does
  not declare is an error), substituted into its tasks' ``parameters`` and
  ``when`` now, so the group needs nothing from the outer run's parameters;
* its ``defaults`` are written into each of its tasks that does not set them;
* its entry tasks (no upstream inside the group) take the group's ``upstream``;
* an outer task listing ``prep`` in its ``upstream`` depends on the group's exit
  tasks (nothing inside the group depends on them);
* each expanded task records ``group: prep``, so drawings can collapse it.

Groups nest (ids become ``outer.inner.task``) up to ``MAX_DEPTH``; a template
that uses itself, directly or not, is refused. This module is pure: reading
the referenced file is the caller's ``load`` function (``runtime.loading``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from stageflow.errors import InvalidSpec, Problem
from stageflow.spec.aliases import normalize_pipeline
from stageflow.spec.params import substitute

__all__ = ["MAX_DEPTH", "expand_templates"]

MAX_DEPTH = 8
_DEFAULTED = ("retry", "timeout_seconds", "resources", "priority", "trigger_rule")

Loader = Callable[[str, str], tuple[str, dict[str, Any]]]
"""``load(reference, from_source) -> (source, raw pipeline mapping)``."""


def expand_templates(doc: dict[str, Any], load: Loader, source: str) -> dict[str, Any]:
    """``doc`` with every ``use:`` task replaced by its expanded group.

    Raises ``InvalidSpec`` naming the group task and the problem.
    """
    return _expand(doc, load, source, stack=(source,))


def _expand(
    doc: dict[str, Any], load: Loader, source: str, stack: tuple[str, ...]
) -> dict[str, Any]:
    tasks = doc.get("tasks")
    if not isinstance(tasks, list) or not any(isinstance(t, dict) and "use" in t for t in tasks):
        return doc
    out_tasks: list[Any] = []
    exits: dict[str, list[str]] = {}
    for task in tasks:
        if not (isinstance(task, dict) and "use" in task):
            out_tasks.append(task)
            continue
        group_id = task.get("id")
        if not isinstance(group_id, str):
            raise InvalidSpec([Problem("a `use:` task needs an `id:`", field="id")])
        expanded, group_exits = _group(task, group_id, load, source, stack)
        out_tasks.extend(expanded)
        exits[group_id] = group_exits
    for task in out_tasks:  # outer tasks that depend on a group depend on its exits
        if isinstance(task, dict) and isinstance(task.get("upstream"), list):
            task["upstream"] = [
                e
                for u in task["upstream"]
                for e in (exits.get(u, [u]) if isinstance(u, str) else [u])
            ]
    return {**doc, "tasks": out_tasks}


def _group(
    task: dict[str, Any], group_id: str, load: Loader, source: str, stack: tuple[str, ...]
) -> tuple[list[dict[str, Any]], list[str]]:
    def problem(message: str, field: str = "use") -> InvalidSpec:
        return InvalidSpec([Problem(message, task=group_id, field=field)])

    allowed = {"id", "use", "with", "upstream", "after", "description"}
    extra = sorted(set(task) - allowed)
    if extra:
        raise problem(
            f"a `use:` task takes only {', '.join(sorted(allowed))}; remove {', '.join(extra)}",
            field=extra[0],
        )
    reference = task["use"]
    if not isinstance(reference, str) or not reference:
        raise problem("`use:` must name a pipeline file")
    if len(stack) > MAX_DEPTH:
        raise problem(f"templates nest deeper than {MAX_DEPTH} levels")
    sub_source, raw = load(reference, source)
    if sub_source in stack:
        chain = " -> ".join([*stack, sub_source])
        raise problem(f"template {reference!r} uses itself: {chain}")
    sub = normalize_pipeline(_expand(copy.deepcopy(raw), load, sub_source, (*stack, sub_source)))
    with_ = task.get("with") or {}
    if not isinstance(with_, dict):
        raise problem("`with:` must be a mapping of parameter values", field="with")
    declared = sub.get("params") or {}
    unknown = sorted(set(with_) - set(declared))
    if unknown:
        raise problem(
            f"template {reference!r} declares no parameter "
            f"{', '.join(map(repr, unknown))} (it declares: "
            f"{', '.join(sorted(declared)) or 'none'})",
            field="with",
        )
    params = {**declared, **with_}
    defaults = sub.get("defaults") or {}
    sub_tasks = [t for t in sub.get("tasks") or [] if isinstance(t, dict)]
    inner_ids = {t.get("id") for t in sub_tasks}
    depended_on = {u for t in sub_tasks for u in (t.get("upstream") or []) + (t.get("after") or [])}
    outer_upstream = list(task.get("upstream") or [])
    out: list[dict[str, Any]] = []
    for sub_task in sub_tasks:
        new = dict(sub_task)
        tid = sub_task.get("id")
        new["id"] = f"{group_id}.{tid}"
        ups = [f"{group_id}.{u}" if u in inner_ids else u for u in sub_task.get("upstream") or []]
        after = [f"{group_id}.{u}" if u in inner_ids else u for u in sub_task.get("after") or []]
        if not ups and not after:
            ups = list(outer_upstream)
            if task.get("after"):
                after = list(task["after"])
        if ups:
            new["upstream"] = ups
        if after:
            new["after"] = after
        for key in _DEFAULTED:
            if key not in new and key in defaults:
                new[key] = copy.deepcopy(defaults[key])
        try:
            if "parameters" in new:
                new["parameters"] = substitute(new["parameters"], params)
            if isinstance(new.get("when"), str):
                new["when"] = _substitute_condition(new["when"], params, group_id, inner_ids)
        except KeyError as exc:
            raise problem(
                f"template {reference!r} task '{tid}' refers to ${{params.{exc.args[0]}}}"
                ", which the template does not declare"
            ) from None
        new["group"] = f"{group_id}.{sub_task['group']}" if "group" in sub_task else group_id
        out.append(new)
    exits = [
        t["id"]
        for t, raw_t in zip(out, sub_tasks, strict=True)
        if raw_t.get("id") not in depended_on
    ]
    return out, exits


def _substitute_condition(
    text: str, params: dict[str, Any], group_id: str, inner_ids: set[Any]
) -> str:
    """Parameters become literals; references to the group's own tasks get its prefix."""
    import json
    import re

    def param(match: re.Match[str]) -> str:
        return json.dumps(params[match.group(1)])

    text = re.sub(r"\$\{params\.([A-Za-z_][A-Za-z0-9_]*)\}", param, text)

    def task_ref(match: re.Match[str]) -> str:
        inner = match.group(1)
        head = inner.split(".")[0]
        return f"${{{group_id}.{inner}}}" if head in inner_ids else match.group(0)

    return re.sub(r"\$\{([^{}]*)\}", task_ref, text)
