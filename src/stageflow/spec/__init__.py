"""Pure data: the pipeline model, loading YAML/JSON text, validation problems."""

from stageflow.spec.load import Limits, parse_document, pipeline_from_data, pipeline_from_text
from stageflow.spec.models import (
    PRIORITY_NAMES,
    Pipeline,
    Resources,
    RetryPolicy,
    Task,
    TaskDefaults,
    TaskId,
    TriggerRule,
)
from stageflow.spec.sdk import task
from stageflow.spec.validate import pipeline_problems, structural_problems

__all__ = [
    "PRIORITY_NAMES",
    "Limits",
    "Pipeline",
    "Resources",
    "RetryPolicy",
    "Task",
    "TaskDefaults",
    "TaskId",
    "TriggerRule",
    "parse_document",
    "pipeline_from_data",
    "pipeline_from_text",
    "pipeline_problems",
    "structural_problems",
    "task",
]
