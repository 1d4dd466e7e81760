"""Reproducibility records, ``runs diff`` and lineage.

Every run gets one record (table ``run_records``, JSON keyed by ``run_id``),
written when the run starts and completed when it ends:

* ``spec``: the pipeline's version (content hash) and the sha256 of its
  canonical JSON; the file it came from and that file's sha256;
* ``params`` and ``seeds`` (run parameters and task parameters named ``seed``
  or ``random_state``);
* ``code``: the git commit and a dirty flag of the repository holding the
  pipeline's file (or the working directory);
* ``environment``: Python version, platform, every installed package with
  its version and one hash over them all;
* ``tasks``: what each task recorded (``operators.metadata``): metrics, data
  read and files written, with content hashes. Task outputs' hashes are the
  ``outputs`` table's ``sha256`` and are not copied.

Reads and writes also go to ``artifact_links`` (run, task, read/write, URI,
sha256), indexed by hash and URI, so ``lineage`` can find who produced and
who consumed a file or a piece of data across runs.

The start record is cheap (no subprocess, no file scan): git and the package
list are gathered by one of the process's helper threads (at most 4, shared by
its runs) while the tasks run, and waited for at the end; a folder's git state is
read at most once a second while its repository's HEAD, index and branch are
unchanged (``recent_git_state``), not once per run. A failure here never
fails the run: it is logged and the record notes it.
With ``Settings.tracking`` the end of the run is also logged to MLflow
(``runtime.tracking``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stageflow.operators.metadata import read_metadata
from stageflow.runtime.result import RunResult
from stageflow.runtime.settings import Settings
from stageflow.runtime.store.base import Batch, OutputRef, RecordText, RunRecord, Store
from stageflow.spec.models import Pipeline

__all__ = [
    "RunRecorder",
    "diff_runs",
    "installed_packages",
    "lineage",
    "load_record",
    "recent_git_state",
    "start_recording",
]

logger = logging.getLogger(__name__)

SEED_NAMES = ("seed", "random_state", "random_seed")
#: ``runs diff``: metrics this close are the same figure (float noise, not a change).
METRIC_REL_TOL = 1e-9
METRIC_ABS_TOL = 1e-12
#: ``runs diff``: outputs with different hashes up to this size are loaded and compared
#: by content (``runtime.sameness``); larger ones differ by hash.
OUTPUT_COMPARE_BYTES = 64 * 1024 * 1024


# -- recording ---------------------------------------------------------------------


def start_recording(
    store: Store,
    settings: Settings,
    pipeline: Pipeline,
    run: RunRecord,
    params: Mapping[str, Any],
    *,
    resumed: bool = False,
    batch: Batch | None = None,
) -> RunRecorder:
    """Write the run's start record (with ``batch``, the run's first commit, when
    given; else now); gather git and packages in the background."""
    recorder = RunRecorder(store, settings, pipeline, run, params)
    try:
        recorder.begin(resumed, batch)
    except Exception:  # the record must never stop a run
        logger.warning("run %s: could not write its start record", run.run_id, exc_info=True)
    return recorder


class RunRecorder:
    """The reproducibility record of one run while it runs (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        pipeline: Pipeline,
        run: RunRecord,
        params: Mapping[str, Any],
    ) -> None:
        self.store = store
        self.settings = settings
        self.pipeline = pipeline
        self.run = run
        self.params = dict(params)
        self.record: dict[str, Any] = {}
        self._background: dict[str, Any] = {}
        self._gathering: Future[None] | None = None

    def begin(self, resumed: bool, batch: Batch | None = None) -> None:
        previous = load_record(self.store, self.run.run_id) if resumed else None
        if previous:
            self.record = previous
            self.record.setdefault("resumed_at", []).append(time.time())
        else:
            self.record = {
                "run_id": self.run.run_id,
                "pipeline": self.run.pipeline,
                "spec": {
                    # the version is the content hash of the canonical spec (Pipeline.content_hash)
                    "version": self.run.pipeline_version,
                    "source": self.run.source,
                },
                "params": self.params,
                "seeds": seeds_of(self.pipeline, self.params),
                "environment": {
                    "python": platform.python_version(),
                    "implementation": platform.python_implementation(),
                    "platform": platform.platform(terse=True),
                },
                "started_at": time.time(),
                "state": "running",
            }
            self._gathering = _gatherers().submit(self._gather)
        if batch is None:
            _save(self.store, self.run.run_id, self.record)
        else:
            batch.records.append(RecordText(self.run.run_id, _text(self.record), time.time()))

    def finish(self, result: RunResult, refs: Mapping[str, OutputRef] | None = None) -> None:
        """Complete and save the record; log the run to MLflow when tracking is on."""
        try:
            self._finish(result, refs or {})
        except Exception:  # the record must never fail a run
            logger.warning("run %s: could not complete its record", result.run_id, exc_info=True)

    def _finish(self, result: RunResult, refs: Mapping[str, OutputRef]) -> None:
        if self._gathering is not None:
            with contextlib.suppress(Exception):  # what was gathered by then is recorded
                self._gathering.result(timeout=30)
        record = self.record
        for key in ("code", "packages"):
            if key in self._background:
                if key == "packages":
                    packages = self._background[key]
                    record["environment"]["packages"] = packages
                    record["environment"]["packages_sha256"] = packages_hash(packages)
                else:
                    record["code"] = self._background[key]
        if "spec_file_sha256" in self._background:
            record["spec"]["file_sha256"] = self._background["spec_file_sha256"]
        tasks: dict[str, Any] = dict(record.get("tasks") or {})
        links: list[tuple[str, str, str, str | None, str | None]] = []
        logs = self.settings.logs_dir.absolute()
        # Only tasks that wrote something have a log folder: list it once rather
        # than probing one file per task (a generated DAG has 100,000 of them).
        try:
            with os.scandir(logs / result.run_id) as entries:
                folders = {e.name for e in entries if e.is_dir()}
        except OSError:
            folders = set()
        for tid in [t for t in result.tasks if t in folders]:
            task = result.tasks[tid]
            if task.attempts < 1:
                continue
            meta = read_metadata(logs, result.run_id, tid, task.attempts)
            if not any(meta.values()):
                continue
            tasks[tid] = {**meta, "state": task.state, "attempt": task.attempts}
            for direction, key in (("read", "reads"), ("write", "writes")):
                for item in meta[key]:
                    uri = item.get("uri")
                    if isinstance(uri, str) and uri:
                        links.append((tid, direction, uri, item.get("sha256"), item.get("kind")))
        record["tasks"] = tasks
        record["state"] = result.state
        record["ended_at"] = result.ended_at
        if self.settings.tracking:
            from stageflow.runtime.tracking import log_run

            record["tracking"] = log_run(self.settings, self.pipeline, result, record)
        _save(self.store, result.run_id, record)
        _save_links(self.store, result.run_id, links)

    def _gather(self) -> None:
        with contextlib.suppress(Exception):
            self._background["packages"] = installed_packages()
        source = self.run.source
        folder = Path(source).parent if source else Path.cwd()
        with contextlib.suppress(Exception):
            self._background["code"] = recent_git_state(folder)
        if source and Path(source).is_file():
            with contextlib.suppress(OSError):
                digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
                self._background["spec_file_sha256"] = digest


_gatherers_lock = threading.Lock()
_gatherers_pool: ThreadPoolExecutor | None = None  # made on first use


def _gatherers() -> ThreadPoolExecutor:
    """The process's threads that gather git and packages for records: a run hands
    its gathering over (a queue put) instead of starting a thread (which waits for the
    new thread to start: ~0.1-0.5 ms of a run's start)."""
    global _gatherers_pool
    with _gatherers_lock:
        if _gatherers_pool is None:
            _gatherers_pool = ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="stageflow-lineage"
            )
        return _gatherers_pool


def seeds_of(pipeline: Pipeline, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every seed the run uses: run parameters and task parameters with a seed's name."""
    from stageflow.runtime.plan import task_parameters

    seeds = {f"params.{k}": v for k, v in params.items() if k in SEED_NAMES}
    for task in pipeline.tasks:
        if not task.parameters:
            continue
        try:
            values = task_parameters(task.parameters, params)
        except KeyError:
            continue
        for key in SEED_NAMES:
            if key in values:
                seeds[f"{task.id}.{key}"] = values[key]
    return seeds


_GIT_STATUS = ("status", "--porcelain=v2", "--branch", "--untracked-files=no")

#: How long a folder's git state is reused for the next runs' records while its
#: repository's HEAD, index and branch are unchanged (``recent_git_state``).
GIT_STATE_SECONDS = 1.0

# resolved folder -> (when read, the repository's stamp, the state): recent_git_state.
_git_states: dict[str, tuple[float, tuple[int, ...] | None, dict[str, Any] | None]] = {}
_git_states_lock = threading.Lock()


def recent_git_state(
    folder: Path, now: float | None = None, *, max_age: float = GIT_STATE_SECONDS
) -> dict[str, Any] | None:
    """``git_state(folder)``, reused for at most ``max_age`` seconds while the
    repository's ``HEAD``, index and current branch file keep their modification
    times: a process running run after run (a worker: hundreds a second) starts one
    ``git status`` a second per folder instead of one per run, and a commit, a
    checkout or a ``git add`` is seen by the next run at once. An edit not yet added
    shows in the dirty flag within ``max_age``, as a long-lived worker's imported
    modules show edits only when it restarts."""
    now = time.monotonic() if now is None else now
    try:
        key = str(folder.resolve())
    except OSError:
        return git_state(folder)
    stamp = _repository_stamp(Path(key))
    with _git_states_lock:
        cached = _git_states.get(key)
    if cached is not None and now - cached[0] < max_age and cached[1] == stamp:
        return dict(cached[2]) if cached[2] is not None else None
    state = git_state(folder)
    # Stamped after: `git status` may rewrite the index (refreshing its file times).
    stamp = _repository_stamp(Path(key))
    with _git_states_lock:
        if len(_git_states) >= 64:  # folders a process records: a handful
            _git_states.clear()
        _git_states[key] = (now, stamp, state)
    return dict(state) if state is not None else None


def _repository_stamp(folder: Path) -> tuple[int, ...] | None:
    """The modification times (ns) of the ``HEAD``, ``index`` and current branch file of
    the repository holding ``folder`` (a resolved path); ``None`` outside a repository,
    or for a worktree's ``.git`` file: then only the age limits reuse."""
    git_dir = _dot_git(folder)
    if git_dir is None or not git_dir.is_dir():
        return None
    times: list[int] = []
    try:
        head = git_dir / "HEAD"
        times.append(head.stat().st_mtime_ns)
        ref = head.read_text(encoding="utf-8", errors="replace").strip()
        if ref.startswith("ref: "):
            with contextlib.suppress(OSError):  # a packed ref has no file of its own
                times.append((git_dir / ref[5:]).stat().st_mtime_ns)
        with contextlib.suppress(OSError):  # no index before the first `git add`
            times.append((git_dir / "index").stat().st_mtime_ns)
    except OSError:
        return None
    return tuple(times)


def git_state(folder: Path) -> dict[str, Any] | None:
    """The commit, branch and dirty flag of the git repository holding ``folder``.

    One ``git status`` gives all three (porcelain v2 with ``--branch``); the root
    is the nearest folder up that holds ``.git``. ``None`` outside a repository,
    before its first commit, or without git.
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *_GIT_STATUS],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    head: dict[str, str] = {}
    dirty = False
    for line in done.stdout.splitlines():
        if line.startswith("# branch."):
            key, _, value = line[len("# branch.") :].partition(" ")
            head[key] = value
        elif line and not line.startswith("#"):
            dirty = True
    commit = head.get("oid")
    if not commit or commit == "(initial)":
        return None
    branch = head.get("head")
    dot_git = _dot_git(folder.resolve())
    root = dot_git.parent if dot_git is not None else None
    return {
        "git_commit": commit,
        "git_branch": "HEAD" if branch == "(detached)" else branch,
        "git_dirty": dirty,
        "git_root": str(root) if root is not None else None,
    }


def _dot_git(folder: Path) -> Path | None:
    """The ``.git`` (a folder, or a worktree's file) of the nearest folder up from
    ``folder`` that has one; ``None`` outside a repository."""
    return next((p / ".git" for p in (folder, *folder.parents) if (p / ".git").exists()), None)


def installed_packages() -> dict[str, str]:
    """name -> version of every distribution on ``sys.path``, from folder names only.

    Reading each package's metadata costs ~0.2 s; ``NAME-VERSION.dist-info``
    folder names hold the same facts and list in a millisecond. A folder's
    listing is kept while its modification time is unchanged (installing or
    removing a package adds or removes an entry, which changes it).
    """
    found: dict[str, str] = {}
    for entry in sys.path:
        for dist, version in _distributions(entry):
            found.setdefault(dist, version)
    return dict(sorted(found.items()))


_LISTED: dict[str, tuple[int, list[tuple[str, str]]]] = {}


def _distributions(entry: str) -> list[tuple[str, str]]:
    if not entry:
        return []
    try:
        mtime = os.stat(entry).st_mtime_ns
    except OSError:
        return []
    cached = _LISTED.get(entry)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        names = os.listdir(entry)
    except OSError:  # not a folder (a zip), or unreadable
        return []
    dists = []
    for name in names:
        if not name.endswith((".dist-info", ".egg-info")):
            continue
        stem = name.rsplit(".", 1)[0]
        dist, _, version = stem.partition("-")
        version = version.partition("-py")[0]  # NAME-VERSION-py3.11.egg-info
        if dist and version:
            dists.append((dist.lower().replace("_", "-"), version))
    _LISTED[entry] = (mtime, dists)
    return dists


def packages_hash(packages: Mapping[str, str]) -> str:
    text = "\n".join(f"{k}=={v}" for k, v in sorted(packages.items()))
    return hashlib.sha256(text.encode()).hexdigest()


# -- queries -------------------------------------------------------------------------


def load_record(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run's reproducibility record, or ``None`` (an old run, or another store)."""
    rows = _query(store, "SELECT record_json FROM run_records WHERE run_id = ?", (run_id,))
    if not rows:
        return None
    data = json.loads(rows[0][0])
    return data if isinstance(data, dict) else None


def diff_runs(store: Store, run_a: str, run_b: str) -> dict[str, Any]:
    """What changed between two runs: parameters, code, data, outputs, environment, metrics.

    Each section maps a name to ``{"a": ..., "b": ...}`` for the entries that
    differ; ``same`` lists the sections with no difference. Outputs are compared
    by content, not by the paths of their own run they name; metrics within float
    noise are the same. Raises ``RunNotFound`` for an unknown run.
    """
    runs = [store.get_run(run_a), store.get_run(run_b)]
    records = [load_record(store, r.run_id) or {} for r in runs]
    outputs = [store.outputs(r.run_id) for r in runs]

    def pair(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        return {
            k: {"a": a.get(k), "b": b.get(k)}
            for k in sorted({*a, *b}, key=str)
            if a.get(k) != b.get(k)
        }

    ra, rb = records
    spec = [
        {
            "pipeline": r.pipeline,
            "pipeline_version": r.pipeline_version,
            "spec_file_sha256": (rec.get("spec") or {}).get("file_sha256"),
        }
        for r, rec in zip(runs, records, strict=True)
    ]
    code = [{**spec[i], **(records[i].get("code") or {})} for i in range(2)]
    code = [{k: v for k, v in c.items() if k != "git_root"} for c in code]
    env = [dict(r.get("environment") or {}) for r in records]
    packages = [e.pop("packages", {}) or {} for e in env]
    sections = {
        "params": pair(runs[0].params, runs[1].params),
        "seeds": pair(ra.get("seeds") or {}, rb.get("seeds") or {}),
        "code": pair(code[0], code[1]),
        "data": pair(_reads(ra), _reads(rb)),
        "outputs": _output_changes(outputs[0], outputs[1], run_a, run_b),
        "environment": {**pair(env[0], env[1]), **_package_changes(packages[0], packages[1])},
        "metrics": _metric_changes(_metrics(ra), _metrics(rb)),
    }
    return {
        "a": run_a,
        "b": run_b,
        "pipelines": [r.pipeline for r in runs],
        "states": [r.state for r in runs],
        "recorded": [bool(ra), bool(rb)],
        "changes": {k: v for k, v in sections.items() if v},
        "same": [k for k, v in sections.items() if not v],
    }


def lineage(store: Store, target: str, *, limit_runs: int = 200) -> dict[str, Any]:
    """Where ``target`` came from and where it went.

    ``target`` is ``RUN_ID/TASK``, ``TASK`` (its latest run), a file path or URI
    that a task read or wrote, or a sha256 (a prefix of 8+ hex digits will do).
    The answer names the producing task and run, the tasks that consumed it
    (downstream in that run, and any task of another run that read the same
    content), and the chain of upstream tasks back to the raw inputs.
    Raises ``UsageError`` when nothing matches.
    """
    from stageflow.errors import UsageError

    producer = _find_producer(store, target, limit_runs)
    if producer is None:
        raise UsageError(
            f"nothing known as '{target}': give RUN_ID/TASK, a task id, a file a task "
            "read or wrote, or a sha256 (see `stageflow runs show RUN_ID`)"
        )
    run_id, task_id, matched = producer
    run = store.get_run(run_id)
    pipeline = _pipeline(store, run)
    upstream = pipeline.upstream_map() if pipeline else {}
    record = load_record(store, run_id) or {}
    outputs = store.outputs(run_id)
    tasks_meta = record.get("tasks") or {}

    def node(tid: str) -> dict[str, Any]:
        meta = tasks_meta.get(tid) or {}
        out = outputs.get(tid)
        return {
            "task": tid,
            "output_sha256": out.sha256 if out else None,
            "output_uri": out.uri if out else None,
            "reads": [_link(x) for x in meta.get("reads", [])],
            "writes": [_link(x) for x in meta.get("writes", [])],
        }

    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    frontier = list(upstream.get(task_id, []))
    depth = 1
    while frontier:
        nxt: list[str] = []
        for tid in frontier:
            if tid in seen:
                continue
            seen.add(tid)
            chain.append({**node(tid), "depth": depth})
            nxt.extend(upstream.get(tid, []))
        frontier, depth = nxt, depth + 1
    consumers = [{"run_id": run_id, "task": tid} for tid, ups in upstream.items() if task_id in ups]
    hashes = {h for h in (matched.get("sha256"), (node(task_id)["output_sha256"])) if h}
    for h in hashes:
        for r_id, t_id, uri in _query(
            store,
            "SELECT run_id, task_id, uri FROM artifact_links WHERE direction = 'read' AND "
            "sha256 = ? AND NOT (run_id = ? AND task_id = ?)",
            (h, run_id, task_id),
        ):
            consumers.append({"run_id": r_id, "task": t_id, "uri": uri})
    roots = [
        {"task": c["task"], **r} for c in chain if not upstream.get(c["task"]) for r in c["reads"]
    ]
    return {
        "target": target,
        "matched": matched,
        "run_id": run_id,
        "pipeline": run.pipeline,
        "task": task_id,
        "produced": node(task_id),
        "upstream": chain,
        "raw_inputs": roots or node(task_id)["reads"],
        "consumers": consumers,
    }


# -- helpers ---------------------------------------------------------------------------


def _find_producer(
    store: Store, target: str, limit_runs: int
) -> tuple[str, str, dict[str, Any]] | None:
    from stageflow.errors import RunNotFound

    if "/" in target and not target.startswith(("/", ".")) and "://" not in target:
        run_id, _, task_id = target.partition("/")
        with contextlib.suppress(RunNotFound):
            store.get_run(run_id)
            if task_id in {t.task_id for t in store.task_runs(run_id)}:
                return run_id, task_id, {"kind": "task"}
    hexdigits = set("0123456789abcdef")
    if len(target) >= 8 and set(target.lower()) <= hexdigits:
        rows = _query(
            store,
            "SELECT run_id, task_id, uri, sha256, kind FROM artifact_links "
            "WHERE direction = 'write' AND sha256 LIKE ? ORDER BY run_id DESC",
            (target.lower() + "%",),
        )
        if rows:
            r = rows[0]
            return r[0], r[1], {"kind": r[4] or "file", "uri": r[2], "sha256": r[3]}
        for run in store.list_runs(limit=limit_runs):
            for tid, out in store.outputs(run.run_id).items():
                if out.sha256.startswith(target.lower()):
                    return run.run_id, tid, {"kind": "output", "sha256": out.sha256}
        rows = _query(
            store,
            "SELECT run_id, task_id, uri, sha256 FROM artifact_links "
            "WHERE direction = 'read' AND sha256 LIKE ? ORDER BY run_id DESC",
            (target.lower() + "%",),
        )
        if rows:
            r = rows[0]
            return r[0], r[1], {"kind": "input", "uri": r[2], "sha256": r[3], "read_by": r[1]}
    uris = [target]
    if "://" not in target:
        uris.append(str(Path(target).absolute()))
        uris.append(str(Path(target).resolve()))
    for uri in dict.fromkeys(uris):
        rows = _query(
            store,
            "SELECT run_id, task_id, uri, sha256, kind FROM artifact_links "
            "WHERE direction = 'write' AND uri = ? ORDER BY run_id DESC",
            (uri,),
        )
        if rows:
            r = rows[0]
            return r[0], r[1], {"kind": r[4] or "file", "uri": r[2], "sha256": r[3]}
        rows = _query(
            store,
            "SELECT run_id, task_id, uri, sha256, kind FROM artifact_links "
            "WHERE direction = 'read' AND uri = ? ORDER BY run_id DESC",
            (uri,),
        )
        if rows:
            r = rows[0]
            return r[0], r[1], {"kind": "input", "uri": r[2], "sha256": r[3], "read_by": r[1]}
    if "/" not in target and "://" not in target:
        for run in store.list_runs(limit=limit_runs):
            if target in {t.task_id for t in store.task_runs(run.run_id)}:
                return run.run_id, target, {"kind": "task"}
    return None


def _pipeline(store: Store, run: RunRecord) -> Pipeline | None:
    from stageflow.errors import StageflowError
    from stageflow.runtime.loading import pipeline_of_run

    try:
        return pipeline_of_run(store, run)
    except StageflowError:  # the version is gone or no longer builds: no graph
        return None


def _link(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: item.get(k) for k in ("uri", "sha256", "kind") if item.get(k) is not None}


def _reads(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tid, meta in (record.get("tasks") or {}).items():
        for item in meta.get("reads", []):
            if str(item.get("uri", "")).startswith("task:"):
                continue  # an upstream output: the outputs section covers it
            out[f"{tid} <- {item.get('uri')}"] = item.get("sha256")
    return out


def _metrics(record: Mapping[str, Any]) -> dict[str, float]:
    return {
        f"{tid}.{name}": value
        for tid, meta in (record.get("tasks") or {}).items()
        for name, value in (meta.get("metrics") or {}).items()
    }


def _metric_changes(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any]:
    """The metrics that differ, with their delta; float noise (``0.1 + 0.2`` against
    ``0.3``: within a relative 1e-9 or an absolute 1e-12) is no difference."""
    out: dict[str, Any] = {}
    for key in sorted({*a, *b}):
        va, vb = a.get(key), b.get(key)
        if va == vb or _same_number(va, vb):
            continue
        entry: dict[str, Any] = {"a": va, "b": vb}
        if va is not None and vb is not None:
            entry["delta"] = vb - va
        out[key] = entry
    return out


def _same_number(a: object, b: object) -> bool:
    numbers = (int, float)
    if not isinstance(a, numbers) or not isinstance(b, numbers):
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return math.isclose(a, b, rel_tol=METRIC_REL_TOL, abs_tol=METRIC_ABS_TOL)


def _output_changes(
    a: Mapping[str, OutputRef], b: Mapping[str, OutputRef], run_a: str, run_b: str
) -> dict[str, dict[str, Any]]:
    """The task outputs whose content differs. Equal hashes are equal content; else both
    values are loaded and compared by content with each run's id masked
    (``runtime.sameness``), so a model trained the same way, or an evaluation that
    only names files of its own run (``.../runs/RUN_ID/evaluate/roc_curve.png``), is
    the same."""
    out: dict[str, dict[str, Any]] = {}
    for tid in sorted({*a, *b}):
        ra, rb = a.get(tid), b.get(tid)
        sha_a = ra.sha256 if ra is not None else None
        sha_b = rb.sha256 if rb is not None else None
        if sha_a == sha_b:
            continue
        if ra is not None and rb is not None and _same_content(ra, rb, run_a, run_b):
            continue
        out[tid] = {"a": sha_a, "b": sha_b}
    return out


def _same_content(a: OutputRef, b: OutputRef, run_a: str, run_b: str) -> bool:
    from stageflow.runtime.sameness import same_content

    if a.serializer != b.serializer:
        return False
    if max(a.size, b.size) > OUTPUT_COMPARE_BYTES:
        return False  # too large to load for a diff: its hash decides
    try:
        values = _load(a), _load(b)
    except Exception:  # deleted, or a class no longer importable: the hashes decide
        logger.debug("runs diff: could not load the output of %s", a.task_id, exc_info=True)
        return False
    return same_content(*values, run_ids=(run_a, run_b))


def _load(ref: OutputRef) -> Any:
    from stageflow.runtime.artifacts import artifact_store, load_output

    # The ref names its file: the store's root only matters for writing.
    return load_output(ref, artifact_store((ref.uri or "").rsplit("/", 1)[0]))


def _package_changes(a: Mapping[str, str], b: Mapping[str, str]) -> dict[str, Any]:
    return {
        f"package {k}": {"a": a.get(k), "b": b.get(k)}
        for k in sorted({*a, *b})
        if a.get(k) != b.get(k)
    }


def _text(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def _save(store: Store, run_id: str, record: Mapping[str, Any]) -> None:
    store.commit(Batch(records=[RecordText(run_id, _text(record), time.time())]))


def _save_links(
    store: Store, run_id: str, links: Iterable[tuple[str, str, str, str | None, str | None]]
) -> None:
    rows = [(run_id, *link) for link in links]
    if rows:
        _execute(
            store,
            "INSERT INTO artifact_links (run_id, task_id, direction, uri, sha256, kind) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, task_id, direction, uri) "
            "DO UPDATE SET sha256 = excluded.sha256, kind = excluded.kind",
            rows,
        )


# The store has no public API for extension tables yet; these two helpers are the
# one place that uses SqlStore's transaction and query helpers (same lock, same
# connection, same placeholder translation as its own statements).


def _execute(store: Store, sql: str, rows: list[tuple[Any, ...]]) -> None:
    from stageflow.runtime.store.sql import SqlStore

    if not isinstance(store, SqlStore):
        return
    statement = store.dialect.sql(sql)
    with store._transaction() as cur:
        cur.executemany(statement, rows)


def _query(store: Store, sql: str, params: tuple[Any, ...]) -> list[Any]:
    from stageflow.runtime.store.sql import SqlStore

    if not isinstance(store, SqlStore):
        return []
    return store._fetchall(store.dialect.sql(sql), params)
