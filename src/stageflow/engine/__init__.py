"""Pure decisions: the run state machine, trigger rules, retry timing."""

from stageflow.engine.scheduler import EnginePlan, Scheduler, Transition
from stageflow.engine.states import RunState, TaskState

__all__ = ["EnginePlan", "RunState", "Scheduler", "TaskState", "Transition"]
