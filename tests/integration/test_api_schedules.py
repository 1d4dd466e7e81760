"""Schedules over the REST API against a real ``stageflow serve``, on SQLite and on
PostgreSQL: the round trip with every field checked, each mistake a 4xx JSON body
naming its field (and nothing written), who may do what (roles, owners, arbitrary
code), the audit of every change, a manual trigger's run, and a schedule added over
the API fired by serve's own worker, its runs succeeding.

One server per backend for the module. Team ``team-a`` has a viewer, an operator and
an editor token, ``team-b`` an editor; each team owns a pipeline of one
``notification`` task (it warns instead of failing without a webhook: no arbitrary
code, so a non-admin may schedule it). Each test names its own schedules.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from helpers_schedules import World, team_tokens
from helpers_serve import serving
from helpers_tasks import wait_until

pytestmark = pytest.mark.slow

PIPELINES = {"team-a": "pipe-a", "team-b": "pipe-b"}
_unique = itertools.count(1)
JSON = {"Content-Type": "application/json"}


def notify_spec(name: str, owner: str) -> dict[str, Any]:
    return {
        "name": name,
        "owner": owner,
        "params": {"who": "nobody"},
        "tasks": [
            {
                "id": "a",
                "operator": "notification",
                "parameters": {"message": "hi ${params.who}", "fail_on_error": False},
            }
        ],
    }


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with serving(request.param, tmp_path_factory.mktemp(f"api-schedules-{request.param}")) as s:
        tokens = team_tokens(s)
        with s.client(s.admin) as c:
            for team, name in PIPELINES.items():
                r = c.post("/api/v1/pipelines", json=notify_spec(name, team))
                assert (r.status_code, r.json()["owner"]) == (201, team), r.text
        yield World(s, tokens)


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_unique)}"


def add(w: World, who: str, name: str, pipeline: str = "pipe-a", **body: Any) -> httpx.Response:
    timing = {} if {"cron", "every", "at"} & set(body) else {"every": "1h"}
    with w.as_(who) as c:
        return c.post(
            "/api/v1/schedules", json={"name": name, "pipeline": pipeline, **timing, **body}
        )


def added(w: World, who: str, name: str, pipeline: str = "pipe-a", **body: Any) -> Any:
    r = add(w, who, name, pipeline, **body)
    assert r.status_code == 201, r.text
    return r.json()


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds")


def paris_2am_after(t: float, n: int) -> list[str]:
    """The first ``n`` 02:00 of Paris wall clocks strictly after ``t``, as the API
    writes times."""
    paris = ZoneInfo("Europe/Paris")
    day = datetime.fromtimestamp(t, paris).date() - timedelta(days=1)
    found: list[str] = []
    while len(found) < n:
        at = datetime(day.year, day.month, day.day, 2, 0, tzinfo=paris)
        if at.timestamp() > t:
            found.append(iso(at))
        day += timedelta(days=1)
    return found


# -- the round trip ---------------------------------------------------------------------------


def test_add_list_show_pause_resume_trigger_delete(world: World) -> None:
    name = fresh("nightly")
    before = time.time()
    doc = added(
        world,
        "editor",
        name,
        cron="0 2 * * *",
        timezone="Europe/Paris",
        params={"who": "cron"},
        priority=3,
        max_active_runs=2,
    )
    after = time.time()
    expected = {
        "name": name,
        "pipeline": "pipe-a",
        "kind": "cron",
        "timing": "cron 0 2 * * * (Europe/Paris)",
        "enabled": True,
        "next_at": doc["next_at"],
        "last_tick": None,
        "active_runs": 0,
        "max_active_runs": 2,
        "priority": 3,
        "params": {"who": "cron"},
        "catchup": False,
        "upcoming": [],
        "runs": [],
        "run_retries": None,
        "execution_timeout": None,
        "object_url": None,
        "poll_seconds": None,
    }
    assert doc == expected
    assert doc["next_at"] in {paris_2am_after(t, 1)[0] for t in (before, after)}

    with world.as_("viewer") as c:
        listed = c.get("/api/v1/schedules")
        assert listed.status_code == 200, listed.text
        [mine] = [s for s in listed.json()["schedules"] if s["name"] == name]
        assert mine == expected
        now = time.time()
        shown = c.get(f"/api/v1/schedules/{name}")
        assert shown.status_code == 200, shown.text
        assert shown.json() == {**expected, "upcoming": paris_2am_after(now, 5)}

    with world.as_("operator") as c:
        paused = c.post(f"/api/v1/schedules/{name}/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json() == {**expected, "enabled": False, "next_at": None}
        shown = c.get(f"/api/v1/schedules/{name}").json()
        assert (shown["enabled"], shown["next_at"], shown["upcoming"]) == (False, None, [])
        resumed = c.post(f"/api/v1/schedules/{name}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json() == expected

        triggered = c.post(f"/api/v1/schedules/{name}/trigger", json={"parameters": {"who": "x"}})
        assert triggered.status_code == 202, triggered.text
        run = triggered.json()
        run_id = run["run_id"]
        assert run == {
            "run_id": run_id,
            "pipeline": "pipe-a",
            "version": run["version"],
            "state": "queued",
            "priority": 3,
            "status_url": f"/api/v1/runs/{run_id}",
        }
        shown_run = c.get(f"/api/v1/runs/{run_id}").json()
        assert shown_run["triggered_by"] == f"schedule:{name} (manual by operator-a)"
        assert (shown_run["owner"], shown_run["params"]) == ("team-a", {"who": "x"})
        assert (shown_run["version"], shown_run["priority"]) == (run["version"], 3)
        # A manual run is not a tick: the schedule's timing is unchanged.
        assert c.get(f"/api/v1/schedules/{name}").json()["last_tick"] is None
        # No body: the schedule's own parameters.
        bare = c.post(f"/api/v1/schedules/{name}/trigger")
        assert bare.status_code == 202, bare.text
        assert c.get(bare.json()["status_url"]).json()["params"] == {"who": "cron"}

    # The same name again changes it (enabled: false creates it paused).
    changed = added(world, "editor", name, every="10m", enabled=False)
    assert (changed["timing"], changed["enabled"], changed["next_at"]) == ("every 10m", False, None)

    with world.as_("editor") as c:
        deleted = c.delete(f"/api/v1/schedules/{name}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"schedule": name, "deleted": True}
        gone = c.get(f"/api/v1/schedules/{name}")
        assert gone.status_code == 404, gone.text
        assert gone.json()["error"].startswith(f"no schedule '{name}'")
        assert gone.json()["problems"][0]["field"] == "name"
        assert name not in [s["name"] for s in c.get("/api/v1/schedules").json()["schedules"]]
        assert c.get(f"/api/v1/runs/{run_id}").status_code == 200  # its runs stay

    with world.as_("admin") as c:
        entries = c.get("/api/v1/audit", params={"limit": 1000}).json()["entries"]
    audited = {
        (e["action"], e["target"], e["actor"], e["status"])
        for e in entries
        if "/schedules" in e["action"]
    }
    assert {
        ("POST /api/v1/schedules", None, "editor-a", 201),
        ("POST /api/v1/schedules/{name}/pause", f"name={name}", "operator-a", 200),
        ("POST /api/v1/schedules/{name}/resume", f"name={name}", "operator-a", 200),
        ("POST /api/v1/schedules/{name}/trigger", f"name={name}", "operator-a", 202),
        ("DELETE /api/v1/schedules/{name}", f"name={name}", "editor-a", 200),
    } <= audited


# -- mistakes -----------------------------------------------------------------------------------

MISTAKES: list[tuple[dict[str, Any], int, str | tuple[str, ...], str]] = [
    # (body on top of a valid one, status, field (or the fields taken), text in the message)
    ({"cron": "61 * * * *"}, 400, "cron", 'its minute field "61" is not valid'),
    ({"cron": "0 2 * * *", "timezone": "Mars/Base"}, 400, "timezone", "unknown time zone"),
    ({"every": "0"}, 400, "every", "--every must be a finite number of seconds > 0"),
    ({"every": "abc"}, 400, "every", "--every 'abc' is not a duration"),
    ({"every": "9" * 40 + "d"}, 400, "every", "longer than 36500d (100 years)"),
    ({"every": "1h", "params": {"who": float("nan")}}, 400, "params.who", "not finite"),
    ({"at": "2020-01-01T00:00:00Z"}, 400, "at", "is in the past"),
    ({"cron": "0 2 * * *", "every": "1h"}, 400, "timing", "give exactly one of"),
    ({"every": "1h", "max_active_runs": 0}, 400, "max_active", "must be at least 1"),
    ({"every": "1h", "priority": 10**7}, 400, "priority", "out of range"),
    ({"every": "1h", "name": "a b"}, 400, "name", "schedule name 'a b' must be"),
    ({"every": "1h", "pipeline": "nosuch"}, 404, "pipeline", "no saved pipeline 'nosuch'"),
    ({"every": "1h", "params": {"nope": 1}}, 422, "params.nope", "no parameter 'nope'"),
    ({"every": "1h", "colour": "red"}, 422, "body.colour", "Extra inputs are not permitted"),
    ({"every": "1h", "cron": "x" * 201}, 422, "body.cron", "at most 200 characters"),
    ({"every": 60}, 422, "body.every", "valid string"),
]


def test_each_mistake_is_a_4xx_naming_its_field_and_writes_nothing(world: World) -> None:
    name = fresh("mistake")
    with world.as_("editor") as c:
        listed = c.get("/api/v1/schedules").json()
        for extra, status, field, text in MISTAKES:
            body = json.dumps({"name": name, "pipeline": "pipe-a", **extra})  # NaN too
            r = c.post("/api/v1/schedules", content=body, headers=JSON)
            assert r.status_code == status, (extra, r.text)
            doc = r.json()
            fields = field if isinstance(field, tuple) else (field,)
            assert doc["problems"][0]["field"] in fields, (extra, doc)
            assert text in doc["error"], (extra, doc)
        assert c.get("/api/v1/schedules").json() == listed
        # A trigger's parameter the pipeline does not declare, or an unknown field.
        added(world, "editor", name)
        for trigger, named in (
            ({"parameters": {"nope": 1}}, "params.nope"),
            ({"params": {}}, "body.params"),
        ):
            r = c.post(f"/api/v1/schedules/{name}/trigger", json=trigger)
            assert r.status_code == 422, r.text
            assert r.json()["problems"][0]["field"] == named, r.text
        assert c.delete(f"/api/v1/schedules/{name}").status_code == 200


def test_fire_times_past_the_year_9999_are_not_listed(world: World) -> None:
    name = fresh("last")
    doc = added(world, "editor", name, every="1d", start="9999-12-31T00:00:00Z")
    assert doc["next_at"] == "9999-12-31T00:00:00.000+00:00"
    with world.as_("editor") as c:
        shown = c.get(f"/api/v1/schedules/{name}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["upcoming"] == ["9999-12-31T00:00:00.000+00:00"]
        assert c.delete(f"/api/v1/schedules/{name}").status_code == 200


# -- roles, owners, code -----------------------------------------------------------------------


def test_each_role_may_do_what_it_needs(world: World) -> None:
    name = fresh("roles")
    added(world, "admin", name)
    forbidden = {
        "viewer": [
            (
                "POST",
                "/api/v1/schedules",
                {"name": fresh("v"), "pipeline": "pipe-a", "every": "1h"},
            ),
            ("POST", f"/api/v1/schedules/{name}/pause", None),
            ("POST", f"/api/v1/schedules/{name}/resume", None),
            ("POST", f"/api/v1/schedules/{name}/trigger", None),
            ("DELETE", f"/api/v1/schedules/{name}", None),
        ],
        "operator": [
            (
                "POST",
                "/api/v1/schedules",
                {"name": fresh("o"), "pipeline": "pipe-a", "every": "1h"},
            ),
            ("DELETE", f"/api/v1/schedules/{name}", None),
        ],
    }
    for who, requests in forbidden.items():
        with world.as_(who) as c:
            for method, path, body in requests:
                r = c.request(method, path, json=body)
                assert r.status_code == 403, (who, method, path, r.text)
                assert f"has role {who}" in r.json()["error"], r.text
    with world.as_("viewer") as c:
        assert c.get("/api/v1/schedules").status_code == 200
        assert c.get(f"/api/v1/schedules/{name}").status_code == 200
    with world.as_("operator") as c:
        assert c.post(f"/api/v1/schedules/{name}/pause").status_code == 200
        assert c.post(f"/api/v1/schedules/{name}/resume").status_code == 200
        assert c.post(f"/api/v1/schedules/{name}/trigger").status_code == 202
    extra = fresh("editor")
    added(world, "editor", extra)
    with world.as_("editor") as c:
        assert c.delete(f"/api/v1/schedules/{extra}").status_code == 200
        assert c.delete(f"/api/v1/schedules/{name}").status_code == 200


def test_an_owner_sees_and_changes_only_its_own_schedules(world: World) -> None:
    theirs = fresh("team-b")
    doc = added(world, "editor-b", theirs, "pipe-b")
    assert doc["pipeline"] == "pipe-b"
    ours = fresh("team-a")
    added(world, "editor", ours)
    with world.as_("editor") as c:
        names = [s["name"] for s in c.get("/api/v1/schedules").json()["schedules"]]
        assert ours in names and theirs not in names
        for method, path in (
            ("GET", f"/api/v1/schedules/{theirs}"),
            ("POST", f"/api/v1/schedules/{theirs}/pause"),
            ("POST", f"/api/v1/schedules/{theirs}/resume"),
            ("POST", f"/api/v1/schedules/{theirs}/trigger"),
            ("DELETE", f"/api/v1/schedules/{theirs}"),
        ):
            r = c.request(method, path)
            assert r.status_code == 404, (method, path, r.text)
            error = r.json()["error"]
            assert error.startswith(f"no schedule '{theirs}'; the schedules are: "), error
            assert ours in error and "team-b" not in error.split(";", 1)[1], error
        # Another owner's pipeline: as a missing one.
        r = c.post(
            "/api/v1/schedules", json={"name": fresh("steal"), "pipeline": "pipe-b", "every": "1h"}
        )
        assert r.status_code == 404, r.text
        assert r.json()["error"].startswith("no saved pipeline 'pipe-b'"), r.text
        # Another owner's schedule name: taken (409), and left as it was.
        r = c.post("/api/v1/schedules", json={"name": theirs, "pipeline": "pipe-a", "every": "1m"})
        assert r.status_code == 409, r.text
        assert r.json()["problems"][0]["field"] == "name", r.text
    with world.as_("admin") as c:
        names = [s["name"] for s in c.get("/api/v1/schedules").json()["schedules"]]
        assert ours in names and theirs in names
        kept = c.get(f"/api/v1/schedules/{theirs}").json()
        assert (kept["pipeline"], kept["timing"]) == ("pipe-b", "every 1h")
    with world.as_("editor-b") as c:
        assert c.delete(f"/api/v1/schedules/{theirs}").status_code == 200
    with world.as_("editor") as c:
        assert c.delete(f"/api/v1/schedules/{ours}").status_code == 200


def test_a_pipeline_with_arbitrary_code_is_scheduled_and_triggered_by_an_admin_only(
    world: World,
) -> None:
    code = {
        "name": "code-a",
        "owner": "team-a",
        "tasks": [{"id": "sh", "operator": "bash", "parameters": {"command": "true"}}],
    }
    with world.as_("admin") as c:
        assert c.post("/api/v1/pipelines", json=code).status_code in (200, 201)
    r = add(world, "editor", fresh("code"), "code-a")
    assert r.status_code == 403, r.text
    assert "arbitrary code" in r.json()["error"]
    name = fresh("code")
    added(world, "admin", name, "code-a")
    with world.as_("operator") as c:
        assert c.get(f"/api/v1/schedules/{name}").status_code == 200  # team-a's
        r = c.post(f"/api/v1/schedules/{name}/trigger")
        assert r.status_code == 403, r.text
        assert "arbitrary code" in r.json()["error"]
    with world.as_("admin") as c:
        assert c.delete(f"/api/v1/schedules/{name}").status_code == 200


# -- firing -------------------------------------------------------------------------------------


def test_a_schedule_added_over_the_api_is_fired_by_serves_worker(world: World) -> None:
    name = fresh("tick")
    added(world, "editor", name, every="1s", params={"who": "tick"})
    by = f"schedule:{name}"
    with world.as_("editor") as c:

        def fired() -> list[Any]:
            runs = c.get("/api/v1/runs", params={"triggered_by": by}).json()["runs"]
            return [r for r in runs if r["state"] == "success"]

        wait_until(lambda: len(fired()) >= 2, "two ticks' runs succeed", timeout=30)
        assert c.post(f"/api/v1/schedules/{name}/pause").status_code == 200
        run_id = fired()[0]["run_id"]
        doc = c.get(f"/api/v1/runs/{run_id}").json()  # team-a's: the pipeline's owner's
        assert (doc["triggered_by"], doc["owner"], doc["params"]) == (by, "team-a", {"who": "tick"})
        shown = c.get(f"/api/v1/schedules/{name}").json()
        assert shown["last_tick"] is not None
        assert run_id in [r["run_id"] for r in shown["runs"]]
        assert c.delete(f"/api/v1/schedules/{name}").status_code == 200


def test_saving_a_spec_with_schedules_registers_them_and_a_bad_one_saves_nothing(
    world: World,
) -> None:
    name = fresh("spec-sched")
    spec = {
        **notify_spec(name, "team-a"),
        "schedule": "0 2 * * *",
        "schedules": [{"name": f"{name}-often", "every": "1h", "params": {"who": "h"}}],
    }
    with world.as_("editor") as c:
        r = c.post("/api/v1/pipelines", json=spec)
        assert r.status_code == 201, r.text
        assert [(s["name"], s["timing"]) for s in r.json()["schedules"]] == [
            (name, "cron 0 2 * * * (UTC)"),
            (f"{name}-often", "every 1h"),
        ]
        shown = c.get(f"/api/v1/schedules/{name}-often").json()
        assert (shown["pipeline"], shown["params"]) == (name, {"who": "h"})
        # A once in the past, and a bad cron: 4xx naming it, and nothing saved.
        for bad, status, words in (
            ({"schedules": [{"at": "2001-01-01T00:00:00Z"}]}, 400, "is in the past"),
            ({"schedules": [{"cron": "61 * * * *"}]}, 422, "schedules[0].cron"),
        ):
            other = {**notify_spec(fresh("spec-bad"), "team-a"), **bad}
            refused = c.post("/api/v1/pipelines", json=other)
            assert refused.status_code == status, refused.text
            assert words in refused.text
            assert c.get(f"/api/v1/pipelines/{other['name']}").status_code == 404
    with world.as_("editor-b") as c:  # another team's schedule name is not theirs to take
        taken = {
            **notify_spec(fresh("spec-b"), "team-b"),
            "schedules": [{"name": f"{name}-often", "every": "2h"}],
        }
        refused = c.post("/api/v1/pipelines", json=taken)
        assert refused.status_code == 409, refused.text
        assert c.get(f"/api/v1/pipelines/{taken['name']}").status_code == 404


def test_an_after_schedule_is_added_with_its_upstream_and_states(world: World) -> None:
    name = fresh("after")
    body = {"name": name, "pipeline": "pipe-a", "after": "pipe-b", "after_states": ["failed"]}
    with world.as_("editor") as c:  # team-a may not see team-b's pipe-b: as if unsaved
        r = c.post("/api/v1/schedules", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["problems"][0]["field"] == "after", r.text
        assert "--after pipe-b: no saved pipeline 'pipe-b'" in r.json()["error"], r.text
        r = c.post("/api/v1/schedules", json={**body, "after": "pipe-a"})
        assert r.status_code == 400, r.text
        assert "may not fire after its own runs" in r.json()["error"], r.text
    with world.as_("admin") as c:
        r = c.post("/api/v1/schedules", json=body)
        assert r.status_code == 201, r.text
        doc = r.json()
        assert (doc["kind"], doc["timing"], doc["next_at"]) == (
            "after",
            "after pipe-b ends in failed",
            None,
        )
        assert c.delete(f"/api/v1/schedules/{name}").status_code == 200
