"""Awaiting several store calls at once, in a task group, with their errors as they are.

A task group raises an ExceptionGroup; the callers up the stack handle `FlowError`s (an
outage is retried, a bad reference dead-lettered), so the first error comes out alone
and the other calls are cancelled.
"""

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")


async def both(
    first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]
) -> tuple[A, B]:
    """Both results; if one fails, the other is cancelled and its error raised."""
    try:
        async with asyncio.TaskGroup() as group:
            one = group.create_task(first)
            two = group.create_task(second)
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return one.result(), two.result()


async def every(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Every result, in order; a lone call is simply awaited."""
    if len(calls) == 1:
        return [await calls[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return [task.result() for task in tasks]
