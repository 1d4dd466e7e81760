"""The ``stageflow`` CLI as users and scripts meet it: a real subprocess, no TTY.

For every command's user mistakes: the exit code (2 invalid spec or bad
argument, 1 failed run or missing run), the key part of the message on stderr,
and never a traceback. ``--format json`` prints exactly one JSON value on stdout.
Each test gets its own ``STAGEFLOW_HOME``; runs shared by several tests are made
once per module in a home of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

STAGEFLOW = Path(sys.executable).with_name("stageflow")
SPECS = Path(__file__).resolve().parents[1] / "fixtures" / "specs"
HELLO = SPECS / "hello.yaml"
# Seed documents' variable names that settings also read: keep the host's out.
_SEED_VARS = {
    "DATABASE_URL",
    "MAX_PARALLEL_TASKS",
    "MAX_CONCURRENT_RUNS",
    "TASK_TIMEOUT",
    "MAX_RETRIES",
    "LOG_LEVEL",
    "API_HOST",
    "API_PORT",
}
RUN_KEYS = {"run_id", "pipeline", "state", "started_at", "ended_at", "tasks"}
TASK_KEYS = {
    "state",
    "attempts",
    "started_at",
    "ended_at",
    "duration_s",
    "error",
    "cached",
    "fallback",
}


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def sf(
    home: Path,
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    task_log: bool = False,
) -> Result:
    """Run the real CLI; fail the test on any traceback or internal error.

    ``task_log``: stdout is a task's own log, where the traceback of the user's
    exception belongs.
    """
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STAGEFLOW_") and k not in _SEED_VARS
    }
    environ["STAGEFLOW_HOME"] = str(home)
    environ.update(env or {})
    proc = subprocess.run(
        [str(STAGEFLOW), *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environ,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in (result.err if task_log else result.out + result.err), result
    assert "internal error" not in result.err, result
    return result


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# -- shared runs ---------------------------------------------------------------------------

STEPS = """\
def extract():
    print("hello from extract")
    return [1, 2, 3]

def total(extract):
    print("summing", extract)
    return sum(extract)

def broken(extract):
    raise ValueError("bad rows in extract")
"""

CALLS = """\
name: calls
tasks:
  - {id: extract, call: "cli_steps:extract"}
  - {id: total, call: "cli_steps:total", upstream: [extract]}
"""

FAILING = """\
name: failing
tasks:
  - {id: extract, call: "cli_steps:extract"}
  - {id: broken, call: "cli_steps:broken", upstream: [extract]}
  - {id: after-broken, operator: bash, upstream: [broken], parameters: {command: "echo no"}}
"""


@dataclass
class Runs:
    home: Path
    hello: str  # success, --param greeting=howdy
    calls: str  # success, python tasks that print
    failing: str  # failed


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    home = tmp_path_factory.mktemp("home")
    specs = tmp_path_factory.mktemp("specs")
    write(specs, "cli_steps.py", STEPS)
    ids = []
    for args in (
        [HELLO, "--param", "greeting=howdy"],
        [write(specs, "calls.yaml", CALLS)],
        [write(specs, "failing.yaml", FAILING)],
    ):
        r = sf(home, "run", *args, "--format", "json")
        ids.append(r.json()["run_id"])
    return Runs(home, *ids)


# -- validate ------------------------------------------------------------------------------


def _bomb() -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


BAD_SPECS = [
    pytest.param(
        "cycle.yaml",
        "name: p\ntasks:\n"
        "  - {id: train, operator: bash, upstream: [evaluate], parameters: {command: x}}\n"
        "  - {id: evaluate, operator: bash, upstream: [train], parameters: {command: x}}\n",
        None,
        "train",
        "upstream",
        "the tasks form a cycle: train -> evaluate -> train",
        id="cycle",
    ),
    pytest.param(
        "upstream.yaml",
        "name: p\ntasks:\n"
        "  - {id: features, operator: bash, parameters: {command: x}}\n"
        "  - {id: train, operator: bash, upstream: [featurs], parameters: {command: x}}\n",
        None,
        "train",
        "upstream",
        "upstream task 'featurs' does not exist; did you mean 'features'?",
        id="unknown-upstream",
    ),
    pytest.param(
        "dup.yaml",
        "name: p\ntasks:\n"
        "  - {id: a, operator: bash, parameters: {command: x}}\n"
        "  - {id: a, operator: bash, parameters: {command: y}}\n",
        None,
        "a",
        "id",
        "duplicate task id (also task #1)",
        id="duplicate-id",
    ),
    pytest.param(
        "self.yaml",
        "name: p\ntasks:\n  - {id: a, operator: bash, upstream: [a], parameters: {command: x}}\n",
        None,
        "a",
        "upstream",
        "depends on itself",
        id="self-dependency",
    ),
    pytest.param(
        "badid.yaml",
        'name: p\ntasks:\n  - {id: "../etc", operator: bash, parameters: {command: x}}\n',
        None,
        "../etc",
        "id",
        "task id '../etc' is invalid",
        id="invalid-id",
    ),
    pytest.param(
        "op.yaml",
        "name: p\ntasks:\n  - {id: a, operator: bahs, parameters: {command: x}}\n",
        None,
        "a",
        "operator",
        "unknown operator 'bahs'; did you mean 'bash'?",
        id="unknown-operator",
    ),
    pytest.param(
        "nocommand.yaml",
        "name: p\ntasks:\n  - {id: a, operator: bash}\n",
        None,
        "a",
        "parameters.command",
        "operator 'bash' needs parameter 'command'",
        id="bash-without-command",
    ),
    pytest.param(
        "call.yaml",
        'name: p\ntasks:\n  - {id: a, call: "no_such_pkg_xyz.steps:train"}\n',
        None,
        "a",
        "call",
        "cannot import call target 'no_such_pkg_xyz.steps:train'",
        id="call-not-importable",
    ),
    pytest.param(
        "key.yaml",
        "name: p\ntasks:\n  - {id: a, operator: bash, upstrem: [], parameters: {command: x}}\n",
        None,
        "a",
        "upstrem",
        "unknown key 'upstrem'; did you mean 'upstream'?",
        id="unknown-key",
    ),
    pytest.param(
        "param.yaml",
        "name: p\nparams: {epochs: 1}\ntasks:\n"
        '  - {id: a, operator: bash, parameters: {command: "${params.epoch}"}}\n',
        None,
        "a",
        "parameters.command",
        "refers to ${params.epoch}, which is not a run parameter",
        id="unknown-param",
    ),
    pytest.param(
        "types.json",
        json.dumps(
            {"name": "p", "tasks": [{"id": "a", "operator": "bash", "timeout_seconds": "soon"}]}
        ),
        None,
        "a",
        "timeout_seconds",
        "valid number",
        id="wrong-type",
    ),
    pytest.param(
        "seed_000_bash_missing_command.json",
        (SPECS / "seed_000_bash_missing_command.json").read_text(),
        None,
        "upload_dump",
        "parameters.command",
        "operator 'bash' needs parameter 'command'",
        id="seed-000-bash-without-command",
    ),
    pytest.param("empty.yaml", "", None, None, None, "is empty", id="empty"),
    pytest.param(
        "binary.yaml", b"\x89PNG\r\n\x1a\n\xff\xfe", None, None, None, "not UTF-8", id="binary"
    ),
    pytest.param("list.yaml", "- a\n- b\n", None, None, None, "must be a mapping", id="list"),
    pytest.param("scalar.json", "42", None, None, None, "not int", id="scalar"),
    pytest.param("nul.yaml", "name: p\x00\n", None, None, None, "NUL byte", id="nul"),
    pytest.param("syntax.json", '{"name": ', None, None, None, "is not valid JSON", id="json"),
    pytest.param(
        "bomb.yaml", _bomb(), None, None, None, "STAGEFLOW_MAX_SPEC_NODES", id="alias-bomb"
    ),
    pytest.param(
        "deep.yaml",
        "[" * 100_000 + "]" * 100_000,
        None,
        None,
        None,
        "nested deeper than the limit of 64 levels",
        id="deep-nesting",
    ),
    pytest.param(
        "big.yaml",
        HELLO.read_text(),
        {"STAGEFLOW_MAX_SPEC_BYTES": "200"},
        None,
        None,
        "over the limit of 200 (STAGEFLOW_MAX_SPEC_BYTES)",
        id="too-big",
    ),
    pytest.param(
        "many.yaml",
        HELLO.read_text(),
        {"STAGEFLOW_MAX_TASKS": "3"},
        None,
        None,
        "the pipeline has 4 tasks, over the limit of 3 (STAGEFLOW_MAX_TASKS)",
        id="too-many-tasks",
    ),
]


@pytest.mark.parametrize(("name", "content", "env", "task", "field", "needle"), BAD_SPECS)
def test_validate_reports_each_bad_spec(
    tmp_path: Path,
    name: str,
    content: str | bytes,
    env: dict[str, str] | None,
    task: str | None,
    field: str | None,
    needle: str,
) -> None:
    spec = write(tmp_path, name, content)

    text = sf(tmp_path, "validate", spec, env=env)
    assert text.code == 2, text
    assert text.out == ""
    assert text.err.startswith("error: ")
    assert needle in text.err
    if task is not None:
        assert f"task '{task}', field '{field}'" in text.err

    js = sf(tmp_path, "validate", spec, "--format", "json", env=env)
    assert js.code == 2, js
    doc = js.json()
    assert doc["valid"] is False
    assert doc["summary"] is None
    assert doc["errors"], doc
    assert all(set(e) == {"task", "field", "message"} for e in doc["errors"])
    assert any(
        (e["task"], e["field"]) == (task, field) and needle in e["message"] for e in doc["errors"]
    ), doc


def test_validate_never_runs_yaml_tags(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = write(
        tmp_path,
        "tag.yaml",
        f'name: !!python/object/apply:os.system ["touch {marker}"]\ntasks: []\n',
    )
    r = sf(tmp_path, "validate", spec)
    assert r.code == 2
    assert "YAML tags that build objects are not allowed in a spec" in r.err
    assert not marker.exists()
    r = sf(tmp_path, "run", spec)
    assert r.code == 2
    assert not marker.exists()


def test_validate_reports_many_problems_at_once(tmp_path: Path) -> None:
    spec = write(
        tmp_path,
        "many.yaml",
        "name: p\ntasks:\n"
        "  - {id: train, operator: bahs, upstream: [evaluate]}\n"
        "  - {id: evaluate, operator: bash, upstrem: [x], upstream: [train]}\n",
    )
    r = sf(tmp_path, "validate", spec, "--format", "json")
    assert r.code == 2
    found = {(e["task"], e["field"]) for e in r.json()["errors"]}
    assert found == {
        ("evaluate", "upstrem"),
        ("train", "upstream"),  # the cycle
        ("train", "operator"),
        ("evaluate", "parameters.command"),
    }


def test_validate_a_good_spec(tmp_path: Path) -> None:
    r = sf(tmp_path, "validate", HELLO)
    assert r.code == 0, r
    assert r.out == f"{HELLO}: pipeline 'hello' is valid: 4 tasks, 4 edges, depth 3, width 2\n"

    r = sf(tmp_path, "validate", SPECS / "hello.json", "--format", "json")
    assert r.code == 0, r
    assert r.json() == {
        "valid": True,
        "errors": [],
        "summary": {
            "tasks": 2,
            "edges": 1,
            "depth": 2,
            "width": 1,
            "critical_path": ["first", "second"],
        },
        "notes": [],
        "warnings": [],
    }

    summary = sf(tmp_path, "validate", HELLO, "--format", "json").json()["summary"]
    assert {k: summary[k] for k in ("tasks", "edges", "depth", "width")} == {
        "tasks": 4,
        "edges": 4,
        "depth": 3,
        "width": 2,
    }
    assert summary["critical_path"][0] == "greet"
    assert summary["critical_path"][-1] == "join"
    assert len(summary["critical_path"]) == 3


def test_validate_a_missing_file(tmp_path: Path) -> None:
    r = sf(tmp_path, "validate", tmp_path / "missing.yaml")
    assert r.code == 2
    assert "missing.yaml: no such file" in r.err


# -- run -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["missing.yaml"], "missing.yaml: no such file", id="missing-file"),
        pytest.param(["spec.txt"], "unknown file type '.txt'; use .yaml", id="unknown-extension"),
        pytest.param(
            [HELLO, "--param", "greeting"], "expected KEY=VALUE, e.g. --param", id="param-no-equals"
        ),
        pytest.param([HELLO, "--param", "=x"], "expected KEY=VALUE", id="param-no-key"),
        pytest.param(
            [HELLO, "--param", "nope=1"],
            "field 'params.nope': --param nope: the pipeline declares no parameter 'nope' "
            "(declared: greeting)",
            id="param-undeclared",
        ),
        pytest.param(
            [HELLO, "--executor", "ray"],
            "Invalid value for '--executor': 'ray' is not one of 'thread', 'process'",
            id="bad-executor",
        ),
        pytest.param(
            [HELLO, "--max-parallel", "0"],
            "Invalid value for '--max-parallel': 0 is not in the range 1<=x<=100000",
            id="max-parallel-0",
        ),
        pytest.param(
            ["no_such_module_xyz:pipeline"],
            "no_such_module_xyz:pipeline: cannot import module 'no_such_module_xyz'",
            id="module-missing",
        ),
        pytest.param(
            ["json:no_pipeline_here"],
            "json:no_pipeline_here: module 'json' has no attribute 'no_pipeline_here'",
            id="attribute-missing",
        ),
        pytest.param(
            ["not_a_pipeline.py:value"],
            "not_a_pipeline.py:value is int 1, not a stageflow Pipeline",
            id="file-attr-not-pipeline",
        ),
        pytest.param(
            ["no_file_here.py:pipeline"],
            "no such file no_file_here.py",
            id="python-file-missing",
        ),
        pytest.param(
            ["bad.yaml"],
            "task 'a', field 'parameters.command': operator 'bash' needs parameter 'command'",
            id="invalid-spec",
        ),
    ],
)
def test_run_usage_errors(tmp_path: Path, args: list[str | Path], needle: str) -> None:
    write(tmp_path, "spec.txt", "name: p\n")
    write(tmp_path, "not_a_pipeline.py", "value = 1\n")
    write(tmp_path, "bad.yaml", "name: p\ntasks:\n  - {id: a, operator: bash}\n")

    r = sf(tmp_path / "home", "run", *args, cwd=tmp_path)

    assert r.code == 2, r
    assert needle in r.err
    assert r.out == ""
    assert not (tmp_path / "home" / "artifacts").exists()  # nothing ran


def test_run_a_succeeding_pipeline_prints_one_json_object(tmp_path: Path) -> None:
    r = sf(tmp_path, "run", HELLO, "--format", "json")

    assert r.code == 0, r
    assert r.out.count("\n") == 1 and r.out.endswith("}\n")
    doc = r.json()
    assert set(doc) == RUN_KEYS
    assert (doc["pipeline"], doc["state"]) == ("hello", "success")
    assert doc["started_at"] <= doc["ended_at"]
    assert set(doc["tasks"]) == {"greet", "left", "right", "join"}
    for t in doc["tasks"].values():
        assert set(t) == TASK_KEYS
        assert (t["state"], t["attempts"], t["error"]) == ("success", 1, None)
        assert t["duration_s"] >= 0
    assert doc["tasks"]["greet"]["ended_at"] <= doc["tasks"]["join"]["started_at"]


def test_run_text_summary_and_python_file_target(tmp_path: Path) -> None:
    write(
        tmp_path,
        "sdk_pipeline.py",
        "from stageflow import Pipeline, task\n\n"
        "@task\ndef numbers():\n    return [1, 2, 3]\n\n"
        "@task\ndef total(numbers):\n    return sum(numbers)\n\n"
        "pipeline = Pipeline('sdk-file', tasks=[numbers, total])\n",
    )
    r = sf(tmp_path / "home", "run", "sdk_pipeline.py:pipeline", cwd=tmp_path)
    assert r.code == 0, r
    assert "of pipeline 'sdk-file': success" in r.out
    assert "output of total: 6" in r.out


def test_run_a_failing_pipeline(runs: Runs) -> None:
    r = sf(runs.home, "runs", "show", runs.failing, "--format", "json")
    assert r.code == 0, r
    doc = r.json()
    assert set(doc) == RUN_KEYS
    assert doc["state"] == "failed"
    assert doc["tasks"]["extract"]["state"] == "success"
    assert doc["tasks"]["broken"]["state"] == "failed"
    assert doc["tasks"]["broken"]["error"] == "ValueError: bad rows in extract"
    assert doc["tasks"]["after-broken"]["state"] == "upstream_failed"


def test_run_a_failing_pipeline_exits_1(tmp_path: Path) -> None:
    spec = write(
        tmp_path,
        "fail.yaml",
        "name: fail\ntasks:\n"
        "  - {id: boom, operator: bash, parameters: {command: 'echo about to fail; exit 3'}}\n",
    )
    r = sf(tmp_path, "run", spec, "--format", "json")
    assert r.code == 1, r
    doc = r.json()
    assert doc["state"] == "failed"
    assert doc["tasks"]["boom"]["error"].startswith("bash command exited with code 3")
    assert "about to fail" in doc["tasks"]["boom"]["error"]
    assert "boom" in r.err  # the progress line names the failed task

    text = sf(tmp_path, "run", spec)
    assert text.code == 1
    assert "of pipeline 'fail': failed" in text.out


# -- runs list / show ----------------------------------------------------------------------


def test_runs_list_json_is_newest_first(runs: Runs) -> None:
    r = sf(runs.home, "runs", "list", "--format", "json")
    assert r.code == 0, r
    rows = r.json()
    assert [row["run_id"] for row in rows] == [runs.failing, runs.calls, runs.hello]
    for row in rows:
        assert set(row) == {"run_id", "pipeline", "state", "started_at", "ended_at", "lease"}
        assert row["lease"]["note"] is None and row["lease"]["live"] is False  # ended runs
    assert [(row["pipeline"], row["state"]) for row in rows] == [
        ("failing", "failed"),
        ("calls", "success"),
        ("hello", "success"),
    ]
    starts = [row["started_at"] for row in rows]
    assert starts == sorted(starts, reverse=True)

    text = sf(runs.home, "runs", "list")
    assert text.code == 0
    assert [line.split()[0] for line in text.out.splitlines()] == [
        runs.failing,
        runs.calls,
        runs.hello,
    ]


def test_runs_list_of_an_empty_store(tmp_path: Path) -> None:
    assert sf(tmp_path, "runs", "list", "--format", "json").json() == []
    r = sf(tmp_path, "runs", "list")
    assert (r.code, r.out) == (0, "")
    assert "no runs yet" in r.err


def test_runs_show(runs: Runs, tmp_path: Path) -> None:
    r = sf(runs.home, "runs", "show", runs.hello, "--format", "json")
    assert r.code == 0
    assert r.json()["run_id"] == runs.hello
    assert set(r.json()["tasks"]) == {"greet", "left", "right", "join"}

    unknown = sf(runs.home, "runs", "show", "20200101-000000-abcdef")
    assert unknown.code == 1
    assert "no run '20200101-000000-abcdef'" in unknown.err
    assert "stageflow runs list" in unknown.err

    for bad in ("../../etc", "a b", "-x"):
        r = sf(runs.home, "runs", "show", "--", bad)
        assert r.code == 2, (bad, r)
        assert f"run id {bad!r} is invalid" in r.err


# -- logs ----------------------------------------------------------------------------------


def test_logs(runs: Runs) -> None:
    r = sf(runs.home, "logs", runs.hello, "greet")
    assert (r.code, r.out) == (0, "howdy from greet\n")  # --param greeting=howdy

    r = sf(runs.home, "logs", runs.calls, "extract")
    assert r.code == 0
    assert "hello from extract" in r.out
    assert "summing [1, 2, 3]" in sf(runs.home, "logs", runs.calls, "total").out

    r = sf(runs.home, "logs", runs.failing, "broken", task_log=True)
    assert r.code == 0
    assert r.out.rstrip().endswith("ValueError: bad rows in extract")  # the user's traceback


def test_logs_mistakes(runs: Runs) -> None:
    r = sf(runs.home, "logs", "20200101-000000-abcdef", "greet")
    assert r.code == 1
    assert "no run '20200101-000000-abcdef'" in r.err

    r = sf(runs.home, "logs", runs.hello, "gret")
    assert r.code == 2
    assert f"run '{runs.hello}' has no task 'gret'; did you mean 'greet'?" in r.err

    r = sf(runs.home, "logs", runs.hello, "nothing-like-it")
    assert r.code == 2
    assert "has no task 'nothing-like-it'" in r.err

    r = sf(runs.home, "logs", "../../etc", "greet")
    assert r.code == 2
    assert "run id '../../etc' is invalid" in r.err


# -- graph ---------------------------------------------------------------------------------


def test_graph_of_a_file_in_each_format(tmp_path: Path) -> None:
    dot = sf(tmp_path, "graph", HELLO, "--format", "dot")
    assert dot.code == 0, dot
    assert dot.out.startswith('digraph "hello"')
    for edge in ('"greet" -> "left"', '"greet" -> "right"', '"left" -> "join"'):
        assert edge in dot.out

    mermaid = sf(tmp_path, "graph", HELLO, "--format", "mermaid")
    assert mermaid.code == 0
    assert "flowchart" in mermaid.out
    assert mermaid.out.count("-->") == 4

    svg = sf(tmp_path, "graph", HELLO, "--format", "svg")
    assert svg.code == 0
    root = ET.fromstring(svg.out)
    assert root.tag.endswith("svg")

    text = sf(tmp_path, "graph", SPECS / "hello.json")
    assert text.code == 0
    assert "critical path: first -> second" in text.out

    png = tmp_path / "hello.png"
    r = sf(tmp_path, "graph", HELLO, "--format", "png", "-o", png)
    assert r.code == 0, r
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"wrote {png}" in r.err

    r = sf(tmp_path, "graph", HELLO, "--format", "png")
    assert r.code == 2
    assert "--format png writes binary data: give -o FILE.png" in r.err
    assert r.out == ""


def test_graph_mistakes(tmp_path: Path) -> None:
    r = sf(tmp_path, "graph")
    assert r.code == 2
    assert "give either a pipeline file/module or --run RUN_ID" in r.err

    r = sf(tmp_path, "graph", HELLO, "--format", "gif")
    assert r.code == 2
    assert "Invalid value for '--format'" in r.err

    bad = write(
        tmp_path, "cycle.yaml", "name: p\ntasks:\n  - {id: a, call: 'x:y', upstream: [a]}\n"
    )
    r = sf(tmp_path, "graph", bad)
    assert r.code == 2
    assert "task 'a', field 'upstream': depends on itself" in r.err

    r = sf(tmp_path, "graph", "--run", "20200101-000000-abcdef")
    assert r.code == 1
    assert "no run '20200101-000000-abcdef'" in r.err


def test_graph_of_a_run(runs: Runs) -> None:
    r = sf(runs.home, "graph", "--run", runs.failing, "--format", "dot")
    assert r.code == 0, r
    assert '"extract" -> "broken"' in r.out
    assert "[success]" in r.out and "[failed]" in r.out and "[upstream_failed]" in r.out


# -- resume --------------------------------------------------------------------------------


def test_resume_mistakes(runs: Runs) -> None:
    r = sf(runs.home, "resume", "20200101-000000-abcdef")
    assert r.code == 1
    assert "no run '20200101-000000-abcdef'" in r.err

    r = sf(runs.home, "resume", runs.hello)
    assert r.code == 2
    assert f"run '{runs.hello}' already succeeded; nothing to resume" in r.err

    r = sf(runs.home, "resume", "../../etc")
    assert r.code == 2
    assert "run id '../../etc' is invalid" in r.err


def test_resume_of_a_failed_run_reruns_only_what_did_not_succeed(tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    spec = write(
        tmp_path,
        "flaky.yaml",
        "name: flaky\ntasks:\n"
        "  - {id: once, operator: bash, parameters: {command: 'echo x >> "
        f"{tmp_path}/once.log'}}}}\n"
        "  - {id: gate, operator: bash, upstream: [once], parameters: {command: 'test -e "
        f"{flag}'}}}}\n",
    )
    first = sf(tmp_path, "run", spec, "--format", "json")
    assert first.code == 1, first
    run_id = first.json()["run_id"]
    flag.touch()

    r = sf(tmp_path, "resume", run_id, "--format", "json")

    assert r.code == 0, r
    doc = r.json()
    assert (doc["run_id"], doc["state"]) == (run_id, "success")
    assert doc["tasks"]["once"]["attempts"] == 1
    assert doc["tasks"]["gate"]["attempts"] == 2
    assert (tmp_path / "once.log").read_text() == "x\n"  # never repeated
