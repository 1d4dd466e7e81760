"""Pipeline templates: a task that ``use:``s another pipeline as a task group.

``{id: prep, use: preprocessing.yaml, with: {threshold: 0.5}, upstream: [ingest]}``
is replaced by the other pipeline's tasks, namespaced ``prep.<task id>``:

* its parameters are its own ``params`` overridden by ``with`` (a key it does
  not declare is an error), substituted into its tasks' ``parameters`` and
  ``when`` now, so the group needs nothing from the outer run's parameters;
* its ``defaults`` are written into each of its tasks that does not set them;
* its entry tasks (no upstream inside the group) take the group's ``upstream``, and
  the group's ``trigger_rule`` and ``when`` (ANDed with an entry task's own), as a task
  would: an entry task skipped by them skips what follows it inside the group, as any
  downstream of a skipped task (a repeated group's: its first iteration's);
* an outer task listing ``prep`` in its ``upstream`` depends on the group's exit
  tasks (nothing inside the group depends on them);
* each expanded task records ``group: prep``, so drawings can collapse it.

Groups nest (ids become ``outer.inner.task``) up to ``MAX_DEPTH``; a template
that uses itself, directly or not, is refused. This module is pure: reading
the referenced file is the caller's ``load`` function (``runtime.loading``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
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

    allowed = {
        "id",
        "use",
        "with",
        "upstream",
        "after",
        "description",
        "repeat",
        "trigger_rule",
        "when",
    }
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
    for key in ("trigger_rule", "when"):
        if key in task and (not isinstance(task[key], str) or not task[key].strip()):
            raise problem(f"`{key}:` of a `use:` task must be text, as a task's", field=key)
    template = _Template(
        reference=reference,
        params={**declared, **with_},
        defaults=sub.get("defaults") or {},
        tasks=[t for t in sub.get("tasks") or [] if isinstance(t, dict)],
        entry={k: task[k] for k in ("trigger_rule", "when") if k in task},
    )
    outer_after = list(task.get("after") or [])
    if "repeat" not in task:
        return _instantiate(
            template,
            group_id,
            group_id,
            list(task.get("upstream") or []),
            outer_after,
            None,
            problem,
        )
    until, iterations = _repeat(task["repeat"], problem)
    out: list[dict[str, Any]] = []
    outer_upstream = list(task.get("upstream") or [])
    upstream = outer_upstream
    all_exits: list[str] = []
    previous: str | None = None
    for k in range(1, iterations + 1):
        prefix = f"{group_id}.{k}"
        gate = None
        if previous is not None:
            gate = _Gate(until, previous)
        tasks, exits = _instantiate(
            template, prefix, group_id, upstream, outer_after, gate, problem
        )
        out.extend(tasks)
        all_exits.extend(exits)
        # the next round reads the group's input and this round's outputs
        upstream = [*outer_upstream, *(e for e in exits if e not in outer_upstream)]
        outer_after, previous = [], prefix
    exit_names = [e.rsplit(".", 1)[-1] for e in all_exits[: len(all_exits) // iterations]]
    out.append(
        {
            "id": group_id,
            "call": "stageflow.spec.templates:last_iteration",
            "upstream": all_exits,
            "trigger_rule": "none_failed_min_one_success",
            "parameters": {"exits": exit_names, "iterations": iterations},
            "group": group_id,
            "description": f"the outputs of the last iteration of {reference!r} that ran",
        }
    )
    return out, [group_id]


def last_iteration(*outputs: Any, exits: list[str], iterations: int) -> dict[str, Any]:
    """A repeated group's result: ``{"iteration": k, "outputs": {exit task: output}}`` of
    the last iteration that ran (its exit tasks' outputs, in upstream order)."""
    width = len(exits)
    for k in range(iterations, 0, -1):
        chunk = outputs[(k - 1) * width : k * width]
        if any(value is not None for value in chunk):
            return {"iteration": k, "outputs": dict(zip(exits, chunk, strict=True))}
    return {"iteration": 0, "outputs": {}}


@dataclass(frozen=True)
class _Template:
    reference: str
    params: dict[str, Any]
    defaults: dict[str, Any]
    tasks: list[dict[str, Any]]
    entry: dict[str, str]  # the group's own trigger_rule and when, for its entry tasks


@dataclass(frozen=True)
class _Gate:
    """Iteration k runs only if ``until`` was false after iteration ``previous``."""

    until: str
    previous: str  # the previous iteration's id prefix, e.g. "train.1"


def _repeat(spec: Any, problem: Callable[..., InvalidSpec]) -> tuple[str, int]:
    if not isinstance(spec, dict) or set(spec) - {"until", "max_iterations"}:
        raise problem("`repeat:` takes {until: EXPRESSION, max_iterations: N}", field="repeat")
    until, iterations = spec.get("until"), spec.get("max_iterations")
    if not isinstance(until, str) or not until.strip():
        raise problem(
            '`repeat.until` must be a condition, e.g. "${evaluate.accuracy} >= 0.9"',
            field="repeat.until",
        )
    if (
        not isinstance(iterations, int)
        or isinstance(iterations, bool)
        or not 1 <= iterations <= 100
    ):
        raise problem(
            "`repeat.max_iterations` must be a whole number from 1 to 100",
            field="repeat.max_iterations",
        )
    return until, iterations


def _instantiate(
    template: _Template,
    prefix: str,
    group_id: str,
    outer_upstream: list[str],
    outer_after: list[str],
    gate: _Gate | None,
    problem: Callable[..., InvalidSpec],
) -> tuple[list[dict[str, Any]], list[str]]:
    """The template's tasks with ids ``prefix.<id>``; returns them and the exit ids."""
    sub_tasks = template.tasks
    params = template.params
    inner_ids = {t.get("id") for t in sub_tasks}
    depended_on = {u for t in sub_tasks for u in (t.get("upstream") or []) + (t.get("after") or [])}
    out: list[dict[str, Any]] = []
    for sub_task in sub_tasks:
        new = dict(sub_task)
        tid = sub_task.get("id")
        new["id"] = f"{prefix}.{tid}"
        ups = [f"{prefix}.{u}" if u in inner_ids else u for u in sub_task.get("upstream") or []]
        after = [f"{prefix}.{u}" if u in inner_ids else u for u in sub_task.get("after") or []]
        entry = not ups and not after
        if entry:
            ups = list(outer_upstream)
            after = list(outer_after)
        for key in _DEFAULTED:
            if key not in new and key in template.defaults:
                new[key] = copy.deepcopy(template.defaults[key])
        try:
            if "parameters" in new:
                new["parameters"] = substitute(new["parameters"], params)
            if isinstance(new.get("when"), str):
                new["when"] = _substitute_condition(new["when"], params, prefix, inner_ids)
            if entry and gate is None:  # the group's own, written in the outer pipeline
                if "trigger_rule" in template.entry:
                    new["trigger_rule"] = template.entry["trigger_rule"]
                if "when" in template.entry:
                    own = new.get("when")
                    group_when = template.entry["when"]
                    new["when"] = f"({group_when}) and ({own})" if own else group_when
            if entry and gate is not None:
                until = _substitute_condition(gate.until, params, gate.previous, inner_ids)
                condition = f"not ({until})"
                if isinstance(new.get("when"), str):
                    condition = f"({new['when']}) and {condition}"
                new["when"] = condition
                refs = [
                    f"{gate.previous}.{r.split('.')[0]}"
                    for r in _task_refs(gate.until)
                    if r.split(".")[0] in inner_ids
                ]
                after += [r for r in dict.fromkeys(refs) if r not in ups and r not in after]
        except KeyError as exc:
            raise problem(
                f"template {template.reference!r} task '{tid}' refers to "
                f"${{params.{exc.args[0]}}}, which the template does not declare"
            ) from None
        if ups:
            new["upstream"] = ups
        if after:
            new["after"] = after
        new["group"] = f"{group_id}.{sub_task['group']}" if "group" in sub_task else group_id
        out.append(new)
    exits = [
        t["id"]
        for t, raw_t in zip(out, sub_tasks, strict=True)
        if raw_t.get("id") not in depended_on
    ]
    return out, exits


def _task_refs(text: str) -> list[str]:
    import re

    return [m for m in re.findall(r"\$\{([^{}]*)\}", text) if not m.startswith("params.")]


_OUTER_PARAM = re.compile(r"\$\{params\.[A-Za-z_][A-Za-z0-9_]*\}")


def _substitute_condition(
    text: str, params: dict[str, Any], group_id: str, inner_ids: set[Any]
) -> str:
    """Parameters become literals; references to the group's own tasks get its prefix.
    A parameter given as the outer pipeline's ``${params.NAME}`` (``with: {target:
    "${params.target}"}``) stays that reference, read with its type when the run starts."""
    import json

    def param(match: re.Match[str]) -> str:
        value = params[match.group(1)]
        if isinstance(value, str) and _OUTER_PARAM.fullmatch(value):
            return value
        return json.dumps(value)

    text = re.sub(r"\$\{params\.([A-Za-z_][A-Za-z0-9_]*)\}", param, text)

    def task_ref(match: re.Match[str]) -> str:
        inner = match.group(1)
        head = inner.split(".")[0]
        return f"${{{group_id}.{inner}}}" if head in inner_ids else match.group(0)

    return re.sub(r"\$\{([^{}]*)\}", task_ref, text)
