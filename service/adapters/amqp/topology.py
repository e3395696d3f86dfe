"""The RabbitMQ topology: exchange, queue and routing-key names, declared idempotently.

Names, with the default prefix `flow` (every name is `<prefix>.<role>`):

| name            | what                                       | binding           |
| --------------- | ------------------------------------------ | ----------------- |
| `flow.ingress`  | durable topic exchange for every message   |                   |
| `flow.triggers` | durable quorum queue                       | `trigger.#`       |
| `flow.steps`    | durable quorum queue                       | `step.#`          |
| `flow.control`  | durable quorum queue                       | `control.#`       |
| `flow.dlx`      | durable fanout exchange for dead letters   |                   |
| `flow.dead`     | durable quorum queue, read by a human      | all of `flow.dlx` |

The three work queues have `x-queue-type: quorum`, `x-dead-letter-exchange: flow.dlx`
and `x-delivery-limit`: a backstop against a message that kills its worker again and
again. A MongoDB or broker outage does not eat into it (the consumer retries in place
while the delivery stays unacked); only a delivery given back by a dying worker, a lost
connection or a shutdown counts.

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

from dataclasses import dataclass
from typing import Final

from aio_pika import ExchangeType
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    HeadersType,
)

DEFAULT_DELIVERY_LIMIT: Final = 50
"""Deliveries of one message before RabbitMQ dead-letters it: room for many worker
crashes and broker restarts while it is in flight, and still an end to a crash loop.
"""


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


@dataclass(frozen=True, slots=True)
class Topology:
    """What `declare` declared, as objects of the channel it was given."""

    names: Names
    delivery_limit: int
    ingress: AbstractExchange
    dead_letter: AbstractExchange
    default: AbstractExchange
    """The broker's default exchange (replies go to a `reply_to` queue through it)."""
    triggers: AbstractQueue
    steps: AbstractQueue
    control: AbstractQueue
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
    channel: AbstractChannel, names: Names, *, delivery_limit: int
) -> Topology:
    """Declare exchanges, queues and bindings (idempotent); their objects on `channel`.

    On a robust channel they are declared again after a reconnection.
    """
    if delivery_limit < 1:
        raise ValueError("delivery_limit must be at least 1")
    ingress = await channel.declare_exchange(
        names.ingress, ExchangeType.TOPIC, durable=True
    )
    dead_letter = await channel.declare_exchange(
        names.dlx, ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(
        names.dead, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dead_letter, routing_key="#")
    arguments = work_queue_arguments(names, delivery_limit=delivery_limit)
    queues: dict[str, AbstractQueue] = {}
    for name, key in names.bindings().items():
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        await queue.bind(ingress, routing_key=key)
        queues[name] = queue
    return Topology(
        names=names,
        delivery_limit=delivery_limit,
        ingress=ingress,
        dead_letter=dead_letter,
        default=channel.default_exchange,
        triggers=queues[names.triggers],
        steps=queues[names.steps],
        control=queues[names.control],
        dead=dead,
    )
