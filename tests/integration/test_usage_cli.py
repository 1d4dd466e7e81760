"""``stageflow runs show`` (usage sections), ``runs cost`` and ``runs gantt`` through
the real CLI, on a store filled by committing batches as the runner does: a
running row (queue time, request) then a final row (end, measurements)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stageflow.runtime.store import (
    AttemptRecord,
    Batch,
    PipelineRecord,
    RunRecord,
    TaskRunRecord,
    open_store,
)
from stageflow.spec.load import pipeline_from_data

STAGEFLOW = Path(sys.executable).with_name("stageflow")
PRICES = "cpu_hour=0.05,memory_gb_hour=0.01,gpu_hour=2.5"
SMALL = '{"cpu": 1, "memory_gb": 1, "gpu": 0}'
BIG = '{"cpu": 2, "memory_gb": 8, "gpu": 0}'
GPU = '{"cpu": 4, "memory_gb": 0, "gpu": 1}'
CHURN_RUNS = 10
# One churn run, by hand: extract 0.1 h x (1 x 0.05 + 1 x 0.01) = 0.006; train_rf
# attempt 1 (failed) 0.2 h x (2 x 0.05 + 8 x 0.01) = 0.036, attempt 2 0.5 h x 0.18
# = 0.09; report declared nothing: 0. Task-hours 0.1 + 0.2 + 0.5 + 0.01 = 0.81.
CHURN_RUN_COST = 0.132
CHURN_RUN_HOURS = 0.81
# The gpu-job run (yesterday): 0.5 h x (4 x 0.05 + 1 x 2.5) = 1.35.
GPU_RUN_COST = 1.35


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def sf(home: Path, *args: str | Path, cost: str | None = None) -> Result:
    """The real CLI; never a traceback or an internal error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env["STAGEFLOW_HOME"] = str(home)
    if cost is not None:
        env["STAGEFLOW_COST"] = cost
    proc = subprocess.run(
        [str(STAGEFLOW), *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=120,
        check=False,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.out + result.err, result
    assert "internal error" not in result.err, result
    return result


def save_spec(store: Any, data: dict[str, Any]) -> str:
    pipeline = pipeline_from_data(data)
    version = pipeline.content_hash()
    spec = json.dumps(pipeline.canonical(), sort_keys=True)
    store.save_pipeline(PipelineRecord(pipeline.name, version, spec, 1.0))
    return version


def bash(task_id: str, *upstream: str) -> dict[str, Any]:
    return {
        "id": task_id,
        "operator": "bash",
        "parameters": {"command": "true"},
        "upstream": list(upstream),
    }


def attempt(
    run_id: str,
    task: str,
    n: int,
    state: str,
    queued: float,
    started: float,
    ended: float,
    request: str | None,
    **measured: float,
) -> list[AttemptRecord]:
    """The running row, then the final row, as the runner commits them."""
    return [
        AttemptRecord(run_id, task, n, "running", started, queued_at=queued, request_json=request),
        AttemptRecord(run_id, task, n, state, started, ended, **measured),  # type: ignore[arg-type]
    ]


@dataclass
class State:
    home: Path
    latest: str  # the newest churn run
    gpu_run: str
    today: str
    yesterday: str


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> State:
    home = tmp_path_factory.mktemp("usage") / "home"
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = midnight.timestamp()
    yesterday = (midnight - timedelta(days=1)).timestamp()
    store = open_store(None, home)
    try:
        churn = save_spec(
            store,
            {
                "name": "churn",
                "tasks": [bash("extract"), bash("train_rf", "extract"), bash("report", "extract")],
            },
        )
        gpu = save_spec(store, {"name": "gpu-job", "tasks": [bash("fit")]})
        run_id = ""
        for i in range(CHURN_RUNS):
            run_id = f"20240101-0000{i:02d}-aaaaaa"
            t = today + 60 * i  # all on today's UTC date
            store.create_run(
                RunRecord(run_id, "churn", churn, "success", {}, t, t, t + 2600),
                ["extract", "train_rf", "report"],
            )
            batch = Batch(
                attempts=[
                    *attempt(
                        run_id,
                        "extract",
                        1,
                        "success",
                        t,
                        t + 5,
                        t + 365,
                        SMALL,
                        cpu_seconds=300.0,
                        peak_rss_mb=200.0,
                    ),
                    *attempt(
                        run_id,
                        "train_rf",
                        1,
                        "failed",
                        t + 365,
                        t + 370,
                        t + 1090,
                        BIG,
                        cpu_seconds=1400.0,
                        peak_rss_mb=1228.8,
                    ),
                    *attempt(
                        run_id,
                        "train_rf",
                        2,
                        "success",
                        t + 1100,
                        t + 1130,
                        t + 2930,
                        BIG,
                        cpu_seconds=3500.0,
                        peak_rss_mb=1100.0,
                    ),
                    *attempt(
                        run_id,
                        "report",
                        1,
                        "success",
                        t + 365,
                        t + 366,
                        t + 402,
                        None,
                        cpu_seconds=30.0,
                        peak_rss_mb=50.0,
                    ),
                ],
                task_runs=[
                    TaskRunRecord(run_id, "extract", "success", 1, t + 5, t + 365),
                    TaskRunRecord(run_id, "train_rf", "success", 2, t + 370, t + 2930),
                    TaskRunRecord(run_id, "report", "success", 1, t + 366, t + 402),
                ],
            )
            store.commit(batch)
        gpu_run = "20240101-000100-bbbbbb"
        t = yesterday + 3600
        store.create_run(RunRecord(gpu_run, "gpu-job", gpu, "failed", {}, t, t, t + 1800), ["fit"])
        store.commit(
            Batch(
                attempts=attempt(
                    gpu_run, "fit", 1, "failed", t, t, t + 1800, GPU, gpu_seconds=1800.0
                )
            )
        )
    finally:
        store.close()
    return State(
        home,
        run_id,
        gpu_run,
        midnight.strftime("%Y-%m-%d"),
        (midnight - timedelta(days=1)).strftime("%Y-%m-%d"),
    )


# -- runs show -------------------------------------------------------------------------------


def section(out: str, heading: str) -> list[str]:
    """The lines under ``heading`` up to the next unindented line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        body.append(line)
    return body


def test_runs_show_adds_the_usage_sections(state: State) -> None:
    r = sf(state.home, "runs", "show", state.latest, cost=PRICES)
    assert r.code == 0, r
    assert "measured critical path (the chain that decided the run's end at +2930.00s):" in r.out
    path = [line.split() for line in section(r.out, "measured critical path")]
    assert path == [
        ["task", "attempts", "queued", "ran", "ended"],
        ["extract", "1", "5.00s", "360.00s", "+365.00s"],
        ["train_rf", "2", "30.00s", "1800.00s", "+2930.00s"],  # the last attempt's wait
    ]
    usage = [line.split() for line in section(r.out, "usage per task:")]
    assert usage[0] == ["task", "cpu", "s", "peak", "MiB", "gpu", "s", "cost", "requested"]
    assert usage[1] == ["extract", "300.00", "200.0", "-", "0.0060", "cpu", "1,", "memory",
                        "1", "GB,", "gpu", "0"]  # fmt: skip
    assert usage[2][:5] == ["train_rf", "4900.00", "1228.8", "-", "0.1260"]
    assert usage[3] == ["report", "30.00", "50.0", "-", "0.0000", "nothing", "declared"]
    assert f"cost: {CHURN_RUN_COST:.4f} (cpu_hour=0.05, memory_gb_hour=0.01, gpu_hour=2.5)" in (
        r.out.splitlines()
    )
    assert section(r.out, "right-sizing (from the last 10 runs of 'churn'):") == [
        "  extract asked 1 GB, peaked at 0.2 GB over its last 10 runs; 0.5 GB would do",
        "  train_rf asked 8 GB, peaked at 1.2 GB over its last 10 runs; 2 GB would do",
    ]


def test_runs_show_without_prices_has_no_cost(state: State) -> None:
    r = sf(state.home, "runs", "show", state.latest)
    assert r.code == 0, r
    assert "usage per task:" in r.out
    assert "cost" not in r.out
    assert "train_rf asked 8 GB" in r.out


def test_runs_show_json_keeps_its_shape(state: State) -> None:
    r = sf(state.home, "runs", "show", state.latest, "--format", "json", cost=PRICES)
    assert r.code == 0, r
    assert set(r.json()) == {"run_id", "pipeline", "state", "started_at", "ended_at", "tasks"}


def test_a_bad_price_setting_is_a_usage_error(state: State) -> None:
    r = sf(state.home, "runs", "show", state.latest, cost="cpu=1")
    assert r.code == 2
    assert "STAGEFLOW_COST: unknown price 'cpu'" in r.err


# -- runs cost ---------------------------------------------------------------------------------


def test_runs_cost_json_equals_the_hand_computation(state: State) -> None:
    r = sf(state.home, "runs", "cost", "--days", "2", "--format", "json", cost=PRICES)
    assert r.code == 0, r
    doc = r.json()
    assert doc["days"] == 2
    assert doc["prices"] == {"cpu_hour": 0.05, "memory_gb_hour": 0.01, "gpu_hour": 2.5}
    assert doc["since"].startswith(state.yesterday)
    assert [(row["pipeline"], row["day"], row["runs"]) for row in doc["rows"]] == [
        ("gpu-job", state.yesterday, 1),
        ("churn", state.today, CHURN_RUNS),
    ]
    gpu, churn = doc["rows"]
    assert gpu["cost"] == pytest.approx(GPU_RUN_COST)
    assert gpu["gpu_hours"] == pytest.approx(0.5)
    assert churn["cost"] == pytest.approx(CHURN_RUNS * CHURN_RUN_COST)
    assert churn["task_hours"] == pytest.approx(CHURN_RUNS * CHURN_RUN_HOURS)
    assert churn["cpu_hours"] == pytest.approx(CHURN_RUNS * (0.1 + 2 * 0.7))
    assert churn["memory_gb_hours"] == pytest.approx(CHURN_RUNS * (0.1 + 8 * 0.7))
    assert doc["total"]["runs"] == CHURN_RUNS + 1
    assert doc["total"]["cost"] == pytest.approx(GPU_RUN_COST + CHURN_RUNS * CHURN_RUN_COST)


def test_runs_cost_window_and_pipeline_filter(state: State) -> None:
    today_only = sf(state.home, "runs", "cost", "--days", "1", "--format", "json", cost=PRICES)
    assert [row["pipeline"] for row in today_only.json()["rows"]] == ["churn"]
    gpu_only = sf(
        state.home, "runs", "cost", "--days", "7", "--pipeline", "gpu-job", "--format", "json",
        cost=PRICES,
    )  # fmt: skip
    assert [row["pipeline"] for row in gpu_only.json()["rows"]] == ["gpu-job"]
    none = sf(state.home, "runs", "cost", "--pipeline", "absent")
    assert (none.code, none.out) == (0, "")
    assert "no runs of pipeline 'absent' created in the last 7 days" in none.err
    bad = sf(state.home, "runs", "cost", "--days", "0")
    assert bad.code == 2


def test_runs_cost_text_table(state: State) -> None:
    r = sf(state.home, "runs", "cost", "--days", "2", cost=PRICES)
    assert r.code == 0, r
    rows = [line.split() for line in r.out.splitlines()]
    assert rows == [
        ["pipeline", "day", "runs", "task-hours", "cost"],
        ["gpu-job", state.yesterday, "1", "0.5000", f"{GPU_RUN_COST:.4f}"],
        ["churn", state.today, "10", f"{10 * CHURN_RUN_HOURS:.4f}", f"{10 * CHURN_RUN_COST:.4f}"],
        [
            "total",
            "11",
            f"{0.5 + 10 * CHURN_RUN_HOURS:.4f}",
            f"{GPU_RUN_COST + 10 * CHURN_RUN_COST:.4f}",
        ],
    ]
    assert "prices: cpu_hour=0.05, memory_gb_hour=0.01, gpu_hour=2.5" in r.err


def test_runs_cost_without_prices_says_how_to_set_them(state: State) -> None:
    r = sf(state.home, "runs", "cost", "--days", "2")
    assert r.code == 0, r
    assert "no prices configured: set STAGEFLOW_COST" in r.err
    assert r.out.splitlines()[0].split() == ["pipeline", "day", "runs", "task-hours"]
    doc = sf(state.home, "runs", "cost", "--days", "2", "--format", "json").json()
    assert doc["prices"] is None
    assert [row["cost"] for row in doc["rows"]] == [None, None]
    assert doc["total"]["cost"] is None
    assert doc["total"]["task_hours"] == pytest.approx(0.5 + 10 * CHURN_RUN_HOURS)


# -- runs gantt ---------------------------------------------------------------------------------


def test_runs_gantt_writes_png_and_svg(state: State, tmp_path: Path) -> None:
    png = tmp_path / "run.png"
    r = sf(state.home, "runs", "gantt", state.latest, "-o", png)
    assert r.code == 0, r
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"wrote {png} (4 attempts of 3 tasks)" in r.err

    svg = tmp_path / "run.SVG"  # the suffix is case-insensitive
    r = sf(state.home, "runs", "gantt", state.latest, "--output", svg)
    assert r.code == 0, r
    root = ET.fromstring(svg.read_text(encoding="utf-8"))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    tips = [t.text or "" for t in root.iter(f"{ns}title")]
    assert sorted(t for t in tips if ", ran " in t) == [
        "extract attempt 1: success, ran 360.00s",
        "report attempt 1: success, ran 36.00s",
        "train_rf attempt 1: failed, ran 720.00s",
        "train_rf attempt 2: success, ran 1800.00s",
    ]
    assert "train_rf attempt 2: success, queued 30.00s" in tips


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("run.pdf", "-o {dir}/run.pdf: unsupported suffix '.pdf'; name a .png or .svg file"),
        ("run", "-o {dir}/run: no suffix; name a .png or .svg file"),
        ("missing/run.png", "folder '{dir}/missing' does not exist; create it first"),
        ("folder.svg", "-o {dir}/folder.svg is a folder; name a file in it"),
        ("file.txt/run.svg", "-o {dir}/file.txt/run.svg: '{dir}/file.txt' is not a folder"),
    ],
)
def test_runs_gantt_refuses_bad_output_paths(
    state: State, tmp_path: Path, output: str, message: str
) -> None:
    (tmp_path / "folder.svg").mkdir()
    (tmp_path / "file.txt").write_text("x")
    r = sf(state.home, "runs", "gantt", state.latest, "-o", tmp_path / output)
    assert r.code == 2, r
    assert message.format(dir=tmp_path) in r.err
    assert not (tmp_path / "run.pdf").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_runs_gantt_refuses_an_unwritable_folder(state: State, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = sf(state.home, "runs", "gantt", state.latest, "-o", locked / "run.png")
    finally:
        locked.chmod(0o700)
    assert r.code == 2, r
    assert "not writable by this user" in r.err


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/sys/kernel").is_dir(),
    reason="as root on Linux only (others are refused before writing, above)",
)
def test_runs_gantt_reports_a_failed_write(state: State) -> None:
    # sysfs refuses new files even to root, who passes the access check: the write fails.
    r = sf(state.home, "runs", "gantt", state.latest, "-o", "/sys/kernel/run.svg")
    assert r.code == 2, r
    assert "-o /sys/kernel/run.svg: cannot write it (" in r.err
    assert "choose a writable path" in r.err


def test_runs_gantt_of_an_unknown_or_invalid_run(state: State, tmp_path: Path) -> None:
    r = sf(state.home, "runs", "gantt", "20200101-000000-abcdef", "-o", tmp_path / "x.png")
    assert r.code == 1  # a missing run, as for `runs show`
    assert "no run '20200101-000000-abcdef'" in r.err
    assert "stageflow runs list" in r.err
    assert not (tmp_path / "x.png").exists()
    r = sf(state.home, "runs", "gantt", "-o", tmp_path / "x.png", "--", "../x")
    assert r.code == 2
    assert "run id '../x' is invalid" in r.err
    r = sf(state.home, "runs", "gantt", state.latest)
    assert r.code == 2
    assert "Missing option '-o'" in r.err
