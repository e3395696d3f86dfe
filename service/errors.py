"""The error tree of flow-orchestrator; an error's retryability is a class attribute.

```
FlowError                  base class; never raised directly
├── FlowDefinitionError    a flow fails validation at      the worker refuses to start
│                          start                           (exit 1)
├── SettingsError          a setting the worker can't use  the worker refuses to start
│                          (HEALTH_PORT in use)            (exit 2)
├── ExpressionError        an expression does not parse    When: step Skipped with the
│                          or cannot be evaluated          trace; inputs: step Failed
├── BadMessageError        not JSON, schema-invalid,       dead-lettered at once
│                          unknown kind, no message_id,
│                          oversize
├── UnknownReferenceError  names a flow, trigger, run or   dead-lettered at once
│                          step we don't have
├── RefusedError           a control operation that is     answered on reply_to, acked
│                          not allowed now (retry a step
│                          that is not Failed, signal a
│                          finished run)
└── UnavailableError       MongoDB or the broker is        retried, never dead-lettered
    │                      unreachable
    └── QueueFullError     a concurrency key has as many   retried until the queue
                           runs waiting as it can hold     drains
```

Only the consumer's settle point reads `retryable` and `reason`.
"""

from typing import ClassVar


class FlowError(Exception):
    """Base class of every error this service raises on purpose."""

    retryable: ClassVar[bool] = False
    reason: str = "error"


class FlowDefinitionError(FlowError):
    """A flow definition is invalid: the worker refuses to start."""

    reason = "invalid_flow"

    def __init__(self, flow: str, problem: str, *, step: str | None = None) -> None:
        self.flow = flow
        self.step = step
        self.problem = problem
        where = f"flow '{flow}'" + (f", step '{step}'" if step else "")
        super().__init__(f"{where}: {problem}")


class SettingsError(FlowError):
    """A setting the worker can't use (a busy HEALTH_PORT): it refuses to start."""

    reason = "bad_setting"

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting} {problem}")


class ExpressionError(FlowError):
    """An expression does not parse or cannot be evaluated."""

    reason = "bad_expression"


class BadMessageError(FlowError):
    """A message that can never be processed: dead-lettered at once."""

    reason = "bad_message"

    def __init__(self, problem: str, *, reason: str | None = None) -> None:
        self.problem = problem
        if reason is not None:
            self.reason = reason
        super().__init__(problem)


class UnknownReferenceError(FlowError):
    """The message names a flow, trigger, run or step we don't have."""

    reason = "unknown_reference"

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"unknown {what} '{name}'")


class RefusedError(FlowError):
    """A control operation not allowed in the current state; answered, then acked."""

    reason = "refused"


class UnavailableError(FlowError):
    """MongoDB or the broker cannot be reached: retried with backoff."""

    retryable = True
    reason = "unavailable"


class QueueFullError(UnavailableError):
    """A concurrency key's queue is full: the trigger is retried until it drains."""

    reason = "queue_full"

    def __init__(self, key: str, waiting: int) -> None:
        self.key = key
        self.waiting = waiting
        super().__init__(f"concurrency key {key!r} has {waiting} runs waiting already")
