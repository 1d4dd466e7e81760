"""Schema step 11 on every backend: API tokens, the audit log, pipeline owners and
deletion, run owners and who triggered them (``store``/``backend`` fixtures)."""

from __future__ import annotations

import hashlib
from dataclasses import fields, replace
from typing import TYPE_CHECKING

import pytest

from stageflow.errors import StoreError
from stageflow.runtime.store import PipelineRecord, RunRecord, SqlStore
from stageflow.runtime.store.base import AuditEntry, TokenRecord

if TYPE_CHECKING:
    from conftest import Backend

SECRET = "sf_live_not-a-real-secret"
SECRET_SHA256 = hashlib.sha256(SECRET.encode()).hexdigest()


def make_token(
    token_id: str = "tok1",
    *,
    name: str = "ci",
    role: str = "operator",
    owner: str | None = "team-a",
    created_at: float = 100.0,
) -> TokenRecord:
    return TokenRecord(
        token_id=token_id,
        name=name,
        role=role,
        owner=owner,
        secret_sha256=SECRET_SHA256,
        created_at=created_at,
    )


def make_run(
    run_id: str = "r1",
    *,
    pipeline: str = "churn",
    created_at: float = 100.0,
    owner: str | None = None,
    triggered_by: str | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline=pipeline,
        pipeline_version="v1",
        state="queued",
        params={"lr": 0.1},
        created_at=created_at,
        owner=owner,
        triggered_by=triggered_by,
    )


def make_entry(at: float, *, actor: str = "alice", action: str = "run.create") -> AuditEntry:
    return AuditEntry(at=at, actor=actor, action=action, status=201)


# -- tokens -----------------------------------------------------------------------


def test_token_round_trips(store: SqlStore) -> None:
    token = TokenRecord(
        token_id="tok1",
        name="ci",
        role="editor",
        owner="team-a",
        secret_sha256=SECRET_SHA256,
        created_at=100.5,
        expires_at=200.25,
        revoked_at=None,
        last_used_at=150.75,
    )
    store.add_token(token)
    assert store.get_token("tok1") == token


def test_get_absent_token_is_none(store: SqlStore) -> None:
    assert store.get_token("absent") is None
    store.add_token(make_token())
    assert store.get_token("absent") is None


def test_tokens_are_listed_oldest_first(store: SqlStore) -> None:
    newest = make_token("tok-c", name="c", created_at=300.0)
    oldest = make_token("tok-a", name="z", created_at=100.0, owner=None, role="admin")
    middle = make_token("tok-b", name="b", created_at=200.0, role="viewer")
    for token in (newest, oldest, middle):
        store.add_token(token)
    assert store.tokens() == [oldest, middle, newest]


def test_tokens_empty(store: SqlStore) -> None:
    assert store.tokens() == []


def test_duplicate_token_name_is_refused_and_store_keeps_working(store: SqlStore) -> None:
    first = make_token("tok1", name="ci")
    store.add_token(first)
    with pytest.raises(Exception):  # the driver's integrity error: the name exists
        store.add_token(make_token("tok2", name="ci", created_at=101.0))
    assert store.tokens() == [first]
    assert store.get_token("tok2") is None
    second = make_token("tok3", name="deploy", created_at=102.0)
    store.add_token(second)
    assert store.tokens() == [first, second]


def test_duplicate_token_id_is_refused(store: SqlStore) -> None:
    first = make_token("tok1", name="ci")
    store.add_token(first)
    with pytest.raises(Exception):  # the driver's integrity error: the id exists
        store.add_token(make_token("tok1", name="other", created_at=101.0))
    assert store.tokens() == [first]


@pytest.mark.parametrize("role", ["viewer", "operator", "editor", "admin"])
def test_every_known_role_is_accepted(store: SqlStore, role: str) -> None:
    token = make_token(role=role)
    store.add_token(token)
    assert store.get_token("tok1") == token


@pytest.mark.parametrize("role", ["root", "Admin", ""])
def test_unknown_role_is_refused_by_the_check_constraint(store: SqlStore, role: str) -> None:
    with pytest.raises(Exception):  # the driver's integrity error: CHECK (role IN ...)
        store.add_token(make_token(role=role))
    assert store.tokens() == []
    assert store.get_token("tok1") is None


def test_revoke_token_once(store: SqlStore) -> None:
    token = make_token()
    store.add_token(token)
    assert store.revoke_token("ci", 500.0) is True
    assert store.get_token("tok1") == replace(token, revoked_at=500.0)
    assert store.revoke_token("ci", 600.0) is False
    assert store.get_token("tok1") == replace(token, revoked_at=500.0)  # first time kept
    assert store.revoke_token("nobody", 600.0) is False


def test_revoke_token_leaves_other_tokens_alone(store: SqlStore) -> None:
    ci = make_token("tok1", name="ci")
    deploy = make_token("tok2", name="deploy", created_at=101.0)
    store.add_token(ci)
    store.add_token(deploy)
    assert store.revoke_token("ci", 500.0) is True
    assert store.tokens() == [replace(ci, revoked_at=500.0), deploy]


def test_touch_token_sets_last_used_at(store: SqlStore) -> None:
    token = make_token()
    store.add_token(token)
    store.touch_token("tok1", 120.0)
    assert store.get_token("tok1") == replace(token, last_used_at=120.0)
    store.touch_token("tok1", 130.5)
    assert store.get_token("tok1") == replace(token, last_used_at=130.5)
    store.touch_token("absent", 140.0)  # no such token: nothing changes
    assert store.tokens() == [replace(token, last_used_at=130.5)]


def test_token_table_holds_only_the_record_fields(store: SqlStore, backend: Backend) -> None:
    token = TokenRecord(
        token_id="tok1",
        name="ci",
        role="admin",
        owner="team-a",
        secret_sha256=SECRET_SHA256,
        created_at=100.0,
        expires_at=200.0,
        revoked_at=None,
        last_used_at=None,
    )
    store.add_token(token)
    rows = backend.query("SELECT * FROM api_tokens")
    expected = tuple(getattr(token, f.name) for f in fields(TokenRecord))
    assert rows == [expected]  # one column per field: no column for the secret
    assert all(SECRET not in str(value) for value in rows[0])
    assert [v for v in rows[0] if isinstance(v, str) and len(v) == 64] == [SECRET_SHA256]


# -- audit log --------------------------------------------------------------------


def test_add_audit_returns_increasing_ids(store: SqlStore) -> None:
    ids = [store.add_audit(make_entry(float(at))) for at in (10, 20, 30)]
    assert ids[0] < ids[1] < ids[2]
    assert [e.entry_id for e in store.audit_entries()] == ids[::-1]


def test_audit_entries_round_trip_newest_first(store: SqlStore) -> None:
    full = AuditEntry(
        at=10.5,
        actor="alice",
        action="pipeline.publish",
        status=201,
        role="editor",
        owner="team-a",
        target="churn@abc123",
        client="10.0.0.1",
        detail='{"note": "é"}',
    )
    bare = AuditEntry(at=20.25, actor="bob", action="run.cancel", status=403)
    first = store.add_audit(full)
    second = store.add_audit(bare)
    assert store.audit_entries() == [
        replace(bare, entry_id=second),
        replace(full, entry_id=first),
    ]


def test_audit_entries_empty(store: SqlStore) -> None:
    assert store.audit_entries() == []


def test_audit_filters(store: SqlStore) -> None:
    ids = {
        (at, actor): store.add_audit(make_entry(at, actor=actor))
        for at, actor in [(10.0, "alice"), (20.0, "bob"), (30.0, "alice"), (40.0, "bob")]
    }

    def listed(**kwargs: object) -> list[int]:
        return [e.entry_id for e in store.audit_entries(**kwargs)]  # type: ignore[arg-type]

    assert listed(since=20.0) == [ids[40.0, "bob"], ids[30.0, "alice"], ids[20.0, "bob"]]
    assert listed(since=40.5) == []
    assert listed(actor="alice") == [ids[30.0, "alice"], ids[10.0, "alice"]]
    assert listed(actor="carol") == []
    assert listed(since=20.0, actor="alice") == [ids[30.0, "alice"]]
    assert listed(limit=1) == [ids[40.0, "bob"]]
    assert listed(before_id=ids[30.0, "alice"]) == [ids[20.0, "bob"], ids[10.0, "alice"]]
    assert listed(before_id=ids[40.0, "bob"], actor="bob") == [ids[20.0, "bob"]]


def test_audit_keyset_paging(store: SqlStore) -> None:
    ids = [store.add_audit(make_entry(float(at))) for at in range(1, 6)]
    page1 = store.audit_entries(limit=2)
    assert [e.entry_id for e in page1] == [ids[4], ids[3]]
    page2 = store.audit_entries(limit=2, before_id=page1[-1].entry_id)
    assert [e.entry_id for e in page2] == [ids[2], ids[1]]
    page3 = store.audit_entries(limit=2, before_id=page2[-1].entry_id)
    assert [e.entry_id for e in page3] == [ids[0]]
    assert store.audit_entries(limit=2, before_id=page3[-1].entry_id) == []


# -- pipelines --------------------------------------------------------------------


def test_publish_pipeline_is_new_once(store: SqlStore) -> None:
    record = PipelineRecord("churn", "v1", '{"tasks": []}', 100.0, owner="team-a")
    assert store.publish_pipeline(record) is True
    assert store.publish_pipeline(record) is False
    assert store.get_pipeline("churn", "v1") == record
    assert store.latest_pipeline("churn") == record


def test_pipeline_owner(store: SqlStore) -> None:
    store.publish_pipeline(PipelineRecord("churn", "v1", "{}", 100.0, owner="team-a"))
    assert store.pipeline_owner("churn") == (True, "team-a")
    assert store.pipeline_owner("unknown") == (False, None)


def test_pipeline_owner_is_the_newest_versions(store: SqlStore) -> None:
    store.publish_pipeline(PipelineRecord("churn", "v1", "{}", 100.0, owner="team-a"))
    store.publish_pipeline(PipelineRecord("churn", "v2", "{}", 200.0, owner="team-b"))
    assert store.pipeline_owner("churn") == (True, "team-b")


def test_delete_pipeline_once(store: SqlStore) -> None:
    store.publish_pipeline(PipelineRecord("churn", "v1", "{}", 100.0, owner="team-a"))
    assert store.delete_pipeline("churn", 500.0) is True
    assert store.delete_pipeline("churn", 600.0) is False
    assert store.delete_pipeline("unknown", 600.0) is False
    assert store.get_pipeline("churn", "v1").deleted_at == 500.0  # the first time kept


def test_deleted_pipeline_is_hidden_but_readable(store: SqlStore) -> None:
    record = PipelineRecord("churn", "v1", '{"tasks": []}', 100.0, owner="team-a")
    other = PipelineRecord("other", "w1", "{}", 150.0, owner="team-b")
    store.publish_pipeline(record)
    store.publish_pipeline(other)
    assert store.delete_pipeline("churn", 500.0) is True

    with pytest.raises(StoreError, match="no pipeline 'churn'"):
        store.latest_pipeline("churn")
    assert store.pipeline_names() == ["other"]
    assert store.pipeline_versions("churn") == []
    assert [(v.pipeline, v.version) for v in store.pipeline_versions()] == [("other", "w1")]
    assert store.get_pipeline("churn", "v1") == replace(record, deleted_at=500.0)
    assert store.pipeline_owner("churn") == (True, "team-a")
    assert store.latest_pipeline("other") == other


def test_delete_pipeline_deletes_every_version(store: SqlStore) -> None:
    store.publish_pipeline(PipelineRecord("churn", "v1", "{}", 100.0, owner="team-a"))
    store.publish_pipeline(PipelineRecord("churn", "v2", "{}", 200.0, owner="team-a"))
    assert store.delete_pipeline("churn", 500.0) is True
    assert store.get_pipeline("churn", "v1").deleted_at == 500.0
    assert store.get_pipeline("churn", "v2").deleted_at == 500.0
    assert store.pipeline_versions("churn") == []


def test_publishing_a_deleted_version_brings_it_back(store: SqlStore) -> None:
    record = PipelineRecord("churn", "v1", '{"tasks": []}', 100.0, owner="team-a")
    store.publish_pipeline(record)
    store.delete_pipeline("churn", 500.0)

    again = replace(record, created_at=700.0)
    assert store.publish_pipeline(again) is True
    latest = store.latest_pipeline("churn")
    assert latest == again
    assert latest.deleted_at is None
    assert latest.created_at == 700.0
    assert store.pipeline_names() == ["churn"]
    assert [(v.version, v.saved_at, v.owner) for v in store.pipeline_versions("churn")] == [
        ("v1", 700.0, "team-a")
    ]
    assert store.publish_pipeline(again) is False  # live again: nothing new


def test_publishing_a_deleted_version_makes_it_the_latest(store: SqlStore) -> None:
    v1 = PipelineRecord("churn", "v1", "{}", 100.0, owner="team-a")
    v2 = PipelineRecord("churn", "v2", "{}", 200.0, owner="team-a")
    store.publish_pipeline(v1)
    store.publish_pipeline(v2)
    store.delete_pipeline("churn", 500.0)
    assert store.publish_pipeline(replace(v1, created_at=700.0)) is True
    assert store.latest_pipeline("churn") == replace(v1, created_at=700.0)
    assert [v.version for v in store.pipeline_versions("churn")] == ["v1"]  # v2 stays deleted


def test_save_pipeline_keeps_owner_none(store: SqlStore) -> None:
    record = PipelineRecord("churn", "v1", "{}", 100.0)
    store.save_pipeline(record)
    assert store.get_pipeline("churn", "v1") == record
    assert store.get_pipeline("churn", "v1").owner is None
    assert store.pipeline_owner("churn") == (True, None)
    assert [v.owner for v in store.pipeline_versions("churn")] == [None]


def test_pipeline_versions_carry_owner(store: SqlStore) -> None:
    store.publish_pipeline(PipelineRecord("churn", "v1", "{}", 100.0, owner="team-a"))
    store.publish_pipeline(PipelineRecord("churn", "v2", "{}", 200.0, owner="team-b"))
    store.save_pipeline(PipelineRecord("eta", "e1", "{}", 150.0))
    assert [(v.pipeline, v.version, v.owner) for v in store.pipeline_versions()] == [
        ("churn", "v2", "team-b"),
        ("churn", "v1", "team-a"),
        ("eta", "e1", None),
    ]
    assert [(v.version, v.owner) for v in store.pipeline_versions("churn")] == [
        ("v2", "team-b"),
        ("v1", "team-a"),
    ]


# -- runs -------------------------------------------------------------------------


def test_run_owner_and_triggered_by_round_trip(store: SqlStore) -> None:
    run = make_run(owner="team-a", triggered_by="alice")
    store.create_run(run, ["extract", "train"])
    got = store.get_run("r1")
    assert got == run
    assert (got.owner, got.triggered_by) == ("team-a", "alice")


def test_run_owner_and_triggered_by_default_to_none(store: SqlStore) -> None:
    store.create_run(make_run(), [])
    got = store.get_run("r1")
    assert (got.owner, got.triggered_by) == (None, None)


def test_query_runs_by_owner_and_triggered_by(store: SqlStore) -> None:
    for run in [
        make_run("r1", created_at=10.0, owner="team-a", triggered_by="alice"),
        make_run("r2", created_at=20.0, owner="team-b", triggered_by="alice"),
        make_run("r3", created_at=30.0, owner="team-a", triggered_by="bob"),
        make_run("r4", created_at=40.0, pipeline="eta", owner="team-a", triggered_by="alice"),
        make_run("r5", created_at=50.0),
        make_run("r6", created_at=50.0, owner="team-a", triggered_by="alice"),
    ]:
        store.create_run(run, ["a"])

    def ids(**kwargs: object) -> list[str]:
        return [r.run_id for r in store.query_runs(**kwargs)]  # type: ignore[arg-type]

    assert ids(owner="team-a") == ["r6", "r4", "r3", "r1"]
    assert ids(owner="team-b") == ["r2"]
    assert ids(owner="team-c") == []
    assert ids(triggered_by="alice") == ["r6", "r4", "r2", "r1"]
    assert ids(triggered_by="bob") == ["r3"]
    assert ids(owner="team-a", triggered_by="alice") == ["r6", "r4", "r1"]
    assert ids(pipeline="churn", owner="team-a") == ["r6", "r3", "r1"]
    assert ids(pipeline="churn", triggered_by="alice") == ["r6", "r2", "r1"]
    assert ids(pipeline="churn", owner="team-a", triggered_by="alice") == ["r6", "r1"]
    assert ids(pipeline="eta", owner="team-b") == []
    assert ids(owner="team-a", limit=2) == ["r6", "r4"]
    assert ids(owner="team-a", before=(40.0, "r4")) == ["r3", "r1"]
    assert ids(owner="team-a", states=["queued"], since=20.0, until=50.0) == ["r4", "r3"]
    assert ids() == ["r6", "r5", "r4", "r3", "r2", "r1"]


def test_requeue_run_is_a_compare_and_set_on_the_ended_state(store: SqlStore) -> None:
    from stageflow.runtime.store import Batch, EventRecord, RunUpdate, TaskRunRecord

    store.create_run(make_run("r1"), ["a", "b"])
    store.commit(
        Batch(
            runs=[RunUpdate("r1", state="failed", ended_at=9.0)],
            task_runs=[
                TaskRunRecord("r1", "a", "success", 1, 1.0, 2.0),
                TaskRunRecord("r1", "b", "failed", 1, 2.0, 3.0, "boom"),
            ],
        )
    )
    before = store.get_run("r1")
    event = EventRecord("r1", "b", "failed", "pending", 10.0, 1, "reset by retry")
    assert store.requeue_run("r1", "failed", ["b"], [event], 10.0) is True
    after = store.get_run("r1")
    assert (after.state, after.ended_at, after.lease_owner, after.lease_expires_at) == (
        "running",
        None,
        None,
        None,
    )
    assert after.lease_epoch == before.lease_epoch + 1
    assert [(t.task_id, t.state, t.attempts, t.error) for t in store.task_runs("r1")] == [
        ("a", "success", 1, None),
        ("b", "pending", 1, None),
    ]
    assert store.events("r1")[-1] == event
    # A second retry of the same ended state changes nothing: the run moved on.
    assert store.requeue_run("r1", "failed", ["a", "b"], [event], 11.0) is False
    assert [t.state for t in store.task_runs("r1")] == ["success", "pending"]
    assert store.claimable_runs(12.0, 10)[0].run_id == "r1"  # a worker may take it


def test_activity_counts_what_unfinished_runs_are_doing(store: SqlStore) -> None:
    from stageflow.runtime.store import Batch, RunUpdate, TaskRunRecord

    store.create_run(make_run("queued", created_at=100.0), ["a", "b"])
    store.create_run(
        replace(make_run("silent", created_at=90.0), state="running", lease_epoch=1),
        ["a", "b"],
    )
    store.create_run(make_run("done", created_at=80.0), ["a"])
    store.commit(
        Batch(
            runs=[RunUpdate("done", state="success", ended_at=85.0)],
            task_runs=[
                TaskRunRecord("silent", "a", "success", 1, 91.0, 92.0),
                TaskRunRecord("silent", "b", "running", 1, 92.0),
                TaskRunRecord("done", "a", "success", 1, 81.0, 82.0),
            ],
        )
    )
    with store._transaction() as cur:  # the silent run's lease ran out at 95
        cur.execute(
            store.dialect.sql("UPDATE runs SET lease_expires_at = ? WHERE run_id = ?"),
            (95.0, "silent"),
        )
    activity = store.activity(now=120.0)
    assert activity.tasks == {"pending": 2, "running": 1, "success": 1}
    assert activity.oldest_queued_at == 100.0
    assert activity.expired_leases == 1
    assert store.activity(now=94.0).expired_leases == 0


def test_run_durations_count_ended_runs_into_buckets_by_pipeline(store: SqlStore) -> None:
    from stageflow.runtime.store import Batch, RunUpdate

    spans = {"a1": ("etl", 0.5), "a2": ("etl", 30.0), "b1": ("train", 4.0)}
    for run_id, (pipeline, took) in spans.items():
        store.create_run(make_run(run_id, pipeline=pipeline), [])
        store.commit(
            Batch(runs=[RunUpdate(run_id, state="success", started_at=10.0, ended_at=10.0 + took)])
        )
    store.create_run(make_run("queued", pipeline="etl"), [])  # not ended: not counted
    found = sorted(store.run_durations([1.0, 5.0, 60.0]))
    assert found == [("etl", 2, 30.5, [1, 1, 2]), ("train", 1, 4.0, [0, 1, 1])]
