"""Logging: `configure_logging()`, the one caller of `structlog.configure`.

Everything else does `log = structlog.get_logger()` and binds context, never configures.
Libraries that log through the stdlib (aio-pika, pymongo) get the same renderer, so
every line of a worker's output has one format.
"""

import logging
import sys
from collections.abc import Sequence

import structlog
from structlog.typing import Processor


def configure_logging(
    level: str, *, json: bool, context: Sequence[Processor] = ()
) -> None:
    """JSON lines (or a console renderer) at `level` and above, context merged in.

    `context` adds fields to every line (the trace and span ids when tracing is on).
    """
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *context,
    ]
    if json:
        # The console renderer prints tracebacks itself; JSON wants them as data,
        # without frame locals, which may hold message bodies and URLs.
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
