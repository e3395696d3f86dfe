"""A flow's DAG as JSON for `app.js` to lay out (dagre) and draw, with statuses.

Pure. Nodes carry their key, type and status (or none, for a flow's own page); a
ForEach node carries the per-status counts of its iterations and its body as a
sub-graph, which the page draws collapsed and expands on a click. Edges carry the
statuses their runAfter accepts. The page builds the SVG with `textContent`, so keys
and types are data, never markup.
"""

from collections.abc import Sequence
from typing import Any

from service.dashboard.stepview import BodyLine, StepLine, ordered_counts
from service.engine.model import Flow, RunAfter, Step, StepStatus
from service.flow_views import step_caption


def run_graph(lines: Sequence[StepLine], flow: Flow | None) -> dict[str, Any]:
    """Nodes and edges of a run: its steps with their statuses."""
    steps = flow.steps if flow is not None else {}
    nodes = [_node(line, steps.get(line.key)) for line in lines]
    known = {line.key for line in lines}
    edges = [
        _edge(dep, line.key, steps[line.key].conditions.get(dep))
        for line in lines
        if line.key in steps
        for dep in line.depends_on
        if dep in known
    ]
    return {"nodes": nodes, "edges": edges}


def flow_graph(flow: Flow) -> dict[str, Any]:
    """Nodes and edges of a flow, without statuses."""
    return _plain(flow.steps, prefix="")


def _plain(steps: dict[str, Step] | Any, *, prefix: str) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for key, step in steps.items():
        node: dict[str, Any] = {
            "id": prefix + key,
            "label": key,
            "type": step_caption(step),
            "status": "",
        }
        if step.is_loop:
            node["body"] = _plain(step.steps, prefix=f"{prefix}{key}.")
        nodes.append(node)
        edges.extend(
            _edge(prefix + dep, prefix + key, condition)
            for dep, condition in step.conditions.items()
            if dep in steps
        )
    return {"nodes": nodes, "edges": edges}


def _node(line: StepLine, step: Step | None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": line.key,
        "label": line.key,
        "type": line.type if step is None else step_caption(step),
        "status": line.status,
    }
    if line.iterations is not None:
        node["counts"] = ordered_counts(line.iterations)
        node["body"] = _body(line.body)
    return node


def _body(body: Sequence[BodyLine]) -> dict[str, Any]:
    known = {b.template for b in body}
    nodes = [
        {
            "id": b.template,
            "label": b.template.rsplit(".", 1)[-1],
            "type": b.type,
            "status": b.status,
            "counts": ordered_counts(b.counts),
        }
        for b in body
    ]
    edges = [
        {"from": dep, "to": b.template, "label": ""}
        for b in body
        for dep in b.depends_on
        if dep in known
    ]
    return {"nodes": nodes, "edges": edges}


def _edge(source: str, target: str, condition: RunAfter | None) -> dict[str, Any]:
    label = ""
    if condition is not None and condition.statuses != {StepStatus.SUCCEEDED}:
        # The usual "after it succeeded" goes unsaid; anything else is written on.
        accepted = "/".join(s.value for s in StepStatus if s in condition.statuses)
        label = accepted or "any"
    if condition is not None and condition.when:
        label = f"{label} when…" if label else "when…"
    return {"from": source, "to": target, "label": label}
