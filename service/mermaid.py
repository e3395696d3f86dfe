"""A flow as a Mermaid flowchart (FO's dashboard `/mermaid`): pure text from a `Flow`.

`flowchart TD`: one node per trigger and per step (key and handler type), an edge per
runAfter entry labelled with its statuses and When (an unlabelled edge accepts any
final status), and each ForEach step drawn as a subgraph around its body. Classes mark
triggers, entry steps, loops, polling steps, signal waits and child flows; a step's
timeout and the flow's concurrency limit (on its triggers) are in their labels.
"""

import re
from collections.abc import Mapping
from typing import Final

from service.engine.model import (
    ENTRY_MARKER,
    WAIT_FOR_SIGNAL,
    Flow,
    RunAfter,
    Step,
    StepStatus,
    Trigger,
    TriggerType,
)

INDENT: Final = "    "
CLASSES: Final[Mapping[str, str]] = {
    "trigger": "fill:#e8f0fe,stroke:#4a6fa5,color:#1d3557",
    "entry": "stroke-width:3px",
    "loop": "fill:#fff7e6,stroke:#d4a017",
    "polling": "stroke-dasharray:5 3",
    "wait": "fill:#fdf2f8,stroke:#b0417a",
    "child": "fill:#eefbf3,stroke:#2f855a",
}
_STATUS_ORDER: Final = {status: i for i, status in enumerate(StepStatus)}
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_]")
_ESCAPES: Final = {'"': "#quot;", "<": "#lt;", ">": "#gt;", "|": "#124;"}


def to_mermaid(flow: Flow) -> str:
    """The Mermaid source of `flow`'s graph, ending with a newline."""
    ids = _Ids()
    lines = ["flowchart TD", f"{INDENT}%% {_comment(flow)}"]
    classes: dict[str, list[str]] = {name: [] for name in CLASSES}
    triggers = [ids.new(f"trigger_{key}") for key in flow.triggers]
    for node, (key, trigger) in zip(triggers, flow.triggers.items(), strict=True):
        text = _trigger_text(trigger) + _limit_text(flow)
        lines.append(f'{INDENT}{node}(["{_label(key, text)}"])')
        classes["trigger"].append(node)
    nodes = _declare(flow.steps, "", ids, lines, classes, depth=1)
    lines.extend(_edges(flow.steps, "", nodes, triggers))
    used = {name: members for name, members in classes.items() if members}
    lines.extend(f"{INDENT}classDef {name} {CLASSES[name]}" for name in used)
    lines.extend(f"{INDENT}class {','.join(m)} {name}" for name, m in used.items())
    return "\n".join(lines) + "\n"


class _Ids:
    """Mermaid node ids: letters, digits and `_` only, unique within one chart."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def new(self, name: str) -> str:
        base = _UNSAFE.sub("_", name) or "node"
        found, n = base, 1
        while found in self._taken:
            n += 1
            found = f"{base}_{n}"
        self._taken.add(found)
        return found


def _declare(
    steps: Mapping[str, Step],
    path: str,
    ids: _Ids,
    lines: list[str],
    classes: dict[str, list[str]],
    *,
    depth: int,
) -> dict[str, str]:
    """Declare the nodes (and loop subgraphs) of one scope; template path -> node id."""
    nodes: dict[str, str] = {}
    pad = INDENT * depth
    for key, step in steps.items():
        node = ids.new(f"step_{path}{key}")
        nodes[path + key] = node
        for name in _classes_of(step, top=not path):
            classes[name].append(node)
        if not step.is_loop:
            lines.append(f'{pad}{node}["{_label(key, _step_text(step))}"]')
            continue
        title = _label(key, f"ForEach {_source(step)}")
        lines.append(f'{pad}subgraph {node} ["{title}"]')
        lines.append(f"{pad}{INDENT}direction TB")
        nodes |= _declare(
            step.steps, f"{path}{key}.", ids, lines, classes, depth=depth + 1
        )
        lines.append(f"{pad}end")
    return nodes


def _edges(
    steps: Mapping[str, Step], path: str, nodes: Mapping[str, str], triggers: list[str]
) -> list[str]:
    lines: list[str] = []
    for key, step in steps.items():
        target = nodes[path + key]
        if step.is_entry and not path:
            when = step.conditions.get(ENTRY_MARKER, RunAfter()).when
            label = _edge_label(RunAfter(frozenset(), when))
            lines.extend(f"{INDENT}{source} {label}{target}" for source in triggers)
        for dep, condition in step.conditions.items():
            source = nodes.get(path + dep)
            if dep == ENTRY_MARKER or source is None:
                continue  # the entry marker, drawn from the triggers above
            lines.append(f"{INDENT}{source} {_edge_label(condition)}{target}")
        if step.is_loop:
            lines.extend(_edges(step.steps, f"{path}{key}.", nodes, triggers))
    return lines


def _edge_label(condition: RunAfter) -> str:
    parts: list[str] = []
    if condition.statuses:
        ordered = sorted(condition.statuses, key=_STATUS_ORDER.__getitem__)
        parts.append(", ".join(status.value for status in ordered))
    if condition.when:
        parts.append(f"when {condition.when}")
    if not parts:
        return "--> "
    return f'-->|"{"<br/>".join(_escape(part) for part in parts)}"| '


def _classes_of(step: Step, *, top: bool) -> list[str]:
    found: list[str] = []
    if top and step.is_entry:
        found.append("entry")
    if step.is_loop:
        found.append("loop")
    elif step.type == WAIT_FOR_SIGNAL:
        found.append("wait")
    elif step.is_child:
        found.append("child")
    elif any(name.startswith("poll") for name in step.inputs):
        found.append("polling")
    return found


def _trigger_text(trigger: Trigger) -> str:
    if trigger.type is TriggerType.CRON and trigger.cron:
        return f"Cron {trigger.cron}"
    return trigger.type.value


def _limit_text(flow: Flow) -> str:
    if flow.concurrency is None:
        return ""
    limit = flow.concurrency.limit
    return f" (at most {limit} per {flow.concurrency.key})"


def _step_text(step: Step) -> str:
    if step.type == WAIT_FOR_SIGNAL:
        signal = step.inputs.get("signalName")
        return f"{step.type} '{signal}'" if isinstance(signal, str) else step.type
    if step.is_child:
        return f"{step.type} {step.inputs.get('flow')}"
    if step.timeout is not None:
        return f"{step.type} (timeout {step.timeout.total_seconds():g} s)"
    return step.type


def _source(step: Step) -> str:
    source = step.for_each
    text = source if isinstance(source, str) else _short(repr(source))
    return f"{text} ({step.concurrency} at a time)"


def _label(title: str, subtitle: str) -> str:
    return f"{_escape(title)}<br/>{_escape(subtitle)}"


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(char, char) for char in " ".join(text.split()))


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _comment(flow: Flow) -> str:
    # A Mermaid comment runs to the end of its line: nothing to escape but newlines.
    return " ".join(f"{flow.name} ({flow.id}) version {flow.version}".split())
