"""Who may do what over the REST API (``stageflow serve``): role x route x owner.

One real server (SQLite, one supervised worker) for the module. Team ``team-a`` has
a viewer, an operator and an editor token; ``team-b`` an editor; ``admin-x`` is an
admin without an owner. Each team owns a pipeline (one ``notification`` task that
warns instead of failing without a webhook) and a run of it that has ended
(``success``) before any case runs, so that the control routes answer the same
every time.

The expected answers (``operations.access``):

- no token: 401, on every route;
- a role too low for the route: 403, on its own owner's object and on another's
  alike: the role is checked before anything is looked up, so the 403 says nothing
  about whether the object exists;
- a non-admin on another owner's object: 404, never 403 (as for a missing object);
- otherwise allowed: 200/201/202; a control request (cancel, pause, unpause,
  approve, reject) on a run that has ended is refused by the run's state: 409
  (``ControlRefused``: "already ended"), after the caller was let through, and so is
  a retry of a run that succeeded ("nothing to retry");
- validating a spec saves nothing and looks nothing up: any role may, whatever owner
  the spec names.

Every mutating route is in the table: pipelines (and seed 000's ``/workflows``
aliases), runs and their control, tokens, alert rules and alerts, schedules and
events. Each case that destroys or moves an object (a pipeline, a token, a rule, an
alert, a schedule) gets a fresh one, made by the admin (an alert as the alert duty
opens it, in the store). Schedules listen to an event, so none fires by itself.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from helpers_serve import Server, serving

pytestmark = pytest.mark.slow

ROLES = ("viewer", "operator", "editor", "admin")
TEAMS = {"own": "team-a", "other": "team-b"}
PIPELINES = {"team-a": "pipe-a", "team-b": "pipe-b"}
TOKEN_NAMES = {
    "viewer": "viewer-a",
    "operator": "operator-a",
    "editor": "editor-a",
    "admin": "admin-x",
}
_unique = itertools.count(1)


def notify_spec(name: str, owner: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "tasks": [
            {
                "id": "a",
                "operator": "notification",
                "parameters": {"message": "hi", "fail_on_error": False},
            }
        ],
    }
    if owner is not None:
        spec["owner"] = owner
    return spec


#: The alert rule of each team's pipeline, that the alerts of the table belong to.
RULES = {"team-a": "rule-a", "team-b": "rule-b"}


def rule_body(rule_id: str, team: str) -> dict[str, Any]:
    return {
        "rule_id": rule_id,
        "metric": "run.duration_seconds",
        "threshold": 600,
        "pipeline": PIPELINES[team],
    }


@dataclass
class World:
    server: Server
    tokens: dict[str, str]  # role (and "editor-b") -> token
    runs: dict[str, str]  # team -> an ended run of its pipeline

    def admin(self) -> httpx.Client:
        return self.server.client(self.server.admin)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # Its requests without a token are many (every route's 401): this module tests the
    # roles, not the failed-authentication limit (test_api.py does), so it is raised.
    with serving(
        "sqlite",
        tmp_path_factory.mktemp("api-roles"),
        STAGEFLOW_API_FAILED_LOGINS_PER_MINUTE="1000",
    ) as server:
        tokens = {
            role: server.token(name, role, None if role == "admin" else "team-a")
            for role, name in TOKEN_NAMES.items()
        }
        tokens["editor-b"] = server.token("editor-b", "editor", "team-b")
        runs = {}
        with server.client(server.admin) as c:
            for team, name in PIPELINES.items():
                r = c.post("/api/v1/pipelines", json=notify_spec(name, team))
                assert (r.status_code, r.json()["owner"]) == (201, team), r.text
                r = c.post("/api/v1/runs", json={"pipeline_id": name})
                assert r.status_code == 202, r.text
                runs[team] = r.json()["run_id"]
                r = c.post("/api/v1/alert-rules", json=rule_body(RULES[team], team))
                assert (r.status_code, r.json()["owner"]) == (201, team), r.text
        for run_id in runs.values():
            done = server.wait_run(server.admin, run_id, ("success", "failed"))
            assert done["state"] == "success", done
        yield World(server, tokens, runs)


# A route: (world, team of the object) -> (method, path, JSON body or None). A route
# that needs an object it may destroy makes a fresh one (as admin) for each case.
Request = tuple[str, str, Any]


def _fresh_pipeline(w: World, team: str) -> str:
    name = f"doomed-{next(_unique)}"
    with w.admin() as c:
        assert c.post("/api/v1/pipelines", json=notify_spec(name, team)).status_code == 201
    return name


def _fresh_token(w: World, team: str) -> str:
    name = f"spare-{next(_unique)}"
    with w.admin() as c:
        body = {"name": name, "role": "viewer", "owner": team}
        assert c.post("/api/v1/tokens", json=body).status_code == 201
    return name


def _fresh_rule(w: World, team: str) -> str:
    rule_id = f"spare-rule-{next(_unique)}"
    with w.admin() as c:
        assert c.post("/api/v1/alert-rules", json=rule_body(rule_id, team)).status_code == 201
    return rule_id


def _fresh_alert(w: World, team: str) -> str:
    """An open alert of ``team``'s rule, as the alert duty opens one (a subject of its
    own: a rule has one open alert per subject)."""
    from stageflow.runtime.store.base import AlertRecord

    alert_id = f"alert-{next(_unique)}"
    alert = AlertRecord(
        alert_id,
        RULES[team],
        f"task:{PIPELINES[team]}.{alert_id}",
        "open",
        "warning",
        "too slow",
        time.time(),
        pipeline=PIPELINES[team],
        owner=team,
    )
    with w.server.store() as store:
        assert store.open_alert(alert)
    return alert_id


def _fresh_schedule(w: World, team: str, event: str = "never") -> str:
    """A schedule of ``team``'s pipeline that only ``event`` fires."""
    name = f"sched-{next(_unique)}"
    body = {"name": name, "pipeline": PIPELINES[team], "on_event": event}
    with w.admin() as c:
        r = c.post("/api/v1/schedules", json=body)
        assert r.status_code == 201, r.text
    return name


def _fresh_event(w: World, team: str) -> str:
    """An event only one (fresh) schedule of ``team`` listens to."""
    event = f"ev-{next(_unique)}"
    _fresh_schedule(w, team, event)
    return event


ROUTES: dict[str, Callable[[World, str], Request]] = {
    # a spec that names the owner: team-a's own, or ("other") team-b
    "save pipeline": lambda w, t: (
        "POST",
        "/api/v1/pipelines",
        notify_spec(f"new-{next(_unique)}", t),
    ),
    "delete pipeline": lambda w, t: ("DELETE", f"/api/v1/pipelines/{_fresh_pipeline(w, t)}", None),
    "submit run": lambda w, t: ("POST", "/api/v1/runs", {"pipeline_id": PIPELINES[t]}),
    "cancel": lambda w, t: ("POST", f"/api/v1/runs/{w.runs[t]}/cancel", None),
    "pause": lambda w, t: ("POST", f"/api/v1/runs/{w.runs[t]}/pause", None),
    "unpause": lambda w, t: ("POST", f"/api/v1/runs/{w.runs[t]}/unpause", None),
    "approve": lambda w, t: ("POST", f"/api/v1/runs/{w.runs[t]}/tasks/a/approve", None),
    "reject": lambda w, t: ("POST", f"/api/v1/runs/{w.runs[t]}/tasks/a/reject", None),
    "retry": lambda w, t: ("POST", f"/api/v1/runs/{w.runs[t]}/retry", {}),
    "validate pipeline": lambda w, t: (
        "POST",
        "/api/v1/pipelines/validate",
        notify_spec(f"checked-{next(_unique)}", t),
    ),
    # seed 000's aliases
    "save workflow": lambda w, t: ("POST", "/workflows", notify_spec(f"wf-{next(_unique)}", t)),
    "delete workflow": lambda w, t: ("DELETE", f"/workflows/{_fresh_pipeline(w, t)}", None),
    "execute workflow": lambda w, t: ("POST", f"/workflows/{PIPELINES[t]}/execute", {}),
    # alert rules (a rule watches a pipeline: it is its owner's) and alerts
    "add alert rule": lambda w, t: (
        "POST",
        "/api/v1/alert-rules",
        rule_body(f"new-rule-{next(_unique)}", t),
    ),
    "delete alert rule": lambda w, t: (
        "DELETE",
        f"/api/v1/alert-rules/{_fresh_rule(w, t)}",
        None,
    ),
    "enable alert rule": lambda w, t: ("POST", f"/api/v1/alert-rules/{RULES[t]}/enable", None),
    "disable alert rule": lambda w, t: (
        "POST",
        f"/api/v1/alert-rules/{_fresh_rule(w, t)}/disable",
        None,
    ),
    "ack alert": lambda w, t: ("POST", f"/api/v1/alerts/{_fresh_alert(w, t)}/ack", None),
    "resolve alert": lambda w, t: ("POST", f"/api/v1/alerts/{_fresh_alert(w, t)}/resolve", None),
    # schedules (a schedule runs a pipeline: it is its owner's) and events
    "add schedule": lambda w, t: (
        "POST",
        "/api/v1/schedules",
        {"name": f"new-sched-{next(_unique)}", "pipeline": PIPELINES[t], "on_event": "never"},
    ),
    "pause schedule": lambda w, t: (
        "POST",
        f"/api/v1/schedules/{_fresh_schedule(w, t)}/pause",
        None,
    ),
    "resume schedule": lambda w, t: (
        "POST",
        f"/api/v1/schedules/{_fresh_schedule(w, t)}/resume",
        None,
    ),
    "delete schedule": lambda w, t: ("DELETE", f"/api/v1/schedules/{_fresh_schedule(w, t)}", None),
    "trigger schedule": lambda w, t: (
        "POST",
        f"/api/v1/schedules/{_fresh_schedule(w, t)}/trigger",
        {},
    ),
    "fire event": lambda w, t: ("POST", f"/api/v1/events/{_fresh_event(w, t)}", {}),
    "create token": lambda w, t: (
        "POST",
        "/api/v1/tokens",
        {"name": f"made-{next(_unique)}", "role": "viewer", "owner": t},
    ),
    "revoke token": lambda w, t: ("DELETE", f"/api/v1/tokens/{_fresh_token(w, t)}", None),
    "audit": lambda w, t: ("GET", "/api/v1/audit", None),
    "read pipeline": lambda w, t: ("GET", f"/api/v1/pipelines/{PIPELINES[t]}", None),
    "read run": lambda w, t: ("GET", f"/api/v1/runs/{w.runs[t]}", None),
    "list runs": lambda w, t: ("GET", "/api/v1/runs", None),
    "list pipelines": lambda w, t: ("GET", "/api/v1/pipelines", None),
}
#: The routes that act on no object of an owner: one case each, "own".
NO_OBJECT = {"audit", "list runs", "list pipelines"}
#: What each route needs, and its answer when allowed.
NEEDS = {
    "save pipeline": ("editor", 201),
    "delete pipeline": ("editor", 200),
    "submit run": ("operator", 202),
    # the run has ended: the state refuses the control once the caller may ask
    "cancel": ("operator", 409),
    "pause": ("operator", 409),
    "unpause": ("operator", 409),
    "approve": ("operator", 409),  # and task 'a' awaits no approval anyway
    "reject": ("operator", 409),
    "retry": ("operator", 409),  # it succeeded: nothing to retry
    "validate pipeline": ("viewer", 200),
    "save workflow": ("editor", 201),
    "delete workflow": ("editor", 200),
    "execute workflow": ("operator", 202),
    "add alert rule": ("editor", 201),
    "delete alert rule": ("editor", 200),
    "enable alert rule": ("editor", 200),
    "disable alert rule": ("editor", 200),
    "ack alert": ("operator", 200),
    "resolve alert": ("operator", 200),
    "add schedule": ("editor", 201),
    "pause schedule": ("operator", 200),
    "resume schedule": ("operator", 200),
    "delete schedule": ("editor", 200),
    "trigger schedule": ("operator", 202),
    "fire event": ("operator", 202),
    "create token": ("admin", 201),
    "revoke token": ("admin", 200),
    "audit": ("admin", 200),
    "read pipeline": ("viewer", 200),
    "read run": ("viewer", 200),
    "list runs": ("viewer", 200),
    "list pipelines": ("viewer", 200),
}


#: Routes that save a spec: one naming another owner is refused by name (the ``owner``
#: field), as nothing is looked up.
SAVES = {"save pipeline", "save workflow"}
#: Routes that look nothing up: another owner named in the body changes nothing.
ANY_OWNER = {"validate pipeline"}
#: Why a 409 of a control route refuses (the run has ended, with success).
CONFLICT = {"retry": "succeeded; nothing to retry"}


def expected(role: str, route: str, side: str) -> int:
    need, allowed = NEEDS[route]
    if ROLES.index(role) < ROLES.index(need):
        return 403  # on either side: decided before any lookup
    if side == "other" and role != "admin" and route not in ANY_OWNER:
        # another owner's object is "not found"
        return 403 if route in SAVES else 404
    return allowed


TABLE = [
    (role, route, side, expected(role, route, side))
    for route in ROUTES
    for role in ROLES
    for side in (("own",) if route in NO_OBJECT else ("own", "other"))
]


@pytest.mark.parametrize(("role", "route", "side", "status"), TABLE)
def test_role_route_owner(world: World, role: str, route: str, side: str, status: int) -> None:
    method, path, body = ROUTES[route](world, TEAMS[side])
    with world.server.client(world.tokens[role]) as c:
        r = c.request(method, path, json=body)
    assert r.status_code == status, r.text
    doc = r.json()
    if status >= 400:
        assert doc["error"] and doc["problems"], doc
    need = NEEDS[route][0]
    if ROLES.index(role) < ROLES.index(need):
        assert f"has role {role}" in doc["error"], doc
        assert f"needs role {need} or higher" in doc["error"], doc
    if status == 409:
        assert CONFLICT.get(route, "already ended (success)") in doc["error"], doc
    if route in SAVES and status == 201:
        assert doc["owner"] == TEAMS[side]
    if route == "add alert rule" and status == 201:
        assert doc["owner"] == TEAMS[side]  # its pipeline's
    if route in ("ack alert", "resolve alert") and status == 200:  # in the token's name
        by = "acknowledged_by" if route == "ack alert" else "resolved_by"
        assert doc[by] == TOKEN_NAMES[role], doc
    if route == "validate pipeline":
        assert doc["valid"] is True


def test_saving_a_spec_for_another_owner_names_the_owner_field(world: World) -> None:
    with world.server.client(world.tokens["editor"]) as c:
        r = c.post("/api/v1/pipelines", json=notify_spec("stolen", "team-b"))
    assert r.status_code == 403
    assert [(p["field"]) for p in r.json()["problems"]] == ["owner"]
    assert "names owner 'team-b'" in r.json()["error"]


def test_a_name_another_owner_holds_is_a_conflict(world: World) -> None:
    # Pipeline names are global: the name is taken, whoever holds it (409, not 404).
    with world.server.client(world.tokens["editor"]) as c:
        r = c.post("/api/v1/pipelines", json=notify_spec("pipe-b"))
    assert r.status_code == 409
    assert [p["field"] for p in r.json()["problems"]] == ["name"]
    with world.admin() as c:
        assert c.get("/api/v1/pipelines/pipe-b").json()["owner"] == "team-b"


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_no_token_is_401(world: World, route: str) -> None:
    method, path, body = ROUTES[route](world, "team-a")
    with world.server.client() as c:
        r = c.request(method, path, json=body)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert "needs a token" in r.json()["error"]


def test_a_bad_token_is_401(world: World) -> None:
    with world.server.client("sft_000000000000_" + "x" * 43) as c:
        r = c.get("/api/v1/runs")
    assert r.status_code == 401
    assert r.json()["error"] == "the token is unknown, revoked or expired"


def test_bash_task_needs_an_admin(world: World) -> None:
    spec = {"name": "shell", "tasks": [{"id": "sh", "operator": "bash", "parameters": {}}]}
    spec["tasks"][0]["parameters"] = {"command": "true"}
    with world.server.client(world.tokens["editor"]) as c:
        r = c.post("/api/v1/pipelines", json=spec)
    assert r.status_code == 403
    error = r.json()["error"]
    assert error.startswith("tasks sh run arbitrary code"), error
    assert "only an admin may save or run them, and token 'editor-a' has role editor" in error
    with world.admin() as c:
        r = c.get("/api/v1/pipelines/shell")
        assert r.status_code == 404  # nothing was saved
        r = c.post("/api/v1/pipelines", json=spec)
    assert (r.status_code, r.json()["name"], r.json()["tasks"]) == (201, "shell", 1)


def test_bash_task_refusal_names_the_task_in_problems(world: World) -> None:
    spec = {
        "name": "shell-2",
        "tasks": [{"id": "sh", "operator": "bash", "parameters": {"command": "true"}}],
    }
    with world.server.client(world.tokens["editor"]) as c:
        r = c.post("/api/v1/pipelines", json=spec)
    assert r.status_code == 403
    assert [p["task"] for p in r.json()["problems"]] == ["sh"]


def _run_ids(c: httpx.Client, query: str = "") -> set[str]:
    r = c.get(f"/api/v1/runs?limit=1000{query}")
    assert r.status_code == 200, r.text
    return {run["run_id"] for run in r.json()["runs"]}


def _pipeline_names(c: httpx.Client, path: str = "/api/v1/pipelines", query: str = "") -> set[str]:
    r = c.get(f"{path}?limit=1000{query}")
    assert r.status_code == 200, r.text
    return {p["name"] for p in r.json()["pipelines"]}


@pytest.mark.parametrize(("token", "team"), [("viewer", "team-a"), ("editor-b", "team-b")])
def test_lists_show_only_the_callers_owner(world: World, token: str, team: str) -> None:
    other = "team-b" if team == "team-a" else "team-a"
    with world.admin() as c:
        all_runs = _run_ids(c)
        team_runs = _run_ids(c, f"&owner={team}")
        team_pipelines = _pipeline_names(c, query=f"&owner={team}")
        all_pipelines = _pipeline_names(c)
    assert {world.runs["team-a"], world.runs["team-b"]} <= all_runs
    assert {"pipe-a", "pipe-b"} <= all_pipelines
    with world.server.client(world.tokens[token]) as c:
        runs = _run_ids(c)
        # an owner filter is an admin's: a non-admin sees its own whatever it asks
        runs_asked_other = _run_ids(c, f"&owner={other}")
        pipelines = _pipeline_names(c)
        pipelines_asked_other = _pipeline_names(c, query=f"&owner={other}")
        workflows = _pipeline_names(c, "/workflows")
        executions = {e["run_id"] for e in c.get("/executions?limit=1000").json()["runs"]}
    assert runs == team_runs == executions
    assert world.runs[team] in runs and world.runs[other] not in runs
    assert runs_asked_other == runs
    assert pipelines == team_pipelines == workflows
    assert PIPELINES[team] in pipelines and PIPELINES[other] not in pipelines
    assert pipelines_asked_other == set()


def test_another_owners_pipeline_is_not_found_like_a_missing_one(world: World) -> None:
    with world.server.client(world.tokens["viewer"]) as c:
        theirs = c.get("/api/v1/pipelines/pipe-b")
        missing = c.get("/api/v1/pipelines/pipe-z")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"] == "no pipeline 'pipe-b'"
    assert missing.json()["error"] == "no pipeline 'pipe-z'"


MISSING_RUN = "20000101-000000-000000"


def test_another_owners_run_is_not_found_like_a_missing_one(world: World) -> None:
    theirs_id = world.runs["team-b"]
    with world.server.client(world.tokens["viewer"]) as c:
        theirs = c.get(f"/api/v1/runs/{theirs_id}")
        missing = c.get(f"/api/v1/runs/{MISSING_RUN}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"].replace(theirs_id, "ID") == missing.json()["error"].replace(
        MISSING_RUN, "ID"
    )


def test_a_missing_run_does_not_tell_the_store_location(world: World) -> None:
    with world.server.client(world.tokens["viewer"]) as c:
        r = c.get(f"/api/v1/runs/{MISSING_RUN}")
    assert r.status_code == 404
    assert str(world.server.home) not in r.text
    assert "sqlite:" not in r.text
