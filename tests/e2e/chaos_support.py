"""What the chaos and fuzz suites share: sizes, a raw AMQP publisher, mixed loads of the
chaos flows, and the check of every invariant once the dust has settled.

Sizes come from the environment so that `scripts/chaos` runs the same tests at full
size: CHAOS_RUNS, CHAOS_CYCLES, CHAOS_SEED, FUZZ_MESSAGES, FUZZ_SEED. With
CHAOS_REPORT set to a path, each test appends one JSON line of figures to it.
"""

import asyncio
import json
import os
import random
import signal
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import uuid4

import aio_pika
import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands, encode
from pamqp.header import ContentHeader

from service.engine.records import ATTEMPTS_KEPT
from tests.e2e import chaos_flows
from tests.e2e.chaos_flows import HANDLER_TYPES, expected
from tests.e2e.harness import Deployment, Document, Worker, eventually
from tests.replica_set import MongoReplicaSet

FINAL_STEP = frozenset({"Succeeded", "Failed", "Skipped"})
HANDLER_STEP_TYPES = frozenset(HANDLER_TYPES)


CHAOS_FLOWS = tuple(flow.name for flow in chaos_flows.flows)


def env_flows() -> tuple[str, ...]:
    """CHAOS_FLOWS (comma-separated names) narrows a load to some flows; default all."""
    names = [n.strip() for n in os.environ.get("CHAOS_FLOWS", "").split(",")]
    return tuple(n for n in names if n) or CHAOS_FLOWS


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def report(test: str, **figures: object) -> None:
    """Append the figures of one test to $CHAOS_REPORT (a JSON line), if it is set."""
    path = os.environ.get("CHAOS_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": test, **figures}, default=str) + "\n")


# -- raw publishing --------------------------------------------------------------------


@dataclass(frozen=True)
class RawMessage:
    """One AMQP message exactly as it goes on the wire.

    `headers` are encoded table entries (name bytes, type octet + value bytes), so a
    test can send what no client library would: names that are not UTF-8, say.
    `kind` and `message_id` are raw short strings; None leaves the property out.
    """

    routing_key: str
    body: bytes
    kind: bytes | None
    message_id: bytes | None
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @staticmethod
    def table(headers: dict[str, Any]) -> tuple[tuple[bytes, bytes], ...]:
        """Entries of an ordinary header table, encoded as any client would."""
        return tuple(
            (name.encode(), encode.encode_table_value(value))
            for name, value in headers.items()
        )


class _RawHeader(ContentHeader):
    """A content header frame whose properties are written by hand."""

    def __init__(self, message: RawMessage) -> None:
        super().__init__(body_size=len(message.body))
        self._message = message

    def marshal(self) -> bytes:
        m = self._message
        flags = 0x8000 | 0x2000 | 0x1000  # content_type, headers, delivery_mode
        values = [_shortstr(b"application/json"), _table(m.headers), b"\x02"]
        if m.message_id is not None:
            flags |= 0x0080
            values.append(_shortstr(m.message_id))
        if m.kind is not None:
            flags |= 0x0020
            values.append(_shortstr(m.kind))
        return (
            struct.pack(">HxxQ", commands.Basic.frame_id, self.body_size)
            + struct.pack(">H", flags)
            + b"".join(values)
        )


def _shortstr(value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError("a short string holds at most 255 bytes")
    return struct.pack(">B", len(value)) + value


def _table(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    data = b"".join(_shortstr(name) + value for name, value in entries)
    return struct.pack(">I", len(data)) + data


class RawPublisher:
    """Publishes `RawMessage`s on one channel with publisher confirms.

    aiormq insists on giving every message an id and encodes properties itself, so the
    frames are written here, on the channel's own write queue, under its lock, with a
    delivery tag and confirmation future registered the way `basic_publish` does; the
    broker's ack settles them as it settles any other publish on the channel.
    """

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def __aenter__(self) -> "RawPublisher":
        self._channel = await _channel(self._deployment)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def publish(self, message: RawMessage) -> None:
        """Write `message` to the ingress exchange; return once the broker confirmed."""
        assert self._channel is not None
        # The concrete aiormq channel: the abstract one has no write queue.
        raw = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        frames: list[Any] = [
            commands.Basic.Publish(
                exchange=f"{self._deployment.prefix}.ingress",
                routing_key=message.routing_key,
            ),
            _RawHeader(message),
            *(raw._split_body(message.body) if message.body else []),
        ]
        async with raw.lock:
            raw.delivery_tag += 1
            confirmation = raw.create_future()
            raw.confirmations[raw.delivery_tag] = confirmation
            await raw.write_queue.put(
                ChannelFrame.marshall(frames=frames, channel_number=raw.number)
            )
        async with asyncio.timeout(30):
            await confirmation

    async def publish_all(
        self, messages: Sequence[RawMessage], *, window: int = 64
    ) -> None:
        """Publish in order, up to `window` confirms outstanding."""
        for start in range(0, len(messages), window):
            await asyncio.gather(
                *(self.publish(m) for m in messages[start : start + window])
            )


async def _channel(deployment: Deployment) -> aio_pika.abc.AbstractChannel:
    """A new channel (with confirms) on the test's connection, once it is up again
    after a broker restart."""
    connection = await deployment.connection()
    async with asyncio.timeout(60):
        await connection.connected.wait()
    return await connection.channel()


async def queue_depth(deployment: Deployment, role: str) -> int:
    """Messages ready in `<prefix>.<role>` (a passive declare)."""
    channel = await _channel(deployment)
    try:
        queue = await channel.declare_queue(f"{deployment.prefix}.{role}", passive=True)
        return queue.declaration_result.message_count or 0
    finally:
        await channel.close()


# -- mixed loads of the chaos flows ----------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One run the load must create: its flow, body and dedupe key."""

    flow: str
    body: dict[str, Any]
    key: str | None
    """The idempotency key as sent; None: the message id is the key."""
    message_id: str

    @property
    def dedupe(self) -> str:
        """The run's stored key (`idem`): trimmed and lower-cased, else `msg:<id>`."""
        return self.key.strip().lower() if self.key else f"msg:{self.message_id}"

    def message(self, *, message_id: str, key: str | None) -> aio_pika.Message:
        payload: dict[str, Any] = {"flow": self.flow, "body": self.body}
        if key is not None:
            payload["idempotency_key"] = key
        return aio_pika.Message(
            json.dumps(payload).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type="trigger",
            message_id=message_id,
        )


Send = tuple[Planned, str, str | None]
"""(run, message id, key as sent): one trigger message."""


@dataclass
class Load:
    """The runs to expect and every message to publish (duplicates included)."""

    planned: list[Planned]
    sends: list[Send] = field(default_factory=list)
    """In publishing order: duplicates anywhere, not right after their original."""

    @property
    def duplicates(self) -> int:
        return len(self.sends) - len(self.planned)

    def waves(self, count: int) -> list[tuple[int, list[Send]]]:
        """The load cut into `count` waves of runs: (runs, their messages) each."""
        size, extra = divmod(len(self.planned), count)
        wave_of: dict[int, int] = {}
        start = 0
        for wave in range(count):
            end = start + size + (1 if wave < extra else 0)
            wave_of.update((id(run), wave) for run in self.planned[start:end])
            start = end
        cut: list[tuple[int, list[Send]]] = [(0, []) for _ in range(count)]
        for wave in range(count):
            runs = sum(1 for w in wave_of.values() if w == wave)
            cut[wave] = (runs, [s for s in self.sends if wave_of[id(s[0])] == wave])
        return cut


def mixed_load(
    runs: int, rng: random.Random, flows: Sequence[str] = CHAOS_FLOWS
) -> Load:
    """`runs` triggers spread over `flows` (by default all five), plus duplicates.

    About one in ten is sent a second time under a new message id, with its key in
    another case and padded with blanks (the same key once normalised); about one in
    twenty is sent twice with the same message id, as a redelivery would; one in ten
    has no key at all, so its message id dedupes it.
    """
    planned: list[Planned] = []
    sends: list[Send] = []
    for n in range(runs):
        flow = flows[n % len(flows)]
        body = _body(flow, rng)
        keyed = rng.random() >= 0.1
        key = f"chaos-{n}-{uuid4().hex[:8]}" if keyed else None
        run = Planned(flow, body, key, str(uuid4()))
        planned.append(run)
        sends.append((run, run.message_id, key))
        if keyed and rng.random() < 0.1:
            assert key is not None
            sends.append((run, str(uuid4()), f"  {key.upper()} "))
        if rng.random() < 0.05:
            sends.append((run, run.message_id, key))
    # Duplicates land anywhere in the stream, not right after their original.
    rng.shuffle(sends)
    return Load(planned, sends)


def _body(flow: str, rng: random.Random) -> dict[str, Any]:
    match flow:
        case "chaos_fan":
            return {"side": rng.choice(["left", "right", "neither"])}
        case "chaos_loop":
            return {"items": [rng.randrange(1000) for _ in range(rng.randint(1, 5))]}
        case "chaos_poll":
            return {"polls": rng.randint(1, 3)}
        case "chaos_retry":
            return {"failures": rng.randint(1, 2)}
        case "chaos_doom":
            return {"handled": rng.random() < 0.5}
    raise ValueError(f"not a chaos flow: {flow}")


async def publish_load(
    deployment: Deployment, sends: Sequence[Send], *, window: int = 64
) -> None:
    """Publish `sends` with confirms, `window` in flight."""
    channel = await _channel(deployment)
    try:
        exchange = await channel.get_exchange(f"{deployment.prefix}.ingress")
        for start in range(0, len(sends), window):
            await asyncio.gather(
                *(
                    exchange.publish(
                        run.message(message_id=message_id, key=key),
                        f"trigger.{run.flow}",
                        mandatory=True,
                    )
                    for run, message_id, key in sends[start : start + window]
                )
            )
    finally:
        await channel.close()


async def terminal_runs(deployment: Deployment) -> int:
    return await deployment.db.runs.count_documents({"status": {"$ne": "Running"}})


async def until_terminal(
    deployment: Deployment, count: int, *, within: float, what: str = ""
) -> int:
    """Wait until at least `count` runs are terminal; how many are."""

    async def enough() -> int | None:
        done = await terminal_runs(deployment)
        return done if done >= count else None

    try:
        return await eventually(
            enough,
            within=within,
            what=what or f"{count} runs terminal",
            every=0.1,
            alive=deployment.check_alive,
        )
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}\n{await stuck(deployment)}") from None


async def stuck(deployment: Deployment, *, limit: int = 5) -> str:
    """Why runs are still Running: queues, a census, and a few runs in detail."""
    db = deployment.db
    running = await db.runs.find({"status": "Running"}).to_list(None)
    ids = [run["_id"] for run in running]
    timed = {
        (t["run_id"], t["step_key"])
        async for t in db.timers.find({"run_id": {"$in": ids}})
    }
    parked = await db.steps.find(
        {"run_id": {"$in": ids}, "status": "Pending"},
        {"run_id": 1, "key": 1, "loop": 1},
    ).to_list(None)
    lines = [
        f"queues: steps={await queue_depth(deployment, 'steps')} "
        f"triggers={await queue_depth(deployment, 'triggers')} "
        f"dead={await queue_depth(deployment, 'dead')}; "
        f"timers={await db.timers.count_documents({})}",
        f"running runs by flow: {dict(Counter(r['flow_name'] for r in running))}",
        f"their Pending steps: {len(parked)}, of which "
        f"{sum(1 for p in parked if _parked_for_good(p, timed))} parked with no timer",
    ]
    for run in running[:limit]:
        lines.append(f"run {run['_id']} {run['flow_name']} {run['body']}")
        async for step in db.steps.find({"run_id": run["_id"]}):
            lines.append(
                f"  {step['key']}: {step['status']} attempt={step['attempt']} "
                f"lease={step.get('lease_until')} loop={step.get('loop')} "
                f"attempts={[(a['number'], a['status']) for a in step['attempts']]}"
            )
        async for timer in db.timers.find({"run_id": run["_id"]}):
            lines.append(f"  timer {timer}")
    return "\n".join(lines)


def _parked_for_good(step: Document, timed: set[tuple[str, str]]) -> bool:
    """A Pending step that no timer will wake (loops and iterations aside)."""
    return (
        step.get("loop") is None
        and step["key"].split(".")[-1] != ""
        and not step["key"].split(".")[-1].isdigit()
        and (step["run_id"], step["key"]) not in timed
    )


def patience(runs: int) -> float:
    """Seconds a load of `runs` may take to finish on a slow, busy machine.

    Generous: a worker killed while holding claimed timers delays them by the
    scheduler's timer lease (60 s, not a setting) before another worker fires them.
    """
    return 150 + runs * 0.3


# -- chaos: kill -9 cycles -------------------------------------------------------------


@dataclass
class Kill:
    cycle: int
    worker: str
    terminal_before: int
    running_steps: int
    seconds_waited: float
    """For the progress that spaces this kill from the one before."""
    seconds_to_ready: float


async def kill_cycles(
    deployment: Deployment,
    workers: list[Worker],
    load: Load,
    *,
    cycles: int,
    rng: random.Random,
    env: dict[str, str],
) -> list[Kill]:
    """Publish `load` in `cycles + 1` waves and kill -9 a worker in each but the last.

    Each cycle publishes a wave, waits until a quarter of it is terminal (progress,
    not time), kills a random worker of `workers` with SIGKILL, starts a new one in its
    place and waits until that one is ready. So every kill lands in a load in flight.
    """
    waves = load.waves(cycles + 1)
    runs = len(load.planned)
    published = 0
    kills: list[Kill] = []
    for cycle in range(cycles):
        size, sends = waves[cycle]
        waiting = time.monotonic()
        await publish_load(deployment, sends)
        await until_terminal(
            deployment,
            published + max(1, size // 4),
            within=patience(runs),
            what=f"progress before kill {cycle + 1}",
        )
        published += size
        waited = time.monotonic() - waiting
        victim = rng.choice(workers)
        terminal = await terminal_runs(deployment)
        running = await deployment.db.steps.count_documents({"status": "Running"})
        victim.send(signal.SIGKILL)
        await victim.exited(within=10)
        started = time.monotonic()
        replacement = deployment.start_worker(**env)
        workers[workers.index(victim)] = replacement
        await replacement.ready(within=60)
        kill = Kill(
            cycle + 1,
            victim.name,
            terminal,
            running,
            round(waited, 2),
            round(time.monotonic() - started, 2),
        )
        report("kill", **vars(kill))  # as it happens: a long run shows its progress
        kills.append(kill)
    await publish_load(deployment, waves[-1][1])
    return kills


# -- chaos: replica set step-downs -----------------------------------------------------


@dataclass
class SteppedDown:
    """One step-down of the replica set's primary, and the load it hit."""

    step_down: int
    old_primary: str
    new_primary: str
    seconds_to_new_primary: float
    operations_killed: int
    operations_running: int
    terminal_before: int
    running_steps: int


async def step_downs(
    deployment: Deployment, replica_set: MongoReplicaSet, *, runs: int, times: int
) -> list[SteppedDown]:
    """Step the primary down `times` times while a load of `runs` runs goes.

    Spaced by progress, not time: the n-th step-down waits until n / (times + 1) of
    the runs are terminal, so each lands in a load in flight.
    """
    done: list[SteppedDown] = []
    for n in range(1, times + 1):
        await until_terminal(
            deployment,
            n * runs // (times + 1),
            within=patience(runs),
            what=f"progress before step-down {n}",
        )
        terminal = await terminal_runs(deployment)
        running = await deployment.db.steps.count_documents({"status": "Running"})
        change = await asyncio.to_thread(replica_set.step_down)
        stepped = SteppedDown(
            n,
            change.old_primary,
            change.new_primary,
            change.seconds_to_new_primary,
            change.operations_killed,
            change.operations_running,
            terminal,
            running,
        )
        report("step_down", **vars(stepped))
        done.append(stepped)
    return done


def logged(workers: Iterable[Worker], event: str) -> int:
    """How many times `workers` logged `event`."""
    return sum(1 for w in workers for e in w.events() if e.get("event") == event)


# -- the invariants --------------------------------------------------------------------


@dataclass
class Findings:
    """What the final check saw; `problems` must stay empty."""

    problems: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)
    abandoned: list[str] = field(default_factory=list)  # attempts left open

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def assert_none(self) -> None:
        shown = "\n".join(self.problems[:30])
        more = len(self.problems) - 30
        tail = f"\n... and {more} more" if more > 0 else ""
        assert not self.problems, f"{len(self.problems)} violations:\n{shown}{tail}"


async def verify(deployment: Deployment, load: Load) -> Findings:
    """Every invariant the chaos suite promises, checked against what MongoDB holds.

    - every run terminal, with the status its input calls for; every step final;
    - exactly one run per idempotency key (runs == distinct keys planned);
    - attempts numbered 1..n once each on every step (no attempt recorded twice);
    - no handler invocation lost: each attempt that recorded a result has exactly one
      recorded invocation, with the attempt's job id; each Succeeded step's output
      names the invocation of its last attempt;
    - none invented: every recorded invocation belongs to an attempt of its step;
    - at most one run.completed event per run; nothing in the dead-letter queue.
    """
    db = deployment.db
    runs = await db.runs.find({}).to_list(None)
    steps = await db.steps.find({}).to_list(None)
    calls = await db.handler_calls.find({}).to_list(None)
    found = Findings()

    by_key = _check_runs(found, runs, load)
    steps_of: dict[str, list[Document]] = defaultdict(list)
    for step in steps:
        steps_of[step["run_id"]].append(step)
    calls_of: dict[tuple[str, str, int], list[Document]] = defaultdict(list)
    for call in calls:
        calls_of[call["run_id"], call["step_key"], call["attempt"]].append(call)
    rows = {(s["run_id"], s["key"]): s for s in steps}

    for plan in load.planned:
        run = by_key.get((plan.flow, plan.dedupe))
        if run is not None:
            _check_run_steps(found, plan, run, steps_of[run["_id"]])
    for step in steps:
        _check_attempts(found, step, calls_of)
    for (run_id, key, attempt), made in calls_of.items():
        row = rows.get((run_id, key))
        entry = _attempt(row, attempt) if row else None
        found.check(
            entry is not None,
            f"{run_id}/{key}: invocation of attempt {attempt} has no recorded attempt",
        )
        if entry is not None:
            found.check(
                all(c["job_id"] == entry["job_id"] for c in made),
                f"{run_id}/{key}#{attempt}: invoked under another job id",
            )

    completed = await deployment.events_per_run("run.completed")
    found.check(
        all(n == 1 for n in completed.values()),
        f"runs with several run.completed events: "
        f"{[r for r, n in completed.items() if n > 1][:5]}",
    )
    dead = await queue_depth(deployment, "dead")
    found.check(dead == 0, f"{dead} messages in the dead-letter queue")

    attempts = [a for s in steps for a in s.get("attempts", [])]
    found.abandoned = [
        f"{s['run_id']}/{s['key']}#{a['number']} ({s['status']}, job {a['job_id']}, "
        f"started {a['started_at']:%H:%M:%S.%f}, invoked by "
        f"{[c.get('worker') for c in calls_of[s['run_id'], s['key'], a['number']]]}, "
        f"attempts {[(x['number'], x['status']) for x in s['attempts']]})"
        for s in steps
        for a in s.get("attempts", [])
        if a["status"] == "Running" and not a["completed_at"]
    ]
    found.figures = {
        "runs": len(runs),
        "messages": len(load.sends),
        "duplicates": load.duplicates,
        "steps": len(steps),
        "attempts": len(attempts),
        "invocations": len(calls),
        "abandoned_attempts": sum(
            1 for a in attempts if a["status"] == "Running" and not a["completed_at"]
        ),
        "runs_failed": sum(1 for r in runs if r["status"] == "Failed"),
    }
    return found


def _check_runs(
    found: Findings, runs: list[Document], load: Load
) -> dict[tuple[str, str], Document]:
    keyed = Counter((r["flow_name"], str(r.get("idem"))) for r in runs)
    found.check(
        all(n == 1 for n in keyed.values()),
        f"keys with several runs: {[k for k, n in keyed.items() if n > 1][:5]}",
    )
    by_key = {(str(r["flow_name"]), str(r.get("idem"))): r for r in runs}
    wanted = {(p.flow, p.dedupe) for p in load.planned}
    found.check(
        set(by_key) == wanted,
        f"{len(wanted - set(by_key))} keys without a run, "
        f"{len(set(by_key) - wanted)} runs nobody asked for",
    )
    found.check(len(runs) == len(load.planned), f"{len(runs)} runs")
    found.check(
        not [r for r in runs if r["status"] == "Running"],
        f"{sum(r['status'] == 'Running' for r in runs)} runs still Running",
    )
    return by_key


def _check_run_steps(
    found: Findings, plan: Planned, run: Document, steps: list[Document]
) -> None:
    status, step_statuses = expected(plan.flow, plan.body)
    where = f"run {run['_id']} ({plan.flow} {plan.body})"
    found.check(
        run["status"] == status, f"{where}: status {run['status']}, expected {status}"
    )
    top = {s["key"]: s["status"] for s in steps if s["scope"] == ""}
    found.check(top == step_statuses, f"{where}: steps {top}")
    if plan.flow == "chaos_loop":
        children = [s for s in steps if s["key"].endswith(".process")]
        found.check(
            len(children) == len(plan.body["items"])
            and all(s["status"] == "Succeeded" for s in children),
            f"{where}: loop children {[(s['key'], s['status']) for s in children]}",
        )
    unsettled = [s["key"] for s in steps if s["status"] not in FINAL_STEP]
    found.check(not unsettled, f"{where}: steps not final: {unsettled}")


def _check_attempts(
    found: Findings,
    step: Document,
    calls_of: dict[tuple[str, str, int], list[Document]],
) -> None:
    where = f"{step['_id']}"
    attempts = step.get("attempts") or []
    numbers = [a["number"] for a in attempts]
    first = max(1, step["attempt"] - ATTEMPTS_KEPT + 1)
    found.check(
        numbers == list(range(first, step["attempt"] + 1)),
        f"{where}: attempt numbers {numbers} (attempt {step['attempt']})",
    )
    if step["type"] not in HANDLER_STEP_TYPES:
        return
    for entry in attempts:
        made = calls_of.get((step["run_id"], step["key"], entry["number"]), [])
        found.check(
            len(made) <= 1, f"{where}#{entry['number']}: invoked {len(made)} times"
        )
        if entry.get("completed_at") is not None:
            found.check(
                len(made) == 1,
                f"{where}#{entry['number']}: a {entry['status']} result "
                f"with {len(made)} recorded invocations",
            )
    if step["status"] == "Succeeded":
        last = attempts[-1] if attempts else None
        made = calls_of.get((step["run_id"], step["key"], step["attempt"]), [])
        output = json.loads(step["output"]) if step.get("output") else None
        call = output.get("call") if isinstance(output, dict) else None
        found.check(
            last is not None and last["status"] == "Succeeded",
            f"{where}: Succeeded, but its last attempt is {last}",
        )
        found.check(
            [c["_id"] for c in made] == [call],
            f"{where}: output names call {call}, invocations {made}",
        )


def _attempt(row: Document, number: int) -> Document | None:
    return next((a for a in row.get("attempts", []) if a["number"] == number), None)
