"""The authoring API for step handlers: context, results, registration and invocation.

A handler is `async def handler(ctx: StepContext, inputs) -> output | StepResult`,
where `inputs` is the resolved inputs dict or, when annotated with a pydantic model,
that model. A plain `def` runs in a worker thread (`asyncio.to_thread`) so it never
blocks the loop.
"""

import asyncio
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias, cast, get_type_hints

from pydantic import BaseModel, ValidationError

from service.engine.headers import HeaderMap
from service.engine.model import (
    BUILTIN_TYPES,
    FlowId,
    JobId,
    Json,
    RunId,
    StepKey,
)
from service.engine.results import Failed, Pending, StepResult, Succeeded

__all__ = [
    "Failed",
    "Handler",
    "Handlers",
    "NonRetryable",
    "Pending",
    "StepContext",
    "StepResult",
    "Succeeded",
    "as_result",
    "invoke",
    "to_json",
]


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a handler knows about the attempt it runs."""

    run_id: RunId
    flow_id: FlowId
    step_key: StepKey
    attempt: int
    job_id: JobId
    trigger_body: Json
    trigger_headers: Mapping[str, str]
    """Names as written; `ctx.trigger_headers["x-id"]` matches them in any case."""
    now: datetime
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the run is cancelled or times out, or the step's own timeout passes,
    while the handler runs."""

    def __post_init__(self) -> None:
        # Frozen: set here, so a context however built matches names in any case.
        object.__setattr__(self, "trigger_headers", HeaderMap(self.trigger_headers))

    @property
    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()


Handler: TypeAlias = Callable[[StepContext, Any], Awaitable[object] | object]


class NonRetryable(Exception):  # noqa: N818 - named for what it means to a flow author
    """Raised by a handler: the step fails at once, whatever its retry policy.

    `raise NonRetryable("card declined") from exc` keeps the cause in the traceback;
    subclasses (`class Declined(NonRetryable)`) are non-retryable too.
    """


class Handlers:
    """Handlers by step type (matched case-insensitively, first registration wins)."""

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[str, Handler]] = {}

    def register(self, type_name: str, handler: Handler) -> None:
        folded = type_name.strip().lower()
        if not folded:
            raise ValueError("a handler type name must not be blank")
        if folded in {b.lower() for b in BUILTIN_TYPES}:
            raise ValueError(f"'{type_name}' is a built-in step type")
        if folded in self._by_name:
            raise ValueError(f"a handler for '{type_name}' is registered already")
        self._by_name[folded] = (type_name, handler)

    def handler(self, type_name: str) -> Callable[[Handler], Handler]:
        """Decorator: `@handlers.handler("Charge")` registers the function below it."""

        def register(fn: Handler) -> Handler:
            self.register(type_name, fn)
            return fn

        return register

    def merge(self, other: "Handlers") -> None:
        for name, handler in other._by_name.values():
            self.register(name, handler)

    def get(self, type_name: str) -> Handler | None:
        found = self._by_name.get(type_name.lower())
        return None if found is None else found[1]

    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self._by_name.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


async def invoke(
    handler: Handler, ctx: StepContext, inputs: Mapping[str, Json]
) -> StepResult:
    """Run a handler and turn whatever it returns or raises into a StepResult."""
    model = _input_model(handler)
    argument: object = dict(inputs)
    if model is not None:
        try:
            argument = model.model_validate(dict(inputs))
        except ValidationError as exc:
            # The same inputs fail the same way on every attempt: no retry.
            return Failed(
                f"Failed to validate inputs for step '{ctx.step_key}' "
                f"as {model.__name__}: {_summary(exc)}",
                retry=False,
            )
    if inspect.iscoroutinefunction(handler):
        returned = await handler(ctx, argument)
    else:
        returned = await asyncio.to_thread(handler, ctx, argument)
        if inspect.isawaitable(returned):
            returned = await returned
    return as_result(returned)


def as_result(returned: object) -> StepResult:
    """A plain value means Succeeded with that output; models become JSON."""
    if isinstance(returned, Succeeded | Failed | Pending):
        return returned
    return Succeeded(to_json(returned))


def to_json(value: object) -> Json:
    """A handler's output as JSON; raises TypeError when it is not representable."""
    if isinstance(value, BaseModel):
        return cast(Json, value.model_dump(mode="json"))
    # A round trip proves the value is JSON and copies it away from the handler.
    return cast(Json, json.loads(json.dumps(value)))


@functools.lru_cache(maxsize=1024)
def _input_model(handler: Handler) -> type[BaseModel] | None:
    """The pydantic model of the handler's inputs, if annotated (once per handler)."""
    try:
        hints = get_type_hints(handler)
    except (NameError, TypeError):
        return None
    params = list(inspect.signature(handler).parameters)
    if len(params) < 2:
        return None
    hint = hints.get(params[1])
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return hint
    return None


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors()[:10]
    )
