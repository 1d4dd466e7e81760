"""The ``search_space`` operator: hyperparameter candidates, one task run each.

``space`` maps each hyperparameter to the values to try. ``method: grid``
gives every combination, in a stable order: the first hyperparameter varies
slowest and each one's values come in the order listed (as
``itertools.product``). ``method: random`` gives ``n_iter`` distinct
combinations of that grid drawn with ``seed`` (the same space and seed give
the same candidates), at most the grid's size, listed in grid order.

Output: a list of ``{"kind": "candidate", "index": k, "hyperparameters":
{...}}`` where ``index`` is the candidate's place in the list, so a task
mapped over this one (``map_over:``) runs ``id[k]`` with candidate ``k``. A
``model_training`` child merges the candidate's hyperparameters over its own
``hyperparameters`` and its output's ``candidate`` says which it trained; a
``model_evaluation`` mapped over the training keeps that record, and
``model_selection`` ranks the list a mapped task outputs, so the best
candidate is one task further.

Example::

    - id: candidates
      operator: search_space
      parameters:
        method: random
        n_iter: 5
        seed: 42
        space: {n_estimators: [20, 50, 100], max_depth: [2, 4, null]}
    - id: train
      operator: model_training
      upstream: [features, candidates]
      map_over: candidates
      parameters: {algorithm: random_forest, seed: 42}
    - id: evaluate
      operator: model_evaluation
      upstream: [features, train]
      map_over: train
    - id: select_best
      operator: model_selection
      upstream: [evaluate]
      parameters: {metric: f1}
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stageflow.operators.base import Operator, TaskContext
from stageflow.operators.metadata import record

__all__ = ["SearchSpace", "SearchSpaceParams", "candidates"]


class SearchSpaceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["grid", "random"] = Field(
        default="grid",
        description="grid: every combination; random: n_iter distinct combinations drawn by seed",
    )
    space: dict[str, list[Any]] = Field(
        description="hyperparameter -> the values to try, e.g. {max_depth: [3, 5, null]}"
    )
    n_iter: int = Field(
        default=10, description="random: how many candidates (at most the grid's size)"
    )
    seed: int = Field(default=0, description="random: the seed of the draw")

    @field_validator("space", mode="before")
    @classmethod
    def _lists_of_values(cls, space: Any) -> Any:
        if not isinstance(space, Mapping):
            raise ValueError(
                "space must map each hyperparameter to a list of values, "
                "e.g. {max_depth: [3, 5], n_estimators: [50, 100]}"
            )
        if not space:
            raise ValueError(
                "space is empty; give at least one hyperparameter with a list of values, "
                "e.g. {max_depth: [3, 5]}"
            )
        for name, values in space.items():
            if not isinstance(values, list | tuple):
                raise ValueError(
                    f"space.{name} is {values!r}, not a list of values to try; "
                    f"write it as a list, e.g. {name}: [{values!r}]"
                )
            if not values:
                raise ValueError(f"space.{name} is an empty list; give at least one value")
            for i, value in enumerate(values):
                if any(_same(value, other) for other in values[:i]):
                    raise ValueError(f"space.{name} lists {value!r} more than once")
        return space

    @field_validator("n_iter")
    @classmethod
    def _at_least_one(cls, n_iter: int) -> int:
        if n_iter < 1:
            raise ValueError(f"n_iter is {n_iter}; random search needs at least 1 candidate")
        return n_iter

    @model_validator(mode="after")
    def _n_iter_is_random(self) -> SearchSpaceParams:
        if self.method == "grid" and "n_iter" in self.model_fields_set:
            raise ValueError(
                "n_iter applies to method: random (grid tries every combination); "
                "remove n_iter or set method: random"
            )
        return self


class SearchSpace(Operator):
    """Hyperparameter candidates (grid or random) for a mapped training task."""

    name = "search_space"
    Params = SearchSpaceParams

    def run(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, SearchSpaceParams)
        out = candidates(params)
        size = grid_size(params.space)
        record(
            ctx,
            metrics={"candidates": len(out), "grid_size": size},
            info={"method": params.method, "space": params.space},
        )
        print(f"{params.method} search: {len(out)} of {size} combinations")
        for item in out:
            shown = ", ".join(f"{k}={v!r}" for k, v in item["hyperparameters"].items())
            print(f"  [{item['index']}] {shown}")
        return out


OPERATOR = SearchSpace


def grid_size(space: Mapping[str, list[Any]]) -> int:
    """How many combinations ``space`` has."""
    return math.prod(len(values) for values in space.values())


def candidates(params: SearchSpaceParams) -> list[dict[str, Any]]:
    """The candidate records ``params`` describe (see the module docstring)."""
    names = list(params.space)
    columns = [params.space[n] for n in names]
    if params.method == "grid":
        combos: list[tuple[Any, ...]] = list(itertools.product(*columns))
    else:
        size = grid_size(params.space)
        # sample() over a range never materialises the grid and never repeats.
        drawn = random.Random(params.seed).sample(range(size), min(params.n_iter, size))
        combos = [_combination(columns, position) for position in sorted(drawn)]
    return [
        {"kind": "candidate", "index": k, "hyperparameters": dict(zip(names, combo, strict=True))}
        for k, combo in enumerate(combos)
    ]


def _combination(columns: list[list[Any]], position: int) -> tuple[Any, ...]:
    """The ``position``-th combination in ``itertools.product(*columns)`` order."""
    picked: list[Any] = []
    for values in reversed(columns):
        position, at = divmod(position, len(values))
        picked.append(values[at])
    return tuple(reversed(picked))


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and bool(a == b)
