"""ML and utility steps. Operators see only a ``TaskContext`` and their inputs."""

from stageflow.operators.base import Operator, SkipDownstream, TaskContext, TaskFailed
from stageflow.operators.registry import get, instantiate, names, register, task_problems

__all__ = [
    "Operator",
    "SkipDownstream",
    "TaskContext",
    "TaskFailed",
    "get",
    "instantiate",
    "names",
    "register",
    "task_problems",
]
