"""A small, safe expression language for ``when:`` conditions (and ``repeat.until``).

Example: ``${evaluate.accuracy} >= 0.85 and ${params.deploy}``.

Never Python's ``eval``: specs arrive over the network. The text is parsed
with ``ast.parse`` (parsing runs no code) after each ``${...}`` reference is
replaced by a placeholder name, every node is checked against a whitelist, and
the tree is interpreted here. Allowed: literals (numbers, strings, ``true``,
``false``, ``null`` and Python's spellings), lists, ``and``/``or``/``not``,
comparisons (``== != < <= > >= in``, ``not in``, chained), ``+ - * / // %``
on numbers (``+`` also joins two strings), unary ``-``/``+``, and subscripts
``x["key"]``/``x[0]`` on values. A reference is ``${params.NAME}`` or
``${TASK}`` / ``${TASK.key.key}``: the output of an upstream task, then keys
(or attributes of a non-mapping output). ``${TASK.metrics.NAME}`` is a metric
the task recorded (``operators.metadata.record``: a data check's
``drifted_columns``, an evaluation's ``accuracy``) when it recorded one by that
name, else the output's ``metrics`` key as above. Task ids may contain dots; the
longest id that matches wins. Sizes are bounded: 2,000 characters, nesting 32 deep.

Evaluation is bounded too, as it runs in the run loop (a long computation there
would hold every task): there is no ``**`` or ``<<``, no repetition of text or
lists (``*`` takes numbers), a joined string holds at most 1,000,000 characters,
and arithmetic takes and makes integers of at most 4,096 bits (``MAX_INT_BITS``,
about 1,233 digits; a float has no such limit). A float overflow is an
``ExpressionError`` as any other failure is.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Expression", "ExpressionError", "Reference", "parse_expression"]

MAX_LENGTH = 2000
MAX_DEPTH = 32
MAX_INT_BITS = 4096
MAX_STRING = 1_000_000
_REF = re.compile(r"\$\{([^{}]*)\}")
_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


class ExpressionError(ValueError):
    """The expression cannot be parsed or evaluated; the message says why."""


class _TooLarge(ExpressionError):
    """A value the expression would make is beyond the bounds (named with the source)."""


@dataclass(frozen=True, slots=True)
class Reference:
    """``${params.NAME}`` (kind ``params``) or ``${TASK.key...}`` (kind ``task``)."""

    text: str
    kind: str  # "params" | "task"
    name: str  # the parameter name, or the task id
    path: tuple[str, ...]  # keys after the parameter or task id


@dataclass(frozen=True)
class Expression:
    source: str
    tree: ast.Expression
    references: tuple[Reference, ...]

    def evaluate(
        self,
        params: Mapping[str, Any],
        outputs: Mapping[str, Any],
        metrics: Mapping[str, Mapping[str, float]] | None = None,
    ) -> Any:
        """The value of the expression; ``ExpressionError`` says what went wrong.

        ``metrics``: what each task recorded, read by ``${TASK.metrics.NAME}``.
        """
        values = [_resolve(ref, params, outputs, metrics or {}) for ref in self.references]
        try:
            return _eval(self.tree.body, values)
        except _TooLarge as exc:
            raise ExpressionError(f"{self.source!r}: {exc}") from None
        except ExpressionError:
            raise
        except (TypeError, ArithmeticError, KeyError, IndexError, ValueError) as exc:
            raise ExpressionError(f"{self.source!r}: {type(exc).__name__}: {exc}") from None


def parse_expression(source: str, task_ids: Iterable[str] = ()) -> Expression:
    """Parse and check ``source``; ``task_ids`` are the ids a reference may name.

    Raises ``ExpressionError`` for text that is too long, does not parse, uses
    anything outside the language, or has a malformed reference.
    """
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("the expression is empty")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(
            f"the expression is {len(source)} characters; the limit is {MAX_LENGTH}"
        )
    ids = sorted(set(task_ids), key=len, reverse=True)
    references: list[Reference] = []

    def placeholder(match: re.Match[str]) -> str:
        references.append(_reference(match.group(1).strip(), ids))
        return f" __ref{len(references) - 1} "

    text = _REF.sub(placeholder, source)
    if "${" in text:
        raise ExpressionError(f"{source!r}: an unclosed or nested ${{...}} reference")
    if text.count("(") + text.count("[") > MAX_DEPTH:
        raise ExpressionError(f"{source!r} is nested too deeply (limit {MAX_DEPTH})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        detail = getattr(exc, "msg", None) or str(exc)
        raise ExpressionError(f"{source!r} does not parse: {detail}") from None
    _check(tree.body, len(references), source, 0)
    return Expression(source, tree, tuple(references))


def _reference(inner: str, ids: list[str]) -> Reference:
    if inner.startswith("params."):
        parts = inner.split(".")
        if len(parts) < 2 or not parts[1].isidentifier():
            raise ExpressionError(f"${{{inner}}}: expected ${{params.NAME}}")
        return Reference(inner, "params", parts[1], tuple(parts[2:]))
    for tid in ids:  # longest first: ids may contain dots
        if inner == tid or inner.startswith(tid + "."):
            rest = inner[len(tid) + 1 :]
            return Reference(inner, "task", tid, tuple(rest.split(".")) if rest else ())
    head = inner.split(".")[0]
    if not head:
        raise ExpressionError(f"${{{inner}}} names nothing; use ${{TASK.key}} or ${{params.NAME}}")
    return Reference(inner, "task", head, tuple(inner.split(".")[1:]))


def _check(node: ast.AST, refs: int, source: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ExpressionError(f"{source!r} is nested too deeply (limit {MAX_DEPTH})")
    if isinstance(node, ast.BoolOp | ast.Compare):
        children: list[ast.AST] = (
            list(node.values) if isinstance(node, ast.BoolOp) else [node.left, *node.comparators]
        )
        if isinstance(node, ast.Compare) and any(type(op) not in _COMPARE for op in node.ops):
            raise ExpressionError(f"{source!r}: comparison not allowed")
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
            raise ExpressionError(f"{source!r}: operator not allowed")
        children = [node.operand]
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _ARITH:
            raise ExpressionError(f"{source!r}: operator {type(node.op).__name__} not allowed")
        children = [node.left, node.right]
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float | str | bool) and node.value is not None:
            raise ExpressionError(f"{source!r}: literal {node.value!r} not allowed")
        children = []
    elif isinstance(node, ast.Name):
        if node.id in _NAMES or (
            node.id.startswith("__ref") and node.id[5:].isdigit() and int(node.id[5:]) < refs
        ):
            children = []
        else:
            raise ExpressionError(
                f"{source!r}: unknown name '{node.id}'; refer to values as ${{TASK.key}} or "
                "${params.NAME}, and quote strings"
            )
    elif isinstance(node, ast.List | ast.Tuple):
        children = list(node.elts)
    elif isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Slice):
            raise ExpressionError(f"{source!r}: slices are not allowed")
        children = [node.value, node.slice]
    else:
        raise ExpressionError(f"{source!r}: {type(node).__name__} is not allowed in a condition")
    for child in children:
        _check(child, refs, source, depth + 1)


def _resolve(
    ref: Reference,
    params: Mapping[str, Any],
    outputs: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, float]],
) -> Any:
    path = ref.path
    if ref.kind == "params":
        if ref.name not in params:
            raise ExpressionError(f"${{{ref.text}}}: no run parameter '{ref.name}'")
        value = params[ref.name]
    elif path[:1] == ("metrics",) and (found := _recorded(ref, metrics)) is not None:
        value, path = found
    elif path[:1] == ("metrics",) and not _has_key(outputs.get(ref.name), "metrics"):
        recorded = ", ".join(sorted(metrics.get(ref.name, {}))[:20]) or "none"
        wanted = f"metric '{'.'.join(path[1:])}'" if len(path) > 1 else "metrics"
        raise ExpressionError(
            f"${{{ref.text}}}: task '{ref.name}' recorded no {wanted} (recorded: {recorded})"
        )
    else:
        if ref.name not in outputs:
            raise ExpressionError(f"${{{ref.text}}}: task '{ref.name}' has no output")
        value = outputs[ref.name]
    for key in path:
        if isinstance(value, Mapping):
            if key not in value:
                known = ", ".join(map(str, list(value)[:10]))
                raise ExpressionError(f"${{{ref.text}}}: no key '{key}' (keys: {known})")
            value = value[key]
        elif isinstance(value, list | tuple) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif not key.startswith("_") and hasattr(value, key):
            value = getattr(value, key)
        else:
            raise ExpressionError(f"${{{ref.text}}}: {type(value).__name__} has no '{key}'")
    return value


def _recorded(
    ref: Reference, metrics: Mapping[str, Mapping[str, float]]
) -> tuple[Any, tuple[str, ...]] | None:
    """What ``${TASK.metrics[.NAME...]}`` names of what ``TASK`` recorded (all of it, or
    the metric NAME, which may hold dots: the longest recorded name wins) and the keys
    left after it; ``None`` when it recorded no such metric."""
    recorded = metrics.get(ref.name)
    if not recorded:
        return None
    path = ref.path
    if len(path) == 1:
        return recorded, ()
    for end in range(len(path), 1, -1):
        name = ".".join(path[1:end])
        if name in recorded:
            return recorded[name], path[end:]
    return None


def _has_key(value: Any, key: str) -> bool:
    return isinstance(value, Mapping) and key in value


def _eval(node: ast.AST, refs: list[Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return _NAMES[node.id] if node.id in _NAMES else refs[int(node.id[5:])]
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = _eval(value, refs)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = _eval(value, refs)
            if result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, refs)
        if isinstance(node.op, ast.Not):
            return not operand
        _number(operand)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, refs), _eval(node.right, refs)
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            if len(left) + len(right) > MAX_STRING:
                raise _TooLarge(
                    f"joining strings would make {len(left) + len(right):,} characters "
                    f"(the limit is {MAX_STRING:,})"
                )
            return left + right
        _number(left)
        _number(right)
        _check_size(node.op, left, right)
        return _ARITH[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, refs)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, refs)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, refs) for e in node.elts]
    if isinstance(node, ast.Subscript):
        container, key = _eval(node.value, refs), _eval(node.slice, refs)
        return container[key]
    raise ExpressionError(f"{type(node).__name__} is not allowed")  # _check keeps us out


def _check_size(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse integer arithmetic beyond ``MAX_INT_BITS`` before it runs: a product of
    large integers (from a parameter or an output) is slow, and holds the run loop."""
    bits = [abs(v).bit_length() for v in (left, right) if isinstance(v, int)]
    made = sum(bits) if isinstance(op, ast.Mult) and len(bits) == 2 else max(bits, default=0)
    if made > MAX_INT_BITS:
        raise _TooLarge(
            f"arithmetic on integers of about {made:,} bits (a condition's integers have at "
            f"most {MAX_INT_BITS:,} bits, about {int(MAX_INT_BITS * 0.30103):,} digits; "
            "compare large numbers without arithmetic, or as floats)"
        )


def _number(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(f"arithmetic needs numbers, got {type(value).__name__} {value!r}")
