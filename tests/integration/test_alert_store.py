"""Alert rules and alerts on real SQLite and PostgreSQL stores: exactly one alert opened
by stores racing, a failures-rate rule that opens after failing runs and resolves itself
after successes (cooldown kept), deadlines past due on a running run opened once by two
evaluating stores, the ack/resolve lifecycle, and a spec's ``alerts:`` registered when
the pipeline is saved. The time is handed in (no sleeps)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers_notify import hook

from stageflow.errors import UsageError
from stageflow.operations import alerts as alert_ops
from stageflow.operations.pipelines import publish_pipeline
from stageflow.runtime.alerting import check_deadlines, evaluate_rules
from stageflow.runtime.duties import background_duties
from stageflow.runtime.notify import wait_for_deliveries
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import Store, open_store
from stageflow.runtime.store.base import (
    AlertRecord,
    Batch,
    OutputRef,
    PipelineRecord,
    RunRecord,
    RunUpdate,
    TaskRunRecord,
)
from stageflow.spec.models import Pipeline
from support.postgres import postgres_schema, require_postgres

T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    base = Settings(home=tmp_path / "home")
    if request.param == "sqlite":
        yield base
        return
    require_postgres()
    with postgres_schema() as url:
        yield replace(base, database_url=url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = open_store(settings.database_url, settings.home)
    try:
        yield opened
    finally:
        opened.close()


SPEC = {
    "name": "churn",
    "deadline": {"after_seconds": 60},
    "tasks": [
        {
            "id": "train",
            "operator": "bash",
            "parameters": {"command": "true"},
            "deadline": {"after_seconds": 10},
        }
    ],
}


def _pipeline(store: Store, spec: dict[str, object] = SPEC) -> PipelineRecord:
    text, version = Pipeline.model_validate(spec).versioned_spec()
    record = PipelineRecord(str(spec["name"]), version, text, T0)
    store.save_pipeline(record)
    return record


def _run(
    store: Store, run_id: str, state: str, *, started: float, ended: float | None = None
) -> None:
    """A run of ``churn`` in ``state`` (its task ``train`` running when it runs)."""
    pipeline = _pipeline(store)
    store.create_run(
        RunRecord(run_id, "churn", pipeline.version, "queued", {}, created_at=started),
        ["train"],
        pipeline=pipeline,
    )
    task_state = "running" if state == "running" else state
    store.commit(
        Batch(
            runs=[RunUpdate(run_id, state=state, started_at=started, ended_at=ended)],
            task_runs=[TaskRunRecord(run_id, "train", task_state, 1, started, ended)],
        )
    )


def _alert(rule: str = "r", subject: str = "pipeline:churn", key: str | None = None) -> AlertRecord:
    return AlertRecord(
        alert_id=uuid.uuid4().hex,
        rule_id=rule,
        subject=subject,
        state="open",
        severity="warning",
        message="m",
        opened_at=T0,
        dedup_key=key,
    )


def test_two_stores_racing_open_one_alert(settings: Settings, store: Store) -> None:
    stores = [open_store(settings.database_url, settings.home) for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def race(s: Store) -> None:
        barrier.wait()
        results.append(s.open_alert(_alert()))

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert sorted(results) == [False, False, False, True]
    assert len(store.alerts(rule_id="r")) == 1
    # Resolved, the rule may open the subject's next one; a deadline key never again.
    (only,) = store.alerts(rule_id="r")
    assert store.move_alert(only.alert_id, "open", "resolved", by="auto", now=T0 + 1)
    assert store.open_alert(_alert())
    assert store.open_alert(_alert("deadline", "run:x", key="deadline:x"))
    (deadline,) = store.alerts(rule_id="deadline")
    assert store.move_alert(deadline.alert_id, "open", "resolved", by="auto", now=T0 + 1)
    assert not store.open_alert(_alert("deadline", "run:x", key="deadline:x"))


def test_a_failures_rate_rule_opens_and_resolves_itself(settings: Settings, store: Store) -> None:
    alert_ops.add_rule(
        store,
        "churn-failing",
        metric="runs.failure_rate",
        threshold=0.5,
        window="10m",
        cooldown=300,
        pipeline=None,
        owner=None,
        see_all=True,
        may_run_commands=True,
        now=T0,
    )
    _run(store, "r1", "success", started=T0, ended=T0 + 5)
    assert evaluate_rules(settings, store, T0 + 10) == []  # 0 of 1 failed
    _run(store, "r2", "failed", started=T0 + 10, ended=T0 + 15)
    _run(store, "r3", "failed", started=T0 + 20, ended=T0 + 25)
    done = evaluate_rules(settings, store, T0 + 30)  # 2 of 3 failed
    assert [(what, a.subject, a.severity) for what, a in done] == [
        ("opened", "pipeline:churn", "warning")
    ]
    assert "runs.failure_rate of churn is 0.6667" in done[0][1].message
    assert evaluate_rules(settings, store, T0 + 40) == []  # open: never a second one
    # Successes bring the rate to 2 of 6: the alert resolves itself.
    for k in range(3):
        _run(store, f"s{k}", "success", started=T0 + 50 + k, ended=T0 + 55 + k)
    done = evaluate_rules(settings, store, T0 + 60)
    assert [what for what, _ in done] == ["resolved"]
    (alert,) = store.alerts(rule_id="churn-failing")
    assert (alert.state, alert.resolved_by) == ("resolved", "auto")
    # Failing again within the cooldown (300 s after it opened): no new alert; after: one.
    for k in range(6):
        _run(store, f"f{k}", "failed", started=T0 + 70 + k, ended=T0 + 75 + k)
    assert evaluate_rules(settings, store, T0 + 100) == []
    assert [what for what, _ in evaluate_rules(settings, store, T0 + 331)] == ["opened"]
    assert len(store.alerts(rule_id="churn-failing")) == 2
    # Runs that ended before the window are not counted: the rate falls to 0, it resolves.
    assert [what for what, _ in evaluate_rules(settings, store, T0 + 2000)] == ["resolved"]


def test_deadlines_open_once_while_the_run_runs(settings: Settings, store: Store) -> None:
    _run(store, "slow", "running", started=T0)
    _run(store, "done", "success", started=T0, ended=T0 + 1)
    other = open_store(settings.database_url, settings.home)
    try:
        assert check_deadlines(settings, store, T0 + 9) == []
        opened = check_deadlines(settings, store, T0 + 12)
        assert [(a.subject, a.task) for a in opened] == [("task-run:slow.train", "train")]
        assert "pipeline 'churn': task 'train' of run slow is still running 2s past its " in (
            opened[0].message
        )
        assert check_deadlines(settings, other, T0 + 13) == []  # another process: no second
        opened = check_deadlines(settings, other, T0 + 61)
        assert [a.subject for a in opened] == ["run:slow"]
        assert check_deadlines(settings, store, T0 + 62) == []
    finally:
        other.close()
    assert len(store.alerts(rule_id="deadline")) == 2
    assert {a.state for a in store.alerts(rule_id="deadline")} == {"open"}
    # The run ends: its deadlines' alerts resolve themselves.
    store.commit(Batch(runs=[RunUpdate("slow", state="success", ended_at=T0 + 70)]))
    check_deadlines(settings, store, T0 + 71)
    assert {(a.state, a.resolved_by) for a in store.alerts(rule_id="deadline")} == {
        ("resolved", "auto")
    }


def test_ack_then_resolve_and_what_is_refused(store: Store) -> None:
    assert store.open_alert(replace(_alert(), alert_id="a1"))
    mine = {"owner": None, "see_all": True}
    acked = alert_ops.ack_alert(store, "a1", by="ana", **mine)
    assert (acked.state, acked.acknowledged_by) == ("acknowledged", "ana")
    with pytest.raises(UsageError, match="'a1' is acknowledged; only an open alert"):
        alert_ops.ack_alert(store, "a1", by="bob", **mine)
    done = alert_ops.resolve_alert(store, "a1", by="bob", **mine)
    assert (done.state, done.resolved_by, done.acknowledged_by) == ("resolved", "bob", "ana")
    with pytest.raises(UsageError, match="nothing to resolve"):
        alert_ops.resolve_alert(store, "a1", by="bob", **mine)
    with pytest.raises(alert_ops.AlertNotFound, match="stageflow alerts list"):
        alert_ops.ack_alert(store, "nope", by="bob", **mine)
    # Another owner's alert is as missing as one that does not exist.
    assert store.open_alert(replace(_alert(subject="x"), alert_id="a2", owner="team-a"))
    with pytest.raises(alert_ops.AlertNotFound):
        alert_ops.ack_alert(store, "a2", by="eve", owner="team-b", see_all=False)
    assert [a.alert_id for a in alert_ops.list_alerts(store, owner="team-a", see_all=False)] == [
        "a2"
    ]
    assert [a.alert_id for a in alert_ops.list_alerts(store, state="resolved", **mine)] == ["a1"]


def test_a_specs_alerts_register_when_it_is_saved(store: Store) -> None:
    spec = {
        **SPEC,
        "alerts": [
            {"id": "slow", "metric": "run.duration_seconds", "threshold": 600},
            {"id": "acc", "metric": "task.train.accuracy", "condition": "below_baseline",
             "k": 3, "runs": 5, "severity": "critical",
             "channels": [{"webhook": "https://hooks.example.com/T000/secret"}]},
        ],
    }  # fmt: skip
    publish_pipeline(store, Pipeline.model_validate(spec), owner=None, now=T0)
    rules = {r.rule_id: r for r in store.alert_rules(pipeline="churn")}
    assert sorted(rules) == ["churn.acc", "churn.slow"]
    acc = rules["churn.acc"]
    assert (acc.condition, acc.k, acc.runs, acc.severity, acc.source) == (
        "below_baseline",
        3.0,
        5,
        "critical",
        "spec",
    )
    assert acc.channels == [{"webhook": "https://hooks.example.com/T000/secret"}]
    shown = json.dumps(alert_ops.rule_json(acc))
    assert "secret" not in shown and "hooks.example.com" in shown
    # Saved again without one: that spec rule goes; a rule added by hand stays.
    alert_ops.add_rule(
        store, "mine", metric="runs.failures", threshold=3, pipeline="churn",
        owner=None, see_all=True, may_run_commands=True, now=T0,
    )  # fmt: skip
    publish_pipeline(
        store, Pipeline.model_validate({**spec, "alerts": spec["alerts"][:1]}), owner=None, now=T0
    )
    assert sorted(r.rule_id for r in store.alert_rules()) == ["churn.slow", "mine"]


def test_a_bad_rule_is_refused_with_every_problem(store: Store) -> None:
    with pytest.raises(alert_ops.InvalidAlertRule) as caught:
        alert_ops.add_rule(
            store, "bad rule", metric="cpu", condition="contains", threshold=3.0,
            severity="high", cooldown=-5, channels=[{"webhook": "ftp://x"}],
            owner=None, see_all=True, may_run_commands=True,
        )  # fmt: skip
    fields = [p.field for p in caught.value.problems]
    assert fields == ["id", "metric", "threshold", "severity", "cooldown", "channels[0]"]
    assert caught.value.exit_code == 2
    with pytest.raises(alert_ops.Forbidden, match="only an admin"):
        alert_ops.add_rule(
            store, "cmd", metric="runs.failures", threshold=1, channels=[{"command": ["sh"]}],
            owner="team-a", see_all=False, may_run_commands=False,
        )  # fmt: skip
    assert store.alert_rules() == []


def _scored(store: Store, run_id: str, accuracy: float, at: float) -> None:
    """A run of ``churn`` that ended at ``at``, its ``train`` returning its metrics."""
    _run(store, run_id, "success", started=at - 1, ended=at)
    data = json.dumps({"metrics": {"accuracy": accuracy}}).encode()
    ref = OutputRef(run_id, "train", "inline", "json", len(data), "0" * 64, data)
    store.commit(Batch(outputs=[ref]))


def test_a_recorded_metric_below_its_baseline(settings: Settings, store: Store) -> None:
    alert_ops.add_rule(
        store, "acc", metric="task.train.accuracy", condition="below_baseline", k=2, runs=5,
        severity="critical", pipeline=None, owner=None, see_all=True, may_run_commands=True,
        now=T0,
    )  # fmt: skip
    for k, acc in enumerate([0.90, 0.92, 0.91, 0.93, 0.89]):
        _scored(store, f"good{k}", acc, T0 + 10 * k)
    assert evaluate_rules(settings, store, T0 + 60) == []  # the last one is within the band
    _scored(store, "bad", 0.80, T0 + 70)  # mean 0.91, sigma 0.0158: 0.80 is far below
    done = evaluate_rules(settings, store, T0 + 80)
    assert [(what, a.subject, a.run_id, a.value) for what, a in done] == [
        ("opened", "task:churn.train", "bad", 0.8)
    ]
    assert "below the baseline of its last 5 runs (k=2)" in done[0][1].message
    _scored(store, "back", 0.91, T0 + 90)
    assert [what for what, _ in evaluate_rules(settings, store, T0 + 100)] == ["resolved"]


def test_queue_wait_and_run_duration(settings: Settings, store: Store) -> None:
    for rule_id, metric, threshold in [
        ("waiting", "queue.wait_seconds", 60.0),
        ("slow", "run.duration_seconds", 100.0),
    ]:
        alert_ops.add_rule(
            store, rule_id, metric=metric, threshold=threshold, pipeline=None, owner=None,
            see_all=True, may_run_commands=True, now=T0,
        )  # fmt: skip
    pipeline = _pipeline(store)
    store.create_run(
        RunRecord("q1", "churn", pipeline.version, "queued", {}, created_at=T0), ["train"]
    )
    _run(store, "long", "running", started=T0)
    assert evaluate_rules(settings, store, T0 + 50) == []
    done = {a.rule_id: a for _, a in evaluate_rules(settings, store, T0 + 150)}
    assert sorted(done) == ["slow", "waiting"]
    assert (done["slow"].run_id, done["slow"].value) == ("long", 150.0)
    assert done["waiting"].value == 150.0


def test_a_rules_alert_is_notified_once_when_it_opens_and_resolves(
    settings: Settings, store: Store
) -> None:
    with hook() as got:
        alert_ops.add_rule(
            store, "two-failures", metric="runs.failures", threshold=1, window="1h",
            channels=[{"webhook": got.url()}], pipeline=None, owner=None,
            see_all=True, may_run_commands=True, now=T0,
        )  # fmt: skip
        _run(store, "f1", "failed", started=T0, ended=T0 + 1)
        _run(store, "f2", "failed", started=T0 + 2, ended=T0 + 3)
        other = open_store(settings.database_url, settings.home)
        try:
            (opened,) = evaluate_rules(settings, store, T0 + 10)
            assert evaluate_rules(settings, other, T0 + 11) == []  # another process: nothing
        finally:
            other.close()
        alert_id = opened[1].alert_id
        assert [what for what, _ in evaluate_rules(settings, store, T0 + 4000)] == ["resolved"]
        assert wait_for_deliveries(20)
        keys = sorted((n.key, n.kind, n.state) for n in store.notifications(limit=10))
        assert keys == [
            (f"alert:{alert_id}:opened", "alert", "delivered"),
            (f"alert:{alert_id}:resolved", "alert_resolved", "delivered"),
        ]
        texts = sorted(body["text"] for _, body in got.posts)
        assert len(texts) == 2 and "runs.failures of churn is 2" in texts[0]


def test_the_duty_runs_in_every_loop_and_reads_rules_every_5_seconds(
    settings: Settings, store: Store
) -> None:
    (duty,) = [d for d in background_duties(settings, store) if d.name == "alerts"]
    alert_ops.add_rule(
        store, "any-failure", metric="runs.failures", threshold=0, cooldown=0,
        pipeline=None, owner=None, see_all=True,
        may_run_commands=True, now=T0,
    )  # fmt: skip
    _run(store, "f1", "failed", started=T0, ended=T0 + 1)
    duty.run_pass(T0 + 10)
    (first,) = store.alerts(rule_id="any-failure")
    mine = {"owner": None, "see_all": True}
    alert_ops.resolve_alert(store, first.alert_id, by="ana", **mine)
    duty.run_pass(T0 + 14)  # rules wait 5 s between reads: nothing yet
    assert len(store.alerts(rule_id="any-failure")) == 1
    duty.run_pass(T0 + 15)  # still failing, cooldown 0: a new alert
    assert [a.state for a in store.alerts(rule_id="any-failure")] == ["open", "resolved"]
