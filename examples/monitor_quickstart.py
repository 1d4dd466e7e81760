"""Seed 003's monitor example on stageflow's store: sample this host every 0.2 s, an alert
rule on its memory that opens at once, the alert acknowledged and resolved, and the
samples read back and exported.

Run it (state goes to ./.stageflow/, or the folder given):
    python examples/monitor_quickstart.py [HOME]

Seed 003's names, as stageflow spells them: ``rule_id`` is ``id``, ``metric_name`` is
``metric`` (``host.memory_percent``: ``stageflow alerts metrics`` lists them),
``cooldown_minutes`` is ``cooldown`` in seconds, severity ``high`` is ``critical``,
``start_monitoring()`` takes no execution (it watches every run of the store), and
``get_current_metrics()`` gives each host's newest samples under ``hosts``, not
``resources``.
"""

import sys
import time
from pathlib import Path

from stageflow import AlertCondition, AlertRule, AlertSeverity, PipelineMonitor


def main(home: str) -> str:
    """Monitor, alert and export; the alert's states, as a line."""
    with PipelineMonitor(
        home=home, sampling_interval_seconds=0.2, metrics_retention_hours=24
    ) as monitor:
        monitor.add_alert_rule(
            AlertRule(
                id="high_memory",
                metric="host.memory_percent",
                condition=AlertCondition.GREATER_THAN,
                threshold=0.0,  # seed 003 says 80.0: 0 makes it fire here and now
                severity=AlertSeverity.CRITICAL,
                cooldown=5 * 60,  # seed 003's cooldown_minutes=5
                enabled=True,
                description="High memory usage alert",
            )
        )
        monitor.start_monitoring()  # a thread: samples, and evaluates the rules
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            samples = monitor.get_metrics_history(["host.memory_percent"], "-1m", "now")["samples"]
            if len(samples) >= 2 and monitor.get_alerts(resolved=False):
                break
            time.sleep(0.1)
        monitor.stop_monitoring()
        metrics = monitor.get_current_metrics()
        for values in metrics["hosts"].values():
            print(f"memory: {values['host.memory_percent']}%")
        print(f"samples of host.memory_percent: {len(samples)}")
        [alert] = monitor.get_alerts(severity=AlertSeverity.CRITICAL, resolved=False)
        states = [alert["state"]]
        states.append(monitor.acknowledge_alert(alert["alert_id"], by="example")["state"])
        states.append(monitor.resolve_alert(alert["alert_id"], by="example")["state"])
        print(f"alert {alert['rule_id']}: {' -> '.join(states)}")
        monitor.export_metrics(Path(home) / "metrics.json", format="json", start_time="-1h")
        monitor.remove_alert_rule("high_memory")
    return " -> ".join(states)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".stageflow")
