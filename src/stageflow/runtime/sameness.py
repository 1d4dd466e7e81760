"""Whether two task outputs hold the same content: ``runs diff``'s output check.

Two runs of one deterministic task store outputs whose bytes differ: paths
name each run's id (``.../runs/RUN_ID/train/model.joblib``), and pickle's
memo makes even equal models differ in length. So ``runs diff`` loads both
values and compares them here, structurally:

* ``str`` and ``bytes`` equal once each run's id is replaced by ``<run_id>``
  (dict keys and set members too);
* ``float`` within ``math.isclose(rel_tol=1e-9, abs_tol=1e-12)``, NaN equal to
  NaN; other scalars by ``==``; both values of the same type, always;
* ``dict`` by keys, ``list`` and ``tuple`` element-wise, sets by members;
* numpy arrays by shape and dtype, then floats with ``allclose`` (the same
  tolerances), structured arrays field by field, object and string arrays
  element-wise, the rest with ``array_equal``; numpy scalars by value;
* pandas objects with ``.equals``;
* functions by code, defaults and closure;
* any other object by type and what pickle would store of it
  (``__reduce_ex__``): for an estimator or a ``Pipeline``, its ``__dict__``;
  for a Cython tree, its node arrays.

The work is bounded: past ``MAX_DEPTH`` levels or ``MAX_ITEMS`` values, or on
anything that cannot be compared, the answer is "not the same", which is what
the hashes already said. State: one ``_Comparison`` per call, holding the count
of values seen and the pairs already entered (shared and cyclic references
are compared once).
"""

from __future__ import annotations

import math
import pickle
import sys
import types
from collections.abc import Hashable
from typing import Any

__all__ = [
    "FLOAT_ABS_TOL",
    "FLOAT_REL_TOL",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "PLACEHOLDER",
    "same_content",
]

#: What each run's id becomes in strings before they are compared.
PLACEHOLDER = "<run_id>"
FLOAT_REL_TOL = 1e-9
FLOAT_ABS_TOL = 1e-12
#: Nesting deeper than this is not compared (the values differ, as their hashes say).
MAX_DEPTH = 200
#: Nor are values holding more than this many parts (a numeric array counts once).
MAX_ITEMS = 1_000_000


def same_content(
    a: object,
    b: object,
    run_ids: tuple[str, str] = ("", ""),
    *,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
) -> bool:
    """Whether ``a`` (an output of run ``run_ids[0]``) and ``b`` (of run
    ``run_ids[1]``) hold the same content, by the rules of this module.

    Never raises for the values it is given: what cannot be compared, or would
    take more than ``max_depth`` levels or ``max_items`` parts, is not the same.
    """
    comparison = _Comparison(run_ids, max_depth, max_items)
    try:
        return comparison.same(a, b, 0)
    except (_Unbounded, RecursionError):
        return False
    except Exception:  # a value's own __eq__, __reduce_ex__ or equals failed
        return False


class _Unbounded(Exception):
    """The values are too deep or too large to compare."""


class _Comparison:
    def __init__(self, run_ids: tuple[str, str], max_depth: int, max_items: int) -> None:
        self.run_ids = run_ids
        self.max_depth = max_depth
        self.max_items = max_items
        self.items = 0
        self.entered: set[tuple[int, int]] = set()
        # The entered pairs are kept alive so that their ids are not reused by
        # temporaries (a __reduce_ex__ state) while this comparison runs.
        self.keep: list[tuple[object, object]] = []

    def same(self, a: Any, b: Any, depth: int) -> bool:
        self._count(1)
        if depth > self.max_depth:
            raise _Unbounded
        if type(a) is not type(b):
            return False
        if isinstance(a, str):
            return self._mask(a, 0) == self._mask(b, 1)
        if isinstance(a, bytes | bytearray):
            return self._mask_bytes(bytes(a), 0) == self._mask_bytes(bytes(b), 1)
        if isinstance(a, float):  # numpy's float64 too
            return _close(float(a), float(b))
        if isinstance(a, complex):
            return _close(a.real, b.real) and _close(a.imag, b.imag)
        if a is None or isinstance(a, int):
            return bool(a == b)
        if a is b:
            return True
        np = sys.modules.get("numpy")  # no numpy loaded: no numpy value here
        if np is not None:
            if isinstance(a, np.ndarray):
                return self._arrays(a, b, depth)
            if isinstance(a, np.generic):
                return bool(a.dtype == b.dtype) and self.same(a.item(), b.item(), depth + 1)
        if type(a).__module__.split(".")[0] == "pandas" and hasattr(a, "equals"):
            return bool(a.equals(b))
        if isinstance(a, type):
            return False  # two classes that are not the same class
        if not self._enter(a, b):
            return True  # being compared further up (a cycle) or already compared
        if isinstance(a, dict):
            return self._dicts(a, b, depth)
        if isinstance(a, list | tuple):
            return len(a) == len(b) and all(
                self.same(x, y, depth + 1) for x, y in zip(a, b, strict=True)
            )
        if isinstance(a, set | frozenset):
            self._count(len(a))
            return {self._key(x, 0) for x in a} == {self._key(y, 1) for y in b}
        if isinstance(a, types.FunctionType):
            return self._functions(a, b, depth)
        return self._objects(a, b, depth)

    def _count(self, n: int) -> None:
        self.items += n
        if self.items > self.max_items:
            raise _Unbounded

    def _enter(self, a: object, b: object) -> bool:
        pair = (id(a), id(b))
        if pair in self.entered:
            return False
        self.entered.add(pair)
        self.keep.append((a, b))
        return True

    def _mask(self, text: str, side: int) -> str:
        run_id = self.run_ids[side]
        return text.replace(run_id, PLACEHOLDER) if run_id else text

    def _mask_bytes(self, data: bytes, side: int) -> bytes:
        run_id = self.run_ids[side]
        return data.replace(run_id.encode(), PLACEHOLDER.encode()) if run_id else data

    def _key(self, key: Hashable, side: int) -> Hashable:
        if isinstance(key, str):
            return self._mask(key, side)
        if isinstance(key, bytes):
            return self._mask_bytes(key, side)
        if type(key) is tuple:
            return tuple(self._key(k, side) for k in key)
        return key

    def _dicts(self, a: dict[Any, Any], b: dict[Any, Any], depth: int) -> bool:
        if len(a) != len(b):
            return False
        keyed_a = {self._key(k, 0): v for k, v in a.items()}
        keyed_b = {self._key(k, 1): v for k, v in b.items()}
        if len(keyed_a) != len(a) or keyed_a.keys() != keyed_b.keys():
            return False
        return all(self.same(v, keyed_b[k], depth + 1) for k, v in keyed_a.items())

    def _arrays(self, a: Any, b: Any, depth: int) -> bool:
        import numpy as np

        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.names:
            return all(self._arrays(a[name], b[name], depth + 1) for name in a.dtype.names)
        kind = a.dtype.kind
        if kind in "fc":
            return bool(np.allclose(a, b, rtol=FLOAT_REL_TOL, atol=FLOAT_ABS_TOL, equal_nan=True))
        if kind in "OUS":
            self._count(a.size)
            return all(
                self.same(x, y, depth + 1)
                for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True)
            )
        return bool(np.array_equal(a, b))

    def _functions(self, a: types.FunctionType, b: types.FunctionType, depth: int) -> bool:
        cells = [[c.cell_contents for c in f.__closure__ or ()] for f in (a, b)]
        return (
            a.__qualname__ == b.__qualname__
            and a.__code__ == b.__code__
            and self.same(a.__defaults__, b.__defaults__, depth + 1)
            and self.same(a.__kwdefaults__, b.__kwdefaults__, depth + 1)
            and self.same(cells[0], cells[1], depth + 1)
        )

    def _objects(self, a: object, b: object, depth: int) -> bool:
        # What pickle stores: (constructor, arguments, state, items...); for a plain
        # object or an estimator the state is its __dict__.
        reduced_a = a.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        reduced_b = b.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        if isinstance(reduced_a, str) or isinstance(reduced_b, str):
            return reduced_a == reduced_b  # both stored by name: the same global
        parts_a, parts_b = _parts(reduced_a), _parts(reduced_b)
        if len(parts_a) != len(parts_b):
            return False
        return all(self.same(x, y, depth + 1) for x, y in zip(parts_a, parts_b, strict=True))


def _parts(reduced: tuple[Any, ...]) -> list[Any]:
    # The 4th and 5th parts, when present, are iterators over list items and dict
    # items: made lists so they compare as values.
    return [list(p) if i in (3, 4) and p is not None else p for i, p in enumerate(reduced)]


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL)
