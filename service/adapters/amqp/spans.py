"""`MessageSpans`: what the consumer and the dispatcher ask of tracing, when it is on.

The AMQP adapter names no tracing library: the app hands it an implementation
(`service.adapters.otel.OtelTracer`) when tracing is on, and None otherwise, so a
worker without tracing pays one `is None` test per message.
"""

import contextlib
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, Protocol

from aio_pika.abc import AbstractIncomingMessage


class MessageSpans(Protocol):
    def delivery(
        self, message: AbstractIncomingMessage
    ) -> contextlib.AbstractContextManager[None]:
        """The span of one delivery, child of the context in its headers."""
        ...

    def publish(
        self,
        headers: MutableMapping[str, Any],
        *,
        kind: str,
        exchange: str,
        routing_key: str,
        message_id: str,
        links: Sequence[Mapping[str, str]] = (),
    ) -> contextlib.AbstractContextManager[None]:
        """The span of one publish; writes its context into `headers`."""
        ...
