"""`flowctl` against a real worker process, a real RabbitMQ and the real mongod.

Each test has its own topology prefix, database and worker (the e2e `Deployment`), and
drives it only through `flowctl` commands (click's CliRunner, run in a thread because
each command runs its own event loop), reading MongoDB directly only to wait.
"""

import asyncio
import gc
import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from click.testing import CliRunner, Result

from service.cli import flowctl
from tests.e2e.harness import PATIENT, REPO, Deployment, eventually, json_field

FLOWS = (
    "examples.hello,examples.approval,examples.nightly,tests.integration.flowctl_flows"
)
WAIT = 30.0


class Flowctl:
    """`flowctl` pointed at one deployment by its group options."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.options = [
            "--amqp-url",
            deployment.amqp_url,
            "--prefix",
            deployment.prefix,
            "--mongodb-url",
            deployment.mongodb_url,
            "--database",
            deployment.database,
        ]

    async def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        return await asyncio.to_thread(
            CliRunner().invoke,
            flowctl,
            [*self.options, *args],
            input=stdin,
            env=env,
            catch_exceptions=False,
        )

    async def ok(self, *args: str, stdin: str | None = None) -> Result:
        result = await self(*args, stdin=stdin)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert result.stderr == ""
        return result

    async def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads((await self.ok(*args, "--json", stdin=stdin)).stdout)

    async def fails(self, *args: str, code: int, stdin: str | None = None) -> str:
        """The one line on stderr of a command that must exit with `code`."""
        result = await self(*args, stdin=stdin)
        assert result.exit_code == code, (result.stdout, result.stderr)
        [line] = result.stderr.splitlines()
        assert line.startswith("flowctl: ")
        return line


@pytest.fixture
async def deployment(
    rabbitmq_url: str, mongodb_url: str, tmp_path: Path
) -> AsyncIterator[Deployment]:
    made = Deployment(amqp_url=rabbitmq_url, mongodb_url=mongodb_url, logs=tmp_path)
    yield made
    print(made.report())  # noqa: T201 - shown by pytest when the test failed
    await made.close()


@pytest.fixture
async def cli(deployment: Deployment) -> Flowctl:
    """flowctl, with a worker of FLOWS running."""
    worker = deployment.start_worker(FLOW_MODULES=FLOWS, **PATIENT)
    await worker.ready()
    return Flowctl(deployment)


async def step_status(deployment: Deployment, run_id: str, key: str) -> str | None:
    row = await deployment.db.steps.find_one({"run_id": run_id, "key": key})
    return None if row is None else str(row["status"])


async def run_status(deployment: Deployment, run_id: str, status: str) -> None:
    async def reached() -> bool:
        run = await deployment.db.runs.find_one({"_id": run_id})
        return run is not None and run["status"] == status

    await eventually(reached, within=WAIT, what=f"run {run_id} {status}")


async def waiting_for_approval(deployment: Deployment, run_id: str) -> None:
    async def parked() -> bool:
        return await step_status(deployment, run_id, "approval") == "Pending"

    await eventually(parked, within=WAIT, what=f"run {run_id} waiting")


async def test_trigger_waits_for_the_run_and_runs_and_run_show_it(cli: Flowctl):
    waited = await cli.ok("trigger", "hello", "--body", '{"name": "Ada"}', "--wait")
    from_stdin = await cli.json(
        "trigger",
        "hello",
        "--body-file",
        "-",
        "--header",
        "x-request-id=r-1",
        "--idempotency-key",
        "Order-7",
        stdin='{"name": "Bob"}',
    )
    again = await cli.json("trigger", "hello", "--idempotency-key", "order-7 ")

    assert "status   accepted" in waited.stdout
    assert "status       Succeeded" in waited.stdout
    assert "sign   Sign   Succeeded" in waited.stdout
    assert (from_stdin["status"], again["status"]) == ("accepted", "duplicate")
    assert again["run_id"] == from_stdin["run_id"]
    await run_status(cli.deployment, from_stdin["run_id"], "Succeeded")

    listed = await cli.json("runs", "--flow", "hello")
    table = await cli.ok("runs", "--status", "succeeded", "--since", "1h")
    shown = await cli.json("run", from_stdin["run_id"])
    by_prefix = await cli.ok("run", from_stdin["run_id"][:13])

    assert listed["total"] == 2
    assert from_stdin["run_id"] in {run["run_id"] for run in listed["items"]}
    assert table.stdout.splitlines()[-1] == "runs 1-2 of 2"
    assert shown["run"]["headers"]["x-request-id"] == "r-1"
    assert shown["run"]["idempotency_key"] == "order-7"
    assert shown["run"]["body"] == {"name": "Bob"}
    assert [step["status"] for step in shown["steps"]] == ["Succeeded"] * 3
    assert shown["events"][-1]["type"] == "run.completed"
    assert f"run          {from_stdin['run_id']}" in by_prefix.stdout
    assert "Events" in by_prefix.stdout


async def test_a_failed_step_is_retried_and_the_run_succeeds(cli: Flowctl):
    failed = await cli("trigger", "flaky", "--body", '{"amount": 5}', "--wait")
    [run] = (await cli.json("runs", "--flow", "flaky"))["items"]

    assert failed.exit_code == 1
    assert (
        failed.stderr.strip() == f"flowctl: error: run {run['run_id']} finished Failed"
    )
    assert "card declined (first attempt)" in failed.stdout

    retried = await cli.ok("retry", run["run_id"], "charge")
    await run_status(cli.deployment, run["run_id"], "Succeeded")
    shown = await cli.json("run", run["run_id"])
    text = await cli.ok("run", run["run_id"])
    refused = await cli.fails("retry", run["run_id"], "charge", code=1)

    assert "status   accepted" in retried.stdout
    assert "Step 'charge' retry enqueued." in retried.stdout
    charge = next(step for step in shown["steps"] if step["key"] == "charge")
    assert [a["status"] for a in charge["attempts"]] == ["Failed", "Succeeded"]
    assert "Attempts of charge" in text.stdout
    assert refused == (
        "flowctl: refused: Only a Failed step can be retried (status: Succeeded)."
    )


async def test_cancel_signal_and_rerun_of_waiting_runs(cli: Flowctl):
    first = await cli.json("trigger", "approval", "--body", '{"approver": "ops"}')
    second = await cli.json("trigger", "approval", "--body", '{"approver": "ops"}')
    await waiting_for_approval(cli.deployment, first["run_id"])
    await waiting_for_approval(cli.deployment, second["run_id"])

    cancelled = await cli.ok("cancel", first["run_id"], "--reason", "withdrawn")
    signalled = await cli.json(
        "signal", second["run_id"], "approval", "--payload", '{"by": "alice"}'
    )
    await run_status(cli.deployment, first["run_id"], "Cancelled")
    await run_status(cli.deployment, second["run_id"], "Succeeded")

    assert "status   accepted" in cancelled.stdout
    assert (signalled["status"], signalled["step_key"]) == ("delivered", "approval")
    shown = await cli.json("run", first["run_id"])
    assert shown["run"]["cancel_reason"] == "withdrawn"
    fulfil = await cli.deployment.db.steps.find_one(
        {"run_id": second["run_id"], "key": "fulfil"}
    )
    assert fulfil is not None
    assert json_field(fulfil, "output") == {"fulfilled": True, "approved_by": "alice"}

    again = await cli.fails("cancel", first["run_id"], code=1)
    late = await cli.fails("signal", second["run_id"], "approval", code=1)
    rerun = await cli.json("rerun", second["run_id"])

    assert again == "flowctl: refused: Run is not active (status: Cancelled)."
    assert late == "flowctl: refused: Run is not active (status: Succeeded)."
    assert rerun["status"] == "accepted"
    await waiting_for_approval(cli.deployment, rerun["run_id"])
    copy = await cli.json("run", rerun["run_id"])
    assert copy["run"]["source_run_id"] == second["run_id"]
    assert copy["run"]["body"] == {"approver": "ops"}
    # Lineage both ways: the source lists the runs derived from it.
    origin = await cli.json("run", second["run_id"])
    origin_text = await cli.ok("run", second["run_id"])
    derived = await cli.json("runs", "--source", second["run_id"][:13])
    assert [d["run_id"] for d in origin["derived_runs"]] == [rerun["run_id"]]
    assert f"derived runs  {rerun['run_id']}" in origin_text.stdout
    assert [run["run_id"] for run in derived["items"]] == [rerun["run_id"]]
    assert (await cli.json("runs", "--source", first["run_id"]))["total"] == 0


async def test_flows_can_be_switched_and_schedules_paused_resumed_and_retimed(
    cli: Flowctl,
):
    disabled = await cli.ok("flows", "disable", "hello")
    refused = await cli.fails("trigger", "hello", code=1)
    await cli.ok("flows", "enable", "hello")
    started = await cli.json("trigger", "hello")

    assert "Flow 'hello' disabled." in disabled.stdout
    assert refused == "flowctl: disabled: The flow is disabled: no run started."
    assert started["status"] == "accepted"

    # The flow has one cron trigger: it need not be named.
    said = await cli.ok("schedules", "pause", "nightly")
    paused = await _nightly_schedule(cli)
    listed = await cli.ok("schedules")
    await cli.ok("schedules", "resume", "nightly", "nightly")
    resumed = await _nightly_schedule(cli)
    await cli.ok("schedules", "set-cron", "nightly", "*/10 * * * *")
    retimed = await _nightly_schedule(cli)
    bad = await cli.fails("schedules", "set-cron", "nightly", "nightly", "x", code=1)
    await cli.ok("schedules", "set-cron", "nightly", "--clear")
    cleared = await _nightly_schedule(cli)
    fired = await cli.json("schedules", "trigger", "nightly")
    no_cron = await cli.fails("schedules", "pause", "hello", code=1)
    not_cron = await cli.fails("schedules", "pause", "nightly", "manual", code=1)

    assert "Schedule 'nightly' of flow 'nightly' paused." in said.stdout
    assert "flow-" not in said.stdout  # no internal job id
    assert ["trigger", "nightly"] in [line.split() for line in said.stdout.splitlines()]
    assert listed.stdout.splitlines()[1].split()[-2:] == ["paused", "paused"]
    assert no_cron == "flowctl: error: flow 'hello' has no cron trigger"
    assert not_cron == (
        "flowctl: error: flow 'nightly' has no cron trigger 'manual' (its cron "
        "triggers: nightly)"
    )

    assert (paused["paused"], paused["next_fire_at"]) == (True, None)
    assert resumed["paused"] is False
    assert resumed["next_fire_at"] is not None
    assert retimed["cron_override"] == "*/10 * * * *"
    assert bad.startswith("flowctl: refused: Invalid cron")
    assert cleared["cron_override"] is None
    await run_status(cli.deployment, fired["run_id"], "Succeeded")
    listing = await cli.ok("flows")
    assert "nightly (cron), manual (manual)" in listing.stdout
    assert "Schedules" in listing.stdout


async def test_write_commands_resolve_their_run_or_flow_before_publishing(
    cli: Flowctl,
):
    started = await cli.json(
        "trigger", "approval", "--idempotency-key", "Approve-7", "--body", "{}"
    )
    await waiting_for_approval(cli.deployment, started["run_id"])

    unknown = [
        await cli.fails(*arguments, code=1)
        for arguments in (
            ["retry", "no-such-run", "charge"],
            ["cancel", "no-such-run"],
            ["signal", "no-such-run", "approval"],
            ["rerun", "no-such-run"],
            ["trigger", "no-such-flow"],
            ["trigger", "hello", "--trigger-key", "nightly"],
            ["flows", "disable", "no-such-flow"],
        )
    ]
    # The idempotency key is a run reference, as for `flowctl run`.
    by_key = await cli.json("signal", "approve-7", "approval")
    await run_status(cli.deployment, started["run_id"], "Succeeded")
    by_key_again = await cli.json("rerun", "approve-7")

    database = f"in database '{cli.deployment.database}'"
    assert unknown[:4] == [f"flowctl: error: no run 'no-such-run' {database}"] * 4
    assert unknown[4] == f"flowctl: error: no flow 'no-such-flow' {database}"
    assert unknown[5] == (
        "flowctl: error: no trigger 'nightly' on flow 'hello' (its triggers: manual)"
    )
    assert unknown[6] == f"flowctl: error: no flow 'no-such-flow' {database}"
    assert (by_key["status"], by_key["run_id"]) == ("delivered", started["run_id"])
    assert by_key_again["status"] == "accepted"
    # Nothing of the operator's typos reached a worker's dead-letter queue.
    assert (await cli.json("dlq", "list"))["total"] == 0


async def _nightly_schedule(cli: Flowctl) -> dict[str, Any]:
    flows = await cli.json("flows")
    [nightly] = [flow for flow in flows if flow["name"] == "nightly"]
    [trigger] = [t for t in nightly["triggers"] if t["key"] == "nightly"]
    schedule: dict[str, Any] = trigger["schedule"]
    return schedule


async def test_a_flow_is_drawn_as_mermaid(cli: Flowctl):
    drawn = await cli.ok("flows", "show", "approval", "--mermaid")
    by_id = await cli.ok(
        "flows", "show", "1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0007", "--mermaid"
    )
    text = await cli.ok("flows", "show", "approval")

    assert drawn.stdout.startswith("flowchart TD\n")
    assert 'step_request -->|"Succeeded"| step_approval' in drawn.stdout
    assert "trigger_manual --> step_request" in drawn.stdout
    assert by_id.stdout == drawn.stdout
    assert "approval  WaitForSignal    request: Succeeded" in text.stdout


async def test_dead_letters_are_listed_shown_replayed_and_purged(
    deployment: Deployment,
):
    # A worker without `hello`: its triggers are dead-lettered as unknown.
    first = deployment.start_worker(FLOW_MODULES="examples.approval")
    await first.ready()
    cli = Flowctl(deployment)
    await deployment.publish(
        "trigger.hello", b"{not json", kind="trigger", message_id="broken-1"
    )
    await deployment.trigger("hello", {"name": "Eve"}, message_id="early-1")
    await deployment.publish_without_message_id(
        "trigger.hello", b'{"flow": "hello"}', kind="trigger"
    )
    await _letters(cli, 3)

    listed = await cli.json("dlq", "list")
    again = await cli.json("dlq", "list", "--limit", "1")
    table = await cli.ok("dlq", "list")
    shown = await cli.ok("dlq", "show", "early-1")
    shown_again = await cli.ok("dlq", "show", "early-1")
    as_json = [await cli.json("dlq", "show", "early-1") for _ in range(2)]
    missing = await cli.fails("dlq", "show", "nope", code=1)
    unknown = await cli.json("dlq", "list", "--reason", "UNKNOWN_REFERENCE")
    dry = await cli.ok("dlq", "replay", "--all", "--kind", "trigger", "--dry-run")

    reasons = {item["letter_id"]: item["reason"] for item in listed["items"]}
    [anonymous] = [key for key, why in reasons.items() if why == "no_message_id"]
    assert reasons == {
        "broken-1": "not_json",
        "early-1": "unknown_reference",
        anonymous: "no_message_id",
    }
    assert (await cli.json("dlq", "show", anonymous))["reason"] == "no_message_id"
    assert (again["total"], len(again["items"])) == (3, 1)
    assert "3 of 3 dead letters" in table.stdout
    assert "reason       unknown_reference" in shown.stdout
    assert "routing key  trigger.hello" in shown.stdout
    assert '"name": "Eve"' in shown.stdout
    # Looking changes nothing: the same letter, however often it is shown.
    assert shown_again.stdout == shown.stdout
    assert as_json[0] == as_json[1]
    assert [item["letter_id"] for item in unknown["items"]] == ["early-1"]
    assert unknown["total"] == 1
    assert "would replay early-1 (trigger -> trigger.hello)" in dry.stdout
    assert dry.stdout.splitlines()[-1] == "3 would replay"
    assert (await cli.json("dlq", "list"))["items"] == listed["items"]
    assert (
        missing == f"flowctl: error: no dead letter 'nope' in {deployment.prefix}.dead"
    )

    # The flow is deployed now: the replayed trigger starts its run.
    first.send(signal.SIGTERM)
    await first.exited(within=WAIT)
    second = deployment.start_worker(FLOW_MODULES=FLOWS)
    await second.ready()
    replayed = await cli.ok("dlq", "replay", "early-1")
    [run] = await deployment.finished(["early-1"], within=WAIT)

    assert "replayed early-1 (trigger -> trigger.hello): accepted" in replayed.stdout
    assert run["status"] == "Succeeded"
    left = await cli.json("dlq", "list")
    order = [item["letter_id"] for item in listed["items"]]
    assert [item["letter_id"] for item in left["items"]] == [
        key for key in order if key != "early-1"
    ]

    # The dead letter of the id-less trigger got an id from the client library, so
    # its replay starts a run; the broken one dies again, and is purged.
    everything = await cli("dlq", "replay", "--all")
    [rescued] = await deployment.finished([anonymous], within=WAIT)
    await _letters(cli, 1)
    kept = await cli.fails("dlq", "purge", code=1, stdin="n\n")
    purged = await cli.ok("dlq", "purge", "--yes")

    assert everything.exit_code == 1
    assert everything.stderr == ("flowctl: error: 1 of 2 letter(s) not replayed well\n")
    assert "dead-lettered again broken-1 (trigger -> trigger.hello): not_json" in (
        everything.stdout
    )
    assert everything.stdout.splitlines()[-1] == "1 dead-lettered again, 1 replayed"
    assert rescued["status"] == "Succeeded"
    assert kept == "flowctl: error: aborted"
    assert purged.stdout.strip() == (
        f"purged 1 dead letter(s) from {deployment.prefix}.dead"
    )
    assert (await cli.json("dlq", "list"))["total"] == 0


async def _letters(cli: Flowctl, count: int) -> None:
    async def there() -> bool:
        listed = await cli.json("dlq", "list")
        return len(listed["items"]) == count

    await eventually(there, within=WAIT, what=f"{count} dead letters")


ERRORS = [
    # (arguments, exit code, what the one line says)
    (["run", "00000000-0000-4000-8000-000000000000"], 1, "no run '00000000"),
    (["trigger", "hello", "--body", "{nope"], 2, "Invalid value for --body"),
    (["trigger", "hello", "--body", "{}", "--body-file", "-"], 2, "not both"),
    (["signal", "r", "s", "--payload", "[1,"], 2, "not valid JSON"),
    (["trigger"], 2, "Missing argument 'FLOW'"),
    (["runs", "--since", "yesterday"], 2, "neither ISO 8601 nor an age"),
    (["--prefix", "nobody", "dlq", "list"], 1, "no queue 'nobody.dead'"),
    (
        ["--amqp-url", "amqp://guest:secret@127.0.0.1:1/", "dlq", "show", "x"],
        3,
        "RabbitMQ at amqp://guest:***@127.0.0.1:1/ is unreachable",
    ),
    (["cancel", "r"], 1, "no run 'r' in database"),
    (["trigger", "nope"], 1, "no flow 'nope' in database"),
    (
        ["--amqp-url", "amqp://guest:guest@127.0.0.1:1/", "dlq", "list"],
        3,
        "is unreachable",
    ),
    (
        ["--mongodb-url", "mongodb://127.0.0.1:1/?directConnection=true", "runs"],
        3,
        "MongoDB at mongodb://127.0.0.1:1/?directConnection=true is unreachable",
    ),
]


# Closing a client whose connect to an unreachable server is still pending can leave
# that attempt's socket to the garbage collector (pymongo's pool, not our code); under
# `filterwarnings = error` its ResourceWarning would fail whichever test it lands in.
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    ("arguments", "code", "says"),
    ERRORS,
    ids=[
        "unknown-run",
        "bad-json-body",
        "two-bodies",
        "bad-json-payload",
        "missing-argument",
        "bad-instant",
        "no-topology",
        "broker-unreachable",
        "broker-unreachable-dlq",
        "unknown-run-to-cancel",
        "unknown-flow-to-trigger",
        "mongodb-unreachable",
    ],
)
async def test_an_error_is_one_line_on_stderr_and_a_non_zero_exit(
    deployment: Deployment, arguments: list[str], code: int, says: str
):
    cli = Flowctl(deployment)

    result = await cli(*arguments, env={"MONGODB_TIMEOUT": "1"})
    gc.collect()  # any abandoned socket is collected here, under this test's filters

    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("flowctl: error: ")
    assert says in line


async def test_no_reply_in_time_is_an_error_and_the_request_waits_in_the_queue(
    deployment: Deployment,
):
    worker = deployment.start_worker(FLOW_MODULES=FLOWS)
    await worker.ready()
    worker.send(signal.SIGTERM)  # the topology stays; nobody consumes
    await worker.exited(within=WAIT)
    cli = Flowctl(deployment)

    line = await cli.fails("trigger", "hello", "--timeout", "0.5", code=3)
    later = deployment.start_worker(FLOW_MODULES=FLOWS)
    await later.ready()

    assert line.startswith("flowctl: error: no reply to trigger within 0.5 s")

    async def handled() -> bool:
        return await deployment.count_runs(flow_name="hello") == 1

    await eventually(handled, within=WAIT, what="the queued trigger handled")


def test_the_installed_command_prints_only_its_one_line_when_the_broker_is_down():
    # A real process: the drivers' own log lines would reach stderr here.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from service.cli import main; main()",
            "--amqp-url",
            "amqp://guest:guest@127.0.0.1:1/",
            "--prefix",
            f"t{uuid4().hex[:8]}",
            "dlq",
            "list",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "flowctl: error: RabbitMQ at amqp://guest:***@127.0.0.1:1/ is unreachable: "
        "AMQPConnectionError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    ]


ANSI = re.compile(rb"\x1b\[")


async def test_json_with_wait_is_one_document_and_pipes_get_no_ansi(cli: Flowctl):
    waited = await cli.ok("trigger", "hello", "--wait", "--json", "--body", "{}")
    document = json.loads(waited.stdout)  # one document, nothing before or after
    run_id = document["run"]["run_id"]

    assert document["reply"]["status"] == "accepted"
    assert document["reply"]["run_id"] == run_id
    assert [step["status"] for step in document["steps"]] == ["Succeeded"] * 3
    for arguments in (
        ["run", run_id],
        ["runs"],
        ["flows"],
        ["schedules"],
        ["dlq", "list"],
        ["run", "no-such-run"],
    ):
        piped = await asyncio.to_thread(_flowctl, cli, arguments, terminal=False)
        assert not ANSI.search(piped), (arguments, piped)
        on_terminal = await asyncio.to_thread(
            _flowctl, cli, ["--no-color", *arguments], terminal=True
        )
        assert not ANSI.search(on_terminal), (arguments, on_terminal)
        assert on_terminal.strip(), arguments
    coloured = await asyncio.to_thread(_flowctl, cli, ["run", run_id], terminal=True)
    assert ANSI.search(coloured)  # on a terminal, colour stays the default


def _flowctl(cli: Flowctl, arguments: list[str], *, terminal: bool) -> bytes:
    """Everything a real `flowctl` process writes, on pipes or on a terminal."""
    command = [
        sys.executable,
        "-c",
        "from service.cli import main; main()",
        *cli.options,
        *arguments,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    env["TERM"] = "xterm"
    if not terminal:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, timeout=60, check=False
        )
        return done.stdout + done.stderr
    main, child = pty.openpty()
    try:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=child, stdout=child, stderr=child
        )
        os.close(child)
        output = bytearray()
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        process.wait(timeout=60)
        return bytes(output)
    finally:
        os.close(main)
