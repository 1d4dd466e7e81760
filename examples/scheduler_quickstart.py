"""Seed 003's scheduler example on stageflow's store: a nightly cron schedule of the saved
pipeline ``hello`` (examples/service/hello.yaml), a manual run with a parameter
override, and the schedule's and queue's status.

Run it (state goes to ./.stageflow/, or the folder given):
    python examples/scheduler_quickstart.py [HOME]

Seed 003's names, as stageflow spells them: ``schedule_id`` is ``name`` (a schedule has
one name), ``name`` (a title) has no counterpart, ``execution_config`` is ``parameters``
(the runs' parameters; ``pipeline`` names what runs), ``start_scheduler()`` is
``start()``, and delays and time-outs are seconds, not minutes.
"""

import json
import sys
import time
from pathlib import Path

from stageflow import PipelineScheduler, RetryStrategy, ScheduleConfig, ScheduleType

HERE = Path(__file__).resolve().parent


def main(home: str) -> str:
    """Schedule, trigger and report; the manual run's final state."""
    with PipelineScheduler(home=home, max_concurrent_executions=3) as scheduler:
        scheduler.save_pipeline(str(HERE / "service" / "hello.yaml"))
        scheduler.add_schedule(
            ScheduleConfig(
                name="daily_pipeline",
                pipeline="hello",
                schedule_type=ScheduleType.CRON,
                schedule_expression="0 2 * * *",  # daily at 2 AM
                timezone="Europe/Paris",
                parameters={"who": "nightly"},
                priority=5,
                max_concurrent_runs=1,
                enabled=True,
                execution_timeout=60 * 60,  # seed 003's execution_timeout_minutes=60
                retry_strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
                max_retries=3,
                retry_delay=10 * 60,  # seed 003's retry_delay_minutes=10
            )
        )
        scheduler.start()  # fire the schedules, and run their runs, in this process
        run_id = scheduler.trigger_manual_execution("daily_pipeline", {"who": "now"})
        state = "queued"
        deadline = time.monotonic() + 60
        while state not in ("success", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.1)
            runs = scheduler.get_recent_executions(limit=5)
            state = next(r["state"] for r in runs if r["run_id"] == run_id)
        status = scheduler.get_schedule_status("daily_pipeline")
        print(f"run {run_id}: {state}")
        print(f"daily_pipeline: {status['timing']}, next at {status['upcoming'][0]}")
        print(json.dumps(scheduler.get_execution_queue_status()))
    return state


if __name__ == "__main__":
    final = main(sys.argv[1] if len(sys.argv) > 1 else ".stageflow")
    sys.exit(0 if final == "success" else 1)
