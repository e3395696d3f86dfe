"""Bad input at scale: hypothesis generates malformed and hostile messages, interleaved
with good triggers, and one worker must dead-letter every bad one with its reason, run
every good one, stay healthy and keep its memory flat.

Each generated message carries its expected fate, decided by construction in the
order the consumer checks (message id, size, kind, JSON, schema, references), never by
asking the service: dead-lettered with a given reason, refused (a control operation on
something unknown: answered and acked, no run, no dead letter), or a run whose outputs
are known from the input. "Bad-looking" good input is the point of several strategies:
`@steps(...)`, `__import__`, template and NoSQL injections and very long
`@triggerBody()` paths as trigger body values are data, never evaluated.

CI generates FUZZ_MESSAGES=1000 messages; `scripts/chaos` runs 10,000. FUZZ_SEED
replays a run. The tests after the fuzzer pin bugs it found (see each docstring).
"""

import asyncio
import json
import random
import struct
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pamqp import encode

from examples.branches import flow as branches_flow
from examples.hello import flow as hello_flow
from tests.e2e.chaos_support import (
    RawMessage,
    RawPublisher,
    env_int,
    queue_depth,
    report,
)
from tests.e2e.harness import Deployment, Document, Worker, eventually, json_field

MESSAGES = env_int("FUZZ_MESSAGES", 1000)
SEED = env_int("FUZZ_SEED", 20261124)
MAX_BYTES = 16_384
FLOWS = "examples.hello,examples.branches"
RSS_GROWTH_BOUND = 50 * 1024 * 1024
"""A leak bound, not a timing: RSS after the run minus RSS after warm-up."""

KNOWN_REASONS = frozenset(
    {
        "not_json",
        "schema_invalid",
        "unknown_kind",
        "oversize",
        "no_message_id",
        "unknown_reference",
    }
)
KINDS = (
    "trigger",
    "run_step",
    "retry_step",
    "cancel_run",
    "signal",
    "rerun",
    "enable_flow",
    "disable_flow",
    "pause_schedule",
    "resume_schedule",
    "trigger_schedule_now",
    "set_cron",
)
CONTROL_KINDS = KINDS[2:]
FLOW_REFS = {
    "hello": ["hello", "Hello", "HELLO", hello_flow.id],
    "branches": ["branches", "Branches", branches_flow.id],
}
KNOWN_NAMES = {"hello", "branches", hello_flow.id, branches_flow.id}
QUEUE_KEYS = {"trigger": "trigger", "step": "step", "control": "control"}

INJECTIONS = [
    "@steps('greet').output.text",
    "@steps('shout').output",
    '@steps("score").output.score >= 50',
    "@steps('nope').error",
    "@triggerBody()",
    "@triggerBody()?.name",
    "@TriggerBody().name",
    "@triggerHeaders()",
    "@triggerHeaders()['authorization']",
    "  @triggerBody()  ",
    "@",
    "@@steps('greet')",
    "__import__('os').system('touch /tmp/pwned')",
    "().__class__.__bases__[0].__subclasses__()",
    "{{7*7}}",
    "${7*7}",
    "${jndi:ldap://127.0.0.1/a}",
    "'; db.dropDatabase(); '",
    '{"$where": "sleep(10000)"}',
    "$gt",
    "a.b.c",
    "\u0000",
    "\u202e\u0041\u0042",
    "@triggerBody()?." + ".".join(["a"] * 2000),
    "@steps('" + "x" * 3000 + "').output",
    "@triggerBody()" + "[0]" * 500,
]

Fate = Literal["dead", "refused", "run"]


@dataclass(frozen=True)
class Fuzzed:
    """A message and its fate: dead (with `reason`), refused, or a run of `flow`."""

    category: str
    routing_key: str
    body: bytes
    kind: str | None
    message_id: str | None
    headers: tuple[tuple[bytes, bytes], ...]
    fate: Fate
    reason: str | None = None
    flow: str | None = None
    pool: str | None = None
    """The normalised idempotency key shared with other triggers of the same flow."""
    seq: int = -1

    def raw(self) -> RawMessage:
        marker = RawMessage.table({"x-fuzz-seq": str(self.seq)})
        return RawMessage(
            self.routing_key,
            self.body,
            None if self.kind is None else self.kind.encode(),
            None if self.message_id is None else self.message_id.encode(),
            self.headers + marker,
        )


# -- strategies ------------------------------------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(INJECTIONS)
)
json_keys = st.text(max_size=12) | st.sampled_from(
    ["$where", "$gt", "a.b", "__proto__", "constructor", "", "_id", "\u0000"]
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=8,
)
header_names = st.sampled_from(
    [
        "x-dead-letter-reason",
        "x-original-message-id",
        "x-original-type",
        "content-type",
        "Authorization",
        "x-" + "n" * 120,
    ]
) | st.text(min_size=1, max_size=20).map(lambda t: ("x-h-" + t)[:120])
header_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(min_value=-3e38, max_value=3e38, allow_nan=False)
    | st.text(max_size=60)
    | st.binary(max_size=40).map(bytearray)
    | st.decimals(
        min_value=Decimal(-20_000_000),
        max_value=Decimal(20_000_000),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    )
    | st.integers(86_400, 4_102_444_800).map(lambda t: datetime.fromtimestamp(t, UTC)),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=10), children, max_size=3)
    ),
    max_leaves=6,
)


def _double(value: float) -> bytes:
    return b"d" + struct.pack(">d", value)


@st.composite
def amqp_headers(draw: st.DrawFn) -> tuple[tuple[bytes, bytes], ...]:
    """Odd header tables: forged dead-letter headers, every field type, nesting,
    doubles, non-ASCII names, sometimes a huge table (still within one frame)."""
    table = draw(st.dictionaries(header_names, header_values, max_size=5))
    entries = list(RawMessage.table(table))
    if draw(st.booleans()):
        # A double that fits a float: the worker re-encodes it as one.
        entries.append((b"x-double", _double(draw(st.floats(-1e30, 1e30)))))
    if draw(st.integers(0, 19)) == 0:
        size = draw(st.integers(1_000, 60_000))
        entries += [
            (f"x-big-{n:04d}".encode(), encode.encode_table_value("v" * 100))
            for n in range(size // 115)
        ]
    return tuple(entries)


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _nest(depth: int, leaf: object = 0) -> bytes:
    return b"[" * depth + _json(leaf) + b"]" * depth


def _message_id(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", "x-"])) + str(uuid4())


Keying = Literal["pool", "unique", "none"]


@st.composite
def good_trigger(draw: st.DrawFn, keying: Keying = "unique") -> Fuzzed:
    """A valid trigger of hello or branches, hostile-looking data included.

    `keying`: an idempotency key shared with other triggers of the flow ("pool"), a
    key of its own ("unique"), or none, so that its message id dedupes it.
    """
    flow = draw(st.sampled_from(["hello", "branches"]))
    body: dict[str, Any] = {}
    if flow == "hello":
        if draw(st.integers(0, 9)):
            body["name"] = draw(json_values)
    elif draw(st.integers(0, 9)):
        body["score"] = draw(
            st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.sampled_from([49, 50, 51, 49.999, 50.0, -0.0])
            | json_values
        )
    body |= draw(st.dictionaries(json_keys, json_values, max_size=3))
    message: dict[str, Any] = {"flow": draw(st.sampled_from(FLOW_REFS[flow]))}
    deep = draw(st.integers(0, 5)) == 0
    if deep:
        depth = draw(st.integers(1, 200))
        body["deep"] = "@@DEEP@@"
        raw_body = _json(body).replace(b'"@@DEEP@@"', _nest(depth))
    else:
        raw_body = _json(body)
    pool = None
    if keying == "pool":
        pool = f"pool-{draw(st.integers(0, 7))}"
        message["idempotency_key"] = _pad(draw, pool)
    elif keying == "unique":
        message["idempotency_key"] = f"key-{uuid4()}"
    if draw(st.booleans()):
        message["trigger_key"] = "manual"
    if draw(st.integers(0, 4)) == 0:
        run_id = str(uuid4())
        message["run_id"] = run_id.upper() if draw(st.booleans()) else run_id
    if draw(st.integers(0, 3)) == 0:
        message["headers"] = draw(
            st.dictionaries(
                st.text(max_size=15), st.text(max_size=30) | st.sampled_from(INJECTIONS)
            )
        )
    message |= draw(
        st.dictionaries(
            st.sampled_from(["__proto__", "$where", "extra", "flow_id", "kind"]),
            json_values,
            max_size=2,
        )
    )
    raw = _json(message)[:-1] + b', "body": ' + raw_body + b"}"
    return _sized(
        Fuzzed(
            "good",
            f"trigger.{draw(st.sampled_from(['hello', 'x', 'branches.#']))}",
            raw,
            "trigger",
            _message_id(draw),
            draw(amqp_headers()),
            "run",
            flow=flow,
            pool=None if pool is None else f"{flow}/{pool}",
        )
    )


def _sized(fuzzed: Fuzzed) -> Fuzzed:
    """A good message over MAX_BYTES (a deep body of long strings, now and then) is
    dead-lettered as oversize: the size is checked before anything else."""
    if len(fuzzed.body) <= MAX_BYTES:
        return fuzzed
    return replace(
        fuzzed,
        category="oversize",
        fate="dead",
        reason="oversize",
        flow=None,
        pool=None,
    )


def _pad(draw: st.DrawFn, key: str) -> str:
    cased = draw(st.sampled_from([key, key.upper(), key.title()]))
    return (
        draw(st.sampled_from(["", " ", "\t"]))
        + cased
        + draw(st.sampled_from(["", "  "]))
    )


def _dead(
    draw: st.DrawFn,
    category: str,
    reason: str,
    body: bytes,
    kind: str | None,
    *,
    message_id: str | None = None,
) -> Fuzzed:
    queue = draw(st.sampled_from(list(QUEUE_KEYS)))
    suffix = draw(st.text(max_size=20).filter(lambda t: len(t.encode()) < 200))
    return Fuzzed(
        category,
        f"{queue}.{suffix}",
        body,
        kind,
        _message_id(draw) if message_id is None else message_id,
        draw(amqp_headers()),
        "dead",
        reason,
    )


@st.composite
def not_json(draw: st.DrawFn) -> Fuzzed:
    body = draw(
        st.sampled_from(
            [
                b"",
                b"{not json",
                b'{"flow": "hello"',
                b'{"flow": "hello",}',
                b"{'flow': 'hello'}",
                b'{"flow": "hello", "body": NaN}',
                b'{"flow": "hello", "body": Infinity}',
                b'{"flow": "hello", "body": 1e400}',
                b'\xef\xbb\xbf{"flow": "hello"}',
                b'{"flow": "hel\xfflo"}',
                b'{"flow": "\\ud800"}',
                b'{"flow": "hello"} {"flow": "hello"}',
                b'/* c */ {"flow": "hello"}',
                '{"flow": "hello"}'.encode("utf-16"),
                _nest(1100),
                b'{"flow": "hello", "body": ' + _nest(2000) + b"}",
            ]
        )
        | st.binary(max_size=200).filter(_not_json)
        | st.text(max_size=100).map(str.encode).filter(_not_json)
    )
    return _dead(draw, "not_json", "not_json", body, draw(st.sampled_from(KINDS)))


def _not_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return True
    return False


NOT_A_STRING = st.booleans() | st.integers() | st.lists(st.text(), max_size=2)
"""Wrong types for a string field that may be null."""
NOT_A_STRING_OR_NULL = NOT_A_STRING | st.none()
"""Wrong types for a string field that must be there."""
TOO_LONG = st.integers(201, 600).map(lambda n: "k" * n)
NOT_A_UUID = st.sampled_from(
    ["", "not-a-uuid", "00000000-0000-0000-0000-00000000000G", "{" + "0" * 32 + "}"]
) | st.uuids().map(lambda u: u.hex)


def _trigger(**fields: object) -> dict[str, object]:
    return {"flow": "hello", **fields}


SCHEMA_INVALID: list[st.SearchStrategy[tuple[str, object]]] = [
    # Not an object, for any kind.
    st.tuples(
        st.sampled_from(KINDS),
        st.sampled_from([None, [], [1, 2], "trigger", 42, True, 1.5]),
    ),
    st.tuples(st.just("trigger"), json_values.map(lambda b: {"body": b})),  # no flow
    st.tuples(
        st.just("trigger"),
        (NOT_A_STRING_OR_NULL | st.just("") | TOO_LONG).map(lambda f: {"flow": f}),
    ),
    st.tuples(
        st.just("trigger"),
        (NOT_A_STRING_OR_NULL | st.just("")).map(lambda k: _trigger(trigger_key=k)),
    ),
    st.tuples(
        st.just("trigger"),
        (
            st.sampled_from([[], "h", 1])
            | st.dictionaries(st.text(max_size=5), NOT_A_STRING_OR_NULL, min_size=1)
        ).map(lambda h: _trigger(headers=h)),
    ),
    st.tuples(
        st.just("trigger"),
        (NOT_A_STRING | st.just("") | TOO_LONG).map(
            lambda k: _trigger(idempotency_key=k)
        ),
    ),
    st.tuples(
        st.just("trigger"),
        (NOT_A_UUID | NOT_A_STRING).map(lambda r: _trigger(run_id=r)),
    ),
    st.tuples(
        st.just("run_step"),
        st.sampled_from([0, -1, "1", None, True, 1.5, [1]]).map(
            lambda a: {
                "flow_id": hello_flow.id,
                "run_id": str(uuid4()),
                "step_key": "greet",
                "attempt": a,
            }
        ),
    ),
    st.tuples(  # no flow_id
        st.just("run_step"),
        st.just({"run_id": str(uuid4()), "step_key": "greet", "attempt": 1}),
    ),
    st.tuples(
        st.sampled_from(["cancel_run", "retry_step", "rerun"]),
        (NOT_A_STRING_OR_NULL | st.just("")).map(
            lambda r: {"run_id": r, "step_key": "greet"}
        ),
    ),
    st.tuples(  # no signal name
        st.just("signal"), json_values.map(lambda p: {"run_id": "r", "payload": p})
    ),
    st.tuples(  # cron is required, though it may be null
        st.just("set_cron"), st.just({"flow": "hello", "trigger_key": "manual"})
    ),
    st.tuples(
        st.sampled_from(["pause_schedule", "enable_flow"]),
        (NOT_A_STRING_OR_NULL | st.just("")).map(lambda f: {"flow": f}),
    ),
]


@st.composite
def schema_invalid(draw: st.DrawFn) -> Fuzzed:
    """Valid JSON that breaks the model of its kind (strict: nothing is coerced)."""
    if draw(st.integers(0, 9)) == 0:
        # A body nested past the model's depth limit, JSON all the same.
        depth = draw(st.integers(300, 1000))
        body = b'{"flow": "hello", "body": ' + _nest(depth) + b"}"
        return _dead(draw, "schema_invalid", "schema_invalid", body, "trigger")
    kind, value = draw(st.one_of(SCHEMA_INVALID))
    return _dead(draw, "schema_invalid", "schema_invalid", _json(value), kind)


@st.composite
def unknown_kind(draw: st.DrawFn) -> Fuzzed:
    kind = draw(
        st.none()
        | st.sampled_from(
            ["", "Trigger", "TRIGGER", "trigger ", " trigger", "run-step", "reply"]
        )
        | st.text(max_size=60).filter(lambda t: len(t.encode()) <= 255)
        | st.just("t" * 255)
    )
    if kind in KINDS:
        kind = f"{kind}?"
    body = _json({"flow": "hello", "body": {"name": "kind"}})
    fuzzed = _dead(draw, "unknown_kind", "unknown_kind", body, kind)
    if not kind:
        # Without a type (the driver reads an empty one as none) the routing key
        # names the kind: give it one that names none.
        suffix = fuzzed.routing_key.partition(".")[2]
        named = suffix in CONTROL_KINDS
        return replace(fuzzed, routing_key=f"control.{suffix}{'?' if named else ''}")
    return fuzzed


@st.composite
def oversize(draw: st.DrawFn) -> Fuzzed:
    size = draw(st.integers(MAX_BYTES + 1, MAX_BYTES * 8))
    name = "x" * size
    body = _json({"flow": "hello", "body": {"name": name}})
    kind = draw(st.sampled_from([*KINDS, "nonsense"]) | st.none())
    return _dead(draw, "oversize", "oversize", body, kind)


@st.composite
def no_message_id(draw: st.DrawFn) -> Fuzzed:
    good = draw(good_trigger("none"))
    if good.fate == "dead":
        return good  # oversize: the size is checked first
    return replace(
        good,
        category="no_message_id",
        message_id=draw(st.sampled_from([None, ""])),
        fate="dead",
        reason="no_message_id",
        flow=None,
        pool=None,
    )


UNKNOWN_FLOWS = (
    st.text(min_size=1, max_size=60).filter(
        lambda t: t not in KNOWN_NAMES and t.lower() not in KNOWN_NAMES
    )
    | st.sampled_from([" hello", "hello ", "hel lo", str(uuid4())])
    | st.sampled_from([i for i in INJECTIONS if len(i) <= 200])
)
UNKNOWN_TRIGGER_KEYS = st.sampled_from(
    ["Manual", "MANUAL", "nightly", "cron", " manual", "manual "]
) | st.text(min_size=1, max_size=30).filter(lambda t: t != "manual")
UNKNOWN_REFERENCE: list[st.SearchStrategy[tuple[str, object]]] = [
    st.tuples(st.just("trigger"), UNKNOWN_FLOWS.map(lambda f: {"flow": f})),
    st.tuples(
        st.just("trigger"), UNKNOWN_TRIGGER_KEYS.map(lambda k: _trigger(trigger_key=k))
    ),
    st.tuples(
        st.just("run_step"),
        st.fixed_dictionaries(
            {
                "flow_id": st.sampled_from([hello_flow.id, "nope"]),
                "run_id": st.sampled_from([str(uuid4()), "../../etc", "$where"]),
                "step_key": st.sampled_from(["greet", "nope", "a.b", "$x"]),
                "attempt": st.integers(1, 1000),
            }
        ),
    ),
    st.tuples(
        st.just("rerun"),
        st.sampled_from([str(uuid4()), "x"]).map(lambda r: {"run_id": r}),
    ),
]


@st.composite
def unknown_reference(draw: st.DrawFn) -> Fuzzed:
    """Well-formed messages naming a flow, trigger, run or step we don't have."""
    kind, value = draw(st.one_of(UNKNOWN_REFERENCE))
    return _dead(draw, "unknown_reference", "unknown_reference", _json(value), kind)


@st.composite
def refused(draw: st.DrawFn) -> Fuzzed:
    """Control operations on runs and flows that do not exist: answered, acked."""
    run_id = draw(st.sampled_from([str(uuid4()), "nope"]))
    unknown_flow = draw(st.sampled_from(["nope", str(uuid4()), "HELLO!"]))
    kind, value = draw(
        st.sampled_from(
            [
                ("cancel_run", {"run_id": run_id, "reason": "fuzz"}),
                ("retry_step", {"run_id": run_id, "step_key": "greet"}),
                ("signal", {"run_id": run_id, "signal": "go", "payload": [1]}),
                ("enable_flow", {"flow": unknown_flow}),
                ("disable_flow", {"flow": unknown_flow}),
                ("pause_schedule", {"flow": "hello", "trigger_key": "manual"}),
                ("resume_schedule", {"flow": unknown_flow, "trigger_key": "x"}),
                ("trigger_schedule_now", {"flow": unknown_flow, "trigger_key": "x"}),
                ("set_cron", {"flow": unknown_flow, "trigger_key": "x", "cron": None}),
            ]
        )
    )
    return replace(
        _dead(draw, "refused", "", _json(value), kind),
        routing_key=f"control.{kind}",
        fate="refused",
        reason=None,
    )


MIX: list[tuple[st.SearchStrategy[Fuzzed], int]] = [
    (good_trigger("unique"), 15),
    (good_trigger("none"), 12),
    (good_trigger("pool"), 3),
    (not_json(), 12),
    (schema_invalid(), 14),
    (unknown_reference(), 12),
    (unknown_kind(), 10),
    (no_message_id(), 8),
    (refused(), 8),
    (oversize(), 6),
]
"""Each strategy and its share of the messages (a third good triggers)."""


def generate(count: int, at_seed: int) -> list[Fuzzed]:
    """`count` messages in the shares of MIX, shuffled, numbered in publishing order.

    Hypothesis draws every message's content; the mix and the order come from a
    seeded `Random`, because hypothesis leans towards its first choices.
    """
    rng = random.Random(at_seed)
    total = sum(weight for _, weight in MIX)
    found: list[Fuzzed] = []
    for n, (strategy, weight) in enumerate(MIX):
        found += _examples(strategy, max(1, count * weight // total), at_seed + n)
    rng.shuffle(found)
    return [replace(message, seq=n) for n, message in enumerate(found)]


def _examples(strategy: st.SearchStrategy[Fuzzed], count: int, at: int) -> list[Fuzzed]:
    found: list[Fuzzed] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(at)
    @given(strategy)
    def collect(message: Fuzzed) -> None:
        found.append(message)

    collect()
    return found


# -- expectations of good triggers -----------------------------------------------------


def _body_of(message: Fuzzed) -> Any:
    """The trigger body as the service reads it (orjson is the wire's parser)."""
    return orjson.loads(message.body).get("body")


def _check_run(message: Fuzzed, run: Document, steps: list[Document]) -> list[str]:
    """What is wrong with `run`, a good trigger's run, given its input."""
    body = _body_of(message)
    where = f"seq {message.seq} run {run['_id']}"
    by_key = {s["key"]: s for s in steps}
    problems = []
    if run["status"] != "Succeeded":
        problems.append(f"{where}: {run['status']}")
    if message.flow == "hello":
        name = body.get("name") if isinstance(body, dict) else None
        greet = json_field(by_key["greet"], "output") if "greet" in by_key else None
        wanted = {"text": f"Hello, {name or 'world'}"}
        if greet != wanted:
            problems.append(f"{where}: greet said {greet!r}, expected {wanted!r}")
    else:
        score = body.get("score") if isinstance(body, dict) else None
        number = (
            score
            if isinstance(score, int | float) and not isinstance(score, bool)
            else None
        )
        want = {
            "approve": "Succeeded"
            if number is not None and number >= 50
            else "Skipped",
            "reject": "Succeeded" if number is not None and number < 50 else "Skipped",
            "record": "Succeeded",
        }
        got = {k: by_key[k]["status"] if k in by_key else None for k in want}
        if got != want:
            problems.append(f"{where}: score {score!r}: {got}, expected {want}")
    return problems


# -- the test --------------------------------------------------------------------------


@dataclass
class Expected:
    dead: int = 0
    refused: int = 0
    good: int = 0
    runs: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    dead_seqs: set[str] = field(default_factory=set)

    def add(self, messages: list[Fuzzed], pools: set[str]) -> None:
        for m in messages:
            if m.fate == "dead":
                assert m.reason is not None
                self.dead += 1
                self.dead_seqs.add(str(m.seq))
                self.by_reason[m.reason] += 1
            elif m.fate == "refused":
                self.refused += 1
            else:
                self.good += 1
                if m.pool is None:
                    self.runs += 1
                elif m.pool not in pools:
                    pools.add(m.pool)
                    self.runs += 1


def rss_bytes(worker: Worker) -> int:
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    line = next(li for li in status.splitlines() if li.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _refused(worker: Worker) -> float:
    """Deliveries the worker answered as refused, over every kind."""
    return sum(
        worker.metric("flow_messages_consumed_total", kind=kind, outcome="refused")
        for kind in KINDS
    )


async def _settled(deployment: Deployment, worker: Worker, want: Expected) -> None:
    """Wait until the worker has dealt with everything published so far."""

    seen: dict[str, float] = {}

    async def done() -> bool:
        seen["dead"] = await queue_depth(deployment, "dead")
        seen["terminal"] = await deployment.db.runs.count_documents(
            {"status": {"$ne": "Running"}}
        )
        seen["refused"] = await asyncio.to_thread(_refused, worker)
        return (
            seen["dead"] >= want.dead
            and seen["terminal"] >= want.runs
            and seen["refused"] >= want.refused
        )

    try:
        await eventually(
            done,
            within=120 + want.good * 0.2,
            what="every message dealt with",
            every=0.25,
            alive=deployment.check_alive,
        )
    except AssertionError as exc:
        wanted = {"dead": want.dead, "terminal": want.runs, "refused": want.refused}
        unexpected = [
            (
                _seq(letter),
                letter.headers.get("x-dead-letter-reason"),
                letter.headers.get("x-dead-letter-detail"),
            )
            for letter in await _dead_letters(deployment)
            if _seq(letter) not in want.dead_seqs
        ]
        running = [
            (
                run["_id"],
                run["flow_name"],
                [
                    (s["key"], s["status"])
                    for s in await deployment.db.steps.find(
                        {"run_id": run["_id"]}
                    ).to_list(None)
                ],
            )
            for run in await deployment.db.runs.find({"status": "Running"}).to_list(20)
        ]
        raise AssertionError(
            f"{exc}: seen {seen}, wanted {wanted}; letters of good messages: "
            f"{unexpected[:10]}; runs still Running: {running[:10]}"
        ) from None


def _seq(letter: Any) -> str | None:
    seq = letter.headers.get("x-fuzz-seq")
    return None if seq is None else str(int(seq))


async def _dead_letters(deployment: Deployment) -> list[Any]:
    connection = await deployment.connection()
    channel = await connection.channel()
    letters = []
    try:
        queue = await channel.get_queue(f"{deployment.prefix}.dead")
        while (letter := await queue.get(no_ack=True, fail=False)) is not None:
            letters.append(letter)
    finally:
        await channel.close()
    return letters


async def test_fuzzed_bad_input_is_dead_lettered_and_good_input_runs(
    deployment: Deployment,
):
    messages = generate(MESSAGES, SEED)
    warm = messages[: max(1, len(messages) // 5)]
    rest = messages[len(warm) :]
    worker = deployment.start_worker(
        FLOW_MODULES=FLOWS, MAX_MESSAGE_BYTES=str(MAX_BYTES)
    )
    await worker.ready()
    pools: set[str] = set()
    want = Expected()
    started = time.monotonic()

    async with RawPublisher(deployment) as publisher:
        await publisher.publish_all([m.raw() for m in warm])
        want.add(warm, pools)
        await _settled(deployment, worker, want)
        rss_warm = rss_bytes(worker)
        await publisher.publish_all([m.raw() for m in rest])
        want.add(rest, pools)
        await _settled(deployment, worker, want)
    elapsed = time.monotonic() - started
    rss_end = rss_bytes(worker)
    letters = await _dead_letters(deployment)
    runs = await deployment.db.runs.find({}).to_list(None)
    steps = await deployment.db.steps.find({}).to_list(None)
    health = [await asyncio.to_thread(worker.http, p) for p in ("/healthz", "/readyz")]

    bad = {m.seq: m for m in messages if m.fate == "dead"}
    got = {int(letter.headers["x-fuzz-seq"]): letter for letter in letters}
    wrong = [
        (seq, bad[seq].category, letter.headers.get("x-dead-letter-reason"))
        for seq, letter in got.items()
        if seq not in bad
        or letter.headers.get("x-dead-letter-reason") != bad[seq].reason
        or letter.body != bad[seq].body
        or not letter.headers.get("x-dead-letter-detail")
    ]
    run_problems = _check_runs(messages, runs, steps)
    report(
        "fuzz",
        seed=SEED,
        messages=len(messages),
        dead_lettered=len(letters),
        by_reason=dict(want.by_reason),
        refused=want.refused,
        good=want.good,
        runs=len(runs),
        seconds=round(elapsed, 1),
        by_category=dict(Counter(m.category for m in messages)),
        rss_warm_mb=round(rss_warm / 2**20, 1),
        rss_end_mb=round(rss_end / 2**20, 1),
    )
    assert len(letters) == want.dead == len(bad)
    assert set(got) == set(bad), sorted(set(bad) ^ set(got))[:20]
    assert wrong == []
    assert {str(letter.headers["x-dead-letter-reason"]) for letter in letters} <= (
        KNOWN_REASONS
    )
    assert run_problems == []
    assert len(runs) == want.runs
    for reason, count in want.by_reason.items():
        assert worker.metric("flow_messages_dead_lettered_total", reason=reason) == (
            count
        ), reason
    assert [status for status, _ in health] == [200, 200], health
    worker.check_alive()
    assert rss_end - rss_warm < RSS_GROWTH_BOUND, (rss_warm, rss_end)


def _check_runs(
    messages: list[Fuzzed], runs: list[Document], steps: list[Document]
) -> list[str]:
    """One run per good trigger (per pool of shared keys), each as its input says."""
    steps_of: dict[str, list[Document]] = defaultdict(list)
    for step in steps:
        steps_of[step["run_id"]].append(step)
    run_of_job = {r["job_id"]: r for r in runs}
    problems = []
    groups: dict[str, list[Fuzzed]] = defaultdict(list)
    for m in messages:
        if m.fate == "run":
            assert m.message_id is not None
            groups[m.pool or m.message_id].append(m)
        elif m.message_id is not None and m.message_id in run_of_job:
            problems.append(f"seq {m.seq} ({m.category}) started a run")
    for name, group in groups.items():
        made = [
            (m, run_of_job[m.message_id]) for m in group if m.message_id in run_of_job
        ]
        if len(made) != 1:
            problems.append(f"{name}: {len(made)} runs for {len(group)} triggers")
            continue
        message, run = made[0]
        problems += _check_run(message, run, steps_of[run["_id"]])
        declared = orjson.loads(message.body).get("run_id")
        if declared is not None and run["_id"] != str(UUID(declared)):
            problems.append(f"seq {message.seq}: run id {run['_id']} not {declared}")
    return problems


# -- what the fuzzer found -------------------------------------------------------------


def _string(value: bytes) -> bytes:
    return b"S" + struct.pack(">I", len(value)) + value


@pytest.mark.parametrize(
    "header",
    [(b"x-bytes", _string(b"\xff\xfe")), (b"x-double", _double(1e300))],
    ids=["string-not-utf8", "double-beyond-float"],
)
async def test_a_bad_message_with_odd_header_values_is_dead_lettered(
    deployment: Deployment, header: tuple[bytes, bytes]
):
    """Was: pamqp decodes these values but cannot encode them again (a long string
    that is not UTF-8 comes back as bytes, a double is re-encoded as a float), so
    publishing the dead letter raised, and the error ended the worker."""
    worker = deployment.start_worker(FLOW_MODULES=FLOWS)
    await worker.ready()

    async with RawPublisher(deployment) as publisher:
        await publisher.publish(
            RawMessage("trigger.hello", b"{not json", b"trigger", b"odd", (header,))
        )
    [letter] = await deployment.dead_letters(1, within=10)

    assert letter.headers["x-dead-letter-reason"] == "not_json"
    worker.check_alive()


async def test_a_message_the_driver_cannot_decode_does_not_block_the_queue(
    deployment: Deployment,
):
    """Was: a header name that is not UTF-8 (legal AMQP; RabbitMQ routes it; so is a
    non-UTF-8 `type` or `message_id`, or an out-of-range timestamp) made the driver
    drop the connection at every delivery, until the delivery limit."""
    worker = deployment.start_worker(FLOW_MODULES=FLOWS)
    await worker.ready()

    async with RawPublisher(deployment) as publisher:
        await publisher.publish(
            RawMessage(
                "trigger.hello",
                b"{}",
                b"trigger",
                b"undecodable",
                ((b"x-\xff\xfe", _string(b"v")),),
            )
        )
    good = await deployment.trigger("hello", {"name": "after"})
    [run] = await deployment.finished([good], within=10)
    [letter] = await deployment.dead_letters(1, within=5)

    assert run["status"] == "Succeeded"
    assert letter.headers.get("x-dead-letter-reason")


def _table_of(size: int) -> tuple[tuple[bytes, bytes], ...]:
    """Header entries of exactly `size` encoded bytes (names, types and values)."""
    entry = encode.encode_table_value("v" * 100)
    entries = [(f"x-b{n:05d}".encode(), entry) for n in range(size // 200)]
    used = sum(1 + len(name) + len(value) for name, value in entries)
    pad = size - used - (1 + len(b"x-pad")) - 5  # 'S' and a 4-byte length
    return (*entries, (b"x-pad", encode.encode_table_value("p" * pad)))


async def test_a_bad_message_with_a_header_table_near_frame_max_is_dead_lettered(
    deployment: Deployment,
):
    """Was: the dead letter, the original headers plus six of ours, exceeded frame_max
    (131072) and RabbitMQ closed the worker's connection (frame_too_large)."""
    worker = deployment.start_worker(FLOW_MODULES=FLOWS)
    await worker.ready()

    async with RawPublisher(deployment) as publisher:
        await publisher.publish(
            RawMessage(
                "trigger.hello",
                b"{not json",
                b"trigger",
                b"near-frame-max",
                _table_of(130_900),  # the frame fits 131,064 bytes
            )
        )
    [letter] = await deployment.dead_letters(1, within=10)

    assert letter.headers["x-dead-letter-reason"] == "not_json"
    worker.check_alive()


async def test_big_integers_in_a_trigger_body_are_kept_exactly(
    deployment: Deployment,
):
    """Was: orjson read integers outside [-2**63, 2**64) as floats, so the body was
    stored and handed to handlers rounded."""
    worker = deployment.start_worker(FLOW_MODULES=FLOWS)
    await worker.ready()
    big = 123456789012345678901234567890

    job = await deployment.trigger("hello", {"name": big})
    [run] = await deployment.finished([job], within=30)
    [greet] = await deployment.steps(run_id=run["_id"], key="greet")

    assert json_field(greet, "output") == {"text": f"Hello, {big}"}
    assert json.loads(run["body"]) == {"name": big}
