"""``stageflow.PipelineMonitor`` (seed 003's monitor API) on a real store: started, its
thread samples the host and the store into the store (read back as history, exported
to CSV and JSON files and parsed), an alert rule on real failed runs opens an alert that
acknowledge and resolve move through its lifecycle (``stageflow alerts list`` shows the
same), stopping leaves no thread, and every mistake raises the operations' exceptions
with the CLI's words.

Failed runs are ``stageflow run`` of a one-task bash pipeline exiting 3, in a
subprocess. Real clock, with generous waits.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers_places import Place, place_on
from helpers_schedules import WAIT, ok, sf
from helpers_tasks import clean_environ, wait_until

from stageflow import AlertCondition, AlertRule, AlertSeverity, PipelineMonitor
from stageflow.errors import UsageError
from stageflow.operations.alerts import AlertNotFound, InvalidAlertRule

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "monitor_quickstart.py"
FLAKY = """\
name: flaky
tasks:
  - id: boom
    operator: bash
    parameters:
      command: exit 3
"""


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Place]:
    with place_on("sqlite", tmp_path, Place) as found:
        yield found


def monitor_on(place: Place, **kwargs: object) -> PipelineMonitor:
    return PipelineMonitor(home=place.home, store_url=place.url, **kwargs)  # type: ignore[arg-type]  # test kwargs


def our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "stageflow-monitor" and t.is_alive()]


def fail_a_run(place: Place) -> None:
    path = place.tmp / "flaky.yaml"
    path.write_text(FLAKY)
    done = sf(place, "run", str(path))
    assert done.returncode == 1 and "failed" in done.stdout, done


def test_start_samples_into_the_store_history_and_exports_read_back_and_stop_ends_it(
    place: Place,
) -> None:
    assert not our_threads()
    begun = datetime.now(UTC) - timedelta(seconds=1)
    monitor = monitor_on(place, sampling_interval_seconds=0.2, metrics_retention_hours=1)
    assert (monitor.sampling_interval_seconds, monitor.metrics_retention_hours) == (0.2, 1)
    with monitor:
        monitor.start_monitoring()
        monitor.start_monitoring()  # idempotent: still one thread
        assert monitor.monitoring and len(our_threads()) == 1

        def samples() -> list[dict[str, object]]:
            found = monitor.get_metrics_history(["host.memory_percent"], begun, "now")["samples"]
            assert isinstance(found, list)
            return found

        wait_until(lambda: len(samples()) >= 3, "three memory samples", timeout=WAIT)
        current = monitor.get_current_metrics()
        assert current["sampled_at"] is not None
        [host] = current["hosts"].values()
        assert 0 < host["host.memory_percent"] <= 100
        assert current["store"]["runs.queued"] == 0
    assert not monitor.monitoring
    assert not our_threads()
    monitor.stop_monitoring()  # idempotent

    # Stopped: no more samples. Read back in every form the seed names.
    end = time.time()
    history = monitor.get_metrics_history(["host.memory_percent", "runs.queued"], begun, end)
    assert history["names"] == ["host.memory_percent", "runs.queued"]
    rows = history["samples"]
    memory = [r for r in rows if r["name"] == "host.memory_percent"]
    assert len(memory) >= 3
    stamps = [r["timestamp"] for r in memory]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # one per slot
    assert all(abs(t / 0.2 - round(t / 0.2)) < 1e-3 for t in stamps)  # each at its slot
    assert {r["name"] for r in rows} == {"host.memory_percent", "runs.queued"}
    time.sleep(0.6)
    assert (
        monitor.get_metrics_history(["host.memory_percent", "runs.queued"], begun, end) == history
    )

    csv_path, json_path = place.tmp / "m.csv", place.tmp / "m.json"
    names = ["host.memory_percent", "runs.queued"]
    text = monitor.export_metrics(
        csv_path, "csv", start_time=begun.isoformat(), end_time=end, metric_names=names
    )
    assert csv_path.read_text() == text
    with csv_path.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["name"], float(r["value"]), float(r["timestamp"])) for r in table] == [
        (r["name"], r["value"], r["timestamp"]) for r in rows
    ]
    monitor.export_metrics(json_path, start_time=begun, end_time=end, metric_names=names)
    assert json.loads(json_path.read_text()) == rows
    # The CLI reads the same samples from the store.
    out = ok(
        place, "metrics", "history", "host.memory_percent", "--from", begun.isoformat(),
        "--to", datetime.fromtimestamp(end, UTC).isoformat(), "--format", "json",
    ).stdout  # fmt: skip
    assert json.loads(out)["samples"] == memory


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_a_rule_on_failed_runs_opens_an_alert_that_moves_through_its_lifecycle(
    backend: str, tmp_path: Path
) -> None:
    with place_on(backend, tmp_path, Place) as place:
        monitor = monitor_on(place, sampling_interval_seconds=0.2)
        rule = monitor.add_alert_rule(
            AlertRule(
                id="failing",
                metric="runs.failures",
                condition=AlertCondition.GREATER_THAN,
                threshold=0,
                severity=AlertSeverity.CRITICAL,
                cooldown=3600,
                description="a run failed",
            )
        )
        assert (rule["rule_id"], rule["condition"], rule["severity"]) == (
            "failing", "greater_than", "critical",
        )  # fmt: skip
        assert "failing" in ok(place, "alerts", "rules", "list").stdout
        fail_a_run(place)
        assert monitor.get_alerts() == []  # nothing evaluates rules until started
        with monitor:
            monitor.start_monitoring()
            wait_until(lambda: monitor.get_alerts() != [], "the alert opened", timeout=WAIT)
        assert not our_threads()
        [alert] = monitor.get_alerts(severity="critical", resolved=False)
        assert (alert["rule_id"], alert["state"], alert["pipeline"]) == (
            "failing", "open", "flaky",
        )  # fmt: skip
        assert (
            alert["message"] == "alert rule 'failing': runs.failures of flaky is 1, greater than 0"
        )
        assert monitor.get_alerts(severity=AlertSeverity.INFO) == []
        assert monitor.get_alerts(resolved=True) == []

        def cli_state() -> str:
            out = ok(place, "alerts", "list", "--format", "json").stdout
            [shown] = json.loads(out)["alerts"]
            assert shown["alert_id"] == alert["alert_id"]
            return str(shown["state"])

        assert cli_state() == "open"
        acked = monitor.acknowledge_alert(alert["alert_id"], by="ops")
        assert (acked["state"], acked["acknowledged_by"]) == ("acknowledged", "ops")
        assert cli_state() == "acknowledged"
        assert [a["state"] for a in monitor.get_alerts(resolved=False)] == ["acknowledged"]
        done = monitor.resolve_alert(alert["alert_id"], by="ops")
        assert (done["state"], done["resolved_by"]) == ("resolved", "ops")
        assert cli_state() == "resolved"
        assert monitor.get_alerts(resolved=False) == []
        assert [a["alert_id"] for a in monitor.get_alerts(resolved=True)] == [alert["alert_id"]]
        with pytest.raises(UsageError) as raised:
            monitor.acknowledge_alert(alert["alert_id"])
        cli = sf(place, "alerts", "ack", alert["alert_id"])
        assert cli.returncode == 2 and str(raised.value) in cli.stderr, cli

        monitor.remove_alert_rule("failing")
        assert monitor.list_alert_rules() == []
        assert "failing" not in ok(place, "alerts", "rules", "list").stdout
        assert len(monitor.get_alerts()) == 1  # its alerts stay


def test_bad_input_raises_the_clis_errors_and_writes_nothing(place: Place) -> None:
    monitor = monitor_on(place)
    with pytest.raises(InvalidAlertRule) as bad_rule:
        monitor.add_alert_rule(
            AlertRule(
                id="x", metric="nope", condition="bigger", threshold=1, severity="high", cooldown=-1
            )
        )
    fields = [p.field for p in bad_rule.value.problems]
    assert fields == ["metric", "condition", "severity", "cooldown"]
    cli = sf(
        place, "alerts", "rules", "add", "x", "--metric", "nope", "--condition", "bigger",
        "--threshold", "1", "--severity", "high", "--cooldown", "-1",
    )  # fmt: skip
    assert cli.returncode == 2 and str(bad_rule.value) in cli.stderr, cli
    assert monitor.list_alert_rules() == []

    with pytest.raises(UsageError, match="name 'nope' is not a metric; the metrics are "):
        monitor.get_metrics_history(["nope"])
    cli = sf(place, "metrics", "history", "nope")
    assert cli.returncode == 2 and "name 'nope' is not a metric" in cli.stderr, cli
    with pytest.raises(UsageError, match="start_time now is after end_time -1h") as late:
        monitor.get_metrics_history(["host.cpu_percent"], "now", "-1h")
    assert late.value.field == "start_time"
    with pytest.raises(UsageError, match="start_time 'yesterday' is not a time"):
        monitor.export_metrics(start_time="yesterday")
    with pytest.raises(UsageError, match="end_time True is not a time") as odd:
        monitor.get_metrics_history([], end_time=True)
    assert odd.value.field == "end_time"
    with pytest.raises(UsageError, match="format 'xml' is not a format; give one of csv, json"):
        monitor.export_metrics(format="xml")
    with pytest.raises(UsageError, match=r"output_path .*cannot write it") as unwritable:
        monitor.export_metrics(place.tmp / "no" / "such" / "m.csv")
    assert unwritable.value.field == "output_path"

    with pytest.raises(AlertNotFound, match="no alert 'zzz'; see `stageflow alerts list`"):
        monitor.acknowledge_alert("zzz")
    with pytest.raises(AlertNotFound, match="no alert 'zzz'"):
        monitor.resolve_alert("zzz")
    with pytest.raises(AlertNotFound, match="no alert rule 'zzz'"):
        monitor.remove_alert_rule("zzz")
    with pytest.raises(UsageError, match="--severity 'high' is unknown"):
        monitor.get_alerts(severity="high")
    with pytest.raises(UsageError, match="--limit 0 must be between 1 and 10000"):
        monitor.get_alerts(limit=0)
    with pytest.raises(UsageError, match="takes an AlertRule"):
        monitor.add_alert_rule({"id": "x"})  # type: ignore[arg-type]  # the mistake tested

    for kwargs, name in [
        ({"sampling_interval_seconds": 0}, "sampling_interval_seconds"),
        ({"sampling_interval_seconds": -1}, "sampling_interval_seconds"),
        ({"metrics_retention_hours": 0}, "metrics_retention_hours"),
    ]:
        with pytest.raises(UsageError, match=f"{name} is ") as bad:
            monitor_on(place, **kwargs)
        assert bad.value.field == name


def test_the_monitor_example_runs(tmp_path: Path) -> None:
    """``python examples/monitor_quickstart.py HOME``, as the README gives it."""
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE.relative_to(ROOT)), str(home)],
        cwd=ROOT,
        env=clean_environ(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("memory: ") and lines[0].endswith("%"), lines
    assert lines[1].startswith("samples of host.memory_percent: "), lines
    assert int(lines[1].rsplit(" ", 1)[1]) >= 2, lines
    assert lines[2] == "alert high_memory: open -> acknowledged -> resolved", lines
    exported = json.loads((home / "metrics.json").read_text())
    assert {s["name"] for s in exported} >= {"host.memory_percent"}
    with PipelineMonitor(home=home) as monitor:
        assert monitor.list_alert_rules() == []
        [alert] = monitor.get_alerts(resolved=True)
    assert (alert["rule_id"], alert["resolved_by"]) == ("high_memory", "example")
