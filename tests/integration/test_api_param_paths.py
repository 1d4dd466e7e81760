"""Run parameters that name files, over the REST API against a real ``stageflow serve``
(SQLite and PostgreSQL): a non-admin's runs read files under the data roots only, as
its specs do. A saved spec may take a path from a parameter (``source:
${params.src}``); every way a non-admin starts a run with parameters is checked with
them substituted: ``POST /api/v1/runs``, seed 000's ``POST /workflows/{id}/execute``,
a retry, a schedule added or triggered with parameters, a spec's own ``schedules:``,
an event's payload, and the pipeline's parameter defaults. Refused: 403 naming the
task, the field and the parameter, nothing queued. An admin is not confined.

One server per backend for the module (its data root: ``<home>/data``); team ``team-a``
has an operator and an editor token. Each test saves pipelines of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_schedules import World, team_tokens
from helpers_serve import serving

pytestmark = pytest.mark.slow

_unique = itertools.count(1)
CSV = "a,b\n1,2\n3,4\n"


class Paths:
    """A CSV under the server's data root, and one outside it."""

    def __init__(self, home: Path, tmp: Path) -> None:
        (home / "data").mkdir(parents=True, exist_ok=True)
        self.inside = str((home / "data" / "inside.csv").absolute())
        self.outside = str((tmp / "outside.csv").absolute())
        Path(self.inside).write_text(CSV)
        Path(self.outside).write_text(CSV)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, Paths]]:
    tmp = tmp_path_factory.mktemp(f"api-param-paths-{request.param}")
    with serving(request.param, tmp) as s:
        yield World(s, team_tokens(s)), Paths(s.home, tmp)


def reads(name: str, src: str, **extra: Any) -> dict[str, Any]:
    """A pipeline of team-a whose one task reads the file ``${params.src}`` names."""
    return {
        "name": name,
        "owner": "team-a",
        "params": {"src": src},
        "tasks": [
            {"id": "load", "operator": "data_ingestion", "parameters": {"source": "${params.src}"}}
        ],
        **extra,
    }


def saved(w: World, who: str, spec: dict[str, Any]) -> str:
    with w.as_(who) as c:
        r = c.post("/api/v1/pipelines", json=spec)
    assert r.status_code == 201, r.text
    return str(spec["name"])


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_unique)}"


def refused(r: httpx.Response, value: str, param: str = "src") -> None:
    """A 403 naming task ``load``, its field ``parameters.source``, the parameter and
    the path."""
    assert r.status_code == 403, r.text
    [problem] = r.json()["problems"]
    assert (problem["task"], problem["field"]) == ("load", "parameters.source"), problem
    assert f"from run parameter '{param}'" in problem["message"]
    assert repr(value) in problem["message"]
    assert "STAGEFLOW_API_DATA_ROOTS" in problem["message"]


def test_a_run_s_parameters_are_confined_like_its_spec(world: tuple[World, Paths]) -> None:
    w, paths = world
    name = saved(w, "editor", reads(fresh("reads"), paths.inside))
    with w.as_("operator") as c:
        for body in ({"src": paths.outside}, {"src": "../../outside.csv"}):
            r = c.post("/api/v1/runs", json={"pipeline_id": name, "parameters": body})
            if body["src"].startswith(".."):
                assert r.status_code == 403 and "climbs out" in r.json()["error"], r.text
            else:
                refused(r, paths.outside)
        seed = c.post(f"/workflows/{name}/execute", json={"parameters": {"src": paths.outside}})
        refused(seed, paths.outside)
        assert w.runs_of(name) == []  # nothing queued
        inside = c.post(
            "/api/v1/runs", json={"pipeline_id": name, "parameters": {"src": paths.inside}}
        )
        assert inside.status_code == 202, inside.text
        by_seed = c.post(f"/workflows/{name}/execute", json={})  # the default: inside
        assert by_seed.status_code == 202, by_seed.text
    with w.as_("admin") as c:  # an admin may name any file
        admin = c.post(
            "/api/v1/runs", json={"pipeline_id": name, "parameters": {"src": paths.outside}}
        )
        assert admin.status_code == 202, admin.text
    for r in (inside, by_seed, admin):
        w.succeeds(r.json()["run_id"])
    assert len(w.runs_of(name)) == 3


def test_a_retry_by_a_non_admin_is_confined_too(world: tuple[World, Paths]) -> None:
    w, paths = world
    name = saved(w, "editor", reads(fresh("retried"), paths.inside))
    with w.as_("admin") as c:
        r = c.post("/api/v1/runs", json={"pipeline_id": name, "parameters": {"src": paths.outside}})
        assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    w.succeeds(run_id)
    again = {"from_task": "load"}
    with w.as_("operator") as c:  # the admin's run reads outside: not the operator's to redo
        refused(c.post(f"/api/v1/runs/{run_id}/retry", json=again), paths.outside)
        ours = c.post("/api/v1/runs", json={"pipeline_id": name})
        assert ours.status_code == 202, ours.text
        w.succeeds(ours.json()["run_id"])
        redo = c.post(f"/api/v1/runs/{ours.json()['run_id']}/retry", json=again)
        assert redo.status_code == 200, redo.text
    with w.as_("admin") as c:
        assert c.post(f"/api/v1/runs/{run_id}/retry", json=again).status_code == 200
    w.succeeds(run_id)


def test_parameter_defaults_are_confined(world: tuple[World, Paths]) -> None:
    w, paths = world
    with w.as_("editor") as c:
        refused(
            c.post("/api/v1/pipelines", json=reads(fresh("dflt"), paths.outside)), paths.outside
        )
    # An admin may save it (for team-a); an operator of team-a may not run it as it is.
    name = saved(w, "admin", reads(fresh("dflt"), paths.outside))
    with w.as_("operator") as c:
        refused(c.post("/api/v1/runs", json={"pipeline_id": name}), paths.outside)
        assert w.runs_of(name) == []
        ok = c.post("/api/v1/runs", json={"pipeline_id": name, "parameters": {"src": paths.inside}})
        assert ok.status_code == 202, ok.text
    with w.as_("admin") as c:
        mine = c.post("/api/v1/runs", json={"pipeline_id": name})
        assert mine.status_code == 202, mine.text
    w.succeeds(ok.json()["run_id"])
    w.succeeds(mine.json()["run_id"])


def test_schedules_and_events_are_confined(world: tuple[World, Paths]) -> None:
    w, paths = world
    name = saved(w, "editor", reads(fresh("sched"), paths.inside))
    event = fresh("arrived")
    listener = {"name": fresh("on-arrival"), "pipeline": name, "on_event": event}
    with w.as_("editor") as c:
        bad = c.post("/api/v1/schedules", json={**listener, "params": {"src": paths.outside}})
        refused(bad, paths.outside)
        assert listener["name"] not in [
            s["name"] for s in c.get("/api/v1/schedules").json()["schedules"]
        ]
        entry = {"name": fresh("in-spec"), "event": event, "params": {"src": paths.outside}}
        spec = reads(fresh("spec-sched"), paths.inside, schedules=[entry])
        refused(c.post("/api/v1/pipelines", json=spec), paths.outside)
        assert c.get(f"/api/v1/pipelines/{spec['name']}").status_code == 404  # nothing saved
        assert c.post("/api/v1/schedules", json=listener).status_code == 201
    trigger = f"/api/v1/schedules/{listener['name']}/trigger"
    with w.as_("operator") as c:
        refused(c.post(f"/api/v1/events/{event}", json={"src": paths.outside}), paths.outside)
        refused(c.post(trigger, json={"parameters": {"src": paths.outside}}), paths.outside)
        assert w.runs_of(name) == []  # nothing queued
        fired = c.post(f"/api/v1/events/{event}", json={"src": paths.inside})
        assert fired.status_code == 202, fired.text
        manual = c.post(trigger, json={"parameters": {"src": paths.inside}})
        assert manual.status_code == 202, manual.text
    with w.as_("admin") as c:
        admins = c.post(f"/api/v1/events/{event}", json={"src": paths.outside})
        assert admins.status_code == 202, admins.text
    ids = [fired.json()["runs"][0]["run_id"], manual.json()["run_id"]]
    for run_id in [*ids, admins.json()["runs"][0]["run_id"]]:
        w.succeeds(run_id)


def test_an_object_schedule_watches_files_under_the_roots_only(world: tuple[World, Paths]) -> None:
    w, paths = world
    name = saved(w, "editor", reads(fresh("objects"), paths.inside))
    outside = "file://" + str(Path(paths.outside).parent / "*.csv")
    inside = "file://" + str(Path(paths.inside).parent / "*.csv")
    watcher = {"name": fresh("watch"), "pipeline": name, "poll": "1h"}
    with w.as_("editor") as c:
        r = c.post("/api/v1/schedules", json={**watcher, "on_object": outside})
        assert r.status_code == 403, r.text
        [problem] = r.json()["problems"]
        assert problem["field"] == "on_object" and "outside the data roots" in problem["message"]
        entry = {"name": fresh("in-spec"), "object": outside, "poll": "1h"}
        spec = reads(fresh("spec-objects"), paths.inside, schedules=[entry])
        r = c.post("/api/v1/pipelines", json=spec)
        assert r.status_code == 403 and r.json()["problems"][0]["field"] == "object", r.text
        assert c.get(f"/api/v1/pipelines/{spec['name']}").status_code == 404  # nothing saved
        ok = c.post("/api/v1/schedules", json={**watcher, "on_object": inside})
        assert ok.status_code == 201, ok.text
    with w.as_("admin") as c:
        mine = {**watcher, "name": fresh("watch"), "on_object": outside}
        assert c.post("/api/v1/schedules", json=mine).status_code == 201
