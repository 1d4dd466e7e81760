"""A pipeline using another as a task group, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
CLI = str(Path(sys.executable).with_name("stageflow"))


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    return subprocess.run(
        [CLI, "--home", str(tmp_path / "home"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_run_expands_groups_and_substitutes_with(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "run", str(FIXTURES / "outer.yaml"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert set(run["tasks"]) == {
        "ingest",
        "prep.scale",
        "prep.tag",
        "prep_b.scale",
        "prep_b.tag",
        "train",
    }
    assert all(t["state"] == "success" for t in run["tasks"].values())
    logs = _cli(tmp_path, "logs", run["run_id"], "prep.scale")
    assert logs.stdout.strip() == "scaled x5"
    logs_b = _cli(tmp_path, "logs", run["run_id"], "prep_b.tag")
    assert logs_b.stdout.strip() == "tagged second"


def test_graph_collapses_groups(tmp_path: Path) -> None:
    expanded = _cli(tmp_path, "graph", str(FIXTURES / "outer.yaml"), "--format", "dot")
    collapsed = _cli(
        tmp_path, "graph", str(FIXTURES / "outer.yaml"), "--format", "dot", "--collapse"
    )
    assert expanded.returncode == collapsed.returncode == 0, collapsed.stderr
    assert '"prep.scale" -> "prep.tag"' in expanded.stdout
    assert '"prep" -> "train"' in collapsed.stdout and "prep.scale" not in collapsed.stdout


def test_a_missing_template_is_a_clear_error(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ntasks:\n  - {id: g, use: nowhere.yaml}\n")
    proc = _cli(tmp_path, "validate", str(spec))
    assert proc.returncode == 2
    assert "use: 'nowhere.yaml': no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_repeat_until_runs_rounds_until_the_condition_holds(tmp_path: Path) -> None:
    """Seed 004's Training -> Evaluation -> {Continue | Deploy}: rounds 1-3 run
    (accuracy 0.6, 0.75, 0.9), rounds 4-5 are skipped, every round is recorded."""
    proc = _cli(tmp_path, "run", str(FIXTURES / "iterate.yaml"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads(proc.stdout)["tasks"]
    ran = [k for k in range(1, 6) if tasks[f"loop.{k}.train"]["state"] == "success"]
    assert ran == [1, 2, 3]
    assert all(tasks[f"loop.{k}.evaluate"]["state"] == "skipped" for k in (4, 5))
    assert "condition is false" in tasks["loop.4.train"]["error"]
    assert tasks["deploy"]["state"] == "success"
    result = _cli(tmp_path, "run", str(FIXTURES / "iterate.yaml"))
    assert "output of deploy: 'deployed round 3'" in result.stdout


def test_repeat_that_never_meets_its_condition_stops_at_the_bound(tmp_path: Path) -> None:
    spec = tmp_path / "bounded.yaml"
    spec.write_text((FIXTURES / "iterate.yaml").read_text().replace(">= 0.9", ">= 2"))
    for name in ("train_round.yaml", "iteration_steps.py"):
        (tmp_path / name).write_text((FIXTURES / name).read_text())
    proc = _cli(tmp_path, "run", str(spec), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads(proc.stdout)["tasks"]
    assert all(tasks[f"loop.{k}.evaluate"]["state"] == "success" for k in range(1, 6))


def test_use_a_registered_pipeline_version(tmp_path: Path) -> None:
    """`use: NAME@VERSION` / `NAME@latest`: a version saved in the store by an earlier run."""
    first = _cli(tmp_path, "run", str(FIXTURES / "preprocess.yaml"), "--format", "json")
    assert first.returncode == 0, first.stderr
    from stageflow.runtime.store import open_store

    store = open_store(None, tmp_path / "home")
    try:
        version = store.get_run(json.loads(first.stdout)["run_id"]).pipeline_version
    finally:
        store.close()
    for reference in (f"preprocess@{version}", "preprocess@latest"):
        spec = tmp_path / "outer.yaml"
        spec.write_text(
            "name: outer\ntasks:\n"
            f"  - {{id: prep, use: '{reference}', with: {{factor: 9}}}}\n"
            "  - {id: done, operator: bash, upstream: [prep], parameters: {command: 'echo ok'}}\n"
        )
        proc = _cli(tmp_path, "run", str(spec), "--format", "json")
        assert proc.returncode == 0, proc.stderr
        run = json.loads(proc.stdout)
        assert set(run["tasks"]) == {"prep.scale", "prep.tag", "done"}
        log = _cli(tmp_path, "logs", run["run_id"], "prep.scale")
        assert log.stdout.strip() == "scaled x9"
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: m\ntasks:\n  - {id: g, use: 'nothing@latest'}\n")
    proc = _cli(tmp_path, "validate", str(missing))
    assert proc.returncode != 0 and "no pipeline 'nothing'" in proc.stderr
    assert "Traceback" not in proc.stderr


GROUP = """\
name: group
tasks:
  - {id: first, operator: bash, parameters: {command: "echo first"}}
  - {id: second, operator: bash, upstream: [first], parameters: {command: "echo second"}}
"""
OUTER = """\
name: gated
params: {go: "no"}
tasks:
  - {id: flaky, operator: bash, parameters: {command: "exit 3"}}
  - id: g
    use: group.yaml
    upstream: [flaky]
    trigger_rule: all_done
    when: "${params.go} == 'yes'"
"""


def test_a_group_takes_trigger_rule_and_when_like_a_task(tmp_path: Path) -> None:
    # Its upstream fails: all_done runs the group anyway, when its condition holds; when
    # it does not, the group's entry task is skipped, and with it what follows inside.
    (tmp_path / "group.yaml").write_text(GROUP)
    (tmp_path / "gated.yaml").write_text(OUTER)
    states = {}
    for go in ("yes", "no"):
        proc = _cli(
            tmp_path, "run", str(tmp_path / "gated.yaml"), "--param", f"go={go}", "--format", "json"
        )
        assert proc.returncode == 1, proc.stderr  # flaky failed either way
        run = json.loads(proc.stdout)
        states[go] = {t: run["tasks"][t]["state"] for t in ("flaky", "g.first", "g.second")}
    assert states["yes"] == {"flaky": "failed", "g.first": "success", "g.second": "success"}
    assert states["no"] == {"flaky": "failed", "g.first": "skipped", "g.second": "skipped"}
