"""Where the processes of one multi-process test keep their state (``Place``).

A home folder under the test's ``tmp``, the store (``url``: a PostgreSQL schema;
``None``: SQLite in the home), the ``stageflow`` processes the test started (each in
a session of its own, its output in ``NAME.out``/``NAME.err``) and a ledger file the
tasks append to. The worker, lease and pool tests add their own commands to it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from helpers_tasks import clean_environ

from stageflow.runtime.store import Store, open_store

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
