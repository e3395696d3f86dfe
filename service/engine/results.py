"""What a step handler returns: Succeeded, Failed or Pending (FO's StepResult).

Plain data, shared by the authoring API (`service.steps.handlers`, which turns whatever
a handler returns into one of these) and the engine, which decides what each means for
the step and the run.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeAlias

from service.engine.model import Json


@dataclass(frozen=True, slots=True)
class Succeeded:
    output: Json = None
    delay_next: timedelta | None = None
    """Delay the dispatch of every step this result makes ready (FO's DelayNextStep)."""


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    output: Json = None
    retry: bool = True
    """False: the step fails at once, whatever its retry policy (a non-retryable
    failure: a declined card, inputs that can never validate)."""


@dataclass(frozen=True, slots=True)
class Pending:
    """Park the step and run it again after `delay` (polling).

    `inputs` replace the dispatch inputs of the next attempt (poll state travels there).
    """

    delay: timedelta = timedelta(seconds=10)
    output: Json = None
    inputs: Mapping[str, Json] | None = None


StepResult: TypeAlias = Succeeded | Failed | Pending
