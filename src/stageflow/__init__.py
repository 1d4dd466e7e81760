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

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``stageflow.LocalRuntime`` (many runs, one capacity) is imported on first use."""
    if name == "LocalRuntime":
        from stageflow.runtime.local import LocalRuntime

        return LocalRuntime
    raise AttributeError(f"module 'stageflow' has no attribute {name!r}")


__all__ = [
    "InvalidSpec",
    "LocalRuntime",
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
