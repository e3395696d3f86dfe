"""The README's first command with `--console`: the demo runs, then its console serves
the runs it made to the operator it prints, until Ctrl-C.

Runs `scripts/demo.py` (what `./scripts/demo` execs once the environment is synced)
with this test's broker prefix and database, and `UV_NO_SYNC`, so that the processes it
starts with `uv run` leave the test environment's extras alone.
"""

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.dashboard_support import csrf_of
from tests.e2e.harness import Deployment, eventually, free_port

REPO = Path(__file__).resolve().parents[2]
CONSOLE = re.compile(
    r"console: (http://127\.0\.0\.1:\d+) +\(user (\w+), password (\S+)\)"
)


async def test_the_demo_with_console_serves_its_runs_until_interrupted(
    deployment: Deployment,
):
    env = deployment.env(DASHBOARD_PORT=str(free_port()), UV_NO_SYNC="1")
    env.pop("FLOW_MODULES")  # the demo's worker runs the examples, as by default
    log = deployment.logs / f"{deployment.prefix}-demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(  # noqa: ASYNC220 - started once, waited in a thread
            [sys.executable, "scripts/demo.py", "--console"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        async def console() -> re.Match[str] | None:
            if demo.poll() is not None:
                raise AssertionError(f"the demo exited:\n{log.read_text()}")
            return CONSOLE.search(log.read_text(errors="replace"))

        found = await eventually(console, within=180, what="the console is served")
        url, user, password = found.groups()
        async with httpx.AsyncClient(base_url=url) as web:
            page = await web.get("/login")
            await web.post(
                "/login",
                data={"name": user, "password": password, "csrf": csrf_of(page.text)},
            )
            runs = await web.get("/runs?flow=hello")

        assert runs.status_code == 200
        assert "Succeeded" in runs.text
        assert "all runs" not in log.read_text()  # still serving, worker running
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        code = await asyncio.to_thread(demo.wait, 60)
    shown = log.read_text()
    assert code == 0, shown
    assert "console stopped, exit code 0" in shown
    assert "worker stopped (SIGTERM), exit code 0" in shown
    assert "all runs reached their expected status" in shown
