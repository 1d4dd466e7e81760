"""What a run records about its code and environment: ``git_state`` (and
``recent_git_state``, which reuses it) and ``installed_packages`` (``runtime.lineage``).

The repositories are real ones made with ``git`` in ``tmp_path``;
``GIT_CEILING_DIRECTORIES`` keeps git from finding a repository above it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stageflow.runtime import lineage
from stageflow.runtime.lineage import git_state, installed_packages, recent_git_state


@pytest.fixture(autouse=True)
def no_outer_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def make_repo(tmp_path: Path, *, commit: bool = True) -> Path:
    repo = tmp_path / "repo"
    (repo / "sub" / "deeper").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "tracked.txt").write_text("one\n")
    (repo / "sub" / "deeper" / "code.py").write_text("x = 1\n")
    if commit:
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", "first")
        git(repo, "checkout", "-q", "-b", "feature")
    return repo


# -- git_state --------------------------------------------------------------------------


def test_a_folder_outside_any_repository_has_no_state(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()

    assert git_state(plain) is None


def test_a_missing_folder_has_no_state(tmp_path: Path) -> None:
    assert git_state(tmp_path / "missing") is None


def test_a_repository_without_a_commit_has_no_state(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, commit=False)

    assert git_state(repo) is None


@pytest.mark.parametrize(
    "where", [pytest.param(".", id="root"), pytest.param("sub/deeper", id="subfolder")]
)
def test_a_clean_repository(tmp_path: Path, where: str) -> None:
    repo = make_repo(tmp_path)

    state = git_state(repo / where)

    assert state == {
        "git_commit": git(repo, "rev-parse", "HEAD"),
        "git_branch": "feature",
        "git_dirty": False,
        "git_root": str(repo.resolve()),
    }


def test_the_root_is_resolved_through_a_link(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(repo, target_is_directory=True)

    state = git_state(link / "sub")

    assert state is not None
    assert state["git_root"] == str(repo.resolve())


@pytest.mark.parametrize(
    ("change", "dirty"),
    [
        pytest.param(lambda repo: (repo / "tracked.txt").write_text("two\n"), True, id="modified"),
        pytest.param(lambda repo: (repo / "tracked.txt").unlink(), True, id="deleted"),
        pytest.param(
            lambda repo: (repo / "sub" / "deeper" / "code.py").write_text("x = 2\n"),
            True,
            id="modified-elsewhere",
        ),
        pytest.param(lambda repo: (repo / "new.txt").write_text("new\n"), False, id="untracked"),
    ],
)
def test_changes_to_tracked_files_make_it_dirty(
    tmp_path: Path, change: Callable[[Path], object], dirty: bool
) -> None:
    repo = make_repo(tmp_path)
    change(repo)

    state = git_state(repo / "sub")

    assert state is not None
    assert state["git_dirty"] is dirty
    assert state["git_commit"] == git(repo, "rev-parse", "HEAD")


def test_a_staged_change_makes_it_dirty(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (repo / "staged.txt").write_text("s\n")
    git(repo, "add", "staged.txt")

    state = git_state(repo)

    assert state is not None
    assert state["git_dirty"] is True


def test_a_detached_head_is_named_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (repo / "tracked.txt").write_text("two\n")
    git(repo, "commit", "-q", "-am", "second")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")

    state = git_state(repo)

    assert state is not None
    assert state["git_branch"] == "HEAD"
    assert state["git_commit"] == git(repo, "rev-parse", "HEAD")
    assert state["git_commit"] != git(repo, "rev-parse", "feature")
    assert state["git_dirty"] is False


# -- installed_packages -----------------------------------------------------------------


def bump_mtime(folder: Path) -> None:
    """Give ``folder`` a modification time it never had (filesystem clocks are coarse)."""
    st = folder.stat()
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.setattr(sys, "path", [str(folder), *sys.path])
    return folder


def test_distributions_are_read_from_folder_names(site: Path) -> None:
    (site / "Foo_Bar-1.2.3.dist-info").mkdir()
    (site / "old_style-0.9.egg-info").mkdir()
    (site / "egg_built-2.1-py3.11.egg-info").mkdir()  # the Python tag is not the version
    (site / "noversion.dist-info").mkdir()  # no version in the name: skipped
    (site / "foo_bar").mkdir()  # the package itself, not a distribution
    bump_mtime(site)

    found = installed_packages()

    assert found["foo-bar"] == "1.2.3"
    assert found["old-style"] == "0.9"
    assert found["egg-built"] == "2.1"
    assert "noversion" not in found
    assert list(found) == sorted(found)


def test_a_distribution_added_later_is_seen(site: Path) -> None:
    (site / "foo_bar-1.2.3.dist-info").mkdir()
    bump_mtime(site)
    assert "baz" not in installed_packages()

    (site / "baz-0.1.dist-info").mkdir()
    bump_mtime(site)
    found = installed_packages()

    assert found["baz"] == "0.1"
    assert found["foo-bar"] == "1.2.3"


def test_a_listing_is_kept_while_the_folder_mtime_is_unchanged(site: Path) -> None:
    (site / "foo_bar-1.2.3.dist-info").mkdir()
    bump_mtime(site)
    assert "foo-bar" in installed_packages()
    kept = site.stat().st_mtime_ns

    (site / "baz-0.1.dist-info").mkdir()
    os.utime(site, ns=(kept, kept))  # as if nothing had changed

    assert "baz" not in installed_packages()


def test_the_first_entry_on_sys_path_wins(
    tmp_path: Path, site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = tmp_path / "later"
    later.mkdir()
    (site / "foo_bar-2.0.dist-info").mkdir()
    (later / "foo_bar-1.0.dist-info").mkdir()
    (later / "only_later-3.0.dist-info").mkdir()
    bump_mtime(site)
    monkeypatch.setattr(sys, "path", [*sys.path, str(later)])

    found = installed_packages()

    assert found["foo-bar"] == "2.0"
    assert found["only-later"] == "3.0"


def test_entries_that_are_not_folders_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(b"PK")
    monkeypatch.setattr(sys, "path", ["", str(archive), str(tmp_path / "missing"), *sys.path])

    found = installed_packages()

    assert "pytest" in found  # the real entries are still read


# -- recent_git_state: one `git status` a second per folder, not one per run ----------


@pytest.fixture
def git_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders ``recent_git_state`` asked git about (each ``git status`` still
    runs, for real); no state kept from other tests."""
    calls: list[Path] = []
    real = lineage.git_state

    def counted(folder: Path) -> Any:
        calls.append(folder)
        return real(folder)

    monkeypatch.setattr(lineage, "git_state", counted)
    monkeypatch.setattr(lineage, "_git_states", {})
    return calls


def test_a_second_read_within_the_limit_starts_no_git(
    tmp_path: Path, git_calls: list[Path]
) -> None:
    repo = make_repo(tmp_path)

    first = recent_git_state(repo / "sub", now=100.0)
    second = recent_git_state(repo / "sub", now=100.9)

    assert first == second == git_state(repo / "sub")
    assert len(git_calls) == 1


def test_a_read_past_the_limit_asks_git_again_and_sees_an_edit(
    tmp_path: Path, git_calls: list[Path]
) -> None:
    repo = make_repo(tmp_path)
    clean = recent_git_state(repo, now=100.0)
    (repo / "tracked.txt").write_text("two\n")  # not added: nothing under .git changes

    within = recent_git_state(repo, now=100.5)
    after = recent_git_state(repo, now=101.0)

    assert clean is not None and within is not None and after is not None
    assert clean["git_dirty"] is False
    assert within["git_dirty"] is False  # reused: at most a second old
    assert after["git_dirty"] is True
    assert len(git_calls) == 2


def test_a_commit_or_an_added_change_is_seen_at_once(tmp_path: Path, git_calls: list[Path]) -> None:
    repo = make_repo(tmp_path)
    before = recent_git_state(repo, now=100.0)
    (repo / "tracked.txt").write_text("two\n")
    git(repo, "add", "tracked.txt")

    added = recent_git_state(repo, now=100.1)
    git(repo, "commit", "-q", "-m", "second")
    committed = recent_git_state(repo, now=100.2)

    assert before is not None and added is not None and committed is not None
    assert added["git_dirty"] is True
    assert committed["git_dirty"] is False
    assert committed["git_commit"] == git(repo, "rev-parse", "HEAD") != before["git_commit"]
    assert len(git_calls) == 3


def test_each_folder_keeps_its_own_state(tmp_path: Path, git_calls: list[Path]) -> None:
    one = make_repo(tmp_path / "one")
    two = make_repo(tmp_path / "two")

    first = recent_git_state(one, now=100.0)
    second = recent_git_state(two, now=100.0)

    assert first is not None and second is not None
    assert first["git_root"] == str(one.resolve())
    assert second["git_root"] == str(two.resolve())
    assert len(git_calls) == 2


def test_a_reused_state_is_a_copy(tmp_path: Path, git_calls: list[Path]) -> None:
    repo = make_repo(tmp_path)
    first = recent_git_state(repo, now=100.0)
    assert first is not None
    first["git_dirty"] = "changed by a caller"

    again = recent_git_state(repo, now=100.1)

    assert again is not None and again["git_dirty"] is False
