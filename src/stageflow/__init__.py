"""stageflow: describe an ML pipeline once, run it anywhere, durably and fast.

``from stageflow import task, Pipeline`` is the SDK. Importing stageflow loads
no heavy dependency (pandas, scikit-learn, FastAPI, Ray, MLflow, SQLAlchemy).
"""

from typing import TYPE_CHECKING, Any

from stageflow.errors import InvalidSpec, Problem, StageflowError
from stageflow.spec.models import Pipeline, Resources, RetryPolicy, Task, TriggerRule
from stageflow.spec.sdk import task

if TYPE_CHECKING:
    from stageflow.runtime.local import LocalRuntime
    from stageflow.runtime.orchestrator import Orchestrator

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``stageflow.LocalRuntime`` (many runs, one capacity) and ``stageflow.Orchestrator``
    (submit, await, query and control runs) are imported on first use."""
    if name == "LocalRuntime":
        from stageflow.runtime.local import LocalRuntime

        return LocalRuntime
    if name == "Orchestrator":
        from stageflow.runtime.orchestrator import Orchestrator

        return Orchestrator
    raise AttributeError(f"module 'stageflow' has no attribute {name!r}")


__all__ = [
    "InvalidSpec",
    "LocalRuntime",
    "Orchestrator",
    "Pipeline",
    "Problem",
    "Resources",
    "RetryPolicy",
    "StageflowError",
    "Task",
    "TriggerRule",
    "__version__",
    "task",
]
