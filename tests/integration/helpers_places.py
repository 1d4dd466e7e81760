"""Where the processes of one multi-process test keep their state (``Place``).

A home folder under the test's ``tmp``, the store (``url``: a PostgreSQL schema;
``None``: SQLite in the home), the ``stageflow`` processes the test started (each in
a session of its own, its output in ``NAME.out``/``NAME.err``) and a ledger file the
tasks append to. The worker, lease and pool tests add their own commands to it.
``place_on`` makes one on either backend and kills what it started at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil
from helpers_tasks import clean_environ, wait_until

from stageflow.runtime.store import Store, open_store
from support.postgres import postgres_schema, require_postgres

STAGEFLOW = Path(sys.executable).with_name("stageflow")


@dataclass
class Place:
    """One test's home, store and processes (module docstring)."""

    tmp: Path
    url: str | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger"

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = clean_environ(os.environ)
        if self.url is not None:
            env["STAGEFLOW_DATABASE_URL"] = self.url
        env.update(extra)
        return env

    def start(self, name: str, *args: str, **extra: str) -> subprocess.Popen[bytes]:
        """``stageflow ARGS`` in a session of its own; its output in ``NAME.out/.err``."""
        with (
            (self.tmp / f"{name}.out").open("wb") as out,
            (self.tmp / f"{name}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(
                [str(STAGEFLOW), "--home", str(self.home), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env(extra),
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """``stageflow --home HOME ARGS`` to its end, its output captured."""
        return subprocess.run(
            [str(STAGEFLOW), "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=self.env(extra),
            timeout=120,
            check=False,
        )

    def submit(self, spec: Path, *args: str, **extra: str) -> str:
        """``stageflow submit SPEC ARGS``: the run id it printed."""
        r = self.cli("submit", str(spec), *args, **extra)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def stop_all(self) -> None:
        """Kill every process this place started that still runs, with its group."""
        for proc in self.procs:
            if proc.poll() is None:
                kill_group(proc)

    def output(self, name: str) -> tuple[str, str]:
        return (
            (self.tmp / f"{name}.out").read_text(errors="replace"),
            self.stderr(name),
        )

    def stderr(self, name: str) -> str:
        return (self.tmp / f"{name}.err").read_text(errors="replace")

    @contextlib.contextmanager
    def store(self) -> Iterator[Store]:
        store = open_store(self.url, self.home)
        try:
            yield store
        finally:
            store.close()


P = TypeVar("P", bound=Place)


@contextlib.contextmanager
def place_on(backend: str, tmp: Path, kind: type[P]) -> Iterator[P]:
    """A ``kind`` of place on ``backend`` (``sqlite``, or ``postgres``: a fresh schema);
    every process it started is killed when the block ends."""
    with contextlib.ExitStack() as stack:
        url = None
        if backend == "postgres":
            require_postgres()
            url = stack.enter_context(postgres_schema())
        place = kind(tmp, url)
        try:
            yield place
        finally:
            place.stop_all()


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its process group (stopped ones too);
    wait until all are gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    def group_gone() -> bool:
        for p in psutil.process_iter(["status"]):
            try:
                if os.getpgid(p.pid) == proc.pid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    return False
            except (ProcessLookupError, psutil.Error):
                continue
        return True

    wait_until(group_gone, f"process group {proc.pid} is gone")
