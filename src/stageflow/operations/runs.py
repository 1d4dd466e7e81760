"""Queries about runs: list them (filtered, a page at a time), show one, its logs.

Policy:

* **Listing** is newest first, by ``(created_at, run_id)`` descending, so runs
  created in the same instant still have one order. A page holds at most
  ``limit`` runs (1 to ``MAX_PAGE``); when more match, ``RunPage.cursor`` names
  the last run shown, and the next page starts strictly after it (keyset
  pagination: a run created meanwhile never shifts a page, nor is any run shown
  twice). A cursor is opaque text: base64url of ``[created_at, run_id]``.
* **Filters**: ``pipeline`` (exact name), ``states`` (any of them; each one of
  DESIGN.md's run states), ``since``/``until`` (creation time in ``[since, until)``).
  A filter that can match nothing by construction (an unknown state, ``since``
  not before ``until``) is a ``UsageError`` naming the field, not an empty page.
* **Lease status**: a run whose lease expired says so after its state
  (``running — w-3 silent since 12:01:07 UTC, will be taken over``), from
  ``engine.lease.silence`` at the time the caller passes.

Every function takes an opened store (``operations.stores``) and the time where
it matters; none prints.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageflow.errors import RunNotFound, UsageError
from stageflow.operations.arguments import check_run_id, check_task_id
from stageflow.runtime.result import RunResult, iso
from stageflow.runtime.store.base import (
    AttemptRecord,
    EventRecord,
    RunRecord,
    Store,
    TaskRunRecord,
)

if TYPE_CHECKING:
    from stageflow.spec.models import Pipeline

__all__ = [
    "MAX_ARTIFACT_BYTES",
    "MAX_PAGE",
    "RUN_STATES",
    "Artifact",
    "LeaseStatus",
    "LogFile",
    "RunDetail",
    "RunEventItem",
    "RunFilter",
    "RunPage",
    "RunSummary",
    "RunTimeline",
    "TaskLogs",
    "artifact_relpath",
    "decode_cursor",
    "encode_cursor",
    "lease_status",
    "list_runs",
    "paused_elsewhere",
    "run_artifact",
    "run_events",
    "run_timeline",
    "show_run",
    "task_logs",
]

#: The most runs one page holds.
MAX_PAGE = 1_000_000
#: DESIGN.md's run states (strings: listing runs does not load the engine).
RUN_STATES = ("queued", "running", "paused", "success", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs to list; every field given must match (``None``/empty: any)."""

    pipeline: str | None = None
    states: tuple[str, ...] = ()
    since: float | None = None  # created at or after
    until: float | None = None  # created before
    limit: int = 50
    cursor: str | None = None  # from the previous page's ``RunPage.cursor``
    triggered_by: str | None = None
    # Only the runs of this owner (a team; None: the runs of no owner, the CLI's):
    # what the API's non-admins see. ``owned_by`` unset: every owner's.
    owned_by: tuple[str | None] | None = None


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    """A run's lease as its listing shows it; ``note`` is set only when it expired."""

    owner: str
    epoch: int
    expires_at: float | None
    live: bool
    note: str | None  # e.g. "w-3 silent since 12:01:07 UTC, will be taken over"

    def as_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "epoch": self.epoch,
            "expires_at": iso(self.expires_at),
            "live": self.live,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One line of a run listing."""

    run_id: str
    pipeline: str
    pipeline_version: str
    state: str
    priority: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    lease: LeaseStatus | None  # None: never claimed
    attempt: int = 1  # its place in a run-level retry chain (runtime.run_retries)

    @property
    def status(self) -> str:
        """The state, followed by the lease's note when its owner went silent."""
        return _status(self.state, self.lease)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "state": self.state,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "lease": self.lease.as_json() if self.lease else None,
        }


def _status(state: str, lease: LeaseStatus | None) -> str:
    """``state``, followed by the lease's note when its owner went silent."""
    note = lease.note if lease else None
    return f"{state} — {note}" if note else state


@dataclass(frozen=True, slots=True)
class RunPage:
    """A page of runs, newest first; ``cursor`` fetches the next (``None``: no more)."""

    runs: list[RunSummary]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class RunDetail:
    """One run: its record, its task runs (as a ``RunResult``, with the critical path
    by measured durations), every attempt, its lease and the pipeline version it used."""

    run: RunRecord
    result: RunResult
    task_runs: list[TaskRunRecord]
    attempts: list[AttemptRecord]
    lease: LeaseStatus | None
    pipeline: Pipeline
    # Its run-level retry chain (``runtime.run_retries``): (the run it retries, its
    # attempt number), and (the run that retries it, when that is due); None: none.
    retry_of: tuple[str, int] | None = None
    retried_by: tuple[str, float] | None = None

    @property
    def status(self) -> str:
        return _status(self.run.state, self.lease)

    def retry_lines(self) -> list[str]:
        """The retry chain in words: ``attempt 3 (retry of R)``, ``retried by R2, due
        at T`` (what ``runs show`` prints under its first line)."""
        lines = []
        if self.retry_of is not None:
            lines.append(f"attempt {self.retry_of[1]} (retry of {self.retry_of[0]})")
        if self.retried_by is not None:
            lines.append(f"retried by {self.retried_by[0]}, due at {iso(self.retried_by[1])}")
        return lines

    def retry_json(self) -> dict[str, Any]:
        return {
            "attempt": self.retry_of[1] if self.retry_of is not None else 1,
            "retry_of": self.retry_of[0] if self.retry_of is not None else None,
            "retried_by": self.retried_by[0] if self.retried_by is not None else None,
            "retry_due_at": iso(self.retried_by[1]) if self.retried_by is not None else None,
        }


@dataclass(frozen=True, slots=True)
class RunTimeline:
    """A run's attempts in time, for a Gantt chart: ``task_ids`` in creation order."""

    run: RunRecord
    task_ids: list[str]
    attempts: list[AttemptRecord]


@dataclass(frozen=True, slots=True)
class LogFile:
    """One attempt's captured output."""

    attempt: int
    path: Path
    text: str


@dataclass(frozen=True, slots=True)
class TaskLogs:
    """What a task of a run wrote, attempt by attempt (empty: it wrote nothing)."""

    run_id: str
    task_id: str
    files: list[LogFile] = field(default_factory=list)


def list_runs(store: Store, which: RunFilter, *, now: float) -> RunPage:
    """A page of the runs ``which`` selects, newest first (see the module docstring).

    Raises ``UsageError`` (``field``: ``state``, ``since``, ``limit`` or ``cursor``)
    for a filter that cannot be right."""
    _check_filter(which)
    before = decode_cursor(which.cursor) if which.cursor is not None else None
    records = store.query_runs(
        pipeline=which.pipeline,
        states=tuple(dict.fromkeys(which.states)),
        since=which.since,
        until=which.until,
        before=before,
        limit=which.limit + 1,  # one more tells whether another page follows
        owner=which.owned_by[0] if which.owned_by else None,
        unowned=which.owned_by is not None and which.owned_by[0] is None,
        triggered_by=which.triggered_by,
    )
    shown = records[: which.limit]
    more = len(records) > which.limit
    cursor = encode_cursor(shown[-1].created_at, shown[-1].run_id) if more and shown else None
    return RunPage([_summary(r, now, _attempt(store, r)) for r in shown], cursor)


def _attempt(store: Store, run: RunRecord) -> int:
    """The run's attempt in its retry chain: read only for a retry (``retry:FIRST``)."""
    if not (run.triggered_by or "").startswith("retry:"):
        return 1
    link = store.retry_link(run.run_id)
    return 1 if link is None else link.attempt


def show_run(store: Store, run_id: str, *, now: float) -> RunDetail:
    """Run ``run_id`` with its task runs, attempts, lease and pipeline.

    Raises ``UsageError`` (a malformed id), ``RunNotFound``, and what
    ``runtime.loading.pipeline_of_run`` raises when its pipeline version is gone."""
    from stageflow.graph import critical_path
    from stageflow.runtime.loading import pipeline_of_run

    check_run_id(run_id)
    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    task_runs = store.task_runs(run_id)
    result = RunResult.from_records(run, task_runs, attempts)  # with table rows
    pipeline = pipeline_of_run(store, run)
    durations = {tid: t.duration_s for tid, t in result.tasks.items() if t.duration_s is not None}
    result.critical_path = critical_path(pipeline.upstream_map(), durations, default=0.0).tasks
    link = store.retry_link(run_id)
    return RunDetail(
        run,
        result,
        task_runs,
        attempts,
        lease_status(run, now),
        pipeline,
        retry_of=(link.retry_of, link.attempt) if link is not None else None,
        retried_by=store.retried_by(run_id),
    )


def run_timeline(store: Store, run_id: str) -> RunTimeline:
    """Run ``run_id``'s attempts with its task order; ``UsageError``, ``RunNotFound``."""
    check_run_id(run_id)
    run = store.get_run(run_id)
    task_ids = [t.task_id for t in store.task_runs(run_id)]
    return RunTimeline(run, task_ids, store.attempts(run_id))


def task_logs(
    store: Store, logs_dir: Path, run_id: str, task_id: str, *, attempt: int | None = None
) -> TaskLogs:
    """The captured stdout/stderr/logging of ``task_id`` in ``run_id`` (only attempt
    ``attempt`` when given), read whole.

    Raises ``UsageError`` for a malformed id or a task the run does not have (naming
    the closest one), ``RunNotFound``."""
    from stageflow.runtime.logs import attempt_log

    check_run_id(run_id)
    check_task_id(task_id, mapped=True)
    if attempt is not None and attempt < 1:
        raise UsageError(f"attempt {attempt}: attempts count from 1", field="attempt")
    store.get_run(run_id)
    known = [t.task_id for t in store.task_runs(run_id)]
    if task_id not in known:
        from stageflow.spec.suggest import did_you_mean

        hint = did_you_mean(task_id, sorted(known))
        raise UsageError(
            f"run '{run_id}' has no task '{task_id}'"
            + (f"; did you mean '{hint}'?" if hint else ""),
            task=task_id,
        )
    files = []
    for path in attempt_log(logs_dir, run_id, task_id):
        number = int(path.stem.split("-")[1])
        if attempt is None or number == attempt:
            files.append(LogFile(number, path, path.read_text(encoding="utf-8", errors="replace")))
    return TaskLogs(run_id, task_id, files)


def paused_elsewhere(store: Store, run_id: str, *, now: float) -> bool:
    """Whether ``run_id`` is paused and a live process (not a crashed one) runs it:
    then ``resume`` means unpause. Raises ``UsageError``, ``RunNotFound``."""
    from stageflow.runtime.claim import live_owner

    check_run_id(run_id)
    run = store.get_run(run_id)
    return run.state == "paused" and live_owner(run, now) is not None


def lease_status(run: RunRecord, now: float) -> LeaseStatus | None:
    """``run``'s lease at ``now``; ``None`` when it was never claimed."""
    if run.lease_owner is None:
        return None
    from stageflow.engine.lease import is_live, silence
    from stageflow.runtime.claim import holder_of

    return LeaseStatus(
        owner=run.lease_owner,
        epoch=run.lease_epoch,
        expires_at=run.lease_expires_at,
        live=is_live(run.lease_expires_at, now),
        note=silence(holder_of(run), now),
    )


def encode_cursor(created_at: float, run_id: str) -> str:
    """The opaque cursor of a page that ends with this run."""
    data = json.dumps([created_at, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """``(created_at, run_id)`` of a cursor made by ``encode_cursor``; ``UsageError``
    (field ``cursor``) for anything else."""
    bad = UsageError(
        f"cursor {cursor[:40]!r} is not one this store gave; pass the `cursor` of the "
        "previous page as it was, or leave it out to start from the newest run",
        field="cursor",
    )
    if len(cursor) > 400:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad from None
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not isinstance(data[0], int | float)
        or isinstance(data[0], bool)
        or not math.isfinite(data[0])
        or not isinstance(data[1], str)
    ):
        raise bad
    from stageflow.spec.validate import id_problem

    if id_problem(data[1], "run id") is not None:
        raise bad
    return float(data[0]), data[1]


def _check_filter(which: RunFilter) -> None:
    if not 1 <= which.limit <= MAX_PAGE:
        raise UsageError(
            f"limit {which.limit} is out of range; give 1 to {MAX_PAGE:,}", field="limit"
        )
    unknown = [s for s in which.states if s not in RUN_STATES]
    if unknown:
        from stageflow.spec.suggest import did_you_mean

        hint = did_you_mean(unknown[0], list(RUN_STATES))
        raise UsageError(
            f"state '{unknown[0]}' is not a run state; a run is one of {', '.join(RUN_STATES)}"
            + (f" (did you mean '{hint}'?)" if hint else ""),
            field="state",
        )
    for name in ("since", "until"):
        value = getattr(which, name)
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{name} must be a finite time", field=name)
    if which.since is not None and which.until is not None and which.since >= which.until:
        raise UsageError(
            f"since ({iso(which.since)}) is not before until ({iso(which.until)}); "
            "no run can match: swap them or widen the window",
            field="since",
        )


def _summary(run: RunRecord, now: float, attempt: int = 1) -> RunSummary:
    return RunSummary(
        run_id=run.run_id,
        pipeline=run.pipeline,
        pipeline_version=run.pipeline_version,
        state=run.state,
        priority=run.priority,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        lease=lease_status(run, now),
        attempt=attempt,
    )


@dataclass(frozen=True, slots=True)
class RunEventItem:
    """One state change of a run or of one of its tasks, with the position that resumes
    a stream right after it (``event_id``: ``COMMIT:INDEX``)."""

    event_id: str
    event: EventRecord

    def as_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "id": self.event_id,
            "run_id": e.run_id,
            "task_id": e.task_id,
            "from": e.from_state,
            "to": e.to_state,
            "at": iso(e.at),
            "attempt": e.attempt,
            "message": e.message,
        }


def run_events(
    store: Store, run_id: str, *, after: str | None = None, limit: int = 500
) -> list[RunEventItem]:
    """The run's state changes after position ``after`` (an ``event_id`` given before;
    ``None``: from the start), in commit order. ``UsageError`` for a position this
    stream did not give."""
    check_run_id(run_id)
    batch, index = 0, -1
    if after:
        head, _, tail = after.partition(":")
        if not (head.isascii() and head.isdecimal() and tail.isascii() and tail.isdecimal()):
            raise UsageError(
                f"event id {after!r} is not one this stream gave (COMMIT:INDEX)",
                field="Last-Event-ID",
            )
        batch, index = int(head), int(tail)
    out: list[RunEventItem] = []
    # The commit of ``after`` may hold events past its index: read it again.
    for batch_id, events in store.events_after(run_id, max(batch - 1, 0), limit):
        for i, event in enumerate(events):
            if (batch_id, i) > (batch, index):
                out.append(RunEventItem(f"{batch_id}:{i}", event))
    return out


#: The most bytes one artifact download returns (a larger file: read it from the store).
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024
#: A run's folders in the artifact store, by the first part of a download's path.
ARTIFACT_FOLDERS = {"outputs": "outputs", "files": "runs"}


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file of a run's artifacts: its path in the run (``outputs/TASK/attempt-1``,
    ``files/TASK/NAME``) and its bytes."""

    path: str
    data: bytes


def artifact_relpath(run_id: str, path: str) -> str:
    """Where ``path`` (a path within run ``run_id``'s artifacts) is under the artifact
    store's root; ``UsageError`` for a path that is not one (absolute, ``..``, a folder
    other than ``outputs/`` or ``files/``)."""
    check_run_id(run_id)
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or any(p in ("", ".", "..") for p in parts)
        or parts[0] not in ARTIFACT_FOLDERS
        or len(parts) < 2
    ):
        raise UsageError(
            f"artifact path {path!r} is not one of this run's: use outputs/TASK/FILE or "
            "files/TASK/FILE (no '..', no leading '/')",
            field="path",
        )
    return "/".join([ARTIFACT_FOLDERS[parts[0]], run_id, *parts[1:]])


def run_artifact(artifacts_root: str, run_id: str, path: str) -> Artifact:
    """The bytes of ``path`` within run ``run_id``'s artifacts (``artifact_relpath``).
    ``UsageError`` for a bad path, one that leads out of the run's folder (a link), or a
    file over ``MAX_ARTIFACT_BYTES``; ``RunNotFound`` (naming the path) when there is no
    such file."""
    import os

    from stageflow.runtime.artifacts import artifact_store

    relpath = artifact_relpath(run_id, path)
    store = artifact_store(artifacts_root)
    local = store.local_path(relpath)
    if local is None:  # a remote store: its keys cannot lead out of the run's prefix
        try:
            data = store.get(f"{store.root}/{relpath}")
        except FileNotFoundError:
            raise RunNotFound(f"run '{run_id}' has no artifact {path!r}") from None
        return Artifact(path, data)
    folder = store.local_path("/".join(relpath.split("/")[:2]))
    base = os.path.realpath(str(folder))
    target = os.path.realpath(str(local))
    if not target.startswith(base + os.sep):
        raise UsageError(f"artifact path {path!r} leads out of the run's folder", field="path")
    if not os.path.isfile(target):
        raise RunNotFound(f"run '{run_id}' has no artifact {path!r}")
    if os.path.getsize(target) > MAX_ARTIFACT_BYTES:
        raise UsageError(
            f"artifact {path!r} is over {MAX_ARTIFACT_BYTES:,} bytes; read it from the "
            "artifact store",
            field="path",
        )
    with open(target, "rb") as f:
        return Artifact(path, f.read())
