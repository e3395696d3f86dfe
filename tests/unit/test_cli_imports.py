"""`flowctl` imports only what a command needs (issue 10, item 14).

Start-up time is measured by `benchmarks/cli_startup.py`; this checks the cause:
`--help` loads no driver, no pydantic and no event loop, and a read command loads
MongoDB's driver but not the broker's client, the wire contracts or structlog.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
PROBE = """
import json, sys
sys.argv = ["flowctl", *json.loads(sys.argv[1])]
from service.cli import flowctl
try:
    flowctl.main(prog_name="flowctl")
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
DRIVERS = {"pymongo", "bson", "aio_pika", "aiormq", "pamqp"}
HEAVY = {"pydantic", "pydantic_core", "pydantic_settings", "structlog", "contracts"}


def loaded(*arguments: str) -> set[str]:
    env = {
        **os.environ,
        "MONGODB_URL": "mongodb://127.0.0.1:1/?directConnection=true",
        "MONGODB_TIMEOUT": "0.2",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(arguments)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize(
    "arguments",
    [
        ["--help"],
        ["run", "--help"],
        ["runs", "--help"],
        ["trigger", "--help"],
        ["dlq", "replay", "--help"],
        ["schedules", "pause", "--help"],
        ["worker", "--help"],
    ],
    ids=lambda arguments: " ".join(arguments),
)
def test_help_loads_no_driver_no_pydantic_and_no_event_loop(arguments: list[str]):
    found = loaded(*arguments)

    assert "service" in found
    assert not found & (DRIVERS | HEAVY | {"asyncio"}), found & (DRIVERS | HEAVY)


@pytest.mark.parametrize(
    "arguments",
    [["runs"], ["run", "some-run"], ["flows"], ["schedules"]],
    ids=lambda arguments: " ".join(arguments),
)
def test_a_read_command_loads_mongodb_but_not_the_broker_or_the_contracts(
    arguments: list[str],
):
    found = loaded(*arguments)  # MongoDB is unreachable here: it fails, loaded

    assert "pymongo" in found
    assert not found & {"aio_pika", "aiormq", "pamqp", "contracts", "structlog"}
