"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a
real worker process, RabbitMQ and MongoDB.

A trigger appears in the open runs list without a reload; a failed run's page draws
the DAG with the failed step and its Retry button makes the run succeed; a signal
(after a payload that is not JSON is refused in the page) and a cancel work from the
page; a dead letter is replayed; hostile text in a run never executes. Chromium must
be at /usr/bin/chromium (`./scripts/check` installs it): without it these tests fail.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest
from playwright.async_api import BrowserContext, Dialog, Page, async_playwright

from examples import orders
from service.engine.model import Flow, FlowId, RunStatus, Step, StepStatus
from tests.dashboard_support import (
    PASSWORDS,
    a_run,
    put_dead_letter,
    seed_flow,
    seed_run,
    seed_step,
    served_dashboard,
)
from tests.e2e.harness import PATIENT, Deployment, eventually

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FLOWS = "examples.hello,examples.approval,tests.integration.flowctl_flows"
WAIT = 30.0
WAIT_MS = WAIT * 1000
# No "." in it: step keys can't hold one (it separates loop scopes).
HOSTILE = "<img src=x onerror=\"top['__pwned']=1\"><script>top['__pwned']=2</script>"


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; the test fails (never skips) without it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"needs Chromium at {CHROMIUM}: `apt-get install -y chromium` "
            "(./scripts/check installs it)",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile for each test
            executable_path=str(chromium),
            args=FLAGS,
            headless=True,
            viewport={"width": 1440, "height": 900},
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def deployment(deployment: Deployment) -> Deployment:
    worker = deployment.start_worker(FLOW_MODULES=FLOWS, **PATIENT)
    await worker.ready()
    return deployment


@pytest.fixture
async def dashboard(deployment: Deployment) -> AsyncIterator[str]:
    async with served_dashboard(
        mongodb_url=deployment.mongodb_url,
        database=deployment.database,
        amqp_url=deployment.amqp_url,
        prefix=deployment.prefix,
    ) as url:
        yield url


@pytest.fixture
async def page(browser: BrowserContext, dashboard: str) -> AsyncIterator[Page]:
    """A page signed in as the operator `ada`; fails the test on a script error."""
    opened = browser.pages[0] if browser.pages else await browser.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    await opened.goto(f"{dashboard}/runs")
    await opened.fill("input[name=name]", "ada")
    await opened.fill("input[name=password]", PASSWORDS["ada"])
    await opened.click("button[type=submit]")
    await opened.wait_for_url(f"{dashboard}/runs")
    yield opened
    assert errors == [], errors


async def run_of(deployment: Deployment, job_id: str) -> str:
    async def created() -> str | None:
        run = await deployment.run_of_job(job_id)
        return None if run is None else str(run["_id"])

    return await eventually(created, within=WAIT, what=f"run of {job_id}")


async def status_is(deployment: Deployment, run_id: str, status: str) -> None:
    async def reached() -> bool:
        run = await deployment.db.runs.find_one({"_id": run_id})
        return run is not None and run["status"] == status

    await eventually(reached, within=WAIT, what=f"run {run_id} {status}")


async def parked(deployment: Deployment, run_id: str) -> None:
    async def waiting() -> bool:
        row = await deployment.db.steps.find_one({"run_id": run_id, "key": "approval"})
        return row is not None and row["status"] == "Pending"

    await eventually(waiting, within=WAIT, what=f"run {run_id} waiting")


async def header_says(page: Page, status: str) -> None:
    """The run's status badge shows `status` (updated live, not by a reload)."""
    await page.wait_for_selector(f"#run-head .badge.big:text-is('{status}')")


def navigations(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("framenavigated", lambda frame: seen.append(frame.url))
    return seen


async def test_a_trigger_appears_live_and_a_failed_run_is_retried_from_its_page(
    deployment: Deployment, dashboard: str, page: Page, tmp_path: Path
):
    moved = navigations(page)
    run_id = await run_of(deployment, await deployment.trigger("flaky", {"amount": 3}))
    await page.wait_for_selector(f'tr[data-run="{run_id}"]')
    assert moved == []  # it came in through the live stream, not a reload
    await status_is(deployment, run_id, "Failed")

    await page.goto(f"{dashboard}/runs/{run_id}")
    failed = page.locator('#dag g.dag-node.st-failed[data-id="charge"]')
    await failed.wait_for()
    skipped = page.locator('#dag g.dag-node.st-skipped[data-id="ship"]')
    await skipped.wait_for()
    await page.screenshot(path=tmp_path / "failed-run.png", full_page=True)
    await page.click("button:text-is('Retry charge')")
    await page.wait_for_selector("#flash:has-text('accepted')")
    await header_says(page, "Succeeded")
    await page.locator('#dag g.dag-node.st-succeeded[data-id="ship"]').wait_for()

    await status_is(deployment, run_id, "Succeeded")


async def test_signal_and_cancel_work_from_the_run_page(
    deployment: Deployment, dashboard: str, page: Page
):
    approved = await run_of(deployment, await deployment.trigger("approval", {}))
    doomed = await run_of(deployment, await deployment.trigger("approval", {}))
    await parked(deployment, approved)
    await parked(deployment, doomed)

    await page.goto(f"{dashboard}/runs/{approved}")
    moved = navigations(page)
    await page.fill("textarea[name=payload]", "{not json")
    await page.click("button:text-is('Send signal')")
    error = page.locator('[data-error-for="payload"]')
    await error.filter(has_text="not valid JSON").wait_for()
    assert moved == []  # refused in the page: nothing was sent
    await page.fill("textarea[name=payload]", '{"by": "ops"}')
    await page.click("button:text-is('Send signal')")
    await page.wait_for_selector("#flash:has-text('delivered')")
    await header_says(page, "Succeeded")

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)
    await page.goto(f"{dashboard}/runs/{doomed}")
    await page.fill("input[name=reason]", "customer withdrew")
    await page.click("button:text-is('Cancel run')")
    await page.wait_for_selector("#flash:has-text('accepted')")
    await header_says(page, "Cancelled")

    await status_is(deployment, approved, "Succeeded")
    await status_is(deployment, doomed, "Cancelled")


async def test_a_dead_letter_is_replayed_from_the_dead_letters_page(
    deployment: Deployment, dashboard: str, page: Page
):
    letter = str(uuid4())
    await put_dead_letter(
        deployment.amqp_url,
        deployment.prefix,
        {"flow": "hello", "body": {"name": "Lazarus"}},
        kind="trigger",
        routing_key="trigger.hello",
        reason="crashed",
        message_id=letter,
    )

    await page.goto(f"{dashboard}/dead-letters")
    row = page.locator("tr", has=page.locator(f"text={letter}"))
    await row.locator("button:text-is('Replay')").click()
    await page.wait_for_selector("#flash:has-text('1 replayed, 0 failed')")
    run_id = await run_of(deployment, letter)
    await status_is(deployment, run_id, "Succeeded")

    await page.goto(f"{dashboard}/dead-letters")
    assert await page.locator(f"text={letter}").count() == 0


async def test_hostile_text_in_a_run_never_executes(
    deployment: Deployment, dashboard: str, page: Page
):
    flow = Flow(
        id=FlowId(str(uuid4())),
        name=f"evil{HOSTILE}",
        steps={HOSTILE: Step(HOSTILE), "next": Step("X", run_after={HOSTILE: []})},
    )
    await seed_flow(deployment.db, flow)
    await seed_flow(deployment.db, orders.flow)
    run = await seed_run(
        deployment.db,
        a_run(
            flow,
            status=RunStatus.FAILED,
            body={HOSTILE: HOSTILE},
            headers={"X": HOSTILE},
        ),
    )
    await seed_step(
        deployment.db,
        run,
        HOSTILE,
        StepStatus.FAILED,
        type_=HOSTILE,
        inputs={HOSTILE: HOSTILE},
        output=HOSTILE,
        error=HOSTILE,
    )

    for path in ("/runs", f"/runs/{run.run_id}", "/flows", f"/flows/{flow.id}"):
        await page.goto(f"{dashboard}{path}")
        await page.wait_for_load_state("networkidle")
    await page.goto(f"{dashboard}/runs/{run.run_id}")
    await page.locator("#dag g.dag-node.st-failed").first.wait_for()
    await page.locator("details.step summary").first.click()
    await page.locator("details.step .cols").first.wait_for()
    await page.locator("#run-head details.trigger summary").click()

    assert await page.evaluate("window.__pwned === undefined")
    assert (
        await page.locator("#dag g.dag-node text").first.text_content()
        == HOSTILE[:35] + "…"
    )
    assert await page.locator("details.step .cols pre").count() >= 3
