"""Row-level expressions over a DataFrame, for ``data_validation`` and
``data_processing`` (``filter``, ``derive``): never ``eval``.

``amount >= 0 and (country in ['FR', 'DE'] or not is_foreign)`` is parsed with
``ast.parse`` (which runs nothing), every node is checked against a whitelist,
and the tree is interpreted column-wise with pandas operations, so a rule over
a million rows costs a few vectorised passes. Names are columns (a name with
spaces or dashes goes in backticks: ```unit price` > 0``); ``true``/``false``/
``null`` are literals. Allowed: numbers, strings, lists of literals,
``and or not``, comparisons (chained too), ``in``/``not in`` a list,
``+ - * / // % **``, and the functions ``abs``, ``isnull``, ``notnull``,
``length``, ``lower``, ``upper``. Missing values make a comparison false.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from typing import Any

__all__ = ["ExpressionError", "evaluate_rows", "evaluate_values", "parse_rows"]

MAX_LENGTH = 2000
MAX_DEPTH = 32
_BACKTICK = re.compile(r"`([^`]+)`")
_LITERALS = {"true": True, "false": False, "null": None, "True": True, "False": False}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCTIONS = ("abs", "isnull", "notnull", "length", "lower", "upper")


class ExpressionError(ValueError):
    """The expression is not allowed or cannot be evaluated; the message says why."""


def parse_rows(text: str) -> tuple[ast.Expression, dict[str, str]]:
    """The checked tree of ``text`` and its backticked column names by placeholder.

    Raises ``ExpressionError`` for syntax errors and anything outside the whitelist.
    """
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(text)} characters; the limit is {MAX_LENGTH}")
    quoted: dict[str, str] = {}

    def _placeholder(match: re.Match[str]) -> str:
        name = f"_col{len(quoted)}_"
        quoted[name] = match.group(1)
        return name

    source = _BACKTICK.sub(_placeholder, text)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse {text!r}: {exc.msg}") from None
    _check(tree.body, 0, text)
    return tree, quoted


def evaluate_rows(text: str, frame: Any) -> Any:
    """A boolean Series: for each row of ``frame``, whether ``text`` holds.

    Raises ``ExpressionError`` for a disallowed expression or an unknown column.
    """
    import pandas as pd

    tree, quoted = parse_rows(text)
    value = _eval(tree.body, frame, quoted)
    if not isinstance(value, pd.Series):
        return pd.Series(bool(value), index=frame.index)
    if value.dtype != bool:
        value = value.astype("boolean").fillna(False).astype(bool)
    return value


def evaluate_values(text: str, frame: Any) -> Any:
    """The value of ``text`` for each row of ``frame``, as a Series (a constant is
    repeated): ``quantity * unit_price``, ``lower(country)``, ``amount > 100``.

    Raises ``ExpressionError`` for a disallowed expression, an unknown column, or a
    list (which is no column value).
    """
    import pandas as pd

    tree, quoted = parse_rows(text)
    value = _eval(tree.body, frame, quoted)
    if isinstance(value, list):
        raise ExpressionError("a list is not a column value")
    if not isinstance(value, pd.Series):
        return pd.Series([value] * len(frame), index=frame.index)
    return value


def _check(node: ast.AST, depth: int, text: str) -> None:
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression {text!r} nests deeper than {MAX_DEPTH}")
    allowed = (
        ast.BoolOp,
        ast.UnaryOp,
        ast.Compare,
        ast.BinOp,
        ast.Name,
        ast.Constant,
        ast.List,
        ast.Tuple,
        ast.Call,
        ast.Load,
        ast.And,
        ast.Or,
        ast.Not,
        ast.USub,
        ast.UAdd,
        ast.In,
        ast.NotIn,
        *_COMPARE,
        *_ARITH,
    )
    if not isinstance(node, allowed):
        raise ExpressionError(f"{type(node).__name__} is not allowed in {text!r}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ExpressionError(
                f"only the functions {', '.join(_FUNCTIONS)} may be called in {text!r}"
            )
        if node.keywords or len(node.args) != 1:
            raise ExpressionError(f"{node.func.id}() takes one argument, in {text!r}")
        _check(node.args[0], depth + 1, text)
        return
    for child in ast.iter_child_nodes(node):
        _check(child, depth + 1, text)


def _eval(node: ast.AST, frame: Any, quoted: dict[str, str]) -> Any:
    import pandas as pd

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _LITERALS:
            return _LITERALS[node.id]
        column = quoted.get(node.id, node.id)
        if column not in frame.columns:
            raise ExpressionError(f"unknown column '{column}'")
        return frame[column]
    if isinstance(node, ast.List | ast.Tuple):
        items = [_eval(e, frame, quoted) for e in node.elts]
        if any(isinstance(i, pd.Series) for i in items):
            raise ExpressionError("a list may hold only literals")
        return items
    if isinstance(node, ast.BoolOp):
        values = [_as_bool(_eval(v, frame, quoted)) for v in node.values]
        joined = values[0]
        for v in values[1:]:
            joined = (joined & v) if isinstance(node.op, ast.And) else (joined | v)
        return joined
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, frame, quoted)
        if isinstance(node.op, ast.Not):
            b = _as_bool(operand)
            return ~b if isinstance(b, pd.Series) else not b
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, frame, quoted)
        right = _eval(node.right, frame, quoted)
        try:
            return _ARITH[type(node.op)](left, right)
        except (TypeError, ZeroDivisionError) as exc:
            raise ExpressionError(f"cannot compute {ast.unparse(node)}: {exc}") from None
    if isinstance(node, ast.Compare):
        left = _eval(node.left, frame, quoted)
        result: Any = True
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, frame, quoted)
            part = _compare(op, left, right, node)
            result = part if result is True else (result & part)
            left = right
        return result
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        arg = _eval(node.args[0], frame, quoted)
        return _call(node.func.id, arg)
    raise ExpressionError(f"{type(node).__name__} is not allowed")


def _compare(op: ast.cmpop, left: Any, right: Any, node: ast.AST) -> Any:
    import pandas as pd

    if isinstance(op, ast.In | ast.NotIn):
        if not isinstance(right, list):
            raise ExpressionError(f"'in' needs a list on its right, in {ast.unparse(node)}")
        hit = left.isin(right) if isinstance(left, pd.Series) else left in right
        return ~hit if isinstance(op, ast.NotIn) else hit
    try:
        value = _COMPARE[type(op)](left, right)
    except TypeError as exc:
        raise ExpressionError(f"cannot compare in {ast.unparse(node)}: {exc}") from None
    if isinstance(value, pd.Series):
        value = value.astype("boolean").fillna(False).astype(bool)
    return value


def _call(name: str, arg: Any) -> Any:
    import pandas as pd

    series = arg if isinstance(arg, pd.Series) else None
    if name == "abs":
        return abs(arg)
    if name == "isnull":
        return series.isna() if series is not None else arg is None
    if name == "notnull":
        return series.notna() if series is not None else arg is not None
    if series is None:
        text = str(arg)
        return {"length": len(text), "lower": text.lower(), "upper": text.upper()}[name]
    strings = series.astype("string")
    if name == "length":
        return strings.str.len()
    return strings.str.lower() if name == "lower" else strings.str.upper()


def _as_bool(value: Any) -> Any:
    import pandas as pd

    if isinstance(value, pd.Series):
        return value.astype("boolean").fillna(False).astype(bool)
    return bool(value)
