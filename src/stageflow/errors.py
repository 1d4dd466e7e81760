"""The error tree: every user mistake is a ``StageflowError``.

::

    StageflowError                 a user mistake; message says where, what, how to fix
    ├── InvalidSpec                a pipeline spec has problems (holds every Problem)
    ├── SpecLimitExceeded          a spec file is over a size/depth/alias/task limit
    ├── DoesNotFitHere             (an InvalidSpec) requests larger than this machine
    ├── UnknownOperator            no operator registered under that name
    ├── RunNotFound                no run with that run_id in the store
    ├── RunOwned                   a claim refused: another process holds the run's lease
    ├── LeaseLost                  a commit refused: another process took the run over
    ├── ControlRefused             cancel/pause/approve/retry does not fit the run's state
    ├── StoreError                 the store cannot be opened/used (bad URL, newer schema)
    │   └── StoreUnreachable       its server went away: the connection is reopened on next use
    ├── MissingExtra               an optional dependency is not installed
    ├── ObjectStorageError         an object storage URL cannot be used (bucket, credentials)
    └── UsageError                 a bad CLI/API argument

A broken invariant (an illegal state transition) is a bug, not a user mistake:
it raises a plain exception (``IllegalTransition``), never a ``StageflowError``.

Each error carries ``pipeline``, ``task`` and ``field`` (any may be ``None``) so
the CLI and API can render them without parsing text.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ControlRefused",
    "DoesNotFitHere",
    "IllegalTransition",
    "InvalidSpec",
    "LeaseLost",
    "MissingExtra",
    "ObjectStorageError",
    "Problem",
    "RetryTaken",
    "RunIdTaken",
    "RunNotFound",
    "RunOwned",
    "SpecLimitExceeded",
    "StageflowError",
    "StoreError",
    "StoreUnreachable",
    "TickTaken",
    "UnknownOperator",
    "UsageError",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a spec: where it is and what to do about it."""

    message: str
    task: str | None = None
    field: str | None = None
    pipeline: str | None = None

    def render(self) -> str:
        """The message prefixed with its location, e.g. ``pipeline 'p', task 't': ...``."""
        where = []
        if self.pipeline is not None:
            where.append(f"pipeline '{self.pipeline}'")
        if self.task is not None:
            where.append(f"task '{self.task}'")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def as_json(self) -> dict[str, str | None]:
        return {"task": self.task, "field": self.field, "message": self.render()}


class StageflowError(Exception):
    """A user mistake. The message names the pipeline/task/field and the fix."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        pipeline: str | None = None,
        task: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.pipeline = pipeline
        self.task = task
        self.field = field

    @property
    def problems(self) -> list[Problem]:
        return [Problem(str(self), task=self.task, field=self.field)]


class InvalidSpec(StageflowError):
    """A spec has one or more problems; all of them are in ``problems``."""

    exit_code = 2

    def __init__(self, problems: list[Problem], *, pipeline: str | None = None) -> None:
        self._problems = list(problems)
        lines = [p.render() for p in self._problems]
        head = f"pipeline '{pipeline}' is invalid" if pipeline else "the pipeline spec is invalid"
        count = len(lines)
        summary = f"{head} ({count} problem{'s' if count != 1 else ''}):"
        super().__init__(
            "\n".join([summary, *("  - " + line for line in lines)]), pipeline=pipeline
        )

    @property
    def problems(self) -> list[Problem]:
        return list(self._problems)


class DoesNotFitHere(InvalidSpec):
    """Task requests larger than this machine's capacity: the spec is fine, this
    machine is too small (a worker leaves such a run for a bigger one)."""


class SpecLimitExceeded(InvalidSpec):
    """A spec file is over one of the bounded limits (size, depth, aliases, tasks)."""

    def __init__(self, message: str, *, limit: str) -> None:
        self.limit = limit
        super().__init__([Problem(message)])


class UnknownOperator(StageflowError):
    exit_code = 2


class RunNotFound(StageflowError):
    pass


class RunIdTaken(StageflowError):
    """A new run's id is in the store already (two ids drawn alike): draw another."""


class TickTaken(StageflowError):
    """A schedule's tick made its run already (another scheduler fired it first)."""


class RetryTaken(StageflowError):
    """A failed run has its retry already (another process created it first), or a
    schedule's object fired its run already."""


class RunOwned(StageflowError):
    """A claim of a run was refused: another process holds its lease (``owner``)."""

    def __init__(self, message: str, *, owner: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class LeaseLost(StageflowError):
    """A commit of a run was refused: its lease was taken over (by ``owner``), so this
    process no longer runs it and commits nothing more (fencing)."""

    def __init__(self, message: str, *, owner: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class ControlRefused(StageflowError):
    """A run control request (cancel, pause, unpause, approve, retry) that the run's
    state does not allow: it ended, no live process runs it, the task does not await
    approval, or the caller is not one of its approvers."""


class StoreError(StageflowError):
    pass


class StoreUnreachable(StoreError):
    """The store's server cannot be reached, or the connection to it was lost: trying
    again later may succeed (the store reopens its connection on next use). At a
    command's start it is the user's to fix (the URL, the server): exit 2."""

    exit_code = 2


class MissingExtra(StageflowError):
    pass


class ObjectStorageError(StageflowError):
    """An object storage URL (``s3://`` ...) cannot be read or written: no such
    bucket or object, credentials refused, the endpoint unreachable. ``retryable``:
    trying again later may succeed (false for a missing bucket or refused credentials)."""

    exit_code = 2

    def __init__(self, message: str, *, retryable: bool = False, **where: str | None) -> None:
        super().__init__(message, **where)
        self.retryable = retryable


class UsageError(StageflowError):
    exit_code = 2


class IllegalTransition(RuntimeError):
    """A task or run moved along an edge not in DESIGN.md's table: a bug in stageflow."""
