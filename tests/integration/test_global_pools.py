"""Global pools across real processes: one pool's slots are shared by every worker and
every ``stageflow run`` process on a store (``runtime.pools``).

- three ``stageflow worker`` processes running 20 runs of a task in a 1-slot pool
  never run two of them at once (from the stored attempt intervals), on SQLite and
  on PostgreSQL;
- the slot held by a worker killed with ``kill -9`` comes back when its lease
  expires, not before;
- two ``stageflow run`` processes on one home never overlap their pooled tasks;
- ``stageflow pools set|list|remove`` configure pools in the store, and a task naming
  a pool that exists nowhere is refused at submit (exit 2).

The pool is configured as ``STAGEFLOW_POOLS=lic=1`` in each process's environment,
as before pools were global: each process then seeds the store, and the store's one
slot is what they share (per process, each had a slot of its own).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_places import Place as BasePlace
from helpers_places import place_on
from helpers_tasks import read_lines, wait_until

from stageflow.runtime.store import AttemptRecord, Store

pytestmark = pytest.mark.slow

POOL = {"STAGEFLOW_POOLS": "lic=1"}
LEDGER = 'echo "$STAGEFLOW_RUN_ID $STAGEFLOW_TASK_ID $PPID" >> "$STAGEFLOW_PARAM_LEDGER"'
AT_GATE = (  # waits (at most 90 s) until the file named by the `gate` parameter exists
    'for _ in $(seq 4500); do [ -e "$STAGEFLOW_PARAM_GATE" ] && break; sleep 0.02; done'
)


class Place(BasePlace):
    """A ``helpers_places.Place`` that writes specs of bash tasks with pools."""

    def spec(
        self, name: str, tasks: dict[str, tuple[str | None, list[str]]], **params: str
    ) -> Path:
        """A chain of bash tasks ``id -> (pool, commands)``; each first writes the ledger."""
        path = self.tmp / f"{name}.json"
        chain = list(tasks)
        path.write_text(
            json.dumps(
                {
                    "name": name,
                    "params": {"ledger": str(self.ledger), **params},
                    "tasks": [
                        {
                            "id": tid,
                            "operator": "bash",
                            "upstream": [chain[k - 1]] if k else [],
                            "parameters": {"command": "; ".join([LEDGER, *commands])},
                            **({"pool": pool} if pool else {}),
                        }
                        for k, (tid, (pool, commands)) in enumerate(tasks.items())
                    ],
                }
            )
        )
        return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    with place_on(request.param, tmp_path, Place) as found:
        yield found


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Place]:
    """SQLite only."""
    with place_on("sqlite", tmp_path, Place) as found:
        yield found


def pooled_attempts(store: Store, run_ids: list[str], task_ids: set[str]) -> list[AttemptRecord]:
    return [a for r in run_ids for a in store.attempts(r) if a.task_id in task_ids]


def most_at_once(attempts: list[AttemptRecord]) -> int:
    """The most attempts running at one instant (an end before a start at a tie)."""
    points = sorted(
        [(a.started_at or 0.0, 1) for a in attempts] + [(a.ended_at or 0.0, -1) for a in attempts]
    )
    open_now = most = 0
    for _, step in points:
        open_now += step
        most = max(most, open_now)
    return most


# -- workers -----------------------------------------------------------------------------------


def test_three_workers_share_one_slot_of_a_global_pool(place: Place) -> None:
    spec = place.spec(
        "licensed",
        {"prep": (None, []), "fit": ("lic", ["sleep 0.0$((RANDOM % 5 + 3))"]), "done": (None, [])},
    )
    run_ids = [place.submit(spec, **POOL) for _ in range(20)]

    args = ("--concurrency", "3", "--idle-exit", "2")
    workers = [place.start(f"w{k}", "worker", "--name", f"w{k}", *args, **POOL) for k in range(3)]

    for k, w in enumerate(workers):
        assert w.wait(timeout=240) == 0, place.stderr(f"w{k}")
    with place.store() as store:
        assert {store.get_run(r).state for r in run_ids} == {"success"}
        fits = pooled_attempts(store, run_ids, {"fit"})
        assert store.pool_holdings(time.time()) == []  # every slot given back
        assert [(p.name, p.slots) for p in store.pools()] == [("lic", 1)]
    assert len(fits) == 20 and all(a.state == "success" for a in fits)
    assert all(0 < (a.started_at or 0) < (a.ended_at or 0) for a in fits), fits
    assert most_at_once(fits) == 1, sorted((a.started_at, a.ended_at) for a in fits)
    # The slot really went from process to process (three workers each ran some).
    pids = Counter(
        int(p) for _, t, p in (line.split() for line in read_lines(place.ledger)) if t == "fit"
    )
    assert len(pids) >= 2, pids


def test_a_slot_held_by_a_killed_worker_comes_back_when_its_lease_expires(place: Place) -> None:
    """The waiting process is a ``stageflow run`` (it takes no run over): only the
    expiry of the dead worker's lease can give it the slot."""
    gate = place.tmp / "gate"  # never opened: the holder would hold the slot for 90 s
    lease = {"STAGEFLOW_LEASE_SECONDS": "2", **POOL}
    held = place.spec("held", {"hold": ("lic", [AT_GATE])}, gate=str(gate))
    quick = place.spec("quick", {"use": ("lic", [])})
    first = place.submit(held, **POOL)
    doomed = place.start("doomed", "worker", "--name", "doomed", **lease)
    wait_until(lambda: len(read_lines(place.ledger)) == 1, "the doomed worker holds the slot")
    with place.store() as store:
        assert [h.run_id for h in store.pool_holdings(time.time())] == [first]
    listed = json.loads(place.cli("pools", "list", "--format", "json").stdout)
    assert [(p["pool"], p["slots"], p["used"]) for p in listed] == [("lic", 1, 1)]
    assert [(h["run_id"], h["task_id"], h["attempt"]) for h in listed[0]["holders"]] == [
        (first, "hold", 1)
    ]

    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    with place.store() as store:
        expiry = store.get_run(first).lease_expires_at
    assert expiry is not None
    waiting = place.start("waiting", "run", str(quick), "--format", "json", **lease)

    assert waiting.wait(timeout=60) == 0, place.stderr("waiting")
    second = json.loads((place.tmp / "waiting.out").read_text())["run_id"]
    with place.store() as store:
        used = store.attempts(second, "use")[0]
        assert store.get_run(first).state == "running"  # nobody took it over
        assert store.pool_holdings(time.time()) == []  # its dead holding is gone
    # Not before the dead worker's lease expired: until then its holding was live.
    assert (used.started_at or 0.0) >= expiry, (used.started_at, expiry)


# -- `stageflow run` processes -----------------------------------------------------------------


def test_two_run_processes_on_one_home_never_overlap_in_a_pool(home: Place) -> None:
    tasks: dict[str, tuple[str | None, list[str]]] = {
        f"t{k}": ("lic", ["sleep 0.15"]) for k in range(4)
    }
    one = home.spec("one", tasks)
    two = home.spec("two", tasks)
    home.cli("pools", "list", **POOL)  # the store exists before both start (no race to create it)

    a = home.start("a", "run", str(one), "--format", "json", **POOL)
    b = home.start("b", "run", str(two), "--format", "json", **POOL)

    assert a.wait(timeout=120) == 0, home.stderr("a")
    assert b.wait(timeout=120) == 0, home.stderr("b")
    run_ids = [json.loads((home.tmp / f"{n}.out").read_text())["run_id"] for n in ("a", "b")]
    with home.store() as store:
        attempts = pooled_attempts(store, run_ids, set(tasks))
    assert len(attempts) == 8
    assert most_at_once(attempts) == 1, sorted((a.started_at, a.ended_at) for a in attempts)


# -- configuration -----------------------------------------------------------------------------


def test_pools_are_set_listed_and_removed(home: Place) -> None:
    assert home.cli("pools", "set", "lic", "2").returncode == 0
    listed = home.cli("pools", "list", "--format", "json", STAGEFLOW_POOLS="etl=4,lic=9")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"pool": "etl", "slots": 4, "used": 0, "holders": []},  # seeded from the settings
        {"pool": "lic", "slots": 2, "used": 0, "holders": []},  # the store's size wins
    ]
    text = home.cli("pools", "list")
    assert text.stdout.splitlines()[0].split() == ["POOL", "SLOTS", "USED", "HOLDERS"]
    assert text.stdout.splitlines()[2].split() == ["lic", "2", "0", "-"]
    assert home.cli("pools", "remove", "etl").returncode == 0
    assert [
        p["pool"] for p in json.loads(home.cli("pools", "list", "--format", "json").stdout)
    ] == ["lic"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("set", "lic", "two"), "SLOTS is 'two'; it must be a whole number", id="text"),
        pytest.param(
            ("set", "lic", "-1"), "SLOTS is '-1'; it must be a whole number", id="negative"
        ),
        pytest.param(("set", "lic", "1.5"), "SLOTS is '1.5'", id="fraction"),
        pytest.param(("set", "bad name", "1"), "pool name 'bad name' is not valid", id="name"),
        pytest.param(("remove", "nosuch"), "no pool 'nosuch' in the store", id="unknown"),
        pytest.param(("set", "lic"), "Missing argument 'SLOTS'", id="missing"),
    ],
)
def test_bad_pool_commands_exit_2_with_a_message(
    home: Place, args: tuple[str, ...], message: str
) -> None:
    r = home.cli("pools", *args)
    assert r.returncode == 2, r
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_a_pool_that_exists_nowhere_is_refused_and_one_in_the_store_is_accepted(
    home: Place,
) -> None:
    spec = home.spec("gpu", {"train": ("gpu-licences", [])})
    refused = home.cli("submit", str(spec))
    assert refused.returncode == 2, refused
    assert "pool 'gpu-licences' is not configured" in refused.stderr
    assert "stageflow pools set gpu-licences SLOTS" in refused.stderr
    assert "Traceback" not in refused.stderr

    assert home.cli("pools", "set", "gpu-licences", "1").returncode == 0
    accepted = home.cli("submit", str(spec))  # no STAGEFLOW_POOLS: the store has it
    assert accepted.returncode == 0, accepted.stderr
