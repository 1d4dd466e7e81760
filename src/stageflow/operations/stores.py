"""Opening the store for an operation, and naming it.

Queries take an opened ``Store`` so an interface decides how long one lives (the
CLI: one command; a server: its own pool). ``reading`` opens it read-only (a
query never migrates or writes; a missing SQLite store reads as empty),
``writing`` as a run does. Both raise ``StoreError`` naming the URL when the
store cannot be opened. No state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from stageflow.runtime.settings import Settings
from stageflow.runtime.store import Store, mask_url, open_store

__all__ = [
    "Store",
    "artifacts_problem",
    "check_store",
    "open_for_service",
    "reading",
    "store_location",
    "writing",
]


@contextmanager
def reading(settings: Settings) -> Iterator[Store]:
    """The store of ``settings``, opened for reading only; closed on exit."""
    store = open_store(settings.database_url, settings.home, read_only=True)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def writing(settings: Settings) -> Iterator[Store]:
    """The store of ``settings``, opened (and migrated) for writing; closed on exit."""
    store = open_store(settings.database_url, settings.home)
    try:
        yield store
    finally:
        store.close()


def open_for_service(settings: Settings) -> Store:
    """The store of ``settings`` for a long-lived process (the API), opened and
    migrated; the caller closes it."""
    return open_store(settings.database_url, settings.home)


def check_store(settings: Settings) -> None:
    """Open and close the store once: ``StoreError`` saying which URL and why when it
    cannot be reached (a long-lived process says so at start, not at its first run)."""
    open_store(settings.database_url, settings.home).close()


def store_location(settings: Settings) -> str:
    """Where the store is, to show a person: its URL with the password masked, else
    the state folder of the embedded store."""
    return mask_url(settings.database_url) if settings.database_url else str(settings.home)


def artifacts_problem(settings: Settings) -> tuple[str, str | None]:
    """(where the artifact store is, why it cannot be written, or ``None``): a file is
    made and removed in a local store's folder; a remote store is not probed."""
    import tempfile

    from stageflow.runtime.artifacts import artifact_store

    root = settings.artifacts_root
    folder = artifact_store(root).local_path("")
    if folder is None:
        return root, None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".health-"):
            pass
    except OSError as exc:
        return str(folder), f"{root}: {exc.strerror or exc}"
    return str(folder), None
