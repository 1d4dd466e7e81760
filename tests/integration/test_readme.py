"""Every block of ``README.md`` and ``examples/README.md`` that a user would copy works.

The blocks are read from the two files, so the READMEs cannot drift from what
stageflow does. Each block is classified by hand in ``BLOCKS`` (by file and
first line) and each shell command in ``COMMANDS``; a block or a command that
is not classified fails ``test_every_block_and_command_is_classified``, so a
new one must be given a check here. What each kind gets:

* ``pipeline``: a whole pipeline, shipped as the file it names: the block is
  that file, and the file runs (``test_the_readme_pipeline_runs_in_its_folder``).
* ``tasks`` / ``spec``: a fragment (task entries, or top-level keys with
  tasks). It is completed into a pipeline (stub upstream tasks, its
  ``${params.X}`` declared, a stub module for each ``call:`` module) and
  ``stageflow validate`` must accept it; ``tasks`` of a file (the
  hyperparameter search) must also be that file's tasks, as written there.
* ``python``: run as a script in a temporary folder with ``STAGEFLOW_HOME``
  there; one defining ``pipeline`` is also run as ``stageflow run FILE.py:pipeline``,
  which must record exactly one run (importing it must not run it);
  ``python+pipeline`` first defines the ``pipeline`` it uses.
* ``python-scheduler``: the ``PipelineScheduler`` block, run as a script from a copy of
  ``examples/``; its schedule and manual run must be in the store it made.
* ``python-monitor``: the ``PipelineMonitor`` block, run as a script from a copy of
  ``examples/``; its samples and export must be there and its rule gone.
* ``shell``: each command is in ``COMMANDS``, with how it is checked:
  ``readme`` and ``journey`` commands run for real through ``bash`` (from a
  copy of ``examples/``, with ``RUN_ID`` and friends replaced by real run ids
  and the port by a free one); ``fails`` commands run for real the same way and
  must exit with status 1, printing the output lines their block shows;
  ``parse`` commands (long ML runs that other tests run end to end) are parsed
  by the real CLI and their pipeline is validated with their ``--param``s;
  ``make`` targets must exist in the Makefile; ``completion`` lines must
  produce click's completion script.
* ``text``: a diagram, nothing to run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from helpers_tasks import clean_environ, me, wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DOCS = ("README.md", "examples/README.md")
BIN = Path(sys.executable).parent
STAGEFLOW = BIN / "stageflow"


# -- what the READMEs hold ------------------------------------------------------------------

#: Every fenced block, by (file, its first line without a trailing comment).
BLOCKS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("README.md", "make demo"): ("shell", None),
    ("README.md", "from stageflow import Pipeline, task"): ("python", None),
    ("README.md", "# examples/readme/churn.yaml: stageflow run examples/readme/churn.yaml"): (
        "pipeline",
        "examples/readme/churn.yaml",
    ),
    ("README.md", "- id: deploy"): ("tasks", None),
    ("README.md", "run_timeout_seconds: 3600"): ("spec", None),
    ("README.md", "- id: charge"): ("tasks", None),
    ("README.md", "- id: recommend"): ("tasks", None),
    ("README.md", "defaults: {cache: true, cache_ttl_seconds: 86400}"): ("spec", None),
    ("README.md", "execution_mode: parallel"): ("spec", None),
    ("README.md", "from stageflow import LocalRuntime"): ("python+pipeline", None),
    ("README.md", "$ stageflow runs show RUN_ID"): ("shell", None),
    ("README.md", "$ stageflow cancel RUN_ID"): ("shell", None),
    ("README.md", "- id: deploy_production"): ("tasks", None),
    ("README.md", "- id: wait_for_orders"): ("tasks", None),
    ("README.md", '$ stageflow approve RUN_ID deploy_production --comment "metrics ok"'): (
        "shell",
        None,
    ),
    ("README.md", "- id: candidates"): ("tasks", "examples/hyperparameter_search.yaml"),
    ("README.md", "- id: ensemble"): ("tasks", "examples/ensemble.yaml"),
    (
        "README.md",
        "stageflow run examples/ensemble.yaml --param method=stacking "
        "--param model_name=stacked-classifier",
    ): ("shell", None),
    ("README.md", "- id: check_quality"): ("tasks", "examples/data_quality.yaml"),
    ("README.md", "- id: load_orders"): ("tasks", None),
    ("README.md", "$ stageflow run examples/data_quality.yaml --param max_age=6h"): ("shell", None),
    ("README.md", "$ stageflow logs RUN_ID promote"): ("shell", None),
    ("README.md", 'eval "$(_STAGEFLOW_COMPLETE=bash_source stageflow)"'): ("shell", None),
    ("examples/README.md", "stageflow run examples/ml_pipeline.yaml"): ("shell", None),
    (
        "examples/README.md",
        "ingest -> validate -> features -+-> train_logistic_regression -> "
        "evaluate_logistic_regression -+",
    ): ("text", None),
    ("examples/README.md", "stageflow runs show RUN_ID"): ("shell", None),
    ("examples/README.md", "stageflow run examples/ml_functions.yaml"): ("shell", None),
    (
        "examples/README.md",
        "load -> validate -> features -+-> train_logistic_regression -> "
        "evaluate_logistic_regression -+",
    ): ("text", None),
    (
        "examples/README.md",
        "SLACK_WEBHOOK_URL=https://hooks.slack.com/services/... "
        "stageflow run examples/fraud_detection.yaml",
    ): ("shell", None),
    (
        "examples/README.md",
        "$ stageflow run examples/fraud_detection.yaml --param accuracy_gate=0.99",
    ): ("shell", None),
    ("examples/README.md", "stageflow run examples/hyperparameter_search.yaml"): ("shell", None),
    ("examples/README.md", "stageflow run examples/ensemble.yaml"): ("shell", None),
    (
        "examples/README.md",
        "ingest -> features -> {train_logistic_regression, train_random_forest, "
        "train_naive_bayes} -> ensemble -> evaluate -> register",
    ): ("text", None),
    ("examples/README.md", "ingest -> features ----------+---------------------------+"): (
        "text",
        None,
    ),
    ("examples/README.md", "stageflow run examples/sdk_quickstart.py:pipeline"): ("shell", None),
    ("examples/README.md", "stageflow run examples/readme/churn.yaml"): ("shell", None),
    ("README.md", "$ stageflow submit examples/service/hello.yaml"): ("shell", None),
    ("README.md", 'schedule: "0 2 * * *"'): ("spec", None),
    (
        "README.md",
        "run_retries: {strategy: fixed, max_retries: 3, retry_delay: 1}",
    ): ("spec", None),
    (
        "README.md",
        "$ stageflow schedules add retrying hello --every 1d --run-retries 3 "
        "--retry-strategy exponential --retry-delay 30s",
    ): ("shell", None),
    (
        "README.md",
        "from stageflow import PipelineScheduler, RetryStrategy, ScheduleConfig, ScheduleType",
    ): ("python-scheduler", None),
    (
        "README.md",
        "from stageflow import AlertCondition, AlertRule, AlertSeverity, PipelineMonitor",
    ): ("python-monitor", None),
    ("README.md", "deadline: {after_seconds: 3600}"): ("spec", None),
    ("README.md", "$ stageflow alerts metrics"): ("shell", None),
    ("README.md", "$ stageflow run examples/service/hello.yaml --param who=monitor"): (
        "shell",
        None,
    ),
    ("README.md", "stageflow tokens create --name me --role admin"): ("shell", None),
    ("README.md", "export STAGEFLOW_TOKEN=sft_..."): ("shell", None),
    ("README.md", "on_failure:"): ("spec", None),
    ("README.md", "$ stageflow notifications list"): ("shell", None),
}

#: Every shell command of the ``shell`` blocks (prompt and trailing comment removed),
#: and how it is checked (see the module docstring).
COMMANDS: dict[str, str] = {
    "make demo": "make",
    "make test": "make",
    "make unit": "make",
    "stageflow run examples/readme/churn.yaml": "readme",
    "stageflow run examples/readme/churn.yaml --executor process --param threshold=0.9": "readme",
    "stageflow runs show RUN_ID": "journey",
    "stageflow runs gantt RUN_ID -o run.svg": "journey",
    'STAGEFLOW_COST="cpu_hour=0.05,memory_gb_hour=0.01,gpu_hour=2.5" '
    "stageflow runs cost --days 7": "journey",
    "stageflow cancel RUN_ID": "journey",
    "stageflow pause RUN_ID": "journey",
    "stageflow unpause RUN_ID": "journey",
    "stageflow retry RUN_ID": "journey",
    "stageflow retry RUN_ID --from train": "journey",
    'stageflow approve RUN_ID deploy_production --comment "metrics ok"': "journey",
    'stageflow approve RUN_ID deploy_production --reject --comment "drift too high"': "journey",
    "stageflow logs RUN_ID promote": "journey",
    'eval "$(_STAGEFLOW_COMPLETE=bash_source stageflow)"': "completion",
    'eval "$(_STAGEFLOW_COMPLETE=zsh_source stageflow)"': "completion",
    "_STAGEFLOW_COMPLETE=fish_source stageflow | source": "completion",
    "stageflow run examples/ml_pipeline.yaml": "journey",
    "stageflow run examples/ml_pipeline.yaml --executor process": "parse",
    "stageflow run examples/ml_pipeline.yaml --param dataset=wine "
    "--param model_name=wine-classifier --param metric=roc_auc": "journey",
    "stageflow run examples/ml_pipeline.yaml --track": "parse",
    "stageflow runs diff RUN_A RUN_B": "journey",
    "stageflow lineage RUN_ID/score_holdout": "journey",
    "stageflow models serve demo-classifier@production --port 5000": "journey",
    "curl -s localhost:5000/invocations -H 'Content-Type: application/json' "
    '-d \'{"dataframe_records": [{"mean radius": 14.1, "mean texture": 19.3, ...}]}\'': "journey",
    "stageflow run examples/ml_functions.yaml": "parse",
    "SLACK_WEBHOOK_URL=https://hooks.slack.com/services/... "
    "stageflow run examples/fraud_detection.yaml": "parse",
    "stageflow run examples/fraud_detection.yaml --param accuracy_gate=0.99": "fails",
    "stageflow run examples/data_quality.yaml --param max_age=6h": "fails",
    "stageflow run examples/hyperparameter_search.yaml": "parse",
    "stageflow run examples/hyperparameter_search.yaml --param candidates=9": "parse",
    # examples/ensemble.yaml: test_ml_ensemble.py runs both end to end.
    "stageflow run examples/ensemble.yaml": "parse",
    "stageflow run examples/ensemble.yaml --param method=stacking "
    "--param model_name=stacked-classifier": "parse",
    "stageflow run examples/sdk_quickstart.py:pipeline": "journey",
    "python examples/sdk_quickstart.py": "journey",
    # "Schedules": test_the_schedules_section runs them, in order.
    "stageflow submit examples/service/hello.yaml": "schedules",
    'stageflow schedules add nightly hello --cron "0 2 * * *" --timezone Europe/Paris': (
        "schedules"
    ),
    "stageflow schedules add hourly hello --every 1h --param who=hourly --max-active 1": (
        "schedules"
    ),
    "stageflow schedules list": "schedules",
    "stageflow schedules show nightly": "schedules",
    "stageflow schedules pause nightly": "schedules",
    "stageflow schedules resume nightly": "schedules",
    "stageflow schedules trigger nightly --param who=now": "schedules",
    "stageflow schedules remove hourly": "schedules",
    # "Run-level retries": test_the_run_retries_commands runs them, in order.
    "stageflow schedules add retrying hello --every 1d --run-retries 3 "
    "--retry-strategy exponential --retry-delay 30s": "run-retries",
    "stageflow schedules add bounded hello --every 1h --execution-timeout 2h": "run-retries",
    'stageflow schedules add arrivals hello --on-object "file://$PWD/incoming/*.csv" '
    "--poll 10s": "run-retries",
    "stageflow schedules show arrivals": "run-retries",
    # "Notifications and hooks": test_the_notifications_section runs them.
    "stageflow notifications list": "notifications",
    "stageflow notifications list --state failed --format json": "notifications",
    # "Alerts and deadlines": test_the_alerts_section runs them, in order.
    "stageflow alerts metrics": "alerts",
    "stageflow alerts rules add slow-runs --metric run.duration_seconds --threshold 1800 "
    "--severity warning": "alerts",
    "stageflow alerts rules list": "alerts",
    "stageflow alerts rules disable slow-runs": "alerts",
    "stageflow alerts list --state open": "alerts",
    # "Metrics history, statistics and quality gates": test_the_monitoring_section.
    "stageflow run examples/service/hello.yaml --param who=monitor": "monitoring",
    "stageflow metrics current": "monitoring",
    "stageflow metrics history host.cpu_percent host.memory_percent --from -1h": "monitoring",
    "stageflow metrics export --from -1d --to now --format csv --output metrics.csv": "monitoring",
    "stageflow statistics hello --days 7": "monitoring",
    "stageflow gates hello --days 7 --max-recovery 30m": "monitoring",
    # "As a service": test_the_service_section runs them, in order, on a free port.
    "stageflow tokens create --name me --role admin": "service",
    "stageflow serve --port 8080": "service",
    "export STAGEFLOW_TOKEN=sft_...": "service",
    "curl -s localhost:8080/health": "service",
    'curl -s -X POST localhost:8080/api/v1/pipelines -H "Authorization: Bearer $STAGEFLOW_TOKEN" '
    '-H "Content-Type: application/yaml" --data-binary @examples/service/hello.yaml': "service",
    'curl -s -X POST localhost:8080/api/v1/runs -H "Authorization: Bearer $STAGEFLOW_TOKEN" '
    '-H "Content-Type: application/json" -d \'{"pipeline_id": "hello", "parameters": '
    '{"who": "curl"}, "triggered_by": "me"}\'': "service",
    'curl -s localhost:8080/api/v1/runs/RUN_ID -H "Authorization: Bearer $STAGEFLOW_TOKEN"': (
        "service"
    ),
    "curl -s localhost:8080/api/v1/runs/RUN_ID/tasks/greet/logs "
    '-H "Authorization: Bearer $STAGEFLOW_TOKEN"': "service",
    "curl -s localhost:8080/metrics": "service",
}

#: What the commands of a fragment's pipeline may use (pools, custom resources, a GPU).
CAPACITY = {
    "STAGEFLOW_MAX_CPU_CORES": "4",
    "STAGEFLOW_MAX_MEMORY_GB": "16",
    "STAGEFLOW_MAX_GPU_COUNT": "1",
    "STAGEFLOW_POOLS": "training=2",
    "STAGEFLOW_CUSTOM_RESOURCES": "licenses=3",
}

#: A module whose every attribute is a step taking anything (``call:`` targets of fragments).
STUB_MODULE = """
def __getattr__(name):
    def step(*args, **kwargs):
        return {"accuracy": 0.9}

    step.__name__ = step.__qualname__ = name
    return step
"""


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str

    @property
    def key(self) -> tuple[str, str]:
        first = next(line for line in self.text.splitlines() if line.strip())
        return self.doc, _uncomment(first).strip()

    @property
    def kind(self) -> str:
        return BLOCKS[self.key][0]

    @property
    def file(self) -> str | None:
        return BLOCKS[self.key][1]

    def __str__(self) -> str:
        return f"{self.doc} line {self.line} ({self.lang or 'no language'})"


def doc_blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for m in re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text, re.DOTALL | re.MULTILINE):
            line = text.count("\n", 0, m.start()) + 1
            found.append(Block(doc, line, m.group(1), m.group(2)))
    return found


def blocks_of(*kinds: str) -> list[Block]:
    return [b for b in doc_blocks() if b.key in BLOCKS and b.kind in kinds]


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """The commands of a shell block, each with the output lines shown after it."""
    found: list[tuple[str, list[str]]] = []
    prompt = any(line.startswith("$ ") for line in block.text.splitlines())
    pending = ""
    for raw in block.text.splitlines():
        if prompt and not raw.startswith("$ "):
            if raw.strip() and not raw.lstrip().startswith("#") and found:
                found[-1][1].append(raw)  # output the block shows for its command
            continue
        line = raw.removeprefix("$ ") if prompt else raw
        if not pending and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        command = _uncomment(pending + line.strip()).strip()
        pending = ""
        if command:
            found.append((command, []))
    return found


def documented_commands() -> dict[str, list[str]]:
    return {c: out for b in blocks_of("shell") for c, out in commands(b)}


def _uncomment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (one preceded by whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i > 0 and line[i - 1].isspace():
            return line[:i]
    return line


# -- the tests: classification and the CLI table (fast) ------------------------------------


def test_every_block_and_command_is_classified() -> None:
    found = doc_blocks()
    unknown = [f"{b}: {b.key[1]!r}" for b in found if b.key not in BLOCKS]
    assert not unknown, (
        "new README blocks: classify them in BLOCKS (and check them) in this file:\n"
        + "\n".join(unknown)
    )
    stale = set(BLOCKS) - {b.key for b in found}
    assert not stale, f"BLOCKS names blocks the READMEs no longer have: {sorted(stale)}"
    documented = documented_commands()
    assert set(documented) - set(COMMANDS) == set(), "new commands: add them to COMMANDS"
    assert set(COMMANDS) - set(documented) == set(), "COMMANDS names commands no longer shown"


def test_the_cli_table_lists_every_command() -> None:
    from stageflow.service.cli import cli

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## The CLI", 1)[1].split("\n## ", 1)[0]
    listed: set[str] = set()
    for cell in re.findall(r"^\| `stageflow ([^`]+)`", table, re.MULTILINE):
        words = cell.replace("\\|", "|").split()
        for first in words[0].split("|"):
            listed.add(first)
            if len(words) > 1:
                listed.update(f"{first} {second}" for second in words[1].split("|"))
    ctx = click.Context(cli)
    commands_ = set()
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            commands_.update(f"{name} {sub}" for sub in command.list_commands(ctx))
        else:
            commands_.add(name)
    assert commands_ - listed == set(), "README's CLI table leaves these out"


def test_the_readme_says_how_to_complete_commands_and_nothing_stale() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "_STAGEFLOW_COMPLETE=bash_source stageflow" in text
    assert "not enforced yet" not in text  # admission by resources is enforced


def test_the_pipeline_block_is_its_file() -> None:
    [block] = blocks_of("pipeline")
    assert block.file is not None
    assert block.text == (ROOT / block.file).read_text(encoding="utf-8")


def test_a_fragment_of_a_file_is_that_file_as_written() -> None:
    """Every key the fragment shows has the file's value (``${params.X}`` shown as
    the file's default; keys the fragment leaves out, e.g. descriptions, aside)."""
    from stageflow.spec.params import substitute

    for block in blocks_of("tasks", "spec"):
        if block.file is None:
            continue
        spec = yaml.safe_load((ROOT / block.file).read_text(encoding="utf-8"))
        written = {t["id"]: substitute(t, spec.get("params", {})) for t in spec["tasks"]}
        for task in yaml.safe_load(block.text):
            assert task["id"] in written, f"{block}: {block.file} has no task {task['id']}"
            assert _shown(task, written[task["id"]]), f"{block}: task {task['id']} differs"


def test_every_fragment_validates_in_a_pipeline(tmp_path: Path) -> None:
    for n, block in enumerate(blocks_of("tasks", "spec")):
        folder = tmp_path / f"fragment-{n}"
        folder.mkdir()
        spec = embed(block, folder)
        proc = sf(tmp_path / "home", folder, "validate", spec, env=CAPACITY)
        assert proc.returncode == 0, f"{block}:\n{proc.stdout}{proc.stderr}"


def test_completion_lines_produce_clicks_scripts(tmp_path: Path) -> None:
    lines = [c for c, kind in COMMANDS.items() if kind == "completion"]
    for line in lines:
        shell = re.search(r"=(\w+)_source", line)
        assert shell is not None, line
        proc = sf(tmp_path, tmp_path, env={"_STAGEFLOW_COMPLETE": f"{shell.group(1)}_source"})
        assert proc.returncode == 0 and "_stageflow_completion" in proc.stdout, proc
    bash_line = next(line for line in lines if "bash_source" in line)
    proc = bash(f"{bash_line} && complete -p stageflow", tmp_path, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "_stageflow_completion" in proc.stdout


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for line in (c for c, kind in COMMANDS.items() if kind == "make"):
        target = line.split()[1]
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"no make target {target}"
    # `make demo` is the documented demo command, which the journey runs
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "stageflow run examples/ml_pipeline.yaml" in demo
    assert COMMANDS["stageflow run examples/ml_pipeline.yaml"] == "journey"


def test_parse_commands_are_accepted_and_their_pipelines_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stageflow.runtime.loading import load_pipeline
    from stageflow.runtime.plan import check, resolve_params
    from stageflow.service.cli import cli

    monkeypatch.chdir(ROOT)
    for line in (c for c, kind in COMMANDS.items() if kind == "parse"):
        words = shlex.split(line)
        while "=" in words[0]:  # VAR=value before the command
            words.pop(0)
        assert words[0] == "stageflow", line
        root = click.Context(cli, info_name="stageflow")
        command = cli.get_command(root, words[1])
        assert command is not None, line
        parsed = command.make_context(words[1], words[2:], parent=root).params
        pipeline = load_pipeline(parsed["target"])
        overrides = dict(_param(p) for p in parsed.get("params", ()))
        check(pipeline, resolve_params(pipeline, overrides))


# -- the tests that run things ----------------------------------------------------------------


def test_the_readme_pipeline_runs_in_its_folder(tmp_path: Path) -> None:
    """README's YAML example, from a copy of ``examples/``: its bash step finds
    ``extract.py`` beside the spec and writes ``data.csv`` there, whichever
    executor runs it and wherever ``stageflow`` starts."""
    work = copy_examples(tmp_path)
    home = tmp_path / "home"
    readme = [c for c, kind in COMMANDS.items() if kind == "readme"]
    for line in readme:
        proc = bash(line, work, home)
        assert proc.returncode == 0, f"{line}:\n{proc.stdout}{proc.stderr}"
    data = work / "examples" / "readme" / "data.csv"
    assert data.is_file()
    assert not (work / "data.csv").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for executor in ("thread", "process"):
        data.unlink()
        spec = work / "examples" / "readme" / "churn.yaml"
        result = run_json(home, elsewhere, spec, "--executor", executor)
        assert result["state"] == "success", result
        assert data.is_file()
        assert not (elsewhere / "data.csv").exists()
    out = sf(home, elsewhere, "logs", result["run_id"], "train")
    assert "rule: churn when support_calls >=" in out.stdout
    data.unlink()  # `retry` reloads the run's pipeline: its tasks start in the same folder
    proc = sf(home, elsewhere, "retry", result["run_id"], "--from", "extract")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data.is_file()


@pytest.mark.slow
def test_failing_commands_fail_as_shown(tmp_path: Path) -> None:
    """A command the READMEs show failing (the fraud example's gate) exits with
    status 1 and prints the lines shown after it (``...`` elided, durations and
    column widths free)."""
    work = copy_examples(tmp_path)
    shown = documented_commands()
    failing = [c for c, kind in COMMANDS.items() if kind == "fails"]
    assert failing
    for line in failing:
        proc = bash(line, work, tmp_path / "home")
        assert proc.returncode == 1, f"{line}:\n{proc.stdout}{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        printed = [" ".join(got.split()) for got in proc.stdout.splitlines()]
        expected = [" ".join(e.split()) for e in shown[line] if e.strip() != "..."]
        assert expected, f"{line}: its block shows no output"
        for want in expected:
            pattern = re.escape(want).replace(r"0\.59s", r"\d+\.\d+s")
            assert any(re.fullmatch(pattern, got) for got in printed), (want, proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=f"{b.doc}:{b.line}") for b in blocks_of("python", "python+pipeline")],
)
def test_python_blocks_run(tmp_path: Path, block: Block) -> None:
    code = block.text
    if block.kind == "python+pipeline":
        code = PIPELINE_PRELUDE + code + PIPELINE_CHECK
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {**clean_environ(os.environ), "STAGEFLOW_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{block}:\n{proc.stdout}{proc.stderr}"
    if block.kind == "python":
        assert 0.9 <= float(proc.stdout.strip().splitlines()[-1]) <= 1.0
    if block.kind == "python" and "\npipeline = Pipeline(" in code:
        # `stageflow run FILE.py:pipeline` imports the file: the run is the CLI's alone
        home = tmp_path / "cli-home"
        ran = sf(home, tmp_path, "run", f"{script}:pipeline")
        assert ran.returncode == 0, f"{block}:\n{ran.stdout}{ran.stderr}"
        assert len(runs(home)) == 1, f"{block}: importing the file must not run the pipeline"


@pytest.mark.slow
def test_the_journey(tmp_path: Path) -> None:
    """Every ``journey`` command, as a user would type it, in one session: the demo
    twice and what the READMEs do with its runs, then run control on the README's
    approval gate."""
    work = copy_examples(tmp_path)
    home = tmp_path / "home"
    shown = documented_commands()
    ran: set[str] = set()

    def do(line: str, expect: int = 0, **names: str) -> subprocess.CompletedProcess[str]:
        assert COMMANDS[line] == "journey", line
        ran.add(line)
        command = line
        for name, value in names.items():
            command = re.sub(rf"\b{name}\b", value, command)
        proc = bash(command, work, home)
        assert proc.returncode == expect, f"{command}:\n{proc.stdout}{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    # the demo, twice: the second challenger meets the first run's champion
    do("stageflow run examples/ml_pipeline.yaml")
    do("stageflow run examples/ml_pipeline.yaml")
    run_b, run_a = (r["run_id"] for r in runs(home)[:2])
    # another dataset beside the demo's champion: its own model name, so it succeeds
    do(
        "stageflow run examples/ml_pipeline.yaml --param dataset=wine "
        "--param model_name=wine-classifier --param metric=roc_auc"
    )
    wine = show(home, runs(home)[0]["run_id"])
    assert wine["tasks"]["score_holdout"]["state"] == "success", wine
    promote = do("stageflow logs RUN_ID promote", RUN_ID=run_b).stdout.strip().splitlines()
    for expected in shown["stageflow logs RUN_ID promote"]:
        pattern = re.escape(expected).replace(r"0\.9889", r"\d\.\d{4}")
        assert any(re.fullmatch(pattern, got) for got in promote), (expected, promote)
    assert run_b in do("stageflow runs show RUN_ID", RUN_ID=run_b).stdout
    assert "outputs" in do("stageflow runs diff RUN_A RUN_B", RUN_A=run_a, RUN_B=run_b).stdout
    lineage = do("stageflow lineage RUN_ID/score_holdout", RUN_ID=run_b).stdout
    assert f"task score_holdout of run {run_b}" in lineage
    do("stageflow runs gantt RUN_ID -o run.svg", RUN_ID=run_b)
    assert (work / "run.svg").read_text().lstrip().startswith("<")
    cost = (
        'STAGEFLOW_COST="cpu_hour=0.05,memory_gb_hour=0.01,gpu_hour=2.5" '
        "stageflow runs cost --days 7"
    )
    assert "ml-demo" in do(cost).stdout
    with served(work, home, ran) as port:
        curl = next(c for c in COMMANDS if c.startswith("curl "))
        ran.add(curl)
        assert "..." in curl  # the README elides the other columns: send a whole row
        row = json.dumps({"dataframe_records": [breast_cancer_row()]})
        command = curl.replace("5000", str(port)).split(" -d ", 1)[0] + f" -d {shlex.quote(row)}"
        proc = bash(command, work, home)
        assert json.loads(proc.stdout)["predictions"][0] in (0, 1), proc

    # the Python SDK example, from the CLI and as a script
    do("stageflow run examples/sdk_quickstart.py:pipeline")
    do("python examples/sdk_quickstart.py")

    # run control on the README's approval gate
    spec = approval_pipeline(work)
    with background(work, home, "run", spec) as first:
        run_id = awaiting_approval(home, "readme-approval")
        do("stageflow pause RUN_ID", RUN_ID=run_id)
        wait_until(lambda: state(home, run_id) == "paused", "the run paused")
        do("stageflow unpause RUN_ID", RUN_ID=run_id)
        wait_until(lambda: state(home, run_id) == "running", "the run unpaused")
        do(
            'stageflow approve RUN_ID deploy_production --reject --comment "drift too high"',
            RUN_ID=run_id,
        )
        assert first.wait(timeout=60) == 1  # rejected: the task failed, so did the run
    with background(work, home, "retry", run_id) as again:
        ran.add("stageflow retry RUN_ID")
        assert awaiting_approval(home, "readme-approval") == run_id
        do('stageflow approve RUN_ID deploy_production --comment "metrics ok"', RUN_ID=run_id)
        assert again.wait(timeout=60) == 0
    assert state(home, run_id) == "success"
    with background(work, home, "run", spec) as second:
        cancelled = awaiting_approval(home, "readme-approval", besides={run_id})
        do("stageflow cancel RUN_ID", RUN_ID=cancelled)
        assert second.wait(timeout=60) != 0
    assert state(home, cancelled) == "cancelled"

    # retry --from TASK on the README's own pipeline (its task `train`)
    proc = bash("stageflow run examples/readme/churn.yaml", work, home)
    assert proc.returncode == 0, proc.stderr
    churn = next(r["run_id"] for r in runs(home) if r["pipeline"] == "churn")
    do("stageflow retry RUN_ID --from train", RUN_ID=churn)
    assert state(home, churn) == "success"

    assert ran == {c for c, kind in COMMANDS.items() if kind == "journey"}


def test_the_service_section(tmp_path: Path) -> None:
    """README's "As a service" commands in order, as typed, on a free port: the token,
    serve in the background, then each curl against it."""
    work = copy_examples(tmp_path)
    home = tmp_path / "home"
    lines = [c for c, kind in COMMANDS.items() if kind == "service"]
    token = bash(lines[0], work, home)
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip()
    assert re.fullmatch(r"sft_[0-9a-f]{12}_[\w-]{43}", secret), token.stdout
    assert lines[1] == "stageflow serve --port 8080"
    server, port = start_on_free_port(lines[1], "8080", work, home)
    try:
        assert lines[2] == "export STAGEFLOW_TOKEN=sft_..."
        answers: list[str] = []
        run_id = ""
        for line in lines[3:]:
            command = line.replace("8080", str(port)).replace("RUN_ID", run_id)
            command = f"export STAGEFLOW_TOKEN={secret}; {command}"
            deadline = time.monotonic() + 60
            while True:
                proc = bash(command, work, home)
                if proc.returncode == 0 and proc.stdout:
                    break
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, f"{line}: {proc.stderr}"
                time.sleep(0.2)  # serve is still starting
            answers.append(proc.stdout)
            if "/api/v1/runs -H" in line:
                run_id = json.loads(proc.stdout)["run_id"]
                wait_until(
                    lambda rid=run_id: state(home, rid) == "success",  # type: ignore[misc]
                    "the README's run succeeded",
                    60,
                )
        health, saved, submitted, shown, logs, metrics = answers
        assert json.loads(health)["status"] == "ok"
        assert json.loads(saved)["name"] == "hello"
        assert json.loads(submitted)["state"] == "queued"
        assert json.loads(shown)["state"] == "success"
        assert logs == "== attempt 1 ==\nhello curl\n"
        assert 'stageflow_runs{pipeline="hello",state="success"} 1.0' in metrics
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_schedules_section(tmp_path: Path) -> None:
    """README's "Schedules" commands in order, as typed: each exits 0 and does what its
    comment says."""
    work = copy_examples(tmp_path)
    home = tmp_path / "home"
    out: dict[str, str] = {}
    for line in [c for c, kind in COMMANDS.items() if kind == "schedules"]:
        proc = bash(line, work, home)
        assert proc.returncode == 0, f"{line}: {proc.stderr}"
        out[line] = proc.stdout + proc.stderr
    listed = out["stageflow schedules list"]
    assert "nightly" in listed and "hourly" in listed and "cron 0 2 * * * (Europe/Paris)" in listed
    shown = out["stageflow schedules show nightly"]
    assert shown.count("UTC") >= 6, shown  # next, and the next 5 fire times
    # Every fire time shown (in UTC) is 02:00 on the wall clocks of Paris.
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    fires = [
        datetime.strptime(line.strip(), "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
        for line in shown.splitlines()
        if line.startswith("    2")
    ]
    assert len(fires) == 5, shown
    assert {(f.astimezone(paris).hour, f.astimezone(paris).minute) for f in fires} == {(2, 0)}
    triggered = out["stageflow schedules trigger nightly --param who=now"].split()[0]
    with sqlite3.connect(home / "stageflow.db") as db:
        (by,) = db.execute(
            "SELECT triggered_by FROM runs WHERE run_id = ?", (triggered,)
        ).fetchone()
    assert by == "schedule:nightly (manual)"
    left = bash("stageflow schedules list --format json", work, home)
    assert [s["name"] for s in json.loads(left.stdout)] == ["nightly"]


def test_the_run_retries_commands(tmp_path: Path) -> None:
    """README's run-level retry, time-out and object commands in order, as typed, after
    the pipeline is saved: each exits 0 and the schedules hold what they say."""
    work = copy_examples(tmp_path)
    home = tmp_path / "home"
    assert bash("stageflow submit examples/service/hello.yaml", work, home).returncode == 0
    out: dict[str, str] = {}
    for line in [c for c, kind in COMMANDS.items() if kind == "run-retries"]:
        proc = bash(line, work, home)
        assert proc.returncode == 0, f"{line}: {proc.stderr}"
        out[line] = proc.stdout + proc.stderr
    assert (
        f"object: file://{work}/incoming/*.csv   polled every 10s"
        in out["stageflow schedules show arrivals"]
    )
    shown = json.loads(bash("stageflow schedules list --format json", work, home).stdout)
    by_name = {s["name"]: s for s in shown}
    assert by_name["retrying"]["run_retries"] == {
        "strategy": "exponential",
        "max_retries": 3,
        "retry_delay": 30.0,
    }
    assert by_name["bounded"]["execution_timeout"] == 7200.0


def test_the_alerts_section(tmp_path: Path) -> None:
    """README's "Alerts and deadlines" commands in order, as typed: each exits 0 and
    does what its comment says."""
    work = copy_examples(tmp_path)
    home = tmp_path / "home"
    out: dict[str, str] = {}
    for line in [c for c, kind in COMMANDS.items() if kind == "alerts"]:
        proc = bash(line, work, home)
        assert proc.returncode == 0, f"{line}: {proc.stderr}"
        out[line] = proc.stdout + proc.stderr
    assert "runs.failure_rate" in out["stageflow alerts metrics"]
    assert (
        "rule slow-runs: run.duration_seconds greater_than 1800.0 [warning]"
        in (out["stageflow alerts rules list"])
    )
    assert "disabled" in out["stageflow alerts rules disable slow-runs"]
    assert out["stageflow alerts list --state open"].strip() == "no alerts"


def test_the_monitoring_section(tmp_path: Path) -> None:
    """README's "Metrics history, statistics and quality gates" commands in order, as
    typed: each exits 0 and shows what its comment says."""
    work = copy_examples(tmp_path)
    home = tmp_path / "home"
    out: dict[str, str] = {}
    for line in [c for c, kind in COMMANDS.items() if kind == "monitoring"]:
        proc = bash(line, work, home)
        assert proc.returncode == 0, f"{line}: {proc.stderr}"
        out[line] = proc.stdout + proc.stderr
    assert "no recent samples" in out["stageflow metrics current"]
    assert (work / "metrics.csv").read_text().startswith("name,at,timestamp,host,labels,value")
    stats = out["stageflow statistics hello --days 7"]
    assert "pipeline hello (last 7 days): 1 runs (success 1)" in stats
    assert "success rate      100.0%" in stats
    assert out["stageflow gates hello --days 7 --max-recovery 30m"].splitlines()[-1] == (
        "all gates pass"
    )


@pytest.mark.slow
def test_the_python_scheduler_block_runs(tmp_path: Path) -> None:
    """README's ``PipelineScheduler`` block, as a script from a copy of ``examples/``: it
    saves ``hello``, adds the schedule, queues the manual run and stops cleanly."""
    [block] = blocks_of("python-scheduler")
    work = copy_examples(tmp_path)
    (work / "block.py").write_text(block.text, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "block.py"],
        cwd=work,
        env=clean_environ(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{block}:\n{proc.stdout}{proc.stderr}"
    with sqlite3.connect(work / ".stageflow" / "stageflow.db") as db:
        names = db.execute("SELECT name, pipeline FROM schedules").fetchall()
        (by,) = db.execute("SELECT triggered_by FROM runs").fetchone()
    assert names == [("daily_pipeline", "hello")]
    assert by == "schedule:daily_pipeline (manual)"


def test_the_python_monitor_block_runs(tmp_path: Path) -> None:
    """README's ``PipelineMonitor`` block, as a script from a copy of ``examples/``: it
    samples into the store, exports the CSV, and removes its rule."""
    [block] = blocks_of("python-monitor")
    work = copy_examples(tmp_path)
    (work / "block.py").write_text(block.text, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "block.py"],
        cwd=work,
        env=clean_environ(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{block}:\n{proc.stdout}{proc.stderr}"
    with sqlite3.connect(work / ".stageflow" / "stageflow.db") as db:
        (rules,) = db.execute("SELECT COUNT(*) FROM alert_rules").fetchone()
        names = {n for (n,) in db.execute("SELECT DISTINCT name FROM metric_samples")}
    assert rules == 0
    assert {"host.memory_percent", "runs.queued"} <= names, names
    header = (work / "metrics.csv").read_text().splitlines()[0]
    assert header == "name,at,timestamp,host,labels,value"


# -- helpers ----------------------------------------------------------------------------------

PIPELINE_PRELUDE = """\
from stageflow import Pipeline, task


@task
def square(seed: int = 0) -> int:
    return seed * seed


pipeline = Pipeline("readme-runtime", tasks=[square], params={"seed": 0})

"""

PIPELINE_CHECK = """
assert [r.output("square") for r in results] == [s * s for s in range(20)]
"""


def embed(block: Block, folder: Path) -> Path:
    """A fragment completed into a pipeline file in ``folder``, with stub modules."""
    data = yaml.safe_load(block.text)
    spec: dict[str, Any] = {"tasks": data} if isinstance(data, list) else dict(data)
    spec.setdefault("name", f"readme-line-{block.line}")
    tasks = spec["tasks"]
    ids = {t["id"] for t in tasks}
    missing = [u for t in tasks for u in t.get("upstream", []) if u not in ids]
    spec["tasks"] = [{"id": u, "call": "stubs:step"} for u in dict.fromkeys(missing)] + tasks
    params = re.findall(r"\$\{params\.(\w+)\}", block.text)
    spec["params"] = {**dict.fromkeys(params, True), **spec.get("params", {})}
    for module in {"stubs", *re.findall(r"call: *\"?([\w.]+):", block.text)}:
        (folder / f"{module}.py").write_text(STUB_MODULE, encoding="utf-8")
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def approval_pipeline(work: Path) -> Path:
    """README's approval fragment as a pipeline (``deploy_staging`` a stub step). Its
    ``approvers`` are alice and bob; the journey decides as whoever runs the tests (the
    operating-system user, ``me()``), so it names that user in their place."""
    [block] = [b for b in blocks_of("tasks") if b.key[1] == "- id: deploy_production"]
    folder = work / "approval"
    folder.mkdir()
    path = embed(block, folder)
    spec = yaml.safe_load(path.read_text())
    spec["name"] = "readme-approval"
    [gated] = [t for t in spec["tasks"] if t["id"] == "deploy_production"]
    assert gated["approval"]["approvers"] == ["alice", "bob"], gated
    gated["approval"]["approvers"] = [me()]
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def copy_examples(tmp_path: Path) -> Path:
    """A folder holding a copy of ``examples/``, to run the READMEs' commands from."""
    work = tmp_path / "work"
    shutil.copytree(
        EXAMPLES, work / "examples", ignore=shutil.ignore_patterns("__pycache__", "*.db", "*.csv")
    )
    shutil.copy(EXAMPLES / "data" / "sales.csv", work / "examples" / "data" / "sales.csv")
    return work


def environ(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = clean_environ(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["STAGEFLOW_HOME"] = str(home)
    env.pop("VIRTUAL_ENV", None)
    env.update(extra or {})
    return env


def bash(command: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """``command`` as a user types it, in bash, with this environment's ``bin`` first."""
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=environ(home),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=180,
        check=False,
    )


def sf(
    home: Path, cwd: Path, *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STAGEFLOW), *map(str, args)],
        cwd=cwd,
        env=environ(home, env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def run_json(home: Path, cwd: Path, *args: str | Path) -> dict[str, Any]:
    proc = sf(home, cwd, "run", *args, "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def runs(home: Path) -> list[dict[str, Any]]:
    proc = sf(home, home.parent, "runs", "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    found: list[dict[str, Any]] = json.loads(proc.stdout)
    return found


def show(home: Path, run_id: str) -> dict[str, Any]:
    proc = sf(home, home.parent, "runs", "show", run_id, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    shown: dict[str, Any] = json.loads(proc.stdout)
    return shown


def state(home: Path, run_id: str) -> str:
    return str(show(home, run_id)["state"])


def awaiting_approval(home: Path, pipeline: str, besides: set[str] | None = None) -> str:
    """The id of ``pipeline``'s newest run (not in ``besides``) once its gate waits."""
    found: list[str] = []

    def waiting() -> bool:
        mine = [r for r in runs(home) if r["pipeline"] == pipeline]
        mine = [r for r in mine if r["run_id"] not in (besides or set())]
        if not mine:
            return False
        found[:] = [mine[0]["run_id"]]
        task = show(home, found[0])["tasks"]["deploy_production"]
        return bool(task["state"] == "awaiting_approval")

    wait_until(waiting, f"{pipeline}'s deploy_production awaiting approval", timeout=60)
    return found[0]


class background:
    """``stageflow ARGS`` running in the background; killed on the way out if still alive."""

    def __init__(self, cwd: Path, home: Path, *args: str | Path) -> None:
        self.proc = subprocess.Popen(
            [str(STAGEFLOW), *map(str, args)],
            cwd=cwd,
            env=environ(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> subprocess.Popen[bytes]:
        return self.proc

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def start_on_free_port(
    line: str, shown_port: str, work: Path, home: Path
) -> tuple[subprocess.Popen[str], int]:
    """A README server command in the background, its ``shown_port`` replaced by a free
    one; its stderr is piped (read it when it dies)."""
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {line.replace(shown_port, str(port))}"],
        cwd=work,
        env=environ(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, port


@contextmanager
def served(work: Path, home: Path, ran: set[str]) -> Iterator[int]:
    """README's ``models serve`` line, on a free port, until the block ends."""
    line = next(c for c in COMMANDS if c.startswith("stageflow models serve"))
    ran.add(line)
    proc, port = start_on_free_port(line, "5000", work, home)
    try:
        deadline = time.monotonic() + 90
        while not pinged(port):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "models serve did not answer /ping"
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pinged(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def breast_cancer_row() -> dict[str, float]:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns=["target"])
    return {str(k): float(v) for k, v in frame.iloc[0].items()}


def _shown(fragment: Any, written: Any) -> bool:
    """``fragment`` is ``written`` with some mapping keys left out."""
    if isinstance(fragment, dict):
        return isinstance(written, dict) and all(
            k in written and _shown(v, written[k]) for k, v in fragment.items()
        )
    if isinstance(fragment, list):
        return (
            isinstance(written, list)
            and len(fragment) == len(written)
            and all(_shown(f, w) for f, w in zip(fragment, written, strict=True))
        )
    return bool(fragment == written)


def _param(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def test_the_notifications_section(tmp_path: Path) -> None:
    """README's "Notifications and hooks" commands, as typed, after a run whose
    ``on_failure`` webhook is dead: the list shows its delivery, ``--state failed`` it
    with its attempts and last error."""
    work = copy_examples(tmp_path)
    home = tmp_path / "home"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    spec = work / "alarm.yaml"
    spec.write_text(
        "name: alarm\n"
        f"on_failure: [{{webhook: 'http://127.0.0.1:{port}/hook'}}]\n"
        "tasks:\n"
        "  - {id: a, operator: bash, parameters: {command: 'exit 1'}}\n"
    )
    env = {"STAGEFLOW_NOTIFY_TRIES": "2", "STAGEFLOW_NOTIFY_BACKOFF_SECONDS": "0.1"}
    ran = subprocess.run(
        ["stageflow", "run", str(spec)],
        cwd=work,
        env=environ(home, env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 1, ran.stderr
    out = {}
    for line in [c for c, kind in COMMANDS.items() if kind == "notifications"]:
        proc = bash(line, work, home)
        assert proc.returncode == 0, f"{line}: {proc.stderr}"
        out[line] = proc.stdout
    listed = out["stageflow notifications list"]
    assert "on_failure" in listed and f"http://127.0.0.1:{port}" in listed and "failed" in listed
    [failed] = json.loads(out["stageflow notifications list --state failed --format json"])
    assert (failed["state"], failed["attempts"], failed["pipeline"]) == ("failed", 2, "alarm")
    assert "cannot reach" in failed["last_error"]
