"""The CLI pointed at a server (``--server`` / ``STAGEFLOW_SERVER``, ``STAGEFLOW_TOKEN``):
the same output as from the store for the commands that read or control runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers_serve import Server, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SLOW = """\
name: slow
tasks:
  - id: nap
    operator: bash
    parameters: {command: "sleep 30"}
"""


def remote(server: Server, *args: str, token: str | None = None) -> tuple[int, str, str]:
    r = server.cli(*args, STAGEFLOW_SERVER=server.base, STAGEFLOW_TOKEN=token or server.admin)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout, r.stderr


def without_durations(doc: dict[str, object]) -> dict[str, object]:
    """A run's JSON less its tasks' durations (the API gives times to the millisecond)."""
    tasks = {
        tid: {k: v for k, v in t.items() if k != "duration_s"}  # type: ignore[union-attr]
        for tid, t in doc["tasks"].items()  # type: ignore[union-attr]
    }
    return {**doc, "tasks": tasks}


def test_the_cli_reads_and_controls_runs_through_a_server(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path) as server:
        code, out, err = remote(
            server, "submit", str(ROOT / "examples/service/hello.yaml"), "--param", "who=cli"
        )
        assert code == 0, err
        run_id = out.strip()
        server.wait_run(server.admin, run_id, ("success",))

        # The same answers as the store's own (the CLI without --server, same home).
        listed = remote(server, "runs", "list", "--format", "json")[1]
        assert json.loads(listed) == json.loads(
            server.cli("runs", "list", "--format", "json").stdout
        )
        shown = json.loads(remote(server, "runs", "show", run_id, "--format", "json")[1])
        local = json.loads(server.cli("runs", "show", run_id, "--format", "json").stdout)
        assert without_durations(shown) == without_durations(local)
        text = remote(server, "runs", "show", run_id)[1]
        assert text.splitlines()[0] == server.cli("runs", "show", run_id).stdout.splitlines()[0]
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
