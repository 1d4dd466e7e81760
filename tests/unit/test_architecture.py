"""The layers of DESIGN.md import one way only, and ``import stageflow`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "stageflow"

# Each layer may import only the layers before it (and errors.py).
ORDER = ["spec", "graph", "engine", "operators", "runtime", "operations", "service"]


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, top_level) for every stageflow import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("stageflow."):
                found.append((name, node.lineno, id(node) in top))
    return found


def _layer_files() -> list[tuple[str, Path]]:
    return [(layer, f) for layer in ORDER for f in sorted((SRC / layer).rglob("*.py"))]


@pytest.mark.parametrize(("layer", "path"), _layer_files(), ids=lambda v: str(v)[-40:])
def test_imports_point_one_way(layer: str, path: Path) -> None:
    allowed = set(ORDER[: ORDER.index(layer) + 1]) | {"errors"}
    for module, line, top_level in _imports(path):
        target = module.split(".")[1]
        if target in allowed:
            continue
        # The one documented exception: the SDK facade Pipeline.run imports the
        # runtime inside the method, and names its result type for the checker
        # only (docs/architecture.md, "Layers").
        if path.name == "models.py" and layer == "spec" and not top_level:
            assert module in ("stageflow.runtime.runner", "stageflow.runtime.result")
            continue
        pytest.fail(f"{path.relative_to(SRC)}:{line}: layer '{layer}' imports {module}")


def _checked_imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every stageflow import in ``path`` that runs: those under
    ``if TYPE_CHECKING:`` name types for the checker only and are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((f"{node.module}.{a.name}", node.lineno) for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names)
    return [(name, line) for name, line in found if name.startswith("stageflow.")]


@pytest.mark.parametrize("path", sorted((SRC / "service").rglob("*.py")), ids=lambda p: p.name)
def test_interfaces_hold_no_sql(path: Path) -> None:
    """An interface reaches the store only through ``operations`` (DESIGN.md: "an
    interface never holds SQL"): no module of ``service`` imports ``runtime.store``."""
    for module, line in _checked_imports(path):
        assert not (module + ".").startswith("stageflow.runtime.store."), (
            f"{path.relative_to(SRC)}:{line} imports {module}; go through stageflow.operations"
        )


def test_pure_layers_do_no_io_imports() -> None:
    """spec, graph and engine never import threads, sockets, subprocesses or clocks."""
    forbidden = {"threading", "subprocess", "socket", "sqlite3", "time", "multiprocessing"}
    for layer in ("spec", "graph", "engine"):
        for path in (SRC / layer).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module.split(".")[0]]
                bad = forbidden.intersection(names)
                assert not bad, f"{path.relative_to(SRC)}:{node.lineno} imports {bad}"


def test_import_stageflow_loads_no_heavy_dependency() -> None:
    heavy = [
        "pandas",
        "sklearn",
        "matplotlib",
        "fastapi",
        "ray",
        "mlflow",
        "sqlalchemy",
        "psycopg",
        "rich",
        "yaml",
        "cloudpickle",
        "fsspec",
        "psutil",
        "click",
    ]
    code = f"import sys, stageflow\nprint(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import stageflow loaded: {out.stdout.strip()}"
