"""examples/control_flow.yaml end to end through the CLI: fan-out, branch,
condition, and the cached step on the second run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "control_flow.yaml"
CLI = str(Path(sys.executable).with_name("stageflow"))


def _run(home: Path, *args: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    proc = subprocess.run(
        [CLI, "--home", str(home), "run", str(EXAMPLE), "--format", "json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_control_flow_example(tmp_path: Path) -> None:
    first = _run(tmp_path)
    tasks = first["tasks"]
    assert isinstance(tasks, dict)
    assert [tasks[f"train[{k}]"]["state"] for k in range(5)] == ["success"] * 5
    assert tasks["publish"]["state"] == "success"
    assert tasks["investigate"]["state"] == "skipped"  # not chosen by the branch
    assert tasks["notify"]["state"] == "success"
    assert tasks["load"]["cached"] is False
    second = _run(tmp_path, "--param", "publish=false")
    tasks2 = second["tasks"]
    assert isinstance(tasks2, dict)
    assert tasks2["load"]["cached"] is True  # same inputs: taken from the cache
    assert tasks2["publish"]["state"] == "skipped"  # its condition is false now
    assert "condition is false" in tasks2["publish"]["error"]
    assert tasks2["notify"]["state"] == "skipped"  # neither branch ran
