"""Event schedules over the REST API against a real ``stageflow serve``, on SQLite and on
PostgreSQL: ``POST /api/v1/events/{event}`` queues a run of each enabled schedule
listening to the event that the caller may see (the payload as parameters), serve's
worker runs them; a payload key a schedule's pipeline does not declare refuses the whole
event (nothing queued); who may fire; an unknown event; the body's limits; an event
schedule shown (no next fire time) and never fired by the schedule loop.

One server per backend for the module. Team ``team-a`` has a viewer, an operator and an
editor token and two pipelines, team ``team-b`` an editor and one; each pipeline is one
``notification`` task (it warns instead of failing without a webhook: no arbitrary code,
so a non-admin may schedule and fire it). Each test listens to events of its own.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers_schedules import World, team_tokens
from helpers_serve import serving

pytestmark = pytest.mark.slow

#: The pipelines, by team: both of team-a's declare ``who`` and ``model``; ``ev-a2``
#: declares ``stage`` too.
PIPELINES = {
    "ev-a1": ("team-a", {"who": "nobody", "model": "none"}),
    "ev-a2": ("team-a", {"who": "nobody", "model": "none", "stage": "dev"}),
    "ev-b": ("team-b", {"who": "nobody", "model": "none"}),
}
_unique = itertools.count(1)
JSON = {"Content-Type": "application/json"}


def notify_spec(name: str, owner: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "owner": owner,
        "params": params,
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
    with serving(request.param, tmp_path_factory.mktemp(f"api-events-{request.param}")) as s:
        tokens = team_tokens(s)
        with s.client(s.admin) as c:
            for name, (team, params) in PIPELINES.items():
                r = c.post("/api/v1/pipelines", json=notify_spec(name, team, params))
                assert (r.status_code, r.json()["owner"]) == (201, team), r.text
        yield World(s, tokens)


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_unique)}"


def added(w: World, who: str, name: str, pipeline: str, **body: Any) -> Any:
    with w.as_(who) as c:
        r = c.post("/api/v1/schedules", json={"name": name, "pipeline": pipeline, **body})
    assert r.status_code == 201, r.text
    return r.json()


def runs_by(c: httpx.Client, triggered_by: str) -> list[Any]:
    r = c.get("/api/v1/runs", params={"triggered_by": triggered_by})
    assert r.status_code == 200, r.text
    runs: list[Any] = r.json()["runs"]
    return runs


def remove(w: World, who: str, *names: str) -> None:
    with w.as_(who) as c:
        for name in names:
            assert c.delete(f"/api/v1/schedules/{name}").status_code == 200


# -- firing -------------------------------------------------------------------------------------


def test_an_event_queues_a_run_of_each_listening_schedule_and_serves_worker_runs_them(
    world: World,
) -> None:
    one, two = fresh("on-push-1"), fresh("on-push-2")
    theirs, paused = fresh("on-push-b"), fresh("on-push-paused")
    added(world, "editor", one, "ev-a1", on_event="pushed", params={"who": "one"}, priority=4)
    added(world, "editor", two, "ev-a2", on_event="pushed", params={"who": "two"})
    added(world, "editor-b", theirs, "ev-b", on_event="pushed")
    added(world, "editor", paused, "ev-a1", on_event="pushed", enabled=False)
    by = "event:pushed (by operator-a)"
    try:
        with world.as_("operator") as c:
            r = c.post("/api/v1/events/pushed", json={"model": "m-7"})
            assert r.status_code == 202, r.text
            doc = r.json()
            assert doc["event"] == "pushed"
            # Team-a's enabled schedules only: not team-b's, not the paused one.
            assert [(x["schedule"], x["pipeline"]) for x in doc["runs"]] == [
                (one, "ev-a1"),
                (two, "ev-a2"),
            ]
            for (schedule, who, priority), fired in zip(
                ((one, "one", 4), (two, "two", 0)), doc["runs"], strict=True
            ):
                done = world.server.wait_run(
                    world.tokens["operator"], fired["run_id"], ("success",)
                )
                assert done["triggered_by"] == by, (schedule, done)
                assert done["owner"] == "team-a"
                assert done["priority"] == priority
                assert done["params"] == {"who": who, "model": "m-7"} | (
                    {"stage": "dev"} if schedule == two else {}
                )
            assert sorted(x["run_id"] for x in runs_by(c, by)) == sorted(
                x["run_id"] for x in doc["runs"]
            )
            # An event run is not a tick: the schedules' timing is unchanged.
            shown = c.get(f"/api/v1/schedules/{one}").json()
            assert (shown["last_tick"], shown["next_at"], shown["runs"]) == (None, None, [])
        with world.as_("admin") as c:  # every team's runs: team-b's schedule fired nothing
            assert sorted(x["pipeline"] for x in runs_by(c, by)) == ["ev-a1", "ev-a2"]
            entries = c.get("/api/v1/audit", params={"limit": 1000}).json()["entries"]
        assert ("POST /api/v1/events/{event}", "event=pushed", "operator-a", 202) in {
            (e["action"], e["target"], e["actor"], e["status"]) for e in entries
        }
    finally:
        remove(world, "editor", one, two, paused)
        remove(world, "editor-b", theirs)


def test_an_undeclared_payload_key_refuses_the_whole_event_and_queues_nothing(
    world: World,
) -> None:
    event = fresh("refused")
    one, two = f"{event}-1", f"{event}-2"  # fired in this order (by name)
    added(world, "editor", one, "ev-a1", on_event=event)
    added(world, "editor", two, "ev-a2", on_event=event)
    try:
        with world.as_("operator") as c:
            r = c.post(f"/api/v1/events/{event}", json={"stage": "prod", "nope": 1})
            assert r.status_code == 422, r.text
            doc = r.json()
            assert doc["error"].startswith(f"event '{event}' refused, nothing queued"), doc
            named = [(p["field"], p["message"]) for p in doc["problems"]]
            assert [f for f, _ in named] == ["payload.stage", "payload.nope", "payload.nope"]
            assert (
                f"schedule '{one}': its pipeline 'ev-a1' declares no parameter 'stage'"
                in (named[0][1])
            )
            assert f"schedule '{one}'" in named[1][1] and "'nope'" in named[1][1]
            assert f"schedule '{two}': its pipeline 'ev-a2'" in named[2][1]
            assert "(declared: model, stage, who)" in named[2][1]
            # A value JSON cannot carry.
            nan = c.post(f"/api/v1/events/{event}", content='{"model": NaN}', headers=JSON)
            assert nan.status_code == 422, nan.text
            assert nan.json()["problems"][0]["field"] == "payload.model"
            assert "not finite" in nan.json()["error"]
            assert runs_by(c, f"event:{event} (by operator-a)") == []
            # Keys both pipelines declare: both fire.
            ok = c.post(f"/api/v1/events/{event}", json={"model": "m-8"})
            assert ok.status_code == 202, ok.text
            assert [x["schedule"] for x in ok.json()["runs"]] == [one, two]
    finally:
        remove(world, "editor", one, two)


def test_who_may_fire_an_event_and_whose_schedules_it_fires(world: World) -> None:
    event = fresh("roles")
    ours, theirs = fresh("ours"), fresh("theirs")
    only_theirs = fresh("only-b")
    added(world, "editor", ours, "ev-a1", on_event=event)
    added(world, "editor-b", theirs, "ev-b", on_event=only_theirs)
    try:
        with world.as_("viewer") as c:
            r = c.post(f"/api/v1/events/{event}", json={})
            assert r.status_code == 403, r.text
            assert "has role viewer" in r.json()["error"]
        with world.as_("editor") as c:  # above operator: may
            r = c.post(f"/api/v1/events/{event}")  # no body: no payload
            assert r.status_code == 202, r.text
            [fired] = r.json()["runs"]
            assert c.get(f"/api/v1/runs/{fired['run_id']}").json()["params"] == {
                "who": "nobody",
                "model": "none",
            }
        hint = "add one: stageflow schedules add NAME PIPELINE --on-event"
        with world.as_("operator") as c:
            for unknown in ("never-heard-of", only_theirs):  # team-b's is not team-a's to fire
                r = c.post(f"/api/v1/events/{unknown}", json={})
                assert r.status_code == 404, r.text
                assert r.json()["error"] == (
                    f"no schedule listens to event '{unknown}'; {hint} {unknown}"
                )
                assert r.json()["problems"][0]["field"] == "event"
        with world.as_("admin") as c:  # an admin sees every team's
            r = c.post(f"/api/v1/events/{only_theirs}", json={})
            assert r.status_code == 202, r.text
            assert [x["schedule"] for x in r.json()["runs"]] == [theirs]
    finally:
        remove(world, "editor", ours)
        remove(world, "editor-b", theirs)


def test_an_event_of_a_pipeline_with_arbitrary_code_is_fired_by_an_admin_only(
    world: World,
) -> None:
    code = {
        "name": "ev-code",
        "owner": "team-a",
        "tasks": [{"id": "sh", "operator": "bash", "parameters": {"command": "true"}}],
    }
    event, name = fresh("code"), fresh("code")
    with world.as_("admin") as c:
        assert c.post("/api/v1/pipelines", json=code).status_code in (200, 201)
    added(world, "admin", name, "ev-code", on_event=event)
    try:
        with world.as_("operator") as c:
            r = c.post(f"/api/v1/events/{event}", json={})
            assert r.status_code == 403, r.text
            assert "arbitrary code" in r.json()["error"]
            assert runs_by(c, f"event:{event} (by operator-a)") == []
    finally:
        remove(world, "admin", name)


def test_a_body_that_is_not_a_json_object_or_too_large_is_refused(world: World) -> None:
    event, name = fresh("bodies"), fresh("bodies")
    added(world, "editor", name, "ev-a1", on_event=event)
    try:
        with world.as_("operator") as c:
            for body in ("[1, 2]", '"m-7"', "7", "null", "{not json"):
                r = c.post(f"/api/v1/events/{event}", content=body, headers=JSON)
                assert r.status_code == 422, (body, r.text)
                assert r.json()["problems"][0]["field"] == "body", (body, r.text)
            big = json.dumps({"model": "x" * (64 * 1024)})
            r = c.post(f"/api/v1/events/{event}", content=big, headers=JSON)
            assert r.status_code == 413, r.text
            assert "over the limit of 64 KiB" in r.json()["error"]
            # Without a Content-Length (chunked): read up to the limit, no further.
            chunks = (big[k : k + 4096].encode() for k in range(0, len(big), 4096))
            r = c.post(f"/api/v1/events/{event}", content=chunks, headers=JSON)
            assert r.status_code == 413, r.text
            assert runs_by(c, f"event:{event} (by operator-a)") == []
    finally:
        remove(world, "editor", name)


# -- an event schedule -------------------------------------------------------------------------


def test_an_event_schedule_has_no_next_fire_time_and_the_loop_never_fires_it(
    world: World,
) -> None:
    name = fresh("quiet")
    doc = added(world, "editor", name, "ev-a1", on_event="pushed")
    from_spec = fresh("spec-ev")
    spec = {
        **notify_spec(from_spec, "team-a", {"who": "nobody"}),
        "schedules": [{"name": f"{from_spec}-on", "event": "pushed", "params": {"who": "s"}}],
    }
    try:
        expected = {
            "name": name,
            "pipeline": "ev-a1",
            "kind": "event",
            "timing": "on event pushed",
            "enabled": True,
            "next_at": None,
            "last_tick": None,
            "active_runs": 0,
            "max_active_runs": None,
            "priority": 0,
            "params": {},
            "catchup": False,
            "upcoming": [],
            "runs": [],
            "run_retries": None,
            "execution_timeout": None,
            "object_url": None,
            "poll_seconds": None,
        }
        assert doc == expected
        with world.as_("editor") as c:
            shown = c.get(f"/api/v1/schedules/{name}")
            assert shown.status_code == 200, shown.text
            assert shown.json() == expected
            # A spec's `schedules:` entry with `event:` registers one too.
            saved = c.post("/api/v1/pipelines", json=spec)
            assert saved.status_code == 201, saved.text
            assert [(s["name"], s["timing"], s["next_at"]) for s in saved.json()["schedules"]] == [
                (f"{from_spec}-on", "on event pushed", None)
            ]
            time.sleep(2.0)  # the schedule loop passes every second: it fires neither
            for schedule in (name, f"{from_spec}-on"):
                assert runs_by(c, f"schedule:{schedule}") == []
                assert c.get(f"/api/v1/schedules/{schedule}").json()["last_tick"] is None
            assert runs_by(c, "event:pushed (by editor-a)") == []
            # Mistakes in an event schedule: 400 naming the field, nothing written.
            for body, field, words in (
                ({"on_event": "a b"}, "on_event", "--on-event: event name 'a b' must be"),
                ({"on_event": "pushed", "start": "2027-01-01"}, "start", "start does not apply"),
                ({"on_event": "pushed", "catchup": True}, "catchup", "catchup does not apply"),
                ({"on_event": "pushed", "every": "1h"}, "timing", "(got --every, --on-event)"),
            ):
                r = c.post(
                    "/api/v1/schedules", json={"name": fresh("bad"), "pipeline": "ev-a1", **body}
                )
                assert r.status_code == 400, (body, r.text)
                assert r.json()["problems"][0]["field"] == field, (body, r.text)
                assert words in r.json()["error"], (body, r.text)
    finally:
        remove(world, "editor", name, f"{from_spec}-on")
