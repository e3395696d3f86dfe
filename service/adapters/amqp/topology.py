"""The RabbitMQ topology: exchange, queue and routing-key names, declared idempotently.

Names, with the default prefix `flow` (every name is `<prefix>.<role>`):

| name              | what                                        | binding           |
| ----------------- | ------------------------------------------- | ----------------- |
| `flow.ingress`    | durable topic exchange for every message,   |                   |
|                   | alternate exchange `flow.unroutable`        |                   |
| `flow.triggers`   | durable quorum queue                        | `trigger.#`       |
| `flow.steps`      | durable quorum queue                        | `step.#`          |
| `flow.control`    | durable quorum queue                        | `control.#`       |
| `flow.unroutable` | durable fanout exchange, and a durable      | all of the        |
|                   | quorum queue: what `flow.ingress` can't     | exchange          |
|                   | route                                       |                   |
| `flow.dlx`        | durable fanout exchange for dead letters    |                   |
| `flow.dead`       | durable quorum queue, read by a human       | all of `flow.dlx` |

The four consumed queues have `x-queue-type: quorum`, `x-dead-letter-exchange:
flow.dlx` and `x-delivery-limit`: a backstop against a message that kills its worker
again and again. A MongoDB or broker outage does not eat into it (the consumer retries
in place while the delivery stays unacked); only a delivery given back by a dying
worker, a lost connection or a shutdown counts.

A message no queue binds goes to the alternate exchange, keeping its exchange and
routing key; the consumer dead-letters it as `unroutable` (or, for a routing key of
ours whose binding is missing, publishes it again later). RabbitMQ refuses to declare
an existing exchange with other arguments, so an ingress exchange declared before the
alternate exchange existed is used as it is (`establish`), and gets its alternate
exchange from a policy (`migration`).

Routing keys on `flow.ingress` (the AMQP `type` property names the kind):
- `trigger.<flow id or name>` for `trigger`;
- `step.<flow id>` for `run_step` (published by the service itself);
- `control.<kind>` for `retry_step`, `cancel_run`, `signal`, `rerun`, `enable_flow`,
  `disable_flow`, `pause_schedule`, `resume_schedule`, `trigger_schedule_now` and
  `set_cron`.

A dead letter keeps the original body and properties and adds the headers
`x-dead-letter-reason`, `x-dead-letter-detail`, `x-original-type`,
`x-original-routing-key`, `x-original-exchange` and `x-original-message-id`; one the
broker dead-lettered past the delivery limit has `x-first-death-reason: delivery_limit`.
Text that was not UTF-8 is written with backslash escapes (`x-dead-letter-rewritten`
names those headers) and the largest original headers are dropped when the letter
would not fit in one frame (`x-dead-letter-trimmed` says which); see `letters`.
Declaring an existing queue with other arguments (another delivery limit, say) fails
with RabbitMQ's PRECONDITION_FAILED: change a live queue's limit with a policy.
"""

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Final

import structlog
from aio_pika import ExchangeType, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
    HeadersType,
)
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    ChannelPreconditionFailed,
    PublishError,
)
from structlog.typing import FilteringBoundLogger

from contracts import CONTROL_KINDS

log: FilteringBoundLogger = structlog.get_logger()

DEFAULT_DELIVERY_LIMIT: Final = 50
"""Deliveries of one message before RabbitMQ dead-letters it: room for many worker
crashes and broker restarts while it is in flight, and still an end to a crash loop.
"""
ALTERNATE_EXCHANGE: Final = "alternate-exchange"
PROBE_KIND: Final = "unroutable_probe"
"""The `type` of the message that checks whether the ingress exchange drops what it
cannot route; a worker acks it wherever it ends up."""
PROBE_ROUTING_KEY: Final = "unroutable-probe"
_PROBE_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Names:
    """Every exchange and queue name, derived from one prefix."""

    prefix: str = "flow"

    @property
    def ingress(self) -> str:
        return f"{self.prefix}.ingress"

    @property
    def triggers(self) -> str:
        return f"{self.prefix}.triggers"

    @property
    def steps(self) -> str:
        return f"{self.prefix}.steps"

    @property
    def control(self) -> str:
        return f"{self.prefix}.control"

    @property
    def unroutable(self) -> str:
        """The alternate exchange of `ingress`, and the queue bound to it."""
        return f"{self.prefix}.unroutable"

    @property
    def dlx(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def bindings(self) -> dict[str, str]:
        """Work queue name -> its binding key on the ingress exchange."""
        return {
            self.triggers: "trigger.#",
            self.steps: "step.#",
            self.control: "control.#",
        }


def trigger_routing_key(flow: str) -> str:
    return f"trigger.{flow}"


def step_routing_key(flow_id: str) -> str:
    return f"step.{flow_id}"


def control_routing_key(kind: str) -> str:
    return f"control.{kind}"


def kind_of(message_type: str | None, routing_key: str | None) -> str | None:
    """The kind a message asks for: its `type`, else what its routing key names.

    `trigger.<flow>` names a trigger, `step.<flow id>` a run_step, `control.<kind>`
    that kind; any other key, nothing. Plain AMQP tools (Debian's `amqp-publish`)
    cannot set `type`.
    """
    if message_type:  # the driver reads an empty `type` as no `type`, so do we
        return message_type
    first, _, rest = (routing_key or "").partition(".")
    if first == "trigger":
        return "trigger"
    if first == "step":
        return "run_step"
    if first == "control" and rest in CONTROL_KINDS:
        return rest
    return None


def ours(routing_key: str) -> bool:
    """Whether one of our bindings (`trigger.#`, `step.#`, `control.#`) matches."""
    return routing_key.partition(".")[0] in {"trigger", "step", "control"}


def migration(names: Names) -> str:
    """The command that gives a legacy ingress exchange its alternate exchange.

    A policy (RabbitMQ 3.x and 4.x), since a live exchange's arguments cannot change.
    """
    pattern = "^" + names.ingress.replace(".", "\\.") + "$"
    alternate = {ALTERNATE_EXCHANGE: names.unroutable}
    definition = json.dumps(alternate, separators=(",", ":"))
    return (
        f"rabbitmqctl set_policy --apply-to exchanges {names.prefix}-unroutable "
        f"'{pattern}' '{definition}'"
    )


@dataclass(frozen=True, slots=True)
class Topology:
    """What `declare` declared, as objects of the channel it was given."""

    names: Names
    delivery_limit: int
    legacy_ingress: bool
    """The ingress exchange predates the alternate exchange: declared without it."""
    ingress: AbstractExchange
    dead_letter: AbstractExchange
    default: AbstractExchange
    """The broker's default exchange (replies go to a `reply_to` queue through it)."""
    triggers: AbstractQueue
    steps: AbstractQueue
    control: AbstractQueue
    unroutable: AbstractQueue
    dead: AbstractQueue

    @property
    def work_queues(self) -> tuple[AbstractQueue, AbstractQueue, AbstractQueue]:
        return self.triggers, self.steps, self.control


def work_queue_arguments(names: Names, *, delivery_limit: int) -> HeadersType:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": names.dlx,
        "x-delivery-limit": delivery_limit,
    }


async def declare(
    channel: AbstractChannel,
    names: Names,
    *,
    delivery_limit: int,
    legacy_ingress: bool = False,
) -> Topology:
    """Declare exchanges, queues and bindings (idempotent); their objects on `channel`.

    `legacy_ingress`: the ingress exchange exists without the alternate exchange
    argument, so it is only checked (`establish` finds out). On a robust channel
    everything is declared again after a reconnection.
    """
    if delivery_limit < 1:
        raise ValueError("delivery_limit must be at least 1")
    if legacy_ingress:
        ingress = await channel.declare_exchange(names.ingress, passive=True)
    else:
        ingress = await channel.declare_exchange(
            names.ingress,
            ExchangeType.TOPIC,
            durable=True,
            arguments=ingress_arguments(names),
        )
    dead_letter = await channel.declare_exchange(
        names.dlx, ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(
        names.dead, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dead_letter, routing_key="#")
    arguments = work_queue_arguments(names, delivery_limit=delivery_limit)
    alternate = await channel.declare_exchange(
        names.unroutable, ExchangeType.FANOUT, durable=True
    )
    unroutable = await channel.declare_queue(
        names.unroutable, durable=True, arguments=arguments
    )
    await unroutable.bind(alternate, routing_key="#")
    queues: dict[str, AbstractQueue] = {}
    for name, key in names.bindings().items():
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        await queue.bind(ingress, routing_key=key)
        queues[name] = queue
    return Topology(
        names=names,
        delivery_limit=delivery_limit,
        legacy_ingress=legacy_ingress,
        ingress=ingress,
        dead_letter=dead_letter,
        default=channel.default_exchange,
        triggers=queues[names.triggers],
        steps=queues[names.steps],
        control=queues[names.control],
        unroutable=unroutable,
        dead=dead,
    )


def ingress_arguments(names: Names) -> HeadersType:
    return {ALTERNATE_EXCHANGE: names.unroutable}


async def establish(
    connection: AbstractConnection,
    channel: AbstractChannel,
    names: Names,
    *,
    delivery_limit: int,
) -> Topology:
    """`declare` on `channel`, after finding out whether the ingress exchange is legacy.

    A legacy ingress exchange is kept as it is; if nothing (no policy) gives it an
    alternate exchange, a warning says how to migrate: unroutable messages are lost.
    """
    legacy = not await _takes_alternate(connection, names)
    topology = await declare(
        channel, names, delivery_limit=delivery_limit, legacy_ingress=legacy
    )
    if legacy and await drops_unroutable(topology):
        log.warning(
            "unroutable_messages_dropped",
            exchange=names.ingress,
            detail="the exchange was declared without an alternate exchange: a "
            "message no queue binds is lost; give it one with a policy",
            migration=migration(names),
        )
    return topology


async def _takes_alternate(connection: AbstractConnection, names: Names) -> bool:
    """Whether the ingress exchange is new or has our alternate exchange argument.

    Tried on a channel of its own: RabbitMQ answers an existing exchange declared
    with other arguments with PRECONDITION_FAILED, which closes the channel.
    """
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.declare_exchange(
            names.ingress,
            ExchangeType.TOPIC,
            durable=True,
            arguments=ingress_arguments(names),
        )
    except ChannelPreconditionFailed:
        return False
    finally:
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            await channel.close()
    return True


async def drops_unroutable(topology: Topology) -> bool:
    """Whether the ingress exchange drops a message no queue binds.

    Publishes a probe (`PROBE_KIND`) with `mandatory`: the broker returns it only if
    neither a binding nor an alternate exchange (argument or policy) takes it.
    `topology` must be declared on a channel from `open_publishing_channel`.
    """
    probe = Message(b"", type=PROBE_KIND)
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            await topology.ingress.publish(probe, PROBE_ROUTING_KEY, mandatory=True)
    except PublishError:
        return True
    return False
