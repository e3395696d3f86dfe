"""Flow authors import one module, `service.authoring`, and the examples show it."""

import ast
import re
from pathlib import Path

import service.authoring
from service.authoring import (
    Flow,
    FlowId,
    Handlers,
    Step,
    StepContext,
    after,
    cron,
    manual,
)
from service.engine.validation import validate_all

REPO = Path(__file__).parents[2]
README = REPO / "README.md"


def test_everything_in_all_is_importable_and_nothing_is_left_out():
    exported = {
        name
        for name in vars(service.authoring)
        if not name.startswith("_") and name not in {"annotations"}
    }

    assert sorted(service.authoring.__all__) == service.authoring.__all__
    assert set(service.authoring.__all__) == exported
    for wanted in (
        "Flow",
        "Step",
        "after",
        "Handlers",
        "StepContext",
        "Failed",
        "Pending",
        "Succeeded",
        "RetryPolicy",
        "for_each",
        "wait_for_signal",
        "manual",
        "cron",
        "polling",
        "FlowId",
    ):
        assert wanted in service.authoring.__all__


def test_a_flow_written_with_the_one_import_validates():
    handlers = Handlers()

    @handlers.handler("Say")
    async def say(ctx: StepContext, inputs: dict[str, object]) -> str:
        return "hi"

    flow = Flow(
        id=FlowId("5d0c2f9e-0000-4000-8000-0000000000aa"),
        name="one-import",
        triggers={"manual": manual(), "nightly": cron("0 2 * * *")},
        steps={
            "a": Step("Say"),
            "b": Step("Say", run_after={"a": after("Succeeded", "Failed")}),
        },
    )

    validate_all([flow], handlers.names())


def _service_imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "service"
        ):
            modules.add(node.module or "")
        elif isinstance(node, ast.Import):
            modules |= {a.name for a in node.names if a.name.startswith("service")}
    return modules


def test_the_examples_import_only_the_authoring_module():
    for path in sorted((REPO / "examples").glob("*.py")):
        assert _service_imports(path.read_text()) <= {"service.authoring"}, path.name


def test_the_readme_flow_example_uses_the_authoring_module():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Writing flows and handlers", 1)[1].split("\n## ", 1)[0]
    [code, *_] = re.findall(r"```python\n(.*?)```", section, flags=re.S)

    assert _service_imports(code) == {"service.authoring"}
    assert "`service.authoring`" in section
