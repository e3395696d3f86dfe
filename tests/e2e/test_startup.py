"""How a worker starts: its options, a refusal in one line, and waiting for services.

`python -m service` is `flowctl worker`: the same options and exit codes. A start-up
failure is one line naming its cause (exit 2 for a setting, 1 for an invalid flow);
while MongoDB or RabbitMQ does not answer, the worker is alive, not ready, and says
which URL it tries (password masked) and that it keeps trying.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.e2e.harness import REPO, Deployment, Worker, eventually, free_port

DEADLINE = 30
"""Seconds a process that must exit by itself gets before the test fails."""


def _run(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def test_help_prints_the_options_of_flowctl_worker_and_exits_0():
    shown = _run("--help")
    flowctl = subprocess.run(
        [sys.executable, "-c", "from service.cli import main; main()", "worker", "-h"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )

    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    assert shown.stdout.startswith("Usage: python -m service [OPTIONS]\n")
    assert "Run a worker until SIGTERM" in shown.stdout
    assert "-h, --help" in shown.stdout
    assert flowctl.returncode == 0
    assert flowctl.stdout.replace("flowctl worker", "python -m service") == shown.stdout


def test_an_unknown_option_is_a_usage_error():
    refused = _run("--bogus")

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "python -m service: error: No such option '--bogus'. "
        "(see 'python -m service --help')"
    ]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"HEALTH_PORT": "http"}, "invalid settings: HEALTH_PORT: Input should be"),
        ({"STEP_LEASE": "5", "STEP_HEARTBEAT": "9"}, "invalid settings: "),
        (
            {"MONGODB_URL": "mongodb://flow:s3cret@[broken"},
            "MONGODB_URL mongodb://flow:***@[broken can't be used",
        ),
    ],
    ids=["not-a-port", "heartbeat-above-lease", "malformed-mongodb-url"],
)
def test_an_invalid_setting_is_one_line_and_exit_2(env: dict[str, str], says: str):
    refused = _run(env=_env(**{"HEALTH_PORT": "0", **env}))

    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.splitlines()
    assert line.startswith("python -m service: error: ")
    assert says in line
    assert "s3cret" not in refused.stdout + refused.stderr


def test_a_busy_health_port_is_named_in_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - where the worker listens too
        taken.listen()
        port = taken.getsockname()[1]

        refused = _run(env=_env(HEALTH_PORT=str(port)))

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"python -m service: error: the worker refuses to start: HEALTH_PORT {port} "
        "is in use: another process listens there (choose a free port, or 0 to turn "
        "the health port off)"
    ]
    assert "ExceptionGroup" not in refused.stderr


def _env(**overrides: str) -> dict[str, str]:
    """A worker environment whose services are never reached before the failure."""
    env = dict(os.environ)
    env.update(
        MONGODB_URL=f"mongodb://127.0.0.1:{free_port()}/",
        MONGODB_TIMEOUT="0.5",
        AMQP_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        LOG_JSON="true",
    )
    env.update(overrides)
    return env


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

    code = await worker.exited(within=DEADLINE)

    lines = worker.log().strip().splitlines()
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("python -m service: error: the worker refuses to start")
    assert all(word in lines[0] for word in named), lines[0]


async def test_a_worker_waits_for_mongodb_alive_but_not_ready(deployment: Deployment):
    port = free_port()
    closed = f"mongodb://flow:s3cret@127.0.0.1:{port}/?serverSelectionTimeoutMS=500"
    worker = deployment.start_worker(MONGODB_URL=closed, MONGODB_TIMEOUT="0.5")

    await eventually(lambda: _answers(worker, "/healthz", 200), within=30, what="alive")
    readyz = await asyncio.to_thread(worker.http, "/readyz")
    waiting = await eventually(
        lambda: _deferred(worker, "mongodb"), within=30, what="a warning"
    )
    worker.send(signal.SIGTERM)
    code = await worker.exited(within=15)

    assert readyz == (503, "not ready: starting\n")
    assert code == 0, worker.tail()
    masked = f"mongodb://flow:***@127.0.0.1:{port}/?serverSelectionTimeoutMS=500"
    assert waiting["url"] == masked
    assert waiting["note"].startswith(f"waiting for MongoDB at {masked}: ")
    assert "until it answers" in waiting["note"]
    assert "s3cret" not in worker.log()


async def test_a_worker_waits_for_rabbitmq_naming_it(deployment: Deployment):
    port = free_port()
    worker = deployment.start_worker(AMQP_URL=f"amqp://flow:s3cret@127.0.0.1:{port}/")

    waiting = await eventually(
        lambda: _deferred(worker, "rabbitmq"), within=30, what="a warning"
    )
    worker.send(signal.SIGTERM)
    code = await worker.exited(within=15)

    assert code == 0, worker.tail()
    assert waiting["url"] == f"amqp://flow:***@127.0.0.1:{port}/"
    assert waiting["note"].startswith(
        f"waiting for RabbitMQ at amqp://flow:***@127.0.0.1:{port}/: "
    )
    assert "trying again in" in waiting["note"]
    assert "s3cret" not in worker.log()


async def _deferred(worker: Worker, service: str) -> dict[str, str] | None:
    found = [
        e
        for e in worker.events()
        if e.get("event") == "startup_deferred" and e.get("service") == service
    ]
    return found[0] if found else None


async def _answers(worker: Worker, path: str, status: int) -> bool:
    try:
        answer = await asyncio.to_thread(worker.http, path)
    except OSError:
        return False
    return answer[0] == status
