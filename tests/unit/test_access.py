"""Unit tests of ``stageflow.operations.access`` (tokens, roles, owners, audit log)
and of the pure bookkeeping of ``stageflow.service.supervisor`` (no processes)."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stageflow.errors import UsageError
from stageflow.operations.access import (
    AuditPage,
    Identity,
    TokenInfo,
    audit_log,
    authenticate,
    code_tasks,
    create_token,
    may,
    record_audit,
    revoke_token,
    sees,
)
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import AuditEntry, Store, TokenRecord
from stageflow.service.supervisor import Supervisor, _Child
from stageflow.spec.load import pipeline_from_data

NOW = 1_700_000_000.0
DAY = 86400.0
TOKEN_FORM = re.compile(r"sft_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(None, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def _usage(exc: pytest.ExceptionInfo[UsageError]) -> tuple[str | None, str]:
    return exc.value.field, str(exc.value)


# --------------------------------------------------------------------------- create_token


def test_create_token_returns_well_formed_token_and_info(store: Store) -> None:
    created = create_token(store, "ci-bot", "operator", owner="team-a", expires_days=2, now=NOW)
    found = TOKEN_FORM.fullmatch(created.token)
    assert found is not None
    token_id, secret = found.groups()
    assert created.info == TokenInfo(
        token_id=token_id,
        name="ci-bot",
        role="operator",
        owner="team-a",
        created_at=NOW,
        expires_at=NOW + 2 * DAY,
        revoked_at=None,
        last_used_at=None,
    )
    assert len(secret) == 43


def test_create_token_without_owner_or_expiry(store: Store) -> None:
    created = create_token(store, "cli", "viewer", now=NOW)
    assert created.info.owner is None
    assert created.info.expires_at is None
    assert created.info.role == "viewer"
    assert created.info.created_at == NOW


def test_stored_row_holds_sha256_of_secret_never_the_secret(store: Store) -> None:
    created = create_token(store, "ops", "admin", owner="ops", expires_days=1.5, now=NOW)
    token_id, secret = TOKEN_FORM.fullmatch(created.token).groups()  # type: ignore[union-attr]
    row = store.get_token(token_id)
    assert row == TokenRecord(
        token_id=token_id,
        name="ops",
        role="admin",
        owner="ops",
        secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
        created_at=NOW,
        expires_at=NOW + 1.5 * DAY,
        revoked_at=None,
        last_used_at=None,
    )
    assert secret not in repr(row)
    assert created.token not in repr(row)


def test_two_tokens_get_different_ids_and_secrets(store: Store) -> None:
    a = TOKEN_FORM.fullmatch(create_token(store, "a", "viewer", now=NOW).token)
    b = TOKEN_FORM.fullmatch(create_token(store, "b", "viewer", now=NOW).token)
    assert a is not None and b is not None
    assert a.group(1) != b.group(1)
    assert a.group(2) != b.group(2)


@pytest.mark.parametrize("name", ["", "a b", " a", "a" * 65, "-leading", ".dot", "é"])
def test_create_token_bad_name(store: Store, name: str) -> None:
    with pytest.raises(UsageError) as exc:
        create_token(store, name, "viewer", now=NOW)
    assert exc.value.field == "name"
    assert repr(name) in str(exc.value)
    assert store.tokens() == []


def test_create_token_name_of_64_chars_is_accepted(store: Store) -> None:
    name = "a" + "b" * 62 + "@"
    assert len(name) == 64
    assert create_token(store, name, "viewer", now=NOW).info.name == name


@pytest.mark.parametrize("role", ["", "root", "Admin", "viewer "])
def test_create_token_bad_role(store: Store, role: str) -> None:
    with pytest.raises(UsageError) as exc:
        create_token(store, "n", role, now=NOW)
    assert _usage(exc) == (
        "role",
        f"unknown role '{role}'; use one of: viewer, operator, editor, admin",
    )
    assert store.tokens() == []


@pytest.mark.parametrize("owner", ["", "team a", "-team", "x" * 65])
def test_create_token_bad_owner(store: Store, owner: str) -> None:
    with pytest.raises(UsageError) as exc:
        create_token(store, "n", "viewer", owner=owner, now=NOW)
    assert _usage(exc) == (
        "owner",
        f"owner {owner!r} must be 1-64 letters, digits, '.', '_', '@' or '-'",
    )
    assert store.tokens() == []


@pytest.mark.parametrize("days", [0, -1, -0.5, 3650.001, 3651, float("nan"), float("inf")])
def test_create_token_bad_expiry(store: Store, days: float) -> None:
    with pytest.raises(UsageError) as exc:
        create_token(store, "n", "viewer", expires_days=days, now=NOW)
    assert exc.value.field == "expires"
    assert str(exc.value) == (
        f"--expires is {days:g} days; it must be more than 0 and at most 3650"
    )
    assert store.tokens() == []


@pytest.mark.parametrize("days", [0.001, 1, 3650])
def test_create_token_expiry_bounds_accepted(store: Store, days: float) -> None:
    assert create_token(store, "n", "viewer", expires_days=days, now=NOW).info.expires_at == (
        NOW + days * DAY
    )


def test_create_token_duplicate_name(store: Store) -> None:
    create_token(store, "dup", "viewer", now=NOW)
    with pytest.raises(UsageError) as exc:
        create_token(store, "dup", "admin", now=NOW)
    assert exc.value.field == "name"
    assert "a token named 'dup' exists already" in str(exc.value)
    assert [t.name for t in store.tokens()] == ["dup"]


def test_create_token_duplicate_name_of_revoked_token(store: Store) -> None:
    create_token(store, "old", "viewer", now=NOW)
    revoke_token(store, "old", now=NOW + 1)
    with pytest.raises(UsageError) as exc:
        create_token(store, "old", "viewer", now=NOW + 2)
    assert exc.value.field == "name"
    assert "a token named 'old' exists already" in str(exc.value)


# --------------------------------------------------------------------------- authenticate


def test_authenticate_right_token(store: Store) -> None:
    created = create_token(store, "alice", "editor", owner="ml", now=NOW)
    assert authenticate(store, created.token, now=NOW) == Identity("alice", "editor", "ml")
    assert authenticate(store, created.token, now=NOW) == Identity(
        name="alice", role="editor", owner="ml", via="token"
    )


def test_authenticate_token_without_owner(store: Store) -> None:
    created = create_token(store, "cli", "admin", now=NOW)
    assert authenticate(store, created.token, now=NOW) == Identity("cli", "admin", None)


@pytest.mark.parametrize("pad", [" ", "\n", "\t ", " \r\n"])
def test_authenticate_accepts_surrounding_whitespace(store: Store, pad: str) -> None:
    created = create_token(store, "alice", "viewer", now=NOW)
    assert authenticate(store, pad + created.token + pad, now=NOW) == Identity(
        "alice", "viewer", None
    )


def test_authenticate_wrong_secret_with_right_id(store: Store) -> None:
    created = create_token(store, "alice", "admin", now=NOW)
    token_id, secret = TOKEN_FORM.fullmatch(created.token).groups()  # type: ignore[union-attr]
    other = ("A" if secret[0] != "A" else "B") + secret[1:]
    assert authenticate(store, f"sft_{token_id}_{other}", now=NOW) is None
    assert authenticate(store, f"sft_{token_id}_{'x' * 43}", now=NOW) is None


def test_authenticate_unknown_id(store: Store) -> None:
    created = create_token(store, "alice", "admin", now=NOW)
    token_id, secret = TOKEN_FORM.fullmatch(created.token).groups()  # type: ignore[union-attr]
    unknown = "000000000000" if token_id != "000000000000" else "111111111111"
    assert authenticate(store, f"sft_{unknown}_{secret}", now=NOW) is None


def test_authenticate_malformed(store: Store) -> None:
    created = create_token(store, "alice", "admin", now=NOW)
    token_id, secret = TOKEN_FORM.fullmatch(created.token).groups()  # type: ignore[union-attr]
    for bad in [
        "",
        "   ",
        "Bearer x",
        f"Bearer {created.token}",
        "sft_short_x",
        created.token + "x",
        created.token[:-1],
        created.token.upper(),
        f"sfx_{token_id}_{secret}",
        f"sft_{token_id}{secret}",
        f"sft-{token_id}-{secret}",
        f"{token_id}_{secret}",
        f"sft_{token_id}_{secret} x",
    ]:
        assert authenticate(store, bad, now=NOW) is None, bad


def test_authenticate_revoked(store: Store) -> None:
    created = create_token(store, "alice", "admin", now=NOW)
    revoke_token(store, "alice", now=NOW + 10)
    assert authenticate(store, created.token, now=NOW + 11) is None
    assert store.get_token(created.info.token_id).revoked_at == NOW + 10  # type: ignore[union-attr]


def test_authenticate_expired(store: Store) -> None:
    created = create_token(store, "alice", "admin", expires_days=1, now=NOW)
    assert authenticate(store, created.token, now=NOW + DAY - 1) == Identity("alice", "admin", None)
    assert authenticate(store, created.token, now=NOW + DAY) is None
    assert authenticate(store, created.token, now=NOW + 2 * DAY) is None


def test_token_info_state(store: Store) -> None:
    created = create_token(store, "alice", "admin", expires_days=1, now=NOW)
    assert created.info.state(NOW) == "active"
    assert created.info.state(NOW + DAY) == "expired"


# --------------------------------------------------------------------------- revoke_token


def test_revoke_unknown_name_lists_live_tokens(store: Store) -> None:
    create_token(store, "a", "viewer", now=NOW)
    create_token(store, "b", "viewer", now=NOW)
    create_token(store, "c", "viewer", now=NOW)
    revoke_token(store, "b", now=NOW)
    with pytest.raises(UsageError) as exc:
        revoke_token(store, "zzz", now=NOW)
    assert _usage(exc) == ("name", "no live token named 'zzz'; live tokens: a, c")


def test_revoke_twice_and_with_no_tokens(store: Store) -> None:
    with pytest.raises(UsageError) as exc:
        revoke_token(store, "a", now=NOW)
    assert _usage(exc) == ("name", "no live token named 'a'; live tokens: none")
    create_token(store, "a", "viewer", now=NOW)
    revoke_token(store, "a", now=NOW)
    with pytest.raises(UsageError) as exc:
        revoke_token(store, "a", now=NOW)
    assert _usage(exc) == ("name", "no live token named 'a'; live tokens: none")


# --------------------------------------------------------------------------- may / sees

MAY_TABLE = {
    #           read   operate edit   admin
    "viewer": (True, False, False, False),
    "operator": (True, True, False, False),
    "editor": (True, True, True, False),
    "admin": (True, True, True, True),
}
ACTIONS = ("read", "operate", "edit", "admin")


def test_may_matrix() -> None:
    got = {
        role: tuple(may(Identity("x", role, None), action) for action in ACTIONS)  # type: ignore[arg-type]
        for role in MAY_TABLE
    }
    assert got == MAY_TABLE


def test_may_ignores_owner() -> None:
    assert may(Identity("x", "viewer", "team"), "read") is True
    assert may(Identity("x", "viewer", "team"), "operate") is False


@pytest.mark.parametrize("owner", [None, "team-a", "team-b", ""])
def test_admin_sees_every_owner(owner: str | None) -> None:
    assert sees(Identity("root", "admin", None), owner) is True
    assert sees(Identity("root", "admin", "team-a"), owner) is True


@pytest.mark.parametrize("role", ["viewer", "operator", "editor"])
def test_non_admin_sees_only_its_owner(role: Any) -> None:
    team = Identity("x", role, "team-a")
    assert sees(team, "team-a") is True
    assert sees(team, "team-b") is False
    assert sees(team, None) is False
    assert sees(team, "TEAM-A") is False
    ownerless = Identity("y", role, None)
    assert sees(ownerless, None) is True
    assert sees(ownerless, "team-a") is False


def test_identity_json() -> None:
    assert Identity("x", "editor", "t").as_json() == {
        "name": "x",
        "role": "editor",
        "owner": "t",
        "via": "token",
    }
    assert Identity("x", "admin", None).is_admin is True
    assert Identity("x", "editor", None).is_admin is False


# --------------------------------------------------------------------------- code_tasks


def test_code_tasks_exact_ids_in_order() -> None:
    pipeline = pipeline_from_data(
        {
            "name": "p",
            "tasks": [
                {"id": "notify", "operator": "notification", "parameters": {"message": "hi"}},
                {"id": "sh", "operator": "bash", "parameters": {"command": "echo hi"}},
                {
                    "id": "script",
                    "operator": "custom_script",
                    "parameters": {"script_content": "print(1)"},
                },
                {"id": "py", "operator": "python", "call": "os.path:join"},
                {"id": "called", "call": "os.path:join", "parameters": {"a": "x"}},
                {"id": "quiet", "operator": "notification", "fallback": {"value": 1}},
                {"id": "fb", "operator": "notification", "fallback": {"call": "os.path:join"}},
                {
                    "id": "notify_call",
                    "operator": "notification",
                    "call": "os.path:join",
                },
                {"id": "last", "operator": "notification"},
            ],
        }
    )
    assert code_tasks(pipeline) == ["sh", "script", "py", "called", "fb", "notify_call"]


def test_code_tasks_none() -> None:
    pipeline = pipeline_from_data(
        {
            "name": "p",
            "tasks": [
                {"id": "a", "operator": "notification"},
                {"id": "b", "operator": "notification", "upstream": ["a"]},
            ],
        }
    )
    assert code_tasks(pipeline) == []


def test_code_tasks_feature_engineering_call_step() -> None:
    pipeline = pipeline_from_data(
        {
            "name": "p",
            "tasks": [
                {
                    "id": "features",
                    "operator": "feature_engineering",
                    "parameters": {"steps": [{"call": "os.path:join"}]},
                }
            ],
        }
    )
    assert code_tasks(pipeline) == ["features"]


# --------------------------------------------------------------------------- audit log


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_audit_log_limit_bounds(store: Store, limit: int) -> None:
    with pytest.raises(UsageError) as exc:
        audit_log(store, limit=limit)
    assert _usage(exc) == ("limit", f"limit is {limit}; it must be 1..1000")


@pytest.mark.parametrize("limit", [1, 1000])
def test_audit_log_limit_edges_accepted(store: Store, limit: int) -> None:
    assert audit_log(store, limit=limit) == AuditPage([], None)


@pytest.mark.parametrize("cursor", ["x", "", "-1", "1.5", " 3", "abc"])
def test_audit_log_bad_cursor(store: Store, cursor: str) -> None:
    with pytest.raises(UsageError) as exc:
        audit_log(store, cursor=cursor)
    assert _usage(exc) == (
        "cursor",
        f"cursor {cursor!r} is not one this log gave; use the next_cursor of a page",
    )


def test_audit_log_superscript_cursor_is_usage_error(store: Store) -> None:
    with pytest.raises(UsageError) as exc:
        audit_log(store, cursor="²")
    assert exc.value.field == "cursor"


def _five(store: Store) -> list[int]:
    return [
        record_audit(
            store,
            at=NOW + i,
            actor=f"actor{i}",
            action="run.submit",
            status=201,
            role="operator",
            owner="team",
            target=f"run-{i}",
            client="127.0.0.1",
            detail=f"d{i}",
        )
        for i in range(1, 6)
    ]


def test_audit_paging(store: Store) -> None:
    assert _five(store) == [1, 2, 3, 4, 5]
    first = audit_log(store, limit=2)
    assert [e.entry_id for e in first.entries] == [5, 4]
    assert first.next_cursor == "4"
    second = audit_log(store, limit=2, cursor=first.next_cursor)
    assert [e.entry_id for e in second.entries] == [3, 2]
    assert second.next_cursor == "2"
    third = audit_log(store, limit=2, cursor=second.next_cursor)
    assert [e.entry_id for e in third.entries] == [1]
    assert third.next_cursor is None


def test_audit_entry_fields_round_trip(store: Store) -> None:
    _five(store)
    page = audit_log(store, limit=1)
    assert page.entries == [
        AuditEntry(
            at=NOW + 5,
            actor="actor5",
            action="run.submit",
            status=201,
            role="operator",
            owner="team",
            target="run-5",
            client="127.0.0.1",
            detail="d5",
            entry_id=5,
        )
    ]
    assert page.next_cursor == "5"


def test_audit_log_whole_log_in_one_page(store: Store) -> None:
    _five(store)
    page = audit_log(store)
    assert [e.entry_id for e in page.entries] == [5, 4, 3, 2, 1]
    assert page.next_cursor is None


def test_audit_log_filters(store: Store) -> None:
    _five(store)
    assert [e.entry_id for e in audit_log(store, actor="actor2").entries] == [2]
    assert [e.entry_id for e in audit_log(store, since=NOW + 4).entries] == [5, 4]


def test_record_audit_cuts_detail_to_2000(store: Store) -> None:
    long_id = record_audit(store, at=NOW, actor="a", action="x", status=200, detail="y" * 2500)
    exact_id = record_audit(store, at=NOW, actor="a", action="x", status=200, detail="z" * 2000)
    none_id = record_audit(store, at=NOW, actor="a", action="x", status=500)
    entries = {e.entry_id: e for e in audit_log(store).entries}
    assert entries[long_id].detail == "y" * 2000
    assert entries[exact_id].detail == "z" * 2000
    assert entries[none_id].detail is None
    assert entries[none_id].role is None
    assert entries[none_id].status == 500


def test_audit_page_json(store: Store) -> None:
    record_audit(store, at=0.0, actor="a", action="token.create", status=201, target="t")
    assert audit_log(store).as_json()["entries"][0] == {
        "id": 1,
        "at": "1970-01-01T00:00:00.000+00:00",
        "actor": "a",
        "role": None,
        "owner": None,
        "action": "token.create",
        "target": "t",
        "client": None,
        "status": 201,
        "detail": None,
    }
    assert audit_log(store).as_json()["next_cursor"] is None


# --------------------------------------------------------------------------- supervisor


@dataclass
class _FakeProc:
    pid: int
    code: int | None = None

    def poll(self) -> int | None:
        return self.code


def _supervisor(lines: list[str], spawned: list[int]) -> Supervisor:
    sup = Supervisor(count=1, say=lines.append)

    def spawn(child: _Child) -> None:
        child.process = _FakeProc(pid=1000 + len(spawned))  # type: ignore[assignment]
        spawned.append(child.index)

    sup._spawn = spawn  # type: ignore[method-assign]
    return sup


def test_supervisor_exit_schedules_restart_after_backoff() -> None:
    lines: list[str] = []
    spawned: list[int] = []
    sup = _supervisor(lines, spawned)
    child = _Child(0, process=_FakeProc(4242, code=3), started_at=90.0)  # type: ignore[arg-type]
    sup._tend(child, 100.0)
    assert child.process is None
    assert child.due_at == 101.0
    assert child.backoff == 2.0
    assert lines == ["worker 0 (pid 4242) exited with status 3; starting it again in 1s"]
    sup._tend(child, 100.5)
    assert spawned == []
    assert child.restarts == 0
    sup._tend(child, 101.0)
    assert spawned == [0]
    assert child.restarts == 1
    assert child.process == _FakeProc(1000)


def test_supervisor_backoff_doubles_up_to_30() -> None:
    sup = _supervisor([], [])
    child = _Child(0)
    delays = []
    for _ in range(8):
        child.process = _FakeProc(1, code=1)  # type: ignore[assignment]
        before = child.backoff
        sup._tend(child, 0.0)
        assert child.due_at == before
        delays.append(before)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_supervisor_backoff_resets_once_healthy() -> None:
    sup = _supervisor([], [])
    child = _Child(0, process=_FakeProc(1), started_at=10.0, backoff=16.0)  # type: ignore[arg-type]
    sup._tend(child, 69.9)
    assert child.backoff == 16.0
    sup._tend(child, 70.0)
    assert child.backoff == 1.0
    assert child.process == _FakeProc(1)


def test_supervisor_no_restart_while_stopping() -> None:
    spawned: list[int] = []
    sup = _supervisor([], spawned)
    sup._stopping.set()
    child = _Child(0, due_at=5.0)
    sup._tend(child, 100.0)
    assert spawned == []
    assert child.restarts == 0


def test_supervisor_alive_and_pids() -> None:
    sup = Supervisor(count=3)
    sup._children = [
        _Child(0, process=_FakeProc(11)),  # type: ignore[arg-type]
        _Child(1, process=_FakeProc(12, code=0)),  # type: ignore[arg-type]
        _Child(2),
    ]
    assert sup.alive() == (1, 3)
    assert sup.pids() == [11, 12]


@pytest.mark.parametrize(
    ("algorithm", "code"),
    [
        ("random_forest", False),  # a short name of the built-in table
        ("sklearn.ensemble:RandomForestClassifier", False),  # a built-in path
        ("my_models:Net", True),  # a module of one's own: importing it runs its code
        ("my_models.Net", True),
    ],
)
def test_code_tasks_counts_an_algorithm_of_ones_own_as_code(algorithm: str, code: bool) -> None:
    pipeline = pipeline_from_data(
        {
            "name": "p",
            "tasks": [
                {
                    "id": "train",
                    "operator": "model_training",
                    "parameters": {"model_type": "classification", "algorithm": algorithm},
                }
            ],
        }
    )
    assert code_tasks(pipeline) == (["train"] if code else [])


def test_validation_without_imports_never_imports_a_module_the_spec_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stageflow.runtime.plan import plan_problems

    marker = tmp_path / "imported"
    (tmp_path / "sf_spec_named_mod.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('yes')\n"
        "class Net:\n    def fit(self, X, y):\n        return self\n"
        "def double(x):\n    return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pipeline = pipeline_from_data(
        {
            "name": "p",
            "tasks": [
                {
                    "id": "train",
                    "operator": "model_training",
                    "parameters": {
                        "model_type": "classification",
                        "algorithm": "sf_spec_named_mod:Net",
                        "hyperparameters": {"depth": 3},
                    },
                },
                {
                    "id": "features",
                    "operator": "feature_engineering",
                    "parameters": {"steps": [{"call": "sf_spec_named_mod:double"}]},
                },
                {"id": "called", "call": "sf_spec_named_mod:double"},
            ],
        }
    )
    assert plan_problems(pipeline, import_calls=False) == []
    assert not marker.exists()
    assert "sf_spec_named_mod" not in sys.modules


@pytest.mark.parametrize(
    ("parameters", "problems"),
    [
        ({"source": "/data/sales.csv"}, []),
        ({"source": "/data/deep/x.parquet"}, []),
        ({"source": "data/sales.csv"}, []),  # relative: where the worker reads it
        ({"source": "s3://bucket/x.csv"}, []),
        ({"source": "sklearn:wine"}, []),
        ({"message": "/etc/passwd"}, []),  # not a path parameter
        ({"source": "/etc/passwd"}, [("t", "parameters.source")]),
        ({"source": "file:///etc/passwd"}, [("t", "parameters.source")]),
        ({"source": "/data/../etc/passwd"}, [("t", "parameters.source")]),
        ({"source": "../secret.csv"}, [("t", "parameters.source")]),
        ({"output_path": "/tmp/out.csv"}, [("t", "parameters.output_path")]),
        ({"steps": [{"to": "/root/x"}]}, [("t", "parameters.steps.0.to")]),
        ({"source": "~/x.csv"}, [("t", "parameters.source")]),
    ],
)
def test_path_problems_confine_files_to_the_data_roots(
    parameters: dict[str, Any], problems: list[tuple[str, str]], tmp_path: Path
) -> None:
    from stageflow.operations.access import path_problems
    from stageflow.spec.models import Pipeline, Task

    pipeline = Pipeline("p", tasks=[Task("t", operator="notification", parameters=parameters)])
    found = path_problems(pipeline, ("/data",))
    assert [(task, field) for task, field, _ in found] == problems
    for _, _, why in found:
        assert "outside the data roots (/data)" in why or "climbs out" in why
