"""The Celery side of `celery_compare`: an app on the same RabbitMQ, two tasks.

Configured from the environment by `celery_compare` (CELERY_BENCH_*): the queue name,
quorum or classic, publisher confirms and late acks, and a MongoDB result backend or
none. Either way the last task of a chain writes the time it ran to a file, which the
driver polls.
"""

import os
import time

from celery import Celery

QUEUE = os.environ.get("CELERY_BENCH_QUEUE", "bench.celery")
DURABLE = os.environ.get("CELERY_BENCH_DURABLE", "1") == "1"

app = Celery(
    "bench", broker=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1//")
)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    result_backend=None,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if backend := os.environ.get("CELERY_BENCH_BACKEND"):
    # Every task's result stored in MongoDB (a database of its own), as a team that
    # wants each step's outcome kept would run it.
    app.conf.update(
        task_ignore_result=False,
        result_backend=backend,
        mongodb_backend_settings={
            "database": os.environ.get("CELERY_BENCH_DATABASE", "bench_celery")
        },
    )
if DURABLE:
    # As close to the orchestrator's guarantees as Celery gets: a quorum queue,
    # publisher confirms, and the ack after the task ran (not on receipt).
    app.conf.update(
        task_default_queue_type="quorum",
        worker_detect_quorum_queues=True,
        broker_transport_options={"confirm_publish": True},
        task_acks_late=True,
    )


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.done")
def done(path: str) -> None:
    with open(path, "w") as out:
        out.write(repr(time.time()))


def send(marker: str, length: int) -> float:
    """Send `chain(noop x length, done(marker))`; the time just before apply_async."""
    from celery import chain

    flow = chain(*(noop.si() for _ in range(length)), done.si(marker))
    sent = time.time()
    flow.apply_async()
    return sent


if __name__ == "__main__":
    # python -m benchmarks.celery_app <marker> <length>: prints the send time.
    import sys

    print(repr(send(sys.argv[1], int(sys.argv[2]))), flush=True)
