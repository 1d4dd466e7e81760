"""``/metrics`` of a real ``stageflow serve`` read back after real runs: the claim
latency histogram measures a run's wait from submission to a worker's claim (the
worker starts late), the task duration histogram keeps a mapped task's elements in
one ``task`` series with their durations in the right buckets, and the
``STAGEFLOW_METRICS_TASKS`` cap given to ``serve`` sums the rest under ``other``;
``serve --private-metrics`` puts ``/metrics`` behind a token."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from helpers_serve import Server, serving
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

STEPS = """\
import time


def grid():
    return [0.0, 0.0, 1.2]


def nap(grid):
    time.sleep(grid)
    return grid


def report(nap):
    return len(nap)
"""

FAN = {
    "name": "fan",
    "tasks": [
        {"id": "grid", "call": "sf_metrics_steps:grid"},
        {"id": "nap", "call": "sf_metrics_steps:nap", "upstream": ["grid"], "map_over": "grid"},
        {"id": "report", "call": "sf_metrics_steps:report", "upstream": ["nap"]},
    ],
}

#: sample name -> {sorted (label, value) pairs: value}
Scrape = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(server: Server) -> Scrape:
    with server.client() as c:
        answer = c.get("/metrics")
    assert answer.status_code == 200, answer.text
    out: Scrape = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def series(scraped: Scrape, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return scraped.get(name, {})


def buckets(scraped: Scrape, name: str, **labels: str) -> dict[float, float]:
    """{bound: cumulative count} of the histogram series with exactly ``labels``."""
    key = tuple(sorted(labels.items()))
    return {
        float(dict(pairs)["le"]): value
        for pairs, value in series(scraped, f"{name}_bucket").items()
        if tuple(p for p in pairs if p[0] != "le") == key
    }


def test_claim_latency_and_mapped_task_durations_read_back_from_a_real_serve(
    tmp_path: Path,
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "sf_metrics_steps.py").write_text(STEPS)
    with serving(
        "sqlite",
        tmp_path / "place",
        "--no-worker",
        STAGEFLOW_METRICS_TASKS="2",
        PYTHONPATH=str(code),
    ) as server:
        with server.client(server.admin) as c:
            saved = c.post("/api/v1/pipelines", json=FAN)
            assert saved.status_code == 201, saved.text
            submitted = time.time()
            queued = c.post("/api/v1/runs", json={"pipeline_id": "fan"})
            assert queued.status_code == 202, queued.text
        run_id = queued.json()["run_id"]
        time.sleep(1.5)  # no worker yet: the run waits in the queue
        waiting = scrape(server)
        assert series(waiting, "stageflow_runs_queued") == {(): 1.0}
        assert series(waiting, "stageflow_queue_oldest_wait_seconds")[()] >= 1.0
        assert series(waiting, "stageflow_run_claim_latency_seconds_count") == {}  # not claimed

        server.start("late-worker", "worker", "--name", "late-worker", PYTHONPATH=str(code))
        doc = server.wait_run(server.admin, run_id, ("success", "failed"))
        assert doc["state"] == "success", doc
        scraped = scrape(server)

    # The claim latency: submitted, then claimed by the worker that started 1.5 s later.
    fan = (("pipeline", "fan"),)
    assert series(scraped, "stageflow_run_claim_latency_seconds_count") == {fan: 1.0}
    waited = series(scraped, "stageflow_run_claim_latency_seconds_sum")[fan]
    assert 1.5 <= waited <= time.time() - submitted
    started, created = (datetime.fromisoformat(doc[k]) for k in ("started_at", "created_at"))
    assert waited == pytest.approx((started - created).total_seconds(), abs=0.01)
    latency = buckets(scraped, "stageflow_run_claim_latency_seconds", pipeline="fan")
    assert latency[1.0] == 0.0 and latency[float("inf")] == 1.0

    # Task durations: the three elements nap[0..2] are one `nap` series; with a cap of 2
    # pairs, nap (3 attempts) and grid (1, first by name among the ties) keep their
    # labels and report is summed under `other`.
    counts = series(scraped, "stageflow_task_duration_seconds_count")
    assert counts == {
        (("pipeline", "fan"), ("task", "nap")): 3.0,
        (("pipeline", "fan"), ("task", "grid")): 1.0,
        (("pipeline", "fan"), ("task", "other")): 1.0,
    }
    assert not any("[" in value for key in counts for _, value in key)
    naps = buckets(scraped, "stageflow_task_duration_seconds", pipeline="fan", task="nap")
    assert naps[0.5] <= 2.0  # the 1.2 s element is over 0.5 s and over 1 s
    assert naps[1.0] <= 2.0
    assert naps[5.0] == naps[float("inf")] == 3.0
    nap_sum = series(scraped, "stageflow_task_duration_seconds_sum")
    assert nap_sum[(("pipeline", "fan"), ("task", "nap"))] >= 1.2


def test_private_metrics_need_a_token(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path, "--no-worker", "--private-metrics") as server:
        viewer = server.token("scraper", "viewer")
        with server.client() as c:
            refused = c.get("/metrics")
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]
            assert c.get("/health").status_code == 200  # health stays open
        with server.client(viewer) as c:
            answer = c.get("/metrics")
        assert answer.status_code == 200
        assert "# TYPE stageflow_runs gauge" in answer.text
