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
    from stageflow.service.monitoring import (
        AlertCondition,
        AlertRule,
        AlertSeverity,
        PipelineMonitor,
    )
    from stageflow.service.scheduling import (
        PipelineScheduler,
        RetryStrategy,
        ScheduleConfig,
        ScheduleType,
    )

__version__ = "0.1.0"
_SCHEDULING = frozenset({"PipelineScheduler", "RetryStrategy", "ScheduleConfig", "ScheduleType"})
_MONITORING = frozenset({"AlertCondition", "AlertRule", "AlertSeverity", "PipelineMonitor"})


def __getattr__(name: str) -> Any:
    """``stageflow.LocalRuntime`` (many runs, one capacity) and ``stageflow.Orchestrator``
    (submit, await, query and control runs) are imported on first use, and so are
    ``PipelineScheduler``, ``ScheduleConfig``, ``ScheduleType`` and ``RetryStrategy``
    (the store's schedules from a program: ``service.scheduling``), and
    ``PipelineMonitor``, ``AlertRule``, ``AlertCondition`` and ``AlertSeverity`` (the
    monitor's samples, alert rules and alerts from a program: ``service.monitoring``)."""
    if name == "LocalRuntime":
        from stageflow.runtime.local import LocalRuntime

        return LocalRuntime
    if name == "Orchestrator":
        from stageflow.runtime.orchestrator import Orchestrator

        return Orchestrator
    if name in _SCHEDULING:
        from stageflow.service import scheduling

        return getattr(scheduling, name)
    if name in _MONITORING:
        from stageflow.service import monitoring

        return getattr(monitoring, name)
    raise AttributeError(f"module 'stageflow' has no attribute {name!r}")


__all__ = [
    "AlertCondition",
    "AlertRule",
    "AlertSeverity",
    "InvalidSpec",
    "LocalRuntime",
    "Orchestrator",
    "Pipeline",
    "PipelineMonitor",
    "PipelineScheduler",
    "Problem",
    "Resources",
    "RetryPolicy",
    "RetryStrategy",
    "ScheduleConfig",
    "ScheduleType",
    "StageflowError",
    "Task",
    "TriggerRule",
    "__version__",
    "task",
]
