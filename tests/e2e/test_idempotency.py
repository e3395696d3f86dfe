"""One run per trigger message and per idempotency key, whatever the repeats."""

from tests.e2e.harness import PATIENT, Deployment, Worker, eventually


async def _settled(worker: Worker, deployment: Deployment, count: int) -> None:
    """Wait until the worker has acked `count` trigger messages."""

    async def acked() -> bool:
        return (
            worker.metric(
                "flow_messages_consumed_total", kind="trigger", outcome="acked"
            )
            >= count
        )

    await eventually(
        acked, within=30, what=f"{count} triggers acked", alive=deployment.check_alive
    )


async def test_the_same_trigger_message_twice_starts_one_run(deployment: Deployment):
    worker = deployment.start_worker(**PATIENT)
    await worker.ready()

    first = await deployment.trigger("steady", {"n": 1}, message_id="same-message")
    again = await deployment.trigger("steady", {"n": 1}, message_id="same-message")
    await _settled(worker, deployment, 2)
    [run] = await deployment.finished([first], within=30)

    assert first == again
    assert await deployment.count_runs() == 1
    assert run["status"] == "Succeeded"
    assert all(s["attempt"] == 1 for s in await deployment.steps(run_id=run["_id"]))


async def test_a_repeated_idempotency_key_starts_one_run(deployment: Deployment):
    worker = deployment.start_worker()
    await worker.ready()

    by_field = [
        await deployment.trigger("steady", {"n": n}, idempotency_key=key)
        for n, key in enumerate(["Order-7", "order-7 ", " ORDER-7"])
    ]
    by_header = [
        await deployment.trigger(
            "steady", {"n": n}, headers={"x-idempotency-key": "order-8"}
        )
        for n in range(2)
    ]
    await _settled(worker, deployment, 5)
    # The run's job id is whichever message of its group was handled first.
    runs = await deployment.finished(by_field + by_header, within=30, at_least=2)

    assert await deployment.count_runs() == 2
    assert sorted(r["idem"] for r in runs) == ["order-7", "order-8"]
    assert all(r["status"] == "Succeeded" for r in runs)
    # The duplicates were answered with the first run and acked, not dead-lettered.
    assert (
        worker.metric("flow_messages_dead_lettered_total", reason="unknown_reference")
        == 0
    )
