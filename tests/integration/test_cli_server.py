"""The CLI pointed at a server (``--server`` / ``STAGEFLOW_SERVER``, ``STAGEFLOW_TOKEN``):
the same output as from the store for the commands that read or control runs, and a
clear refusal (exit 2) from every other command that would read the store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import click
import pytest
from helpers_places import STAGEFLOW
from helpers_serve import Server, serving
from helpers_tasks import clean_environ

from stageflow.service import cli as cli_module

ROOT = Path(__file__).resolve().parents[2]
SLOW = """\
name: slow
tasks:
  - id: nap
    operator: bash
    parameters: {command: "sleep 30"}
"""
#: ``check`` fails until FLAG exists; ``after`` runs once it passed.
FLAKY = """\
name: flaky
tasks:
  - id: check
    operator: bash
    parameters: {command: "test -f FLAG && echo found"}
  - id: after
    operator: bash
    upstream: [check]
    parameters: {command: "echo after"}
"""
GATED = """\
name: gated
tasks:
  - id: prepare
    operator: bash
    parameters: {command: "echo ready"}
  - id: deploy
    operator: bash
    upstream: [prepare]
    parameters: {command: "echo deployed"}
    approval: {approvers: [root]}
"""
PRICES = "cpu_hour=0.05,memory_gb_hour=0.01"


def remote(server: Server, *args: str, token: str | None = None) -> tuple[int, str, str]:
    """``stageflow ARGS`` through the server, from a home of its own that holds no store:
    what it prints can only have come from the server."""
    elsewhere = server.tmp / "elsewhere"
    env = clean_environ(os.environ)
    env.update(
        STAGEFLOW_SERVER=server.base,
        STAGEFLOW_TOKEN=token or server.admin,
        STAGEFLOW_COST=PRICES,
    )
    r = subprocess.run(
        [str(STAGEFLOW), "--home", str(elsewhere), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in r.stderr, r.stderr
    assert not elsewhere.exists(), f"`stageflow {' '.join(args)}` made a local home"
    return r.returncode, r.stdout, r.stderr


def local(server: Server, *args: str) -> tuple[int, str, str]:
    """``stageflow ARGS`` on the server's own store (no server named)."""
    r = server.cli(*args, STAGEFLOW_COST=PRICES)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout, r.stderr


def both(server: Server, *args: str) -> tuple[str, str]:
    """The stdout of ``ARGS`` through the server and from the store; both exit 0."""
    code, through, err = remote(server, *args)
    assert code == 0, err
    code, here, err = local(server, *args)
    assert code == 0, err
    return through, here


def without_durations(doc: dict[str, object]) -> dict[str, object]:
    """A run's JSON less its tasks' durations (the API gives times to the millisecond)."""
    tasks = {
        tid: {k: v for k, v in t.items() if k != "duration_s"}  # type: ignore[union-attr]
        for tid, t in doc["tasks"].items()  # type: ignore[union-attr]
    }
    return {**doc, "tasks": tasks}


def windowless(text: str) -> object:
    """A report's JSON less the bounds of its window (``now`` when each was asked)."""
    window = {"since", "until", "from", "to"}

    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in window}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(text))


def seconds_masked(text: str) -> str:
    """``text`` with its durations (``0.53s``, ``+1.2s``, ``12ms``) masked: the API gives
    times to the millisecond, so a second decimal may differ."""
    return re.sub(r"\d+(\.\d+)?(ms|s)\b", "N", text)


@pytest.mark.slow
def test_the_cli_reads_and_controls_runs_through_a_server(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path, STAGEFLOW_COST=PRICES) as server:
        code, out, err = remote(
            server, "submit", str(ROOT / "examples/service/hello.yaml"), "--param", "who=cli"
        )
        assert code == 0, err
        run_id = out.strip()
        server.wait_run(server.admin, run_id, ("success",))

        # The same answers as the store's own (the CLI without --server, same home).
        listed = remote(server, "runs", "list", "--format", "json")[1]
        assert json.loads(listed) == json.loads(
            local(server, "runs", "list", "--format", "json")[1]
        )
        shown = json.loads(remote(server, "runs", "show", run_id, "--format", "json")[1])
        here = json.loads(local(server, "runs", "show", run_id, "--format", "json")[1])
        assert without_durations(shown) == without_durations(here)
        # The text too, its usage report and reproducibility record included.
        through, here_text = both(server, "runs", "show", run_id)
        assert "reproducibility:" in here_text and "critical path" in here_text
        assert seconds_masked(through) == seconds_masked(here_text)
        assert remote(server, "logs", run_id, "greet")[1] == "hello cli\n"

        # Control: a running run is cancelled through the server, in the token's name.
        (tmp_path / "slow.yaml").write_text(SLOW)
        slow = remote(server, "submit", str(tmp_path / "slow.yaml"))[1].strip()
        server.wait_run(server.admin, slow, ("running",))
        code, _, err = remote(server, "cancel", slow)
        assert code == 0 and "cancel" in err, err
        assert server.wait_run(server.admin, slow, ("cancelled",), timeout=30)["state"] == (
            "cancelled"
        )

        # Mistakes: as from the store, with the server's messages.
        for verb in (["cancel", slow], ["approve", slow, "deploy"]):
            code, _, err = remote(server, *verb, "--by", "alice")
            assert code == 2, err
            assert err == (
                "error: --by alice: through a server you act as the name of your token "
                "(STAGEFLOW_TOKEN); leave --by out, and use alice's token to act as alice\n"
            )
        code, _, err = remote(server, "runs", "show", "20260101-000000-abcdef")
        assert code == 1 and "no run '20260101-000000-abcdef'" in err
        code, _, err = remote(server, "runs", "list", "--state", "done")
        assert code == 2 and "done" in err
        viewer = server.token("v", "viewer")
        code, _, err = remote(server, "cancel", run_id, token=viewer)
        assert code == 1 and "role viewer" in err
        code, _, err = remote(server, "runs", "list", token="sft_nope")
        assert code == 1 and "token is unknown" in err
    time.sleep(0.1)  # the server is gone now
    code, _, err = remote(server, "runs", "list")
    assert code == 2 and f"cannot reach the server at {server.base}" in err


@pytest.mark.slow
def test_reports_retries_and_rejections_go_through_a_server(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path, STAGEFLOW_COST=PRICES) as server:
        hello = str(ROOT / "examples/service/hello.yaml")
        first = remote(server, "submit", hello, "--param", "who=ann")[1].strip()
        second = remote(server, "submit", hello, "--param", "who=bob")[1].strip()
        for run_id in (first, second):
            server.wait_run(server.admin, run_id, ("success",))

        # Reports: the same text and JSON through the server as from the store.
        for args in (
            ["runs", "diff", first, second],
            ["runs", "diff", first, second, "--format", "json"],
            ["lineage", f"{second}/done"],
            ["lineage", f"{second}/done", "--format", "json"],
            ["stats", "hello"],
            ["stats", "hello", "--format", "csv"],
            ["gates", "hello", "--format", "json"],
            ["gates", "hello"],
        ):
            through, here = both(server, *args)
            assert through == here, args
            assert "hello" in through or "done" in through, args
        assert "params:" in both(server, "runs", "diff", first, second)[0]
        for args in (
            ["stats", "hello", "--format", "json"],
            ["statistics", "hello", "--format", "json"],
            ["runs", "cost", "--format", "json"],
        ):
            through, here = both(server, *args)
            assert windowless(through) == windowless(here), args
        for args in (["statistics"], ["runs", "cost"]):
            through, here = both(server, *args)
            assert seconds_masked(through) == seconds_masked(here), args
            assert "hello" in through
        code, _, err = remote(server, "stats", "nope")
        assert code == 1 and "nope" in err, err
        code, _, err = remote(server, "lineage", "done")
        assert code == 2 and "RUN_ID/TASK" in err and "--server" in err

        # retry: queued again for the server's worker, from a failed task or a task given.
        (tmp_path / "flaky.yaml").write_text(FLAKY.replace("FLAG", str(tmp_path / "flag")))
        flaky = remote(server, "submit", str(tmp_path / "flaky.yaml"))[1].strip()
        assert server.wait_run(server.admin, flaky, ("failed", "success"))["state"] == "failed"
        code, _, err = remote(server, "retry", flaky, "--no-cache")
        assert code == 2 and "--no-cache" in err and "--server" in err
        (tmp_path / "flag").write_text("")
        code, _, err = remote(server, "retry", flaky)
        assert code == 0, err
        assert f"run '{flaky}' is queued again: 2 task(s) will run" in err
        doc = server.wait_run(server.admin, flaky, ("success", "failed"))
        assert doc["state"] == "success" and doc["tasks"]["check"]["attempts"] == 2
        code, _, err = remote(server, "retry", flaky)
        assert code == 1 and "succeeded; nothing to retry" in err
        code, out, err = remote(server, "retry", flaky, "--from", "after", "--format", "json")
        assert code == 0, err
        assert json.loads(out)["request"] == "retry" and json.loads(out)["task_id"] == "after"
        doc = server.wait_run(server.admin, flaky, ("success", "failed"))
        assert doc["tasks"]["after"]["attempts"] == 2 and doc["tasks"]["check"]["attempts"] == 2

        # approve --reject: the gate fails, in the token's name.
        (tmp_path / "gated.yaml").write_text(GATED)
        gated = remote(server, "submit", str(tmp_path / "gated.yaml"))[1].strip()
        deadline = time.monotonic() + 60
        while (
            server.wait_run(server.admin, gated, ("running", "paused"))["tasks"]["deploy"]["state"]
            != "awaiting_approval"
        ):
            assert time.monotonic() < deadline, "deploy never awaited approval"
            time.sleep(0.05)
        code, _, err = remote(server, "approve", gated, "deploy", "--reject", "--comment", "no")
        assert code == 0 and "root" in err, err
        doc = server.wait_run(server.admin, gated, ("success", "failed"))
        assert doc["state"] == "failed" and doc["tasks"]["deploy"]["state"] == "failed"
        assert "rejected" in doc["tasks"]["deploy"]["error"]


def dummy_args(command: click.Command) -> list[str]:
    """Arguments that parse for ``command``: a value for each required parameter."""
    args: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        value = "x"
        if isinstance(param.type, click.Choice):
            value = str(param.type.choices[0])
        elif isinstance(param.type, click.types._NumberRangeBase | click.types.IntParamType):
            value = "1"
        if isinstance(param, click.Option):
            args += [param.opts[0], value]
        else:
            args += [value] * (1 if param.nargs in (1, -1) else param.nargs)
    return args


def test_every_other_command_that_reads_the_store_refuses_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a server named, a command either goes through it or exits 2 naming --server:
    none reads (or makes) a local store. New commands are refused until they go through."""
    commands = dict(cli_module._commands(cli_module.cli))
    assert set(commands) >= cli_module.THROUGH_SERVER
    assert set(commands) >= cli_module.NO_SERVER_NEEDED
    refused = sorted(set(commands) - cli_module.THROUGH_SERVER - cli_module.NO_SERVER_NEEDED)
    for name in ("run", "resume", "runs gantt", "pipelines list", "schedules list", "audit"):
        assert name in refused
    monkeypatch.setenv("STAGEFLOW_SERVER", "http://127.0.0.1:9")
    home = tmp_path / "home"
    monkeypatch.setenv("STAGEFLOW_HOME", str(home))  # `--home` sets it: put back after
    calls = {name: [*name.split(), *dummy_args(commands[name])] for name in refused}
    calls["graph --run"] = ["graph", "--run", "20260101-000000-abcdef"]
    for name, argv in calls.items():
        with pytest.raises(SystemExit) as exited:
            cli_module.main(["--home", str(home), *argv])
        err = capsys.readouterr().err
        assert exited.value.code == 2, (name, err)
        assert err.startswith(f"error: `stageflow {name}` does not go through a server "), (
            name,
            err,
        )
        assert "--server http://127.0.0.1:9" in err and "without --server" in err, err
        assert not home.exists(), name
