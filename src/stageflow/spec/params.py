"""Run parameters: ``${params.NAME}`` substitution and ``--param k=v`` parsing.

A string that is exactly ``${params.NAME}`` becomes the parameter's value with
its type; inside a longer string the value is formatted into the text.
Substitution is plain text replacement: nothing is evaluated. A run's schedule
values, ``${schedule.start}``, ``${schedule.end}`` (its data interval, ISO 8601 UTC)
and ``${schedule.name}``, are text, substituted the same way when the run has them
(``SCHEDULE_KEYS``).

A parameter's name is an identifier (``PARAM_NAME``): it is written
``${params.NAME}`` and becomes the environment variable
``STAGEFLOW_PARAM_<NAME>`` (upper-cased, so two names that differ only in case
collide: ``param_name_collisions``). A ``--param`` value is JSON nested at most
``MAX_PARAM_DEPTH`` levels (a deeper one would exhaust the parser's recursion).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from stageflow.errors import UsageError

__all__ = [
    "MAX_PARAM_DEPTH",
    "PARAM_NAME",
    "SCHEDULE_KEYS",
    "param_collision_problem",
    "param_name_collisions",
    "param_name_problem",
    "parse_param_value",
    "references",
    "schedule_references",
    "substitute",
]

#: What a run parameter may be called: letters, digits and '_', not starting with a digit.
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: How deeply a ``--param`` JSON value may nest lists and objects.
MAX_PARAM_DEPTH = 64

_REF = re.compile(r"\$\{params\.(" + PARAM_NAME.pattern + r")\}")
#: What ``${schedule.KEY}`` may name: the run's data interval and its schedule's name;
#: ``object``: the URL of the object that fired it (an object schedule's; else empty).
SCHEDULE_KEYS = ("start", "end", "name", "object")
_SCHEDULE_REF = re.compile(r"\$\{schedule\.([A-Za-z_][A-Za-z0-9_]*)\}")


def param_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a run parameter, or ``None`` when it can."""
    if PARAM_NAME.fullmatch(name):
        return None
    return (
        f"run parameter {name!r} is not a valid name; use letters, digits and '_', "
        "not starting with a digit (it is written ${params.NAME} and passed to tasks "
        "as STAGEFLOW_PARAM_NAME)"
    )


def param_name_collisions(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(first, other)`` for each valid name that differs from an earlier ``first``
    only in case: tasks would see both as the same ``STAGEFLOW_PARAM_<NAME>``."""
    first: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for name in names:
        if not PARAM_NAME.fullmatch(name):
            continue  # param_name_problem reports it
        seen = first.setdefault(name.upper(), name)
        if seen != name:
            out.append((seen, name))
    return out


def param_collision_problem(first: str, other: str) -> str:
    """The message for two run parameters that differ only in case."""
    return (
        f"run parameters {first!r} and {other!r} differ only in case; tasks would see "
        f"both as STAGEFLOW_PARAM_{first.upper()} (one hiding the other); rename one of them"
    )


def references(text: str) -> Iterator[str]:
    """The parameter names ``text`` refers to."""
    for match in _REF.finditer(text):
        yield match.group(1)


def schedule_references(text: str) -> Iterator[str]:
    """The keys ``text``'s ``${schedule.KEY}`` references name (known or not)."""
    for match in _SCHEDULE_REF.finditer(text):
        yield match.group(1)


def substitute(
    value: Any, params: Mapping[str, Any], schedule: Mapping[str, str] | None = None
) -> Any:
    """``value`` with every ``${params.NAME}`` replaced (recursively in lists/dicts), and
    every ``${schedule.KEY}`` when ``schedule`` is given (else left as written).

    Raises ``KeyError`` naming a parameter that is not in ``params``.
    """
    if isinstance(value, str):
        if "${" not in value:
            return value
        whole = _REF.fullmatch(value)
        if whole:
            return params[whole.group(1)]
        text = _REF.sub(lambda m: _text(params[m.group(1)]), value)
        if schedule is not None and "${schedule." in text:
            text = _SCHEDULE_REF.sub(lambda m: schedule.get(m.group(1), m.group(0)), text)
        return text
    if isinstance(value, dict):
        return {k: substitute(v, params, schedule) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params, schedule) for v in value]
    return value


def parse_param_value(text: str, name: str = "") -> Any:
    """A ``--param`` value: JSON when it parses (numbers, true, lists), else the text.

    Raises ``UsageError`` naming ``--param NAME`` when the value nests deeper than
    ``MAX_PARAM_DEPTH`` levels.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
    except ValueError:
        return text
    else:
        if _depth_within(value, MAX_PARAM_DEPTH):
            return value
    raise UsageError(
        f"--param {name}: the value is nested deeper than {MAX_PARAM_DEPTH} levels; "
        "pass a flatter value, or a file path to read in the task",
        field=f"params.{name}" if name else "param",
    )


def _depth_within(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts at most ``limit`` levels (iteratively)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return False
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return True


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
