"""The operations layer on a real store: every command and query, its pages and errors.

Runs are real (``operations.start``/``submit`` on SQLite in a temp home) where what
matters is what a run leaves behind; listing and pagination use runs written
straight into the store (SQLite and PostgreSQL) so their creation times, ties
included, are exactly known; leases likewise (a live one held by this process,
an expired one by a host that went silent).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers_tasks import SEED_VARS, chatty, fail, me, ok, store_of

from stageflow import operations as ops
from stageflow.errors import (
    ControlRefused,
    InvalidSpec,
    RunNotFound,
    StageflowError,
    StoreError,
    UsageError,
)
from stageflow.runtime.loading import pipeline_of_run
from stageflow.runtime.result import RunResult
from stageflow.runtime.settings import Settings, load_settings
from stageflow.runtime.store import (
    Batch,
    PipelineRecord,
    RunRecord,
    RunUpdate,
    Store,
    TaskRunRecord,
    open_store,
)
from stageflow.service.cli import main
from stageflow.spec.models import Pipeline, Task
from support.postgres import postgres_schema, require_postgres

HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return replace(load_settings({}), home=tmp_path / "home")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each kind."""
    if request.param == "sqlite":
        opened = open_store(None, tmp_path / "store")
        try:
            yield opened
        finally:
            opened.close()
        return
    require_postgres()
    with postgres_schema() as url:
        opened = open_store(url, tmp_path)
        try:
            yield opened
        finally:
            opened.close()


def write_run(store: Store, run_id: str, created_at: float, **fields: object) -> None:
    """A run straight into the store (pipeline ``fields['pipeline']``, default ``p``)."""
    pipeline = str(fields.pop("pipeline", "p"))
    spec = {"name": pipeline, "tasks": [{"id": "t", "call": "helpers_tasks:ok"}]}
    store.save_pipeline(PipelineRecord(pipeline, "v1", json.dumps(spec), created_at))
    store.create_run(RunRecord(run_id, pipeline, "v1", "queued", {}, created_at, **fields), ["t"])


def two_step() -> Pipeline:
    return Pipeline(
        "two",
        tasks=[
            Task("first", ok),
            Task("second", chatty, upstream=["first"], inputs={"marker": "first"}),
        ],
    )


def run_ids(page: ops.RunPage) -> list[str]:
    return [r.run_id for r in page.runs]


# -- list_runs: order, pages, filters ------------------------------------------------------


def test_pages_cover_every_run_once_newest_first_ties_by_run_id(store: Store) -> None:
    # Three runs share one creation instant: (created_at, run_id) orders them anyway.
    for i, run_id in enumerate(["r0", "r1", "r2", "r3"]):
        write_run(store, run_id, T0 + i)
    for run_id in ["t-a", "t-c", "t-b"]:
        write_run(store, run_id, T0 + 10)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = ops.list_runs(store, ops.RunFilter(limit=2, cursor=cursor), now=T0 + 20)
        seen += run_ids(page)
        pages += 1
        cursor = page.cursor
        if cursor is None:
            break
        if pages == 1:  # a run created meanwhile is newer: it shifts no later page
            write_run(store, "late", T0 + 99)
    assert seen == ["t-c", "t-b", "t-a", "r3", "r2", "r1", "r0"]
    assert pages == 4  # 2 + 2 + 2 + 1: the last page says there is no more


def test_a_full_last_page_has_no_cursor(store: Store) -> None:
    for i in range(4):
        write_run(store, f"r{i}", T0 + i)
    first = ops.list_runs(store, ops.RunFilter(limit=2), now=T0)
    assert run_ids(first) == ["r3", "r2"] and first.cursor is not None
    second = ops.list_runs(store, ops.RunFilter(limit=2, cursor=first.cursor), now=T0)
    assert run_ids(second) == ["r1", "r0"]
    assert second.cursor is None
    empty = ops.list_runs(store, ops.RunFilter(pipeline="none"), now=T0)
    assert empty.runs == [] and empty.cursor is None


def test_filters_combine(store: Store) -> None:
    write_run(store, "a-old", T0, pipeline="a")
    write_run(store, "a-mid", T0 + HOUR, pipeline="a")
    write_run(store, "a-new", T0 + 2 * HOUR, pipeline="a")
    write_run(store, "b-mid", T0 + HOUR, pipeline="b")
    store.commit(Batch(runs=[RunUpdate("a-mid", "failed"), RunUpdate("b-mid", "failed")]))

    def ids(**filters: Any) -> list[str]:
        return run_ids(ops.list_runs(store, ops.RunFilter(**filters), now=T0))

    assert ids(pipeline="a") == ["a-new", "a-mid", "a-old"]
    assert ids(states=("failed",)) == ["b-mid", "a-mid"]
    assert ids(states=("failed", "queued"), pipeline="a") == ["a-new", "a-mid", "a-old"]
    assert ids(since=T0 + HOUR) == ["a-new", "b-mid", "a-mid"]
    assert ids(until=T0 + HOUR) == ["a-old"]  # until is exclusive
    assert ids(since=T0 + HOUR, until=T0 + 2 * HOUR, pipeline="a") == ["a-mid"]
    assert ids(states=("success",)) == []


BAD_FILTERS = [
    (ops.RunFilter(states=("runing",)), "state", "state 'runing' is not a run state"),
    (ops.RunFilter(states=("runing",)), "state", "did you mean 'running'?"),
    (ops.RunFilter(since=T0, until=T0), "since", "is not before until"),
    (ops.RunFilter(limit=0), "limit", "limit 0 is out of range; give 1 to"),
    (ops.RunFilter(since=float("nan")), "since", "since must be a finite time"),
    (ops.RunFilter(cursor="not a cursor!"), "cursor", "is not one this store gave"),
    (ops.RunFilter(cursor="W10"), "cursor", "is not one this store gave"),  # "[]"
    (ops.RunFilter(cursor="WzEsIi4uL3giXQ"), "cursor", "not one this store gave"),  # [1,"../x"]
    (ops.RunFilter(cursor="x" * 500), "cursor", "is not one this store gave"),
]


@pytest.mark.parametrize(
    ("which", "field", "message"),
    [pytest.param(*b, id=f"{i}-{b[1]}") for i, b in enumerate(BAD_FILTERS)],
)
def test_bad_filters_are_usage_errors_naming_the_field(
    tmp_path: Path, which: ops.RunFilter, field: str, message: str
) -> None:
    with store_of(tmp_path) as store, pytest.raises(UsageError) as info:
        ops.list_runs(store, which, now=T0)
    assert info.value.field == field
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2026-01-01", T0, id="date"),
        pytest.param("2026-01-01T01:00:00Z", T0 + HOUR, id="zulu"),
        pytest.param("2026-01-01T02:00:00+01:00", T0 + HOUR, id="offset"),
    ],
)
def test_instants_are_utc_unless_they_say(text: str, expected: float) -> None:
    assert ops.parse_instant(text, "since") == expected


def test_a_bad_instant_names_its_field() -> None:
    with pytest.raises(UsageError, match=r"until 'yesterday' is not a date or time") as info:
        ops.parse_instant("yesterday", "until")
    assert info.value.field == "until"


# -- leases in listings ----------------------------------------------------------------------


def test_a_silent_owner_is_shown_with_the_state(store: Store) -> None:
    write_run(store, "orphan", T0)
    store.claim_run(
        "orphan",
        owner="w-3",
        expected_epoch=0,
        host="elsewhere",
        pid=1,
        started_at=0.0,
        now=T0,
        ttl=15.0,
    )
    write_run(store, "fresh", T0 + 1)
    page = ops.list_runs(store, ops.RunFilter(), now=T0 + 60)
    fresh, orphan = page.runs
    assert fresh.lease is None and fresh.status == "queued"
    assert orphan.lease is not None and not orphan.lease.live
    assert orphan.status == "queued — w-3 silent since 00:00:00 UTC, will be taken over"
    assert orphan.as_json()["lease"]["note"] == "w-3 silent since 00:00:00 UTC, will be taken over"
    live = ops.list_runs(store, ops.RunFilter(), now=T0 + 1).runs[1]
    assert live.lease is not None and live.lease.live and live.status == "queued"


# -- real runs: show, timeline, logs, reports --------------------------------------------------


@pytest.fixture
def ran(settings: Settings) -> tuple[RunResult, RunResult]:
    """A run of ``two`` that succeeded, then one of ``flaky`` that failed."""
    good = ops.start(settings, two_step(), executor="thread")
    bad = ops.start(settings, Pipeline("flaky", tasks=[Task("boom", fail)]), executor="thread")
    assert (good.state, bad.state) == ("success", "failed")
    return good, bad


def test_show_run_has_tasks_attempts_and_critical_path(
    settings: Settings, ran: tuple[RunResult, RunResult]
) -> None:
    good, _ = ran
    with ops.reading(settings) as store:
        detail = ops.show_run(store, good.run_id, now=time.time())
        timeline = ops.run_timeline(store, good.run_id)
    assert detail.run.state == "success" and detail.status == "success"
    assert {tid: t.state for tid, t in detail.result.tasks.items()} == {
        "first": "success",
        "second": "success",
    }
    assert [(a.task_id, a.attempt, a.state) for a in detail.attempts] == [
        ("first", 1, "success"),
        ("second", 1, "success"),
    ]
    assert detail.result.critical_path == ["first", "second"]
    assert detail.pipeline.name == "two"
    assert detail.lease is not None and detail.lease.note is None  # ended: nobody silent
    assert timeline.task_ids == ["first", "second"] and len(timeline.attempts) == 2


def test_usage_of_a_shown_run_reuses_what_show_run_read(
    settings: Settings, ran: tuple[RunResult, RunResult]
) -> None:
    """``runs show`` passes its ``RunDetail`` to ``usage``: the same report, with only
    the pipeline's recent runs read again."""
    good, _ = ran
    prices = {"cpu_hour": 0.05}
    with ops.reading(settings) as store:
        detail = ops.show_run(store, good.run_id, now=time.time())
        read = ops.usage(store, good.run_id, prices)
        reads: list[str] = []
        for name in ("get_run", "task_runs", "attempts", "get_pipeline"):
            original = getattr(store, name)

            def counted(*args: object, _name: str = name, _f: object = original) -> object:
                reads.append(_name)
                return _f(*args)  # type: ignore[operator]

            setattr(store, name, counted)
        reused = ops.usage(store, good.run_id, prices, detail=detail)
    assert reused == read
    assert reads == []


@pytest.mark.parametrize(
    ("run_id", "error", "message"),
    [
        pytest.param("nope", RunNotFound, "no run 'nope' in the store", id="unknown"),
        pytest.param("../x", UsageError, "run id '../x' is invalid", id="malformed"),
        pytest.param("", UsageError, "run id is empty", id="empty"),
    ],
)
def test_run_queries_refuse_unknown_and_malformed_ids(
    tmp_path: Path, run_id: str, error: type[StageflowError], message: str
) -> None:
    with store_of(tmp_path) as store:
        for query in (
            lambda: ops.show_run(store, run_id, now=T0),
            lambda: ops.run_timeline(store, run_id),
            lambda: ops.task_logs(store, tmp_path, run_id, "t"),
            lambda: ops.usage(store, run_id, {}),
            lambda: ops.record(store, run_id),
            lambda: ops.diff(store, run_id, run_id),
            lambda: ops.paused_elsewhere(store, run_id, now=T0),
        ):
            with pytest.raises(error, match=re.escape(message)):
                query()


def test_task_logs_by_attempt_and_unknown_tasks(
    settings: Settings, ran: tuple[RunResult, RunResult]
) -> None:
    good, _ = ran
    with ops.reading(settings) as store:
        logs = ops.task_logs(store, settings.logs_dir, good.run_id, "second")
        only = ops.task_logs(store, settings.logs_dir, good.run_id, "second", attempt=1)
        none = ops.task_logs(store, settings.logs_dir, good.run_id, "second", attempt=7)
        silent = ops.task_logs(store, settings.logs_dir, good.run_id, "first")
        with pytest.raises(UsageError, match="has no task 'secnd'; did you mean 'second'"):
            ops.task_logs(store, settings.logs_dir, good.run_id, "secnd")
        with pytest.raises(UsageError, match=r"mapped task's run is ID.K."):
            ops.task_logs(store, settings.logs_dir, good.run_id, "second[x]")
        with pytest.raises(UsageError, match="attempts count from 1"):
            ops.task_logs(store, settings.logs_dir, good.run_id, "second", attempt=0)
    assert [f.attempt for f in logs.files] == [1]
    assert "printed " in logs.files[0].text and "logged " in logs.files[0].text
    assert only == logs
    assert none.files == [] and silent.files == []


def test_usage_cost_stats_record_diff_and_lineage_of_real_runs(
    settings: Settings, ran: tuple[RunResult, RunResult]
) -> None:
    good, bad = ran
    again = ops.start(settings, two_step(), executor="thread")
    now = time.time()
    with ops.reading(settings) as store:
        usage = ops.usage(store, good.run_id, {"cpu_hour": 1.0})
        cost = ops.cost(store, {}, days=1, now=now)
        only_flaky = ops.cost(store, {}, days=1, now=now, pipeline="flaky")
        stats = ops.stats(store, "flaky", days=1, now=now)
        record = ops.record(store, good.run_id)
        diff = ops.diff(store, good.run_id, again.run_id)
        other = ops.diff(store, good.run_id, bad.run_id)
        found = ops.lineage(store, f"{good.run_id}/second")
        with pytest.raises(StageflowError, match=r"no pipeline 'flaky2'.*did you mean 'flaky'"):
            ops.stats(store, "flaky2", days=1, now=now)
        with pytest.raises(UsageError, match="days 0 is out of range") as info:
            ops.cost(store, {}, days=0, now=now)
        assert info.value.field == "days"
        with pytest.raises(UsageError, match="nothing known as 'zzz'"):
            ops.lineage(store, "zzz")
    assert [s.task_id for s in usage.path] == ["first", "second"]
    assert usage.cost == 0.0  # no task declared resources: it held nothing
    assert {(r.pipeline, r.runs) for r in cost.rows} == {("two", 2), ("flaky", 1)}
    assert cost.total is None and cost.as_json()["total"]["runs"] == 3
    assert [(r.pipeline, r.runs) for r in only_flaky.rows] == [("flaky", 1)]
    assert [(t.task_id, t.failures, t.last_failure) for t in stats.tasks] == [
        ("boom", 1, "RuntimeError: boom: this task always fails")
    ]
    assert record is not None and record["spec"]["version"] == good_version(settings, good)
    assert diff.pipelines == ("two", "two") and "params" in diff.same
    assert other.states == ("success", "failed") and "code" in other.changes
    assert found.task == "second" and found.run_id == good.run_id
    assert [node["task"] for node in found.upstream] == ["first"]


def good_version(settings: Settings, result: RunResult) -> str:
    with ops.reading(settings) as store:
        return store.get_run(result.run_id).pipeline_version


# -- pipelines ---------------------------------------------------------------------------------


def test_pipelines_and_their_versions(settings: Settings) -> None:
    first = ops.submit(settings, two_step())
    ops.submit(settings, two_step())  # the same version again
    changed = Pipeline("two", tasks=[Task("first", ok), Task("third", ok)])
    newer = ops.submit(settings, changed)
    ops.submit(settings, Pipeline("solo", tasks=[Task("only", ok)]))
    with ops.reading(settings) as store:
        summaries = ops.list_pipelines(store)
        versions = ops.pipeline_versions(store, "two")
        latest = ops.pipeline_spec(store, "two")
        oldest = ops.pipeline_spec(store, "two", first.pipeline_version)
        with pytest.raises(StageflowError, match=r"no pipeline 'tow'.*did you mean 'two'") as info:
            ops.pipeline_versions(store, "tow")
        with pytest.raises(StoreError, match="no pipeline 'two' version 'v0'"):
            ops.pipeline_spec(store, "two", "v0")
    assert info.value.field == "pipeline"
    assert [(s.name, s.versions, s.runs) for s in summaries] == [("solo", 1, 1), ("two", 2, 3)]
    assert summaries[1].latest_version == newer.pipeline_version
    assert [(v.version, v.runs) for v in versions] == [
        (newer.pipeline_version, 1),
        (first.pipeline_version, 2),
    ]
    assert [t["id"] for t in latest["tasks"]] == ["first", "third"]
    assert [t["id"] for t in oldest["tasks"]] == ["first", "second"]


# -- commands ------------------------------------------------------------------------------------


def test_submit_queues_without_a_lease_and_refuses_bad_input(settings: Settings) -> None:
    queued = ops.submit(settings, two_step(), priority=5)
    assert (queued.state, queued.priority) == ("queued", 5)
    with pytest.raises(InvalidSpec, match="nope"):
        ops.submit(settings, two_step(), {"nope": 1})
    with pytest.raises(UsageError, match="priority 2000000 is out of range") as info:
        ops.submit(settings, two_step(), priority=2_000_000)
    assert info.value.field == "priority"
    with pytest.raises(UsageError, match="no such file"):
        ops.submit(settings, str(settings.home / "missing.yaml"))
    with ops.reading(settings) as store:
        page = ops.list_runs(store, ops.RunFilter(), now=time.time())
    assert run_ids(page) == [queued.run_id]  # nothing else was recorded
    assert page.runs[0].lease is None and page.runs[0].priority == 5


def test_cancel_a_queued_run_nobody_runs_ends_it_in_the_store(settings: Settings) -> None:
    queued = ops.submit(settings, two_step())
    outcome = ops.cancel(settings, queued.run_id, by="ann")
    assert (outcome.request, outcome.by) == ("cancel", "ann")
    assert "cancelled it in the store" in outcome.message
    with ops.reading(settings) as store:
        assert store.get_run(queued.run_id).state == "cancelled"
    with pytest.raises(ControlRefused, match="already ended \\(cancelled\\); nothing to cancel"):
        ops.cancel(settings, queued.run_id)
    with pytest.raises(ControlRefused, match="no live process runs it"):
        ops.pause(settings, ops.submit(settings, two_step()).run_id)
    with pytest.raises(UsageError, match="--by ' ': give a name"):
        ops.cancel(settings, queued.run_id, by=" ")


def live_run(settings: Settings, state: str, approver: str = "alice") -> str:
    """A run of a gated pipeline held by this (live) process: requests reach it."""
    spec = {
        "name": "gated",
        "tasks": [
            {"id": "deploy", "call": "helpers_tasks:ok", "approval": {"approvers": [approver]}},
            {"id": "plain", "call": "helpers_tasks:ok"},
        ],
    }
    with ops.writing(settings) as store:
        store.save_pipeline(PipelineRecord("gated", "v1", json.dumps(spec), 1.0))
        store.create_run(RunRecord("live", "gated", "v1", state, {}, 1.0), ["deploy", "plain"])
        store.claim_run(
            "live",
            owner=f"{socket.gethostname()}:{os.getpid()}",
            expected_epoch=0,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=psutil.Process().create_time(),
            now=time.time(),
            ttl=HOUR,
        )
        store.commit(Batch(task_runs=[TaskRunRecord("live", "deploy", "awaiting_approval")]))
    return "live"


def test_requests_reach_the_owner_through_the_store(settings: Settings) -> None:
    # ``by`` is who asks as the caller knows it: what the API passes (its token's name).
    run_id = live_run(settings, "running")
    paused = ops.pause(settings, run_id, by="dave")
    approved = ops.approve(settings, run_id, "deploy", by="alice", comment="ok")
    rejected = ops.reject(settings, run_id, "deploy", by="alice")
    assert f"asked process {os.getpid()} to pause run 'live'" in paused.message
    assert approved.as_json() | {"message": ""} == {
        "run_id": "live",
        "request": "approve",
        "by": "alice",
        "task_id": "deploy",
        "message": "",
    }
    assert rejected.request == "reject" and "the task fails" in rejected.message
    with ops.reading(settings) as store:
        stored = store.requests(run_id)
    assert [(r.request, r.task_id, r.requested_by, r.comment) for r in stored] == [
        ("pause", None, "dave", None),
        ("approve", "deploy", "alice", "ok"),
        ("reject", "deploy", "alice", None),
    ]
    with pytest.raises(ControlRefused, match="'eve' may not decide the approval"):
        ops.approve(settings, run_id, "deploy", by="eve")
    with pytest.raises(ControlRefused, match="task 'plain' of run 'live' has no approval gate"):
        ops.approve(settings, run_id, "plain", by="alice")
    with pytest.raises(UsageError, match="has no task 'deplo'; did you mean 'deploy'"):
        ops.approve(settings, run_id, "deplo")
    with pytest.raises(UsageError, match=re.escape("TASK: task id '../x' is invalid")):
        ops.reject(settings, run_id, "../x")
    with pytest.raises(UsageError, match="--comment is over 2000 characters") as info:
        ops.approve(settings, run_id, "deploy", comment="x" * 2001)
    assert info.value.field == "comment"
    with pytest.raises(ControlRefused, match="run 'live' is running, not paused"):
        ops.unpause(settings, run_id)


def test_without_by_the_caller_is_the_os_user_whatever_user_or_logname_say(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "bob" if me() == "alice" else "alice"
    for name in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, other)
    run_id = live_run(settings, "running", approver=other)

    with pytest.raises(ControlRefused, match=f"'{re.escape(me())}' may not decide the approval"):
        ops.approve(settings, run_id, "deploy")
    with pytest.raises(ControlRefused, match=f"its approvers are: {other}; ask one of them"):
        ops.reject(settings, run_id, "deploy")
    paused = ops.pause(settings, run_id)

    assert paused.by == me()
    with ops.reading(settings) as store:
        assert [(r.request, r.requested_by) for r in store.requests(run_id)] == [("pause", me())]


def test_resume_of_a_run_paused_by_a_live_owner_unpauses_it(settings: Settings) -> None:
    run_id = live_run(settings, "paused")
    outcome = ops.resume(settings, run_id, by="erin")
    assert isinstance(outcome, ops.ControlOutcome)
    assert (outcome.request, outcome.by) == ("unpause", "erin")
    assert outcome.message == f"asked process {os.getpid()} to continue run 'live'"


def test_retry_and_resume_run_in_this_process(
    settings: Settings, ran: tuple[RunResult, RunResult]
) -> None:
    good, bad = ran
    again = ops.retry(settings, bad.run_id, by="ann")
    assert isinstance(again, RunResult) and again.run_id == bad.run_id
    assert again.state == "failed" and again.tasks["boom"].attempts == 2
    rerun = ops.retry(settings, good.run_id, from_task="second")
    assert rerun.state == "success" and rerun.tasks["second"].attempts == 2
    assert rerun.tasks["first"].attempts == 1  # upstream of --from: reused
    with pytest.raises(UsageError, match=re.escape("--from: task id '../x' is invalid")):
        ops.retry(settings, good.run_id, from_task="../x")
    with pytest.raises(ControlRefused, match="succeeded; nothing to retry"):
        ops.retry(settings, good.run_id)
    queued = ops.submit(settings, two_step())
    resumed = ops.resume(settings, queued.run_id)
    assert isinstance(resumed, RunResult) and resumed.state == "success"
    with pytest.raises(RunNotFound, match="no run 'nope'"):
        ops.resume(settings, "nope")


# -- the pipeline of a run: one function, one error policy -------------------------------------


def test_pipeline_of_run_rebuilds_the_saved_version(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    spec = {"name": "p", "tasks": [{"id": "t", "call": "helpers_tasks:ok"}]}
    with store_of(tmp_path) as store:
        store.save_pipeline(PipelineRecord("p", "v1", json.dumps(spec), 1.0))
        store.save_pipeline(PipelineRecord("p", "bad", "{not json", 1.0))
        invalid = json.dumps({"name": "p", "tasks": "none"})
        store.save_pipeline(PipelineRecord("p", "invalid", invalid, 1.0))
        source = str(folder / "p.yaml")
        run = RunRecord("r", "p", "v1", "queued", {}, 1.0, source=source)
        pipeline = pipeline_of_run(store, run)
        assert [t.id for t in pipeline.tasks] == ["t"]
        assert pipeline._source == source
        assert str(folder) not in sys.path
        pipeline_of_run(store, run, importable=True)
        assert sys.path[0] == str(folder)
        sys.path.remove(str(folder))
        with pytest.raises(StoreError, match="no pipeline 'p' version 'v2'"):
            pipeline_of_run(store, replace(run, pipeline_version="v2"))
        with pytest.raises(InvalidSpec, match="saved spec of version 'bad' is not JSON"):
            pipeline_of_run(store, replace(run, pipeline_version="bad"))
        with pytest.raises(InvalidSpec, match="pipeline 'p' is invalid"):
            pipeline_of_run(store, replace(run, pipeline_version="invalid"))


# -- the CLI renders them -------------------------------------------------------------------------


def cli(home: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(["--home", str(home), *args])
    return int(info.value.code or 0)


@pytest.fixture
def no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("STAGEFLOW_") or name in SEED_VARS:
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_settings_env")
def test_runs_list_pages_with_the_cursor_it_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store_of(tmp_path) as store:
        for i in range(3):
            write_run(store, f"r{i}", T0 + i)
    assert cli(tmp_path, "runs", "list", "--limit", "2") == 0
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["r2", "r1"]
    cursor = err.split("--cursor ")[1].split("`")[0]
    assert cli(tmp_path, "runs", "list", "--limit", "2", "--cursor", cursor) == 0
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["r0"] and "more runs" not in err
    assert cli(tmp_path, "runs", "list", "--format", "json", "--until", "2026-01-01T00:00:01Z") == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["r0"]


@pytest.mark.usefixtures("no_settings_env")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("--state", "runing"), "state 'runing' is not a run state", id="state"),
        pytest.param(("--since", "yesterday"), "since 'yesterday' is not a date", id="since"),
        pytest.param(("--cursor", "zz"), "cursor 'zz' is not one this store gave", id="cursor"),
        pytest.param(
            ("--since", "2026-02-01", "--until", "2026-01-01"), "is not before until", id="window"
        ),
    ],
)
def test_runs_list_mistakes_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    assert cli(tmp_path, "runs", "list", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.usefixtures("no_settings_env")
def test_pipelines_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = replace(load_settings({}), home=tmp_path)
    assert cli(tmp_path, "pipelines", "list") == 0
    assert "no pipelines yet" in capsys.readouterr().err
    submitted = ops.submit(settings, two_step())
    assert cli(tmp_path, "pipelines", "list", "--format", "json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["versions"], p["runs"]) for p in listed] == [("two", 1, 1)]
    assert cli(tmp_path, "pipelines", "versions", "two") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[0] == submitted.pipeline_version and out[1].split()[3] == "1"
    assert cli(tmp_path, "pipelines", "show", "two") == 0
    assert json.loads(capsys.readouterr().out)["name"] == "two"
    assert cli(tmp_path, "pipelines", "versions", "tow") == 1
    assert "no pipeline 'tow'" in capsys.readouterr().err


def test_the_run_states_a_filter_accepts_are_the_engine_s() -> None:
    """``operations.RUN_STATES`` is spelled out (listing runs does not load the engine):
    it must stay the engine's ``RunState``."""
    from stageflow.engine.states import RunState
    from stageflow.operations.runs import RUN_STATES

    assert set(RUN_STATES) == {str(s) for s in RunState}
