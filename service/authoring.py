"""The one import of flow authors: `from service.authoring import Flow, Step, ...`.

Everything a flow module needs (the flow model, triggers, built-in step types, the
concurrency key, handler registration, results and the polling wrapper) under one
stable name, so the modules that define them may move. Only what is in `__all__` is
promised.
"""

from service.engine.model import (
    Concurrency,
    Flow,
    FlowId,
    Json,
    RetryPolicy,
    RunAfter,
    RunStatus,
    Step,
    StepStatus,
    Trigger,
    after,
    child_flow,
    cron,
    for_each,
    manual,
    wait_for_signal,
)
from service.steps.handlers import (
    Failed,
    Handler,
    Handlers,
    NonRetryable,
    Pending,
    StepContext,
    StepResult,
    Succeeded,
)
from service.steps.polling import Fetch, polling

__all__ = [
    "Concurrency",
    "Failed",
    "Fetch",
    "Flow",
    "FlowId",
    "Handler",
    "Handlers",
    "Json",
    "NonRetryable",
    "Pending",
    "RetryPolicy",
    "RunAfter",
    "RunStatus",
    "Step",
    "StepContext",
    "StepResult",
    "StepStatus",
    "Succeeded",
    "Trigger",
    "after",
    "child_flow",
    "cron",
    "for_each",
    "manual",
    "polling",
    "wait_for_signal",
]
