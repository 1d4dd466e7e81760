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

Bounds, so that no formula can hold the CPU or fill memory (a Python integer
power holds the GIL, so not even a task's timeout could stop it):

* ``**`` takes a literal exponent from -64 to 64 (``MAX_EXPONENT``), and no
  tower: ``a ** b ** c`` and ``(a ** b) ** c`` are refused;
* an integer the expression makes (not a column's fixed-width number) has at
  most 4,096 bits (``MAX_INT_BITS``, about 1,233 digits);
* a text or list made by ``*`` (repetition) or ``+`` holds at most 1,000,000
  characters or items (``MAX_TEXT``), and 100,000,000 over a whole column
  (``MAX_TEXT_TOTAL``);
* ``%`` is the remainder of numbers only (on text it would format it).

The parts without columns are computed when the expression is parsed, so a spec
that breaks a bound fails ``stageflow validate``; the rest is checked on the
data before each operation runs.
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
MAX_EXPONENT = 64
MAX_INT_BITS = 4096
MAX_TEXT = 1_000_000
MAX_TEXT_TOTAL = 100_000_000
_SEQUENCES = (str, bytes, list, tuple)
_PLACEHOLDER = re.compile(r"\b_col\d+_\b")
#: Errors pandas, numpy and pyarrow raise for values an operation cannot take.
_VALUE_ERRORS = (TypeError, ValueError, ArithmeticError, NotImplementedError)
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
    _check_powers(tree.body, text, quoted)
    try:
        _fold(tree.body, quoted)
    except ExpressionError as exc:
        raise ExpressionError(f"{exc} in {text!r}") from None
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
        try:
            return -operand if isinstance(node.op, ast.USub) else +operand
        except _VALUE_ERRORS as exc:
            raise ExpressionError(f"cannot compute {_show(node, quoted)}: {exc}") from None
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, frame, quoted)
        right = _eval(node.right, frame, quoted)
        _check_growth(node, left, right, quoted)
        try:
            return _ARITH[type(node.op)](left, right)
        except _VALUE_ERRORS as exc:
            raise ExpressionError(f"cannot compute {_show(node, quoted)}: {exc}") from None
    if isinstance(node, ast.Compare):
        left = _eval(node.left, frame, quoted)
        result: Any = True
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, frame, quoted)
            part = _compare(op, left, right, node, quoted)
            result = part if result is True else (result & part)
            left = right
        return result
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        arg = _eval(node.args[0], frame, quoted)
        try:
            return _call(node.func.id, arg)
        except _VALUE_ERRORS as exc:
            raise ExpressionError(f"cannot compute {_show(node, quoted)}: {exc}") from None
    raise ExpressionError(f"{type(node).__name__} is not allowed")


def _compare(op: ast.cmpop, left: Any, right: Any, node: ast.AST, quoted: dict[str, str]) -> Any:
    import pandas as pd

    if isinstance(op, ast.In | ast.NotIn):
        if not isinstance(right, list):
            raise ExpressionError(f"'in' needs a list on its right, in {_show(node, quoted)}")
        hit = left.isin(right) if isinstance(left, pd.Series) else left in right
        return ~hit if isinstance(op, ast.NotIn) else hit
    try:
        value = _COMPARE[type(op)](left, right)
    except _VALUE_ERRORS as exc:
        texts = [isinstance(v, pd.Series) and _has_text(v) for v in (left, right)]
        hint = (
            " (a column of text that holds numbers needs a `cast` step first)"
            if any(texts) and not all(texts)
            else ""
        )
        raise ExpressionError(f"cannot compare {_show(node, quoted)}: {exc}{hint}") from None
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


# -- bounds (see the module docstring) ---------------------------------------------------


def _check_powers(node: ast.AST, text: str, quoted: dict[str, str]) -> None:
    """Refuse a literal exponent beyond ``MAX_EXPONENT`` and a power of a power."""
    for sub in ast.walk(node):
        if not isinstance(sub, ast.BinOp) or not _is_power(sub):
            continue
        shown = _show(sub, quoted)
        base = sub.left
        while isinstance(base, ast.UnaryOp):
            base = base.operand
        # A tower: a ** b ** c is a ** (b ** c); (a ** b) ** c is one too. A power
        # inside a sum may be raised ((x ** 2 + y ** 2) ** 0.5): run-time bounds hold it.
        if _is_power(base) or any(_is_power(n) for n in ast.walk(sub.right)):
            raise ExpressionError(
                f"{shown} raises a power to a power (write a single power, with an exponent "
                f"from -{MAX_EXPONENT} to {MAX_EXPONENT}) in {text!r}"
            )
        exponent = _literal_number(sub.right)
        if exponent is not None and abs(exponent) > MAX_EXPONENT:
            raise ExpressionError(
                f"the exponent of {shown} is above {MAX_EXPONENT} (`**` takes an exponent "
                f"from -{MAX_EXPONENT} to {MAX_EXPONENT}) in {text!r}"
            )


def _is_power(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)


def _literal_number(node: ast.expr) -> int | float | None:
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return sign * node.value
    return None


def _fold(node: ast.AST, quoted: dict[str, str]) -> None:
    """Compute each part of ``node`` that names no column, so that a bound it breaks
    (``'a' * 10 ** 9``) is found before any data is read; the values are dropped."""
    if not isinstance(node, ast.expr):
        return  # an operator or a context: nothing to compute
    nodes = list(ast.walk(node))
    functions = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    if not any(
        isinstance(n, ast.Name) and n.id not in _LITERALS and id(n) not in functions for n in nodes
    ):
        _eval(node, None, quoted)
        return
    for child in ast.iter_child_nodes(node):
        _fold(child, quoted)


def _show(node: ast.AST, quoted: dict[str, str]) -> str:
    """``node`` as the user wrote it: backticked column names, not their placeholders."""
    return _PLACEHOLDER.sub(
        lambda m: f"`{quoted[m.group()]}`" if m.group() in quoted else m.group(),
        ast.unparse(node),
    )


def _check_growth(node: ast.BinOp, left: Any, right: Any, quoted: dict[str, str]) -> None:
    """Refuse ``left <op> right`` before it runs when it would make an integer above
    ``MAX_INT_BITS`` or a text/list above ``MAX_TEXT``/``MAX_TEXT_TOTAL``.

    Only Python objects can grow (scalars, and the values of object columns): a
    column of numbers is fixed-width, so numpy wraps or raises instead.
    """
    op = node.op
    if isinstance(op, ast.Mult):
        for seq, count in ((left, right), (right, left)):
            lengths, counts = _lengths(seq), _counts(count)
            if lengths is not None and counts is not None:
                _check_text(lengths * counts, node, quoted)
        left_bits, right_bits = _int_bits(left), _int_bits(right)
        if left_bits and right_bits and _python_ints(left, right):
            _check_bits(left_bits + right_bits, node, quoted)
    elif isinstance(op, ast.Add):
        left_lengths, right_lengths = _lengths(left), _lengths(right)
        if left_lengths is not None or right_lengths is not None:
            _check_text(
                (0 if left_lengths is None else left_lengths)
                + (0 if right_lengths is None else right_lengths),
                node,
                quoted,
            )
    elif isinstance(op, ast.Pow):
        base_bits, exponent = _int_bits(left), _int_count(right)
        if base_bits and exponent and _python_ints(left, right):
            _check_bits(base_bits * exponent, node, quoted)
    elif isinstance(op, ast.Mod) and _has_text(left):
        raise ExpressionError(
            f"cannot compute {_show(node, quoted)} (`%` is the remainder of two numbers; "
            "it does not format text)"
        )


def _check_bits(bits: int, node: ast.AST, quoted: dict[str, str]) -> None:
    if bits > MAX_INT_BITS:
        raise ExpressionError(
            f"{_show(node, quoted)} would make an integer of about {bits:,} bits (an "
            f"expression's integers have at most {MAX_INT_BITS:,} bits, about "
            f"{int(MAX_INT_BITS * 0.30103):,} digits; for a larger number write a float, "
            "10.0 not 10)"
        )


def _check_text(sizes: Any, node: ast.AST, quoted: dict[str, str]) -> None:
    import pandas as pd

    if isinstance(sizes, pd.Series):
        largest = float(sizes.max()) if len(sizes) else 0.0
        total = float(sizes.sum())
    else:
        largest = total = float(sizes)
    if largest > MAX_TEXT:
        raise ExpressionError(
            f"{_show(node, quoted)} would make a text or list of {largest:,.0f} characters "
            f"or items (the limit is {MAX_TEXT:,} per value)"
        )
    if total > MAX_TEXT_TOTAL:
        raise ExpressionError(
            f"{_show(node, quoted)} would make {total:,.0f} characters or items over the "
            f"column (the limit is {MAX_TEXT_TOTAL:,})"
        )


def _lengths(value: Any) -> Any:
    """The length of each text/list in ``value`` (a number, or a Series of them, 0 for
    other values); None when ``value`` cannot hold one."""
    import pandas as pd

    if isinstance(value, pd.Series):
        if isinstance(value.dtype, pd.StringDtype):
            return value.str.len().astype(float).fillna(0.0)
        if value.dtype == object:
            return value.map(lambda v: len(v) if isinstance(v, _SEQUENCES) else 0).astype(float)
        return None
    return len(value) if isinstance(value, _SEQUENCES) else None


def _counts(value: Any) -> Any:
    """How many times ``value`` would repeat a text/list (a number or a Series, capped
    past the bounds so no sum overflows); None when it holds no integers."""
    import pandas as pd

    cap = 10**18  # far above the bounds, and exact as a float
    if isinstance(value, pd.Series):
        if value.dtype.kind in "iub":
            return value.astype(float).fillna(0.0).clip(0, cap)
        if value.dtype == object:
            return value.map(lambda v: min(max(v, 0), cap) if isinstance(v, int) else 0).astype(
                float
            )
        return None
    return min(max(value, 0), cap) if isinstance(value, int) else None


def _python_ints(left: Any, right: Any) -> bool:
    """Whether integer arithmetic on ``left`` and ``right`` is Python's (which grows):
    on two scalars, or with a column of objects (pandas then makes the other side's
    numbers Python integers too); otherwise it is numpy's, fixed-width."""
    import pandas as pd

    columns = [v for v in (left, right) if isinstance(v, pd.Series)]
    return not columns or any(v.dtype == object for v in columns)


def _int_bits(value: Any) -> int:
    """The size in bits of the largest integer in ``value`` (0: it holds none)."""
    return _int_count(value).bit_length()


def _int_count(value: Any) -> int:
    """The largest magnitude of an integer in ``value`` (0: it holds none)."""
    import pandas as pd

    if isinstance(value, pd.Series):
        if value.dtype == object:
            return max((abs(v) for v in value if isinstance(v, int)), default=0)
        if value.dtype.kind in "iub" and value.notna().any():
            return max(abs(int(value.min())), abs(int(value.max())))
        return 0
    return abs(value) if isinstance(value, int) else 0


def _has_text(value: Any) -> bool:
    import pandas as pd

    if isinstance(value, pd.Series):
        if isinstance(value.dtype, pd.StringDtype):
            return True
        return value.dtype == object and any(isinstance(v, str | bytes) for v in value)
    return isinstance(value, str | bytes)
