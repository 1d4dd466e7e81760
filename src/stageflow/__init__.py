"""stageflow: describe an ML pipeline once, run it anywhere, durably and fast.

``from stageflow import task, Pipeline`` is the SDK. Importing stageflow loads
no heavy dependency (pandas, scikit-learn, FastAPI, Ray, MLflow, SQLAlchemy).
"""

from stageflow.errors import InvalidSpec, Problem, StageflowError
from stageflow.spec.models import Pipeline, Resources, RetryPolicy, Task, TriggerRule
from stageflow.spec.sdk import task

__version__ = "0.1.0"

__all__ = [
    "InvalidSpec",
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
