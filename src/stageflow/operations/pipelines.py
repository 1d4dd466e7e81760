"""Queries about pipelines: which the store knows, and their versions.

A pipeline version is saved (by content hash of its canonical spec) when a run
of it is created, so the store knows exactly the pipelines that were run or
submitted. ``list_pipelines`` gives one summary per name (sorted); a name's
versions are newest first, each with how many runs used it. One store query
each (``Store.pipeline_versions``). No state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stageflow.errors import StageflowError
from stageflow.runtime.result import iso
from stageflow.runtime.store.base import Store, VersionCount

__all__ = [
    "PipelineSummary",
    "PipelineVersion",
    "list_pipelines",
    "pipeline_spec",
    "pipeline_versions",
]


@dataclass(frozen=True, slots=True)
class PipelineVersion:
    """One saved version of a pipeline and the runs that used it."""

    pipeline: str
    version: str
    saved_at: float
    runs: int
    last_run_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "version": self.version,
            "saved_at": iso(self.saved_at),
            "runs": self.runs,
            "last_run_at": iso(self.last_run_at),
        }


@dataclass(frozen=True, slots=True)
class PipelineSummary:
    """A pipeline the store knows: its newest version and its runs over all versions."""

    name: str
    versions: int
    latest_version: str
    latest_saved_at: float
    runs: int
    last_run_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": self.versions,
            "latest_version": self.latest_version,
            "latest_saved_at": iso(self.latest_saved_at),
            "runs": self.runs,
            "last_run_at": iso(self.last_run_at),
        }


def list_pipelines(store: Store) -> list[PipelineSummary]:
    """Every pipeline in the store, by name."""
    by_name: dict[str, list[VersionCount]] = {}
    for row in store.pipeline_versions():
        by_name.setdefault(row.pipeline, []).append(row)
    out = []
    for name, rows in by_name.items():  # newest version first within a name
        last = [r.last_run_at for r in rows if r.last_run_at is not None]
        out.append(
            PipelineSummary(
                name=name,
                versions=len(rows),
                latest_version=rows[0].version,
                latest_saved_at=rows[0].saved_at,
                runs=sum(r.runs for r in rows),
                last_run_at=max(last) if last else None,
            )
        )
    return out


def pipeline_versions(store: Store, name: str) -> list[PipelineVersion]:
    """The saved versions of pipeline ``name``, newest first. Raises ``StageflowError``
    (field ``pipeline``, naming the closest name) when the store has none of that name."""
    rows = store.pipeline_versions(name)
    if not rows:
        raise _unknown(store, name)
    return [PipelineVersion(*row) for row in rows]


def pipeline_spec(store: Store, name: str, version: str = "latest") -> dict[str, Any]:
    """The saved spec of ``name`` at ``version`` (``latest``: the newest) as plain JSON
    data. Raises ``StoreError`` naming the pipeline when there is no such version."""
    record = (
        store.latest_pipeline(name) if version == "latest" else store.get_pipeline(name, version)
    )
    data = json.loads(record.spec_json)
    return data if isinstance(data, dict) else {}


def _unknown(store: Store, name: str) -> StageflowError:
    from stageflow.spec.suggest import did_you_mean

    hint = did_you_mean(name, store.pipeline_names())
    return StageflowError(
        f"no pipeline '{name}' in the store at {store.url}; "
        + (
            f"did you mean '{hint}'?"
            if hint
            else "a pipeline is saved when a run of it is created (`stageflow runs list`)"
        ),
        pipeline=name,
        field="pipeline",
    )
