"""Every message body the README shows is valid for the shipped JSON Schema of its kind
and for the service, and the cookbook shows every kind an operator sends.

Bodies are read off `rabbitmqadmin` commands (`routing_key=...`, `payload='...'`) and
`amqp-publish` commands (`-r ...`, `-b '...'`); the kind is the `type` property when
the command sets one, else what the routing key names, as the service reads it.
"""

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from contracts import KINDS, parse
from service.adapters.amqp.topology import Names, kind_of, migration

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
_ADMIN = re.compile(
    r"routing_key=(?P<key>[^\s`]+)(?P<rest>.*?)payload='(?P<body>[^']*)'"
)
_PROPERTIES = re.compile(r"properties='(?P<properties>[^']*)'")


@dataclass(frozen=True)
class Example:
    tool: str
    routing_key: str
    type: str | None
    body: str
    headers: tuple[str, ...] = ()

    @property
    def kind(self) -> str | None:
        return kind_of(self.type, self.routing_key)


def examples() -> list[Example]:
    found: list[Example] = []
    for line in README.read_text(encoding="utf-8").splitlines():
        for match in _ADMIN.finditer(line):
            found.append(_admin(match))
        if line.startswith("amqp-publish "):
            found.append(_amqp_publish(line))
    return found


def _admin(match: re.Match[str]) -> Example:
    kind = None
    if properties := _PROPERTIES.search(match.group("rest")):
        try:
            kind = json.loads(properties.group("properties"))["type"]
        except ValueError:  # shortened with `...` in the table
            kind = re.search(r'"type":"(\w+)"', properties.group("properties"))
            kind = kind.group(1) if kind else None
    return Example("rabbitmqadmin", match.group("key"), kind, match.group("body"))


def _amqp_publish(line: str) -> Example:
    argv = shlex.split(line)
    headers = tuple(argv[i + 1] for i, arg in enumerate(argv) if arg == "-H")
    return Example(
        "amqp-publish",
        argv[argv.index("-r") + 1],
        None,
        argv[argv.index("-b") + 1],
        headers,
    )


EXAMPLES = examples()


def validator(kind: str) -> Draft202012Validator:
    path = ROOT / "contracts" / "schemas" / f"{kind}.json"
    return Draft202012Validator(json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=[f"{e.tool}:{e.routing_key}" for e in EXAMPLES]
)
def test_a_readme_body_is_valid_for_its_schema_and_for_the_service(example: Example):
    kind = example.kind
    assert kind is not None, f"{example.routing_key} names no kind"
    assert kind in KINDS
    body = json.loads(example.body)

    errors = [error.message for error in validator(kind).iter_errors(body)]

    assert errors == []
    parse(kind, example.body.encode())


def test_the_cookbook_shows_every_kind_an_operator_sends():
    shown = {example.kind for example in EXAMPLES}

    assert shown >= set(KINDS) - {"run_step"}


def test_every_amqp_publish_example_can_be_sent_without_a_message_id():
    """amqp-publish cannot set one: a trigger carries an idempotency key, and the
    kinds that need a message id are not shown with it."""
    sent = [e for e in EXAMPLES if e.tool == "amqp-publish"]

    assert sent
    for example in sent:
        assert example.kind not in {"rerun", "trigger_schedule_now", "run_step"}
        if example.kind == "trigger":
            assert any(
                h.lower().startswith("x-idempotency-key:") for h in example.headers
            )


def test_the_readme_gives_the_migration_the_worker_logs():
    assert migration(Names("flow")) in README.read_text(encoding="utf-8")
