"""The dashboard over HTTP against the real MongoDB: sign-in, roles, CSRF, headers, the
read pages (runs, a run, a step, loops, flows, schedules), masking, hostile text and the
live stream. The dashboard is served for real (uvicorn, lifespan, change stream); runs
are stored as the workers store them. Actions against a worker: test_dashboard_actions.
"""

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from starlette.routing import Route

from examples import batch, orders
from service.dashboard.masking import MASK
from service.dashboard.server import routes
from service.engine.model import Flow, FlowId, RunStatus, Step, StepStatus
from tests.dashboard_support import (
    PASSWORDS,
    T0,
    a_run,
    csrf_of,
    free_port,
    seed_flow,
    seed_run,
    seed_step,
    served_dashboard,
    signed_in,
    token,
    users_setting,
)
from tests.e2e.harness import REPO, eventually

Db = AsyncDatabase[dict[str, Any]]
FLOWCTL = str(Path(sys.executable).parent / "flowctl")
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@pytest.fixture
async def dashboard(
    mongo_db: Db, mongodb_url: str, rabbitmq_url: str
) -> AsyncIterator[str]:
    async with served_dashboard(
        mongodb_url=mongodb_url,
        database=mongo_db.name,
        amqp_url=rabbitmq_url,
        prefix=f"t{uuid4().hex[:8]}",  # no worker: nothing declared under it
    ) as url:
        yield url


@pytest.fixture
async def ada(dashboard: str) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in(dashboard, "ada")
    yield client
    await client.aclose()


@pytest.fixture
async def vic(dashboard: str) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in(dashboard, "vic")
    yield client
    await client.aclose()


def post_routes() -> list[str]:
    """Every POST route of the app, with its path parameters filled in."""
    return [
        re.sub(r"\{(\w+)(:\w+)?\}", lambda m: f"x-{m.group(1)}", route.path)
        for route in routes()
        if isinstance(route, Route) and "POST" in (route.methods or set())
    ]


# -- who gets in -----------------------------------------------------------------


async def test_nobody_gets_in_without_signing_in(dashboard: str):
    async with httpx.AsyncClient(base_url=dashboard) as anonymous:
        page = await anonymous.get("/runs?status=Failed")
        graph = await anonymous.get("/runs/abc/graph")
        action = await anonymous.post("/runs/abc/cancel", data={"reason": "x"})
        live = await anonymous.get("/live")
        health = await anonymous.get("/healthz")
        login = await anonymous.get("/login")
        style = await anonymous.get("/static/app.css")

    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fruns%3Fstatus%3DFailed"
    assert graph.status_code == 303
    assert action.status_code == 401
    assert live.status_code == 401
    assert (health.status_code, login.status_code, style.status_code) == (200, 200, 200)


async def test_a_wrong_password_is_refused_and_repeated_failures_are_throttled(
    dashboard: str,
):
    async with httpx.AsyncClient(base_url=dashboard) as client:
        form = {"name": "ada", "password": "wrong", "next": "/runs"}
        answers = []
        for _ in range(6):
            page = await client.get("/login")
            answer = await client.post(
                "/login", data={**form, "csrf": csrf_of(page.text)}
            )
            answers.append(answer.status_code)
        page = await client.get("/login")
        right = await client.post(
            "/login",
            data={**form, "password": PASSWORDS["ada"], "csrf": csrf_of(page.text)},
        )
        runs = await client.get("/runs")

    assert answers == [401, 401, 401, 401, 401, 429]
    assert right.status_code == 429  # even the right password, until the window ends
    assert runs.status_code == 303


async def test_signing_in_goes_back_where_asked_but_only_to_this_site(dashboard: str):
    async with httpx.AsyncClient(base_url=dashboard) as client:
        page = await client.get("/login?next=//evil.example/x")
        answer = await client.post(
            "/login",
            data={
                "name": "vic",
                "password": PASSWORDS["vic"],
                "csrf": csrf_of(page.text),
                "next": "//evil.example/x",
            },
        )

    assert answer.status_code == 303
    assert answer.headers["location"] == "/runs"


async def test_a_viewer_reads_everything_but_cannot_act(
    vic: httpx.AsyncClient, mongo_db: Db
):
    await seed_flow(mongo_db, orders.flow)
    run = await seed_run(mongo_db, a_run(orders.flow, status=RunStatus.FAILED))
    await seed_step(mongo_db, run, "validate", StepStatus.FAILED, error="boom")

    page = await vic.get(f"/runs/{run.run_id}")
    refused = await vic.post(
        f"/runs/{run.run_id}/retry", data={"step_key": "validate", "csrf": token(vic)}
    )
    purge = await vic.post(
        "/dead-letters/purge", data={"confirm": "purge", "csrf": token(vic)}
    )

    assert page.status_code == 200
    assert "actions need the operator role" in page.text
    assert f'action="/runs/{run.run_id}/retry"' not in page.text
    assert refused.status_code == 403
    assert "needs the operator role" in refused.text
    assert purge.status_code == 403


@pytest.mark.parametrize("path", post_routes())
async def test_every_form_without_the_csrf_token_is_refused(
    ada: httpx.AsyncClient, path: str
):
    without = await ada.post(path, data={"reason": "x", "step_key": "a"})
    wrong = await ada.post(path, data={"csrf": "not-the-token", "step_key": "a"})

    assert without.status_code == 403, path
    assert wrong.status_code == 403, path


async def test_a_form_from_another_origin_is_refused(ada: httpx.AsyncClient):
    answer = await ada.post(
        "/runs/x/cancel",
        data={"csrf": token(ada), "reason": "x"},
        headers={"origin": "https://evil.example"},
    )

    assert answer.status_code == 403
    assert "another site" in answer.text


async def test_every_page_carries_a_strict_content_security_policy(
    ada: httpx.AsyncClient,
):
    for path in ("/runs", "/flows", "/schedules", "/login", "/static/app.js"):
        response = await ada.get(path)
        policy = response.headers["content-security-policy"]

        assert "script-src 'self'" in policy, path
        assert "style-src 'self'" in policy, path
        assert "unsafe-inline" not in policy, path
        assert "unsafe-eval" not in policy, path
        assert "frame-ancestors 'none'" in policy, path
        assert response.headers["x-content-type-options"] == "nosniff"
    page = (await ada.get("/runs")).text
    assert "<script>" not in page
    assert " style=" not in page
    assert "onclick" not in page
    assert "no-store" in (await ada.get("/runs")).headers["cache-control"]


async def test_signing_out_ends_the_session(dashboard: str):
    client = await signed_in(dashboard, "ada")
    try:
        out = await client.post("/logout", data={"csrf": token(client)})
        after = await client.get("/runs")
    finally:
        await client.aclose()

    assert out.status_code == 303
    assert after.status_code == 303
    assert after.headers["location"].startswith("/login")


# -- the runs list ---------------------------------------------------------------


async def test_the_runs_list_counts_filters_and_pages_by_keyset(
    ada: httpx.AsyncClient, mongo_db: Db
):
    await seed_flow(mongo_db, orders.flow)
    await seed_flow(mongo_db, batch.flow)
    statuses = [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.RUNNING]
    seeded = []
    for n in range(120):
        flow = orders.flow if n % 2 else batch.flow
        started = T0 + timedelta(seconds=n // 3)  # three runs share each instant
        run = a_run(flow, status=statuses[n % 3], started_at=started)
        seeded.append(await seed_run(mongo_db, run))

    first = (await ada.get("/runs")).text
    failed = (
        await ada.get("/runs", params={"status": "failed", "flow": orders.flow.id})
    ).text
    search = seeded[7].run_id[:13]
    found = (await ada.get("/runs", params={"q": search})).text
    bad = (await ada.get("/runs", params={"since": "yesterday-ish"})).text
    shown: list[str] = []
    path = "/runs"
    while path:
        page = (await ada.get(path)).text
        shown += re.findall(r'<tr data-run="([^"]+)"', page)
        older = re.search(r'href="(/runs\?[^"]*before=[^"]+)">Older', page)
        path = older.group(1).replace("&amp;", "&") if older else ""

    newest_first = sorted(seeded, key=lambda r: (r.started_at, r.run_id), reverse=True)
    assert shown == [r.run_id for r in newest_first]
    assert "<b>120</b> all" in first
    assert "<b>40</b>" in first  # each status
    assert "120 runs match" in first
    expected_failed = sum(
        1
        for r in seeded
        if r.status is RunStatus.FAILED and r.flow_id == orders.flow.id
    )
    assert f"{expected_failed} runs match" in failed
    assert seeded[7].run_id in found
    assert "Ignored: since: neither an ISO 8601 time nor an age" in bad


async def test_newer_pages_come_back_to_the_first(ada: httpx.AsyncClient, mongo_db: Db):
    await seed_flow(mongo_db, orders.flow)
    for n in range(60):
        await seed_run(
            mongo_db, a_run(orders.flow, started_at=T0 + timedelta(seconds=n))
        )

    first = (await ada.get("/runs")).text
    older = re.search(r'href="(/runs\?[^"]*before=[^"]+)">Older', first)
    assert older is not None
    second = (await ada.get(older.group(1).replace("&amp;", "&"))).text
    newer = re.search(r'href="(/runs\?[^"]*after=[^"]+)">← Newer', second)
    assert newer is not None
    back = (await ada.get(newer.group(1).replace("&amp;", "&"))).text

    rows = re.compile(r'<tr data-run="([^"]+)"')
    assert rows.findall(back) == rows.findall(first)
    assert len(rows.findall(second)) == 10


# -- one run ---------------------------------------------------------------------


async def test_a_run_page_lists_every_manifest_step_with_or_without_a_row(
    ada: httpx.AsyncClient, mongo_db: Db
):
    await seed_flow(mongo_db, orders.flow)
    source = await seed_run(mongo_db, a_run(orders.flow))
    run = await seed_run(
        mongo_db,
        a_run(orders.flow, status=RunStatus.FAILED, source_run_id=source.run_id),
    )
    rerun = await seed_run(mongo_db, a_run(orders.flow, source_run_id=run.run_id))
    await seed_step(
        mongo_db, run, "validate", StepStatus.SUCCEEDED, output={"ok": True}
    )
    await seed_step(
        mongo_db,
        run,
        "reserve",
        StepStatus.FAILED,
        inputs={"sku": "@triggerBody().sku"},
        resolved={"sku": "A-1"},
        error="Traceback (most recent call last):\nValueError: out of stock",
        trace={"when": "1 > 2"},
        attempts=2,
    )

    page = (await ada.get(f"/runs/{run.run_id}")).text
    graph = (await ada.get(f"/runs/{run.run_id}/graph")).json()
    detail = (await ada.get(f"/runs/{run.run_id}/steps/reserve?fragment=1")).text
    waiting = (await ada.get(f"/runs/{run.run_id}/steps/ship?fragment=1")).text

    statuses = {node["id"]: node["status"] for node in graph["nodes"]}
    assert statuses == {
        "validate": "Succeeded",
        "reserve": "Failed",
        "charge": "Waiting",
        "notify": "Waiting",
        "ship": "Waiting",
    }
    assert {(e["from"], e["to"]) for e in graph["edges"]} >= {("validate", "reserve")}
    order = [page.index(f'id="step-{key}"') for key in ("validate", "reserve", "ship")]
    assert order == sorted(order)  # DAG order
    assert "ValueError: out of stock" in page  # the exception line, not "Traceback"
    assert "rerun of" in page
    assert source.run_id in page
    assert rerun.run_id in page  # lineage both ways
    assert "Retry reserve" in page
    assert "@triggerBody().sku" in detail
    assert "A-1" in detail
    assert f"{run.run_id}:reserve:1" in detail
    assert f"{run.run_id}:reserve:2" in detail
    assert "1 &gt; 2" in detail  # the When trace
    assert "not started: no row yet" in waiting
    assert "step.failed" in page
    assert "run.started" in page


async def test_a_for_each_is_counted_and_its_iterations_page(
    ada: httpx.AsyncClient, mongo_db: Db
):
    await seed_flow(mongo_db, batch.flow)
    run = await seed_run(mongo_db, a_run(batch.flow, status=RunStatus.RUNNING))
    await seed_step(
        mongo_db,
        run,
        "items",
        StepStatus.PENDING,
        type_="ForEach",
        loop={"total": 60, "concurrency": 3, "finished": 58, "failed": 1},
    )
    for i in range(60):
        status = StepStatus.FAILED if i == 5 else StepStatus.SUCCEEDED
        status = StepStatus.RUNNING if i >= 58 else status
        await seed_step(mongo_db, run, f"items.{i}", status, type_="__iteration")
        await seed_step(
            mongo_db, run, f"items.{i}.process", status, type_="ProcessItem"
        )

    graph = (await ada.get(f"/runs/{run.run_id}/graph")).json()
    first = (await ada.get(f"/runs/{run.run_id}/loops/items?start=0")).text
    second = (await ada.get(f"/runs/{run.run_id}/loops/items?start=50")).text

    (loop,) = [n for n in graph["nodes"] if n["id"] == "items"]
    assert loop["counts"] == [["Running", 2], ["Succeeded", 57], ["Failed", 1]]
    (process,) = loop["body"]["nodes"]
    assert process["id"] == "items.process"
    assert process["status"] == "Failed"  # the worst of its iterations
    assert "iterations 0 to 49 of 60" in first
    assert "iterations 50 to 59 of 60" in second
    assert "/steps/items.5.process" in first


async def test_an_unknown_run_is_a_404_page(ada: httpx.AsyncClient):
    answer = await ada.get("/runs/no-such-run")

    assert answer.status_code == 404
    assert "No such run." in answer.text


# -- masking and hostile text -----------------------------------------------------


async def test_credentials_are_masked_in_headers_bodies_inputs_and_outputs(
    ada: httpx.AsyncClient, mongo_db: Db
):
    await seed_flow(mongo_db, orders.flow)
    run = await seed_run(
        mongo_db,
        a_run(
            orders.flow,
            body={
                "user": "ada",
                "password": "hunter2-body",
                "db": "amqp://u:pw-in-url@h/",
            },
            headers={"Authorization": "Bearer tok-header", "X-Request-Id": "req-1"},
        ),
    )
    await seed_step(
        mongo_db,
        run,
        "validate",
        StepStatus.SUCCEEDED,
        inputs={"api_key": "key-input"},
        output={"session_token": "tok-output", "fine": "visible"},
    )

    page = (await ada.get(f"/runs/{run.run_id}")).text
    detail = (await ada.get(f"/runs/{run.run_id}/steps/validate?fragment=1")).text

    for secret in (
        "hunter2-body",
        "pw-in-url",
        "tok-header",
        "key-input",
        "tok-output",
    ):
        assert secret not in page + detail, secret
    assert MASK in page
    assert MASK in detail
    assert "req-1" in page
    assert "visible" in detail


async def test_hostile_text_is_escaped_everywhere_it_is_shown(
    ada: httpx.AsyncClient, mongo_db: Db
):
    flow = Flow(
        id=FlowId(str(uuid4())),
        name=f"flow{HOSTILE}",
        steps={HOSTILE: Step("Evil"), "after": Step("Evil", run_after={HOSTILE: []})},
    )
    await seed_flow(mongo_db, flow)
    run = await seed_run(
        mongo_db,
        a_run(
            flow,
            status=RunStatus.FAILED,
            body={HOSTILE: HOSTILE},
            headers={"X": HOSTILE},
        ),
    )
    await seed_step(
        mongo_db,
        run,
        HOSTILE,
        StepStatus.FAILED,
        output=HOSTILE,
        error=HOSTILE,
        inputs={HOSTILE: HOSTILE},
        type_=HOSTILE,
    )

    pages = [
        (await ada.get("/runs")).text,
        (await ada.get(f"/runs/{run.run_id}")).text,
        (await ada.get(f"/runs/{run.run_id}/steps/{HOSTILE}?fragment=1")).text,
        (await ada.get("/flows")).text,
        (await ada.get(f"/flows/{flow.id}")).text,
    ]
    graph = await ada.get(f"/runs/{run.run_id}/graph")

    for page in pages:
        assert "<script>window.__pwned" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert graph.headers["content-type"] == "application/json"
    assert HOSTILE in {
        node["id"] for node in graph.json()["nodes"]
    }  # data, drawn as text


# -- flows and schedules ----------------------------------------------------------


async def test_flows_and_schedules_pages_show_switches_dags_manifests_and_next_fires(
    ada: httpx.AsyncClient, mongo_db: Db
):
    from examples import nightly

    await seed_flow(mongo_db, orders.flow)
    await seed_flow(mongo_db, nightly.flow)
    await mongo_db.schedules.insert_one(
        {
            "_id": f"flow-{nightly.flow.id}-nightly",
            "flow_id": nightly.flow.id,
            "trigger_key": "nightly",
            "cron": "0 2 * * *",
            "next_fire_at": T0,
            "paused": False,
            "cron_override": "30 4 * * *",
        }
    )

    flows = (await ada.get("/flows")).text
    flow = (await ada.get(f"/flows/{orders.flow.id}")).text
    graph = (await ada.get(f"/flows/{orders.flow.id}/graph")).json()
    schedules = (await ada.get("/schedules")).text

    assert "orders" in flows
    assert "nightly" in flows
    assert "Disable" in flows
    assert "Manifest" in flow
    assert "ValidateOrder" in flow
    assert {n["id"] for n in graph["nodes"]} == set(orders.flow.steps)
    assert "30 4 * * *" in schedules
    assert "override of 0 2 * * *" in schedules
    assert schedules.count("04:30:00 UTC</span>") == 5  # the next five fires


# -- live ------------------------------------------------------------------------


async def test_the_live_stream_says_change_when_a_run_is_written(
    ada: httpx.AsyncClient, mongo_db: Db
):
    await seed_flow(mongo_db, orders.flow)
    run = a_run(orders.flow, status=RunStatus.RUNNING)
    heard: list[str] = []

    async with ada.stream("GET", "/live") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert await anext(lines) == "retry: 3000"

        async def written() -> None:
            await seed_run(mongo_db, run)

        async with asyncio.timeout(20):
            writer = asyncio.create_task(written())
            async for line in lines:
                heard.append(line)
                if line == "event: change":
                    break
            await writer

    assert "event: change" in heard


# -- the process -----------------------------------------------------------------


async def test_flowctl_dashboard_refuses_to_start_without_users(tmp_path: Path):
    env = {**os.environ, "DASHBOARD_USERS": "", "PYTHONUNBUFFERED": "1"}

    done = await asyncio.to_thread(
        subprocess.run,
        [FLOWCTL, "dashboard"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "the dashboard refuses to start: DASHBOARD_USERS is empty" in line


async def test_flowctl_dashboard_serves_until_sigterm(
    mongo_db: Db, mongodb_url: str, rabbitmq_url: str
):
    port = free_port()
    env = {
        **os.environ,
        "MONGODB_URL": mongodb_url,
        "MONGODB_DATABASE": mongo_db.name,
        "AMQP_URL": rabbitmq_url,
        "DASHBOARD_USERS": users_setting(),
        "DASHBOARD_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(  # noqa: ASYNC220 - reaped in finally
        [FLOWCTL, "dashboard"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        async def answers() -> int | None:
            try:
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"http://127.0.0.1:{port}/readyz")
            except httpx.TransportError:
                assert process.poll() is None, "the dashboard exited"
                return None
            return response.status_code

        status = await eventually(answers, within=30, what="the dashboard answers")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output, _ = process.communicate()

    assert status == 200
    assert code == 0, output
    assert '"event": "dashboard_started"' in output
