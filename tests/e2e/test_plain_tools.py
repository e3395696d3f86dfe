"""Operating a worker with plain AMQP tooling: Debian's `amqp-publish` (amqp-tools)
runs the README's cookbook commands as written, and `flowctl` finds runs by upper-case
ids and shows unroutable messages.

`amqp-publish` sets neither `type` nor `message_id`: the routing key names the kind,
and a trigger carries its idempotency key in a header.
"""

import asyncio
import json
import re
import shlex
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import pytest

from tests.e2e.harness import PATIENT, REPO, Deployment, Document, Worker, eventually
from tests.integration.test_flowctl import Flowctl

FLOWS = "examples.hello,examples.approval,examples.nightly"
WITHIN = 30.0
OUTCOMES = ("acked", "refused", "dead_lettered", "rejected")
_COOKBOOK = re.compile(r"^## Operations cookbook$(.*?)^## ", re.M | re.S)


@pytest.fixture(scope="session")
def amqp_publish() -> str:
    found = shutil.which("amqp-publish")
    if found is None:
        pytest.fail(
            "needs Debian's amqp-publish: apt-get install amqp-tools "
            "(./scripts/check installs it)",
            pytrace=False,
        )
    return found


def readme_commands() -> list[list[str]]:
    """The `amqp-publish` commands of the README's operations cookbook, as argv."""
    found = _COOKBOOK.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert found is not None, "the README has no operations cookbook"
    return [
        shlex.split(line)
        for line in found.group(1).splitlines()
        if line.startswith("amqp-publish ")
    ]


def tools_url(url: str) -> str:
    """`url` as amqp-tools read it: a trailing `/` would name the empty vhost."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="")) if parts.path == "/" else url


async def run_tool(
    amqp_publish: str, deployment: Deployment, argv: list[str], run: str = ""
) -> None:
    """Run one cookbook command against `deployment`: its exchange, its broker."""
    args = [
        arg.replace("flow.ingress", f"{deployment.prefix}.ingress").replace(
            "<run>", run
        )
        for arg in argv[1:]
    ]
    command = [amqp_publish, "-u", tools_url(deployment.amqp_url), *args]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, (command, done.stderr)


def consumed(worker: Worker, kind: str, outcome: str | None = None) -> float:
    outcomes = OUTCOMES if outcome is None else (outcome,)
    return sum(
        worker.metric("flow_messages_consumed_total", kind=kind, outcome=each)
        for each in outcomes
    )


async def until_consumed(worker: Worker, kind: str, count: int) -> None:
    async def done() -> bool:
        return await asyncio.to_thread(consumed, worker, kind) >= count

    await eventually(done, within=WITHIN, what=f"{count} {kind} consumed")


async def approval_waiting(deployment: Deployment) -> str:
    """A run of `approval` parked on its signal; its run id."""
    job_id = await deployment.trigger("approval", {"approver": "ops"})

    async def parked() -> str | None:
        run = await deployment.run_of_job(job_id)
        if run is None:
            return None
        steps = await deployment.steps(run_id=run["_id"], key="approval")
        waiting = bool(steps) and steps[0]["status"] == "Pending"
        return str(run["_id"]) if waiting else None

    return await eventually(parked, within=WITHIN, what="approval waiting")


async def final(deployment: Deployment, run_id: str) -> Document:
    async def done() -> Document | None:
        runs = await deployment.runs(_id=run_id)
        return runs[0] if runs and runs[0]["status"] != "Running" else None

    return await eventually(done, within=WITHIN, what=f"run {run_id} final")


async def test_the_cookbook_commands_operate_the_service(
    deployment: Deployment, amqp_publish: str
):
    commands = {argv[argv.index("-r") + 1]: argv for argv in readme_commands()}
    worker = deployment.start_worker(FLOW_MODULES=FLOWS, **PATIENT)
    await worker.ready()
    signalled = await approval_waiting(deployment)
    cancelled = await approval_waiting(deployment)

    # A trigger with its idempotency key in a header, twice: one run.
    for count in (1, 2):
        await run_tool(amqp_publish, deployment, commands["trigger.hello"])
        await until_consumed(worker, "trigger", count + 2)
    # Upper-case run ids: UUIDs are case-insensitive.
    runs = {
        "control.retry_step": signalled,
        "control.cancel_run": cancelled,
        "control.signal": signalled,
    }
    for key, argv in commands.items():
        if key.startswith("control."):
            kind = key.removeprefix("control.")
            before = consumed(worker, kind)
            await run_tool(amqp_publish, deployment, argv, runs.get(key, "").upper())
            await until_consumed(worker, kind, int(before) + 1)

    [hello] = await deployment.runs(idem="order-42")
    assert str(hello["job_id"]).startswith("body:")
    assert (await final(deployment, hello["_id"]))["status"] == "Succeeded"
    assert (await final(deployment, signalled))["status"] == "Succeeded"
    assert (await final(deployment, cancelled))["status"] == "Cancelled"
    [fulfil] = await deployment.steps(run_id=signalled, key="fulfil")
    assert json.loads(fulfil["output"])["approved_by"] == "ops"
    assert consumed(worker, "retry_step", "refused") == 1  # no step `charge` here
    [hello_flow] = await deployment.db.flows.find({"name": "hello"}).to_list(None)
    assert hello_flow["enabled"] is True
    [schedule] = await deployment.db.schedules.find({"trigger_key": "nightly"}).to_list(
        None
    )
    assert (schedule["paused"], schedule["cron_override"]) == (False, "0 3 * * *")
    kinds = {key.removeprefix("control.") for key in commands} - {"trigger.hello"}
    assert kinds == {
        "retry_step",
        "cancel_run",
        "signal",
        "disable_flow",
        "enable_flow",
        "pause_schedule",
        "resume_schedule",
        "set_cron",
    }
    dead = sum(consumed(worker, k, "dead_lettered") for k in {*kinds, "trigger"})
    assert dead == 0


@pytest.mark.parametrize(
    ("routing_key", "body", "why"),
    [
        ("trigger.hello", {"flow": "hello"}, "idempotency key"),
        ("control.rerun", {"run_id": str(uuid4())}, "second run"),
        (
            "control.trigger_schedule_now",
            {"flow": "nightly", "trigger_key": "nightly"},
            "second run",
        ),
    ],
    ids=["trigger-without-key", "rerun", "trigger-schedule-now"],
)
async def test_what_needs_a_message_id_is_dead_lettered_without_one(
    deployment: Deployment, amqp_publish: str, routing_key: str, body: Any, why: str
):
    worker = deployment.start_worker(FLOW_MODULES=FLOWS, **PATIENT)
    await worker.ready()

    argv = ["amqp-publish", "-e", "flow.ingress", "-r", routing_key, "-p"]
    await run_tool(amqp_publish, deployment, [*argv, "-b", json.dumps(body)])

    [letter] = await deployment.dead_letters(1, within=WITHIN)
    assert letter.headers["x-dead-letter-reason"] == "no_message_id"
    assert why in str(letter.headers["x-dead-letter-detail"])
    assert await deployment.count_runs() == 0


async def test_an_unroutable_message_is_counted_listed_and_replayed(
    deployment: Deployment, amqp_publish: str
):
    worker = deployment.start_worker(FLOW_MODULES=FLOWS, **PATIENT)
    await worker.ready()
    cli = Flowctl(deployment)
    body = '{"flow":"hello","body":{"name":"Ada"}}'

    argv = ["amqp-publish", "-e", "flow.ingress", "-r", "orders", "-b", body]
    await run_tool(amqp_publish, deployment, argv)

    async def dead(count: int) -> bool:
        metric = "flow_messages_dead_lettered_total"
        found = await asyncio.to_thread(worker.metric, metric, reason="unroutable")
        return found >= count

    await eventually(lambda: dead(1), within=WITHIN, what="dead-lettered")
    [listed] = (await cli.json("dlq", "list"))["items"]
    # Still unbound: the replay is dead-lettered again, and says so (exit 1).
    replayed = await cli("dlq", "replay", listed["letter_id"])
    await eventually(lambda: dead(2), within=WITHIN, what="dead-lettered again")
    [again] = (await cli.json("dlq", "list"))["items"]

    assert (listed["reason"], listed["routing_key"]) == ("unroutable", "orders")
    assert listed["exchange"] == f"{deployment.prefix}.ingress"
    assert listed["letter_id"].startswith("body:")
    assert listed["body"] == body
    assert replayed.exit_code == 1
    assert "dead-lettered again" in replayed.stdout
    assert "-> orders): unroutable" in replayed.stdout
    assert (again["letter_id"], again["reason"]) == (listed["letter_id"], "unroutable")
    assert await deployment.count_runs() == 0


async def test_flowctl_finds_a_run_by_its_id_in_upper_case(deployment: Deployment):
    worker = deployment.start_worker(FLOW_MODULES=FLOWS, **PATIENT)
    await worker.ready()
    cli = Flowctl(deployment)
    run_id = str(uuid4())
    await deployment.publish(
        "trigger.approval",
        json.dumps({"flow": "approval", "run_id": run_id.upper()}).encode(),
        kind="trigger",
        message_id=str(uuid4()),
    )

    async def parked() -> bool:
        rows = await deployment.steps(run_id=run_id, key="approval")
        return bool(rows) and rows[0]["status"] == "Pending"

    await eventually(parked, within=WITHIN, what="approval waiting")
    shown = await cli.json("run", run_id.upper())
    by_prefix = await cli.json("run", run_id.upper()[:13])
    await cli.ok("signal", run_id.upper(), "approval", "--payload", '{"by":"ops"}')

    assert shown["run"]["run_id"] == run_id
    assert by_prefix["run"]["run_id"] == run_id
    assert (await final(deployment, run_id))["status"] == "Succeeded"
