"""How a worker starts: it refuses an invalid flow; alive, it waits for MongoDB."""

import asyncio
import signal

import pytest

from tests.e2e.harness import Deployment, Worker, eventually, free_port


@pytest.mark.parametrize(
    ("modules", "named"),
    [
        ("tests.e2e.broken", ["broken", "second", "nowhere"]),
        (
            "tests.e2e.flows,tests.e2e.missing",
            ["tests.e2e.missing", "cannot be imported"],
        ),
    ],
    ids=["unknown-run-after-key", "missing-module"],
)
async def test_a_worker_refuses_to_start_on_an_invalid_flow(
    deployment: Deployment, modules: str, named: list[str]
):
    worker = deployment.start_worker(FLOW_MODULES=modules)

    code = await worker.exited(within=30)

    lines = worker.log().strip().splitlines()
    assert code != 0
    assert len(lines) == 1, lines
    assert all(word in lines[0] for word in named), lines[0]


async def test_a_worker_waits_for_mongodb_alive_but_not_ready(deployment: Deployment):
    closed = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500"
    worker = deployment.start_worker(MONGODB_URL=closed, MONGODB_TIMEOUT="0.5")

    await eventually(lambda: _answers(worker, "/healthz", 200), within=30, what="alive")
    readyz = await asyncio.to_thread(worker.http, "/readyz")
    worker.send(signal.SIGTERM)
    code = await worker.exited(within=15)

    assert readyz == (503, "not ready: starting\n")
    assert code == 0, worker.tail()
    assert any(e.get("event") == "startup_deferred" for e in worker.events())


async def _answers(worker: Worker, path: str, status: int) -> bool:
    try:
        answer = await asyncio.to_thread(worker.http, path)
    except OSError:
        return False
    return answer[0] == status
