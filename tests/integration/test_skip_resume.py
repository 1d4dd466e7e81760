"""A task's decision to skip its downstream survives a crash: after ``kill -9`` and
``stageflow resume``, what the first process skipped (a branch task's unchosen
downstream, the downstream of a task that returned ``SkipDownstream``) is skipped
again, never run. The tasks write a ledger, so it shows what really ran.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers_places import kill_group
from helpers_tasks import read_lines, store_of, wait_until
from test_crash_resume import cli, cli_run, only_run_id, stderr_of

SPEC = """\
name: skip-resume
params: {{ledger: "{ledger}", release: "{release}"}}
tasks:
  - {{id: check, call: "skip_tasks:check", parameters: {{ledger: "${{params.ledger}}"}}}}
  - id: child
    call: skip_tasks:step
    upstream: [check]
    parameters: {{ledger: "${{params.ledger}}", name: child}}
  - id: after_child
    call: skip_tasks:step
    upstream: [child]
    trigger_rule: none_failed
    parameters: {{ledger: "${{params.ledger}}", name: after_child}}
  - id: pick
    call: skip_tasks:pick
    branch: true
    parameters: {{ledger: "${{params.ledger}}"}}
  - id: left
    call: skip_tasks:step
    upstream: [pick]
    parameters: {{ledger: "${{params.ledger}}", name: left}}
  - id: right
    call: skip_tasks:step
    upstream: [pick]
    parameters: {{ledger: "${{params.ledger}}", name: right}}
  - id: blocker
    call: skip_tasks:blocker
    after: [after_child, left]
    parameters: {{ledger: "${{params.ledger}}", release: "${{params.release}}"}}
"""


def test_what_was_skipped_before_a_kill_9_stays_skipped_after_resume(tmp_path: Path) -> None:
    home, ledger, release = tmp_path / "home", tmp_path / "ledger", tmp_path / "release"
    spec = tmp_path / "skip.yaml"
    spec.write_text(SPEC.format(ledger=ledger, release=release))

    with cli_run(home, str(spec)) as (proc, err):

        def skips_committed() -> bool:
            assert proc.poll() is None, f"the run ended before the kill: {stderr_of(err)}"
            if "blocker" not in read_lines(ledger):
                return False
            with store_of(home) as store:
                (run,) = store.list_runs()
                states = {r.task_id: r.state for r in store.task_runs(run.run_id)}
            return states.get("child") == "skipped" and states.get("right") == "skipped"

        wait_until(skips_committed, "the skips are committed and blocker runs", timeout=60)
        kill_group(proc)
    run_id = only_run_id(home)
    with store_of(home) as store:
        rows = {r.task_id: r for r in store.task_runs(run_id)}
    assert rows["check"].state == "success"
    assert rows["check"].note == "skipped downstream"
    assert rows["check"].error == "3 rows failed not_null(amount)"
    release.touch()

    r = cli(home, "resume", run_id, "--format", "json")

    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["state"] == "success"
    states = {tid: t["state"] for tid, t in result["tasks"].items()}
    assert states["child"] == "skipped"
    assert states["right"] == "skipped"
    assert states["after_child"] == "success"  # none_failed: a skipped upstream is fine
    ran = read_lines(ledger)
    assert "child" not in ran and "right" not in ran, ran
    assert ran.count("check") == 1 and ran.count("pick") == 1 and ran.count("after_child") == 1
    with store_of(home) as store:
        why = {r.task_id: r.error for r in store.task_runs(run_id)}
    assert why["child"] == (
        "skipped: task 'check' skips its downstream (3 rows failed not_null(amount))"
    )
    assert why["right"] == "not chosen by branch task 'pick'"
