"""Screenshots of the dashboard's main pages for the README, from real runs.

    uv run python scripts/dashboard_screenshots.py [--out docs]

Starts a worker (the example flows and a flaky one) on the broker at AMQP_URL (default
127.0.0.1:5672) and MongoDB at MONGODB_URL (default: the bundled mongod), with a
prefix and database of its own; publishes a mix of triggers, waits for them, puts two
letters in the dead-letter queue, serves the dashboard and photographs its pages with
Debian's Chromium (/usr/bin/chromium). Everything it made is deleted at the end.
"""

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from uuid import uuid4

from playwright.async_api import Page, async_playwright

from tests.dashboard_support import PASSWORDS, put_dead_letter, served_dashboard
from tests.e2e.harness import PATIENT, Deployment, eventually
from tests.services import LOCAL_BROKER, MongoServer

REPO = Path(__file__).resolve().parents[1]
FLOWS = (
    "examples.hello,examples.orders,examples.branches,examples.failures,"
    "examples.batch,examples.approval,examples.nightly,tests.integration.flowctl_flows"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
]
FLAGS += ["--disable-background-networking", "--disable-component-update"]
FLAGS += ["--disable-sync"]


async def make_runs(deployment: Deployment) -> dict[str, str]:
    """Triggers of every kind; the job ids of the runs worth a picture."""
    jobs = {}
    for n in range(4):
        await deployment.trigger("hello", {"name": f"user {n}"})
    for n in range(3):
        order = {
            "order_id": 100 + n,
            "lines": [{"sku": "A-1", "qty": 2}],
            "amount": 40 + n,
        }
        await deployment.trigger(
            "orders", {**order, "customer": {"email": "a@example.com"}}
        )
    await deployment.trigger("branches", {"score": 70, "vip": True})
    await deployment.trigger("failures", {"fail": True})
    jobs["batch"] = await deployment.trigger(
        "batch", {"items": [f"item-{n}" for n in range(24)]}
    )
    jobs["approval"] = await deployment.trigger("approval", {"approver": "ops"})
    jobs["flaky"] = await deployment.trigger(
        "flaky", {"amount": 42}, headers={"Authorization": "Bearer not-shown"}
    )
    await deployment.trigger("flaky", {"amount": 7})

    async def settled() -> bool:
        # Everything but the approval that waits for its signal has finished.
        running = await deployment.count_runs(status="Running")
        return await deployment.count_runs() >= 10 and running <= 1

    await eventually(settled, within=120, what="the runs to settle", every=0.5)
    return jobs


async def shoot(page: Page, out: Path, name: str, *, full: bool = False) -> None:
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=out / f"dashboard-{name}.png", full_page=full)
    print(f"wrote {out / f'dashboard-{name}.png'}")  # noqa: T201 - a script


async def photograph(
    url: str, deployment: Deployment, jobs: dict[str, str], out: Path
) -> None:
    runs = {}
    for name, job in jobs.items():
        run = await deployment.run_of_job(job)
        if run is None:
            raise SystemExit(f"no run for the {name} trigger")
        runs[name] = run["_id"]
    async with async_playwright() as playwright:
        with tempfile.TemporaryDirectory() as profile:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path="/usr/bin/chromium",
                args=FLAGS,
                headless=True,
                viewport={"width": 1440, "height": 900},
            )
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto(f"{url}/login")
            await shoot(page, out, "login")
            await page.fill("input[name=name]", "ada")
            await page.fill("input[name=password]", PASSWORDS["ada"])
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{url}/runs")
            await shoot(page, out, "runs")
            await page.goto(f"{url}/runs/{runs['flaky']}")
            await page.locator("#dag svg").wait_for()
            await page.click("#step-charge summary")
            await page.locator("#step-charge .cols").wait_for()
            await shoot(page, out, "run-failed", full=True)
            await page.goto(f"{url}/runs/{runs['batch']}")
            await page.locator('#dag g.dag-node[data-id="items"]').click()
            await page.locator('#dag g.dag-node[data-id="items.process"]').wait_for()
            await shoot(page, out, "run-foreach")
            await page.goto(f"{url}/runs/{runs['approval']}")
            await page.locator("#dag svg").wait_for()
            await shoot(page, out, "run-waiting")
            await page.goto(f"{url}/flows")
            await shoot(page, out, "flows")
            await page.goto(f"{url}/schedules")
            await shoot(page, out, "schedules")
            await page.goto(f"{url}/dead-letters")
            await shoot(page, out, "dead-letters")
            await context.close()


async def main(out: Path, mongodb_url: str) -> None:
    amqp_url = os.environ.get("AMQP_URL", LOCAL_BROKER)
    with tempfile.TemporaryDirectory() as logs:
        deployment = Deployment(
            amqp_url=amqp_url, mongodb_url=mongodb_url, logs=Path(logs)
        )
        try:
            worker = deployment.start_worker(FLOW_MODULES=FLOWS, **PATIENT)
            await worker.ready()
            jobs = await make_runs(deployment)
            await put_dead_letter(
                amqp_url,
                deployment.prefix,
                {"flow": "hello", "body": {"name": "late"}},
                kind="trigger",
                routing_key="trigger.hello",
                reason="crashed",
                message_id=str(uuid4()),
            )
            await deployment.publish(
                "trigger.nope", b"{oops", kind="trigger", message_id="m-17"
            )
            async with served_dashboard(
                mongodb_url=mongodb_url,
                database=deployment.database,
                amqp_url=amqp_url,
                prefix=deployment.prefix,
            ) as url:
                await photograph(url, deployment, jobs, out)
        finally:
            await deployment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    args.out.mkdir(exist_ok=True)
    if url := os.environ.get("MONGODB_URL"):
        asyncio.run(main(args.out, url))
    else:
        with MongoServer() as server:
            asyncio.run(main(args.out, server.url))
