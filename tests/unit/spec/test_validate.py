"""Validation finds every problem of a spec at once, each naming task and field.

Structural problems (ids, duplicates, self-dependency, unknown upstream) come
from loading (``pipeline_from_data``); the rest (cycles, operators and their
parameters, ``call:`` targets, ``${params.X}``) from full validation
(``runtime.plan.check``). Loading a file reports both kinds together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stageflow.errors import InvalidSpec
from stageflow.runtime.loading import load_pipeline
from stageflow.runtime.plan import check, resolve_params, task_parameters
from stageflow.spec import Pipeline, Task, pipeline_from_data, pipeline_from_text
from stageflow.spec.models import Approval

Found = list[tuple[str | None, str | None, str]]


def _problems(data: dict[str, Any]) -> Found:
    """Every problem of ``data``: loading's, else full validation's."""
    with pytest.raises(InvalidSpec) as info:
        check(pipeline_from_data(data))
    return [(p.task, p.field, p.message) for p in info.value.problems]


def _bash(tid: str, *upstream: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": tid,
        "operator": "bash",
        "upstream": list(upstream),
        "parameters": {"command": "echo ok"},
        **fields,
    }


def _spec(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "p", **fields, "tasks": list(tasks)}


def _steps_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module ``sf_validate_steps`` importable for ``call:`` targets."""
    (tmp_path / "sf_validate_steps.py").write_text(
        "def load():\n    return 1\n\n"
        "def train(load, epochs):\n    return load * epochs\n\n"
        "not_a_function = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "sf_validate_steps"


# -- one problem of each kind --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "task", "field", "needle"),
    [
        pytest.param(
            _spec(_bash("train", "evaluate"), _bash("evaluate", "train")),
            "train",
            "upstream",
            "the tasks form a cycle: train -> evaluate -> train; remove one of these dependencies",
            id="cycle-2",
        ),
        pytest.param(
            _spec(_bash("a", "c"), _bash("b", "a"), _bash("c", "b"), _bash("d")),
            "a",
            "upstream",
            "cycle: a -> b -> c -> a",
            id="cycle-3",
        ),
        pytest.param(
            _spec(_bash("features"), _bash("train", "featurs")),
            "train",
            "upstream",
            "upstream task 'featurs' does not exist; did you mean 'features'?",
            id="unknown-upstream-suggested",
        ),
        pytest.param(
            _spec(_bash("features"), _bash("train", "zzz")),
            "train",
            "upstream",
            "upstream task 'zzz' does not exist; add that task or fix the id",
            id="unknown-upstream",
        ),
        pytest.param(
            _spec(_bash("a"), {"id": "b", "operator": "bash", "after": ["aa"]}),
            "b",
            "upstream",
            "upstream task 'aa' does not exist; did you mean 'a'?",
            id="unknown-after",
        ),
        pytest.param(
            _spec(_bash("a"), _bash("b"), _bash("a")),
            "a",
            "id",
            "duplicate task id (also task #1); ids must be unique",
            id="duplicate",
        ),
        pytest.param(
            _spec(_bash("a", "a")),
            "a",
            "upstream",
            "depends on itself; remove it from `upstream`",
            id="self-dependency",
        ),
        pytest.param(
            _spec(_bash("bad id")),
            "bad id",
            "id",
            "task id 'bad id' is invalid; it must start with a letter or digit",
            id="id-space",
        ),
        pytest.param(
            _spec(_bash("_private")),
            "_private",
            "id",
            "task id '_private' is invalid",
            id="id-underscore-first",
        ),
        pytest.param(
            _spec(_bash("../etc")), "../etc", "id", "task id '../etc' is invalid", id="id-path"
        ),
        pytest.param(
            _spec(_bash("a..b")), "a..b", "id", "contains '..'; use a single '.'", id="id-dotdot"
        ),
        pytest.param(
            _spec(_bash("t" * 129)),
            "t" * 129,
            "id",
            "task id is 129 characters long; the limit is 128",
            id="id-too-long",
        ),
        pytest.param(_spec(_bash("")), "", "id", "task id is empty", id="id-empty"),
        pytest.param(
            _spec(_bash("a"), name="my/pipeline"),
            None,
            "name",
            "pipeline name 'my/pipeline' is invalid",
            id="pipeline-name",
        ),
        pytest.param(
            _spec(), None, "tasks", "has no tasks; add at least one under `tasks:`", id="no-tasks"
        ),
        pytest.param(
            _spec({"id": "a", "operator": "bahs", "parameters": {"command": "x"}}),
            "a",
            "operator",
            "unknown operator 'bahs'; did you mean 'bash'?",
            id="unknown-operator-suggested",
        ),
        pytest.param(
            _spec({"id": "a", "operator": "quantum_leap"}),
            "a",
            "operator",
            "unknown operator 'quantum_leap'; known operators: ",
            id="unknown-operator",
        ),
        pytest.param(
            _spec({"id": "a", "operator": "bash"}),
            "a",
            "parameters.command",
            "operator 'bash' needs parameter 'command'; add it under `parameters:`",
            id="bash-without-command",
        ),
        pytest.param(
            _spec({"id": "a", "operator": "bash", "parameters": {"comand": "x", "command": "y"}}),
            "a",
            "parameters.comand",
            "operator 'bash' has no parameter 'comand'; did you mean 'command'?",
            id="bash-unknown-parameter",
        ),
        pytest.param(
            _spec({"id": "a", "operator": "bash", "parameters": {"command": ["echo"]}}),
            "a",
            "parameters.command",
            "operator 'bash': ",
            id="bash-command-not-text",
        ),
        pytest.param(
            _spec({"id": "a", "call": "no_such_pkg_xyz.steps:train"}),
            "a",
            "call",
            "cannot import call target 'no_such_pkg_xyz.steps:train': ModuleNotFoundError",
            id="call-module-missing",
        ),
        pytest.param(
            _spec({"id": "a", "call": "json:no_such_function"}),
            "a",
            "call",
            "AttributeError: module 'json' has no attribute 'no_such_function'",
            id="call-attribute-missing",
        ),
        pytest.param(
            _spec({"id": "a", "call": "not a reference"}),
            "a",
            "call",
            "call target 'not a reference' is not of the form 'package.module:function'",
            id="call-malformed",
        ),
        pytest.param(
            _spec({"id": "a", "call": "json:dumps"}),
            "a",
            "call",
            "function dumps needs parameter 'obj', but no upstream task, task parameter",
            id="call-unbound-parameter",
        ),
        pytest.param(
            _spec({"id": "a", "operator": "bash", "call": "json:dumps"}),
            "a",
            "call",
            "`call:` runs a Python function, but operator is 'bash'; drop one of them",
            id="operator-and-call",
        ),
        pytest.param(
            _spec({"id": "a"}),
            "a",
            "operator",
            "says nothing to run; give `operator:` or `call: module:function`",
            id="nothing-to-run",
        ),
        pytest.param(
            _spec(_bash("a", upstrem=["b"])),
            "a",
            "upstrem",
            "unknown key 'upstrem'; did you mean 'upstream'?",
            id="unknown-task-key",
        ),
        pytest.param(
            _spec(_bash("a"), ownr="me"),
            None,
            "ownr",
            "unknown key 'ownr'; did you mean 'owner'?",
            id="unknown-pipeline-key",
        ),
        pytest.param(
            _spec(_bash("a", retry={"max_retrys": 2})),
            "a",
            "retry.max_retrys",
            "unknown key 'max_retrys'; did you mean 'max_retries'?",
            id="unknown-retry-key",
        ),
        pytest.param(
            _spec(_bash("a", resources={"gpus": 1})),
            "a",
            "resources.gpus",
            "unknown key 'gpus'; did you mean 'gpu'?",
            id="unknown-resources-key",
        ),
        pytest.param(
            _spec(_bash("a"), defaults={"timout_seconds": 3}),
            None,
            "defaults.timout_seconds",
            "unknown key 'timout_seconds'; did you mean 'timeout_seconds'?",
            id="unknown-defaults-key",
        ),
        pytest.param(
            _spec(_bash("a", flavour="x")),
            "a",
            "flavour",
            "unknown key 'flavour'; known keys: id, name, description, operator, call",
            id="unknown-key-no-suggestion",
        ),
        pytest.param(
            _spec(
                {"id": "a", "operator": "bash", "parameters": {"command": "echo ${params.epoch}"}},
                params={"epochs": 3},
            ),
            "a",
            "parameters.command",
            "refers to ${params.epoch}, which is not a run parameter; declare it under "
            "`params:` (known: epochs)",
            id="unknown-param",
        ),
        pytest.param(
            _spec(
                {
                    "id": "a",
                    "operator": "bash",
                    "parameters": {"command": "x", "env": {"K": "${params.nope}"}},
                }
            ),
            "a",
            "parameters.env.K",
            "refers to ${params.nope}, which is not a run parameter; declare it under the "
            "pipeline's `params:`",
            id="unknown-param-nested",
        ),
    ],
)
def test_each_problem_names_task_and_field(
    data: dict[str, Any], task: str | None, field: str, needle: str
) -> None:
    found = _problems(data)
    assert len(found) == 1, found
    assert found[0][:2] == (task, field)
    assert needle in found[0][2]


def test_problems_render_pipeline_task_and_field() -> None:
    with pytest.raises(InvalidSpec) as info:
        check(pipeline_from_data(_spec(_bash("a"), {"id": "b", "operator": "bash"})))
    assert info.value.pipeline == "p"
    assert str(info.value) == (
        "pipeline 'p' is invalid (1 problem):\n"
        "  - task 'b', field 'parameters.command': operator 'bash' needs parameter "
        "'command'; add it under `parameters:`"
    )
    assert info.value.problems[0].as_json() == {
        "task": "b",
        "field": "parameters.command",
        "message": "task 'b', field 'parameters.command': operator 'bash' needs parameter "
        "'command'; add it under `parameters:`",
    }


def test_call_targets_that_import_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _steps_module(tmp_path, monkeypatch)
    good = _spec(
        {"id": "load", "call": f"{mod}:load"},
        {"id": "train", "call": f"{mod}:train", "upstream": ["load"], "parameters": {"epochs": 2}},
    )
    check(pipeline_from_data(good))

    bad = _spec(
        {"id": "load", "call": f"{mod}:not_a_function"},
        {"id": "train", "call": f"{mod}:train", "parameters": {"epoch": 2}},
    )
    found = _problems(bad)
    assert [(t, f) for t, f, _ in found] == [
        ("load", "call"),
        ("train", "call"),
        ("train", "call"),
        ("train", "parameters.epoch"),
    ]
    assert "TypeError: sf_validate_steps:not_a_function is a int, not a function" in found[0][2]
    assert "function train needs parameter 'load'" in found[1][2]
    assert "function train needs parameter 'epochs'" in found[2][2]
    assert "parameter 'epoch' is not a parameter of function train" in found[3][2]


# -- many problems at once ---------------------------------------------------------------


MANY_PROBLEMS = """\
name: churn
ownr: data-team
params: {epochs: 3}
tasks:
  - id: ingest
    operator: bash
    parameters: {command: "echo ${params.dataset}"}
  - id: clean
    operator: bash
    upstrem: [ingest]
    parameters: {command: "echo clean"}
  - id: train
    operator: bahs
    upstream: [evaluate, featurs]
  - id: evaluate
    operator: bash
    upstream: [train]
  - id: evaluate
    operator: bash
    parameters: {command: "echo again"}
  - id: report
    operator: bash
    upstream: [report]
    parameters: {command: "echo", colour: red}
  - id: publish
    call: "no_such_pkg_xyz:publish"
  - id: "bad id"
    operator: bash
    parameters: {command: "echo"}
"""

EXPECTED = {
    (None, "ownr", "unknown key 'ownr'; did you mean 'owner'?"),
    ("clean", "upstrem", "unknown key 'upstrem'; did you mean 'upstream'?"),
    ("evaluate", "id", "duplicate task id (also task #4)"),
    ("bad id", "id", "task id 'bad id' is invalid"),
    ("train", "upstream", "upstream task 'featurs' does not exist; add that task or fix the id"),
    ("report", "upstream", "depends on itself"),
    ("ingest", "parameters.command", "refers to ${params.dataset}, which is not a run parameter"),
    ("train", "upstream", "the tasks form a cycle: train -> evaluate -> train"),
    ("train", "operator", "unknown operator 'bahs'; did you mean 'bash'?"),
    ("evaluate", "parameters.command", "operator 'bash' needs parameter 'command'"),
    ("report", "parameters.colour", "operator 'bash' has no parameter 'colour'"),
    ("publish", "call", "cannot import call target 'no_such_pkg_xyz:publish'"),
}


def _matches(found: Found, expected: set[tuple[str | None, str | None, str]]) -> None:
    for task, field, needle in expected:
        hits = [m for t, f, m in found if (t, f) == (task, field) and needle in m]
        assert hits, f"no problem ({task}, {field}, {needle!r}) in:\n" + "\n".join(map(str, found))
    assert len(found) == len(expected), "\n".join(map(str, found))


def test_a_spec_file_with_many_problems_reports_all_of_them_at_once(tmp_path: Path) -> None:
    spec = tmp_path / "churn.yaml"
    spec.write_text(MANY_PROBLEMS)
    with pytest.raises(InvalidSpec) as info:
        load_pipeline(str(spec))
    found = [(p.task, p.field, p.message) for p in info.value.problems]
    _matches(found, EXPECTED)
    assert str(info.value).startswith(f"pipeline 'churn' is invalid ({len(EXPECTED)} problems):")


def test_an_sdk_pipeline_with_many_problems_reports_all_of_them_at_once() -> None:
    def needs_rows(rows: list[int]) -> int:
        return len(rows)

    p = Pipeline(
        "sdk",
        params={"n": 1},
        tasks=[
            Task(id="a", operator="bash", upstream=["c"], parameters={"command": "x"}),
            Task(id="b", operator="bash", upstream=["a"]),
            Task(id="c", operator="bash", upstream=["b"], parameters={"command": "${params.m}"}),
            Task(id="c", operator="bsh"),
            Task("d", needs_rows, upstream=["d", "ghost"]),
        ],
    )
    with pytest.raises(InvalidSpec) as info:
        check(p)
    found = [(x.task, x.field, x.message) for x in info.value.problems]
    _matches(
        found,
        {
            ("c", "id", "duplicate task id (also task #3)"),
            ("d", "upstream", "depends on itself"),
            ("d", "upstream", "upstream task 'ghost' does not exist"),
            ("c", "parameters.command", "refers to ${params.m}"),
            ("a", "upstream", "the tasks form a cycle: a -> b -> c -> a"),
            ("b", "parameters.command", "operator 'bash' needs parameter 'command'"),
            ("c", "operator", "unknown operator 'bsh'; did you mean 'bash'?"),
            ("d", "call", "needs_rows needs parameter 'rows', but no upstream task"),
        },
    )


def test_type_errors_and_structure_problems_come_together() -> None:
    text = json.dumps(
        _spec(
            _bash("a", "ghost", timeout_seconds="soon"),
            _bash("a"),
            {"id": "b", "operator": "bash", "retry": {"backoff": "sometimes"}},
        )
    )
    with pytest.raises(InvalidSpec) as info:
        pipeline_from_text(text, fmt="json")
    assert {(p.task, p.field) for p in info.value.problems} == {
        ("a", "timeout_seconds"),
        ("b", "retry.backoff"),
        ("a", "id"),
        ("a", "upstream"),
    }


# -- did-you-mean at scale -----------------------------------------------------------------


def test_did_you_mean_for_5000_unknown_upstream_ids_in_20000_tasks() -> None:
    n, misses = 20_000, 5_000
    ids = [f"step_{i}_done" for i in range(n)]
    tasks: list[dict[str, Any]] = [{"id": tid, "operator": "bash"} for tid in ids]
    expected: dict[str, str] = {}
    for k in range(misses):
        target = ids[(k * 7919) % n]
        style = k % 4
        if style == 0:
            typo = target[:-1]  # a deleted letter: step_12_don
        elif style == 1:
            typo = target.replace("step", "stepp", 1)  # an inserted letter
        elif style == 2:
            typo = target.upper()  # case
        else:
            typo = target.replace("_", "-")  # dashes for underscores
        expected[typo] = target
        tasks[k]["upstream"] = [typo]

    with pytest.raises(InvalidSpec) as info:
        pipeline_from_data({"name": "big", "tasks": tasks})

    problems = info.value.problems
    assert len(problems) == misses
    for k, p in enumerate(problems):
        typo = tasks[k]["upstream"][0]
        assert (p.task, p.field) == (ids[k], "upstream")
        assert p.message == (
            f"upstream task '{typo}' does not exist; did you mean '{expected[typo]}'?"
        )


def test_unknown_upstream_far_from_every_id_gets_no_suggestion_at_scale() -> None:
    tasks: list[dict[str, Any]] = [{"id": f"t{i}", "operator": "bash"} for i in range(1000)]
    tasks[0]["upstream"] = ["completely-different"]
    with pytest.raises(InvalidSpec) as info:
        pipeline_from_data({"name": "p", "tasks": tasks})
    assert [p.message for p in info.value.problems] == [
        "upstream task 'completely-different' does not exist; add that task or fix the id"
    ]


# -- run parameters --------------------------------------------------------------------------


def test_params_are_substituted_with_overrides() -> None:
    p = pipeline_from_data(
        _spec(
            {
                "id": "a",
                "operator": "bash",
                "parameters": {"command": "train --epochs ${params.epochs}", "n": "${params.n}"},
            },
            params={"epochs": 3, "n": 1},
        )
    )
    params = resolve_params(p, {"epochs": 10})
    assert params == {"epochs": 10, "n": 1}
    assert task_parameters(p.task("a").parameters, params) == {
        "command": "train --epochs 10",
        "n": 1,  # a whole-string reference keeps the value's type
    }


def test_an_override_of_an_undeclared_parameter_is_refused() -> None:
    p = pipeline_from_data(_spec(_bash("a"), params={"epochs": 3, "lr": 0.1}))
    with pytest.raises(InvalidSpec) as info:
        resolve_params(p, {"epoch": 5, "batch": 2})
    assert [(x.field, x.message) for x in info.value.problems] == [
        (
            "params.epoch",
            "--param epoch: the pipeline declares no parameter 'epoch' (declared: epochs, lr); "
            "did you mean 'epochs'? Or add it under `params:`",
        ),
        (
            "params.batch",
            "--param batch: the pipeline declares no parameter 'batch' (declared: epochs, lr); "
            "add it under `params:`",
        ),
    ]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        pytest.param("My Workflow", True, id="seed-000-display-name"),
        pytest.param("churn-v2.1", True, id="id-like"),
        pytest.param(" padded", False, id="leading-space"),
        pytest.param("trailing ", False, id="trailing-space"),
        pytest.param("a/b", False, id="slash"),
        pytest.param("a..b", False, id="dot-dot"),
    ],
)
def test_pipeline_names_allow_inner_spaces(name: str, ok: bool) -> None:
    from stageflow.spec.models import Pipeline, Task
    from stageflow.spec.validate import pipeline_problems

    pipeline = Pipeline(name, tasks=[Task("a", operator="bash", parameters={"command": "true"})])
    problems = [p for p in pipeline_problems(pipeline) if p.field == "name"]
    assert (not problems) is ok, problems


# -- approval ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approval", "expected"),
    [
        pytest.param(True, Approval(), id="true-is-a-gate-with-defaults"),
        pytest.param(False, None, id="false-is-no-gate"),
        pytest.param(None, None, id="none-is-no-gate"),
        pytest.param({"approvers": ["alice"]}, Approval(approvers=["alice"]), id="mapping"),
    ],
)
def test_approval_true_is_a_gate_anyone_may_decide(
    approval: object, expected: Approval | None
) -> None:
    pipeline = pipeline_from_data(_spec(_bash("deploy", approval=approval)))
    assert pipeline.tasks[0].approval == expected
    assert Task("deploy", operator="bash", approval=approval).approval == expected


@pytest.mark.parametrize(
    ("approval", "shown"),
    [
        pytest.param("yes please", "'yes please'", id="text"),
        pytest.param(1, "1", id="number"),
        pytest.param(["alice"], "['alice']", id="list-of-approvers"),
    ],
)
def test_a_wrong_approval_says_what_to_write(approval: object, shown: str) -> None:
    assert _problems(_spec(_bash("deploy", approval=approval))) == [
        (
            "deploy",
            "approval",
            "approval is `true` (a gate anyone may decide, with no time limit) or a "
            "mapping: `approval: {message: ..., approvers: [...], timeout_seconds: ...}`, "
            f"each key optional; got {shown}",
        )
    ]
