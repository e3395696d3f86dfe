"""The Mermaid rendering of flows: shapes, edges, labels, loops, classes, escaping."""

from service.engine.model import (
    Flow,
    FlowId,
    Step,
    after,
    cron,
    for_each,
    manual,
    wait_for_signal,
)
from service.mermaid import to_mermaid

APPROVAL = Flow(
    id=FlowId("f-approval"),
    name="approval",
    steps={
        "request": Step("RequestApproval"),
        "approval": wait_for_signal("approval", run_after={"request": ["Succeeded"]}),
        "fulfil": Step("Fulfil", run_after={"approval": ["Succeeded"]}),
    },
)


def lines_of(flow: Flow) -> list[str]:
    return [line.strip() for line in to_mermaid(flow).splitlines()]


def test_a_flow_renders_as_a_top_down_flowchart_with_trigger_and_steps():
    assert to_mermaid(APPROVAL) == (
        "flowchart TD\n"
        "    %% approval (f-approval) version 1\n"
        '    trigger_manual(["manual<br/>Manual"])\n'
        '    step_request["request<br/>RequestApproval"]\n'
        "    step_approval[\"approval<br/>WaitForSignal 'approval'\"]\n"
        '    step_fulfil["fulfil<br/>Fulfil"]\n'
        "    trigger_manual --> step_request\n"
        '    step_request -->|"Succeeded"| step_approval\n'
        '    step_approval -->|"Succeeded"| step_fulfil\n'
        "    classDef trigger fill:#e8f0fe,stroke:#4a6fa5,color:#1d3557\n"
        "    classDef entry stroke-width:3px\n"
        "    classDef wait fill:#fdf2f8,stroke:#b0417a\n"
        "    class trigger_manual trigger\n"
        "    class step_request entry\n"
        "    class step_approval wait\n"
    )


def test_every_trigger_leads_to_every_entry_step():
    flow = Flow(
        id=FlowId("f"),
        name="nightly",
        triggers={"nightly": cron("0 2 * * *"), "manual": manual()},
        steps={"a": Step("A"), "b": Step("B")},
    )

    lines = lines_of(flow)

    assert 'trigger_nightly(["nightly<br/>Cron 0 2 * * *"])' in lines
    assert {
        "trigger_nightly --> step_a",
        "trigger_nightly --> step_b",
        "trigger_manual --> step_a",
        "trigger_manual --> step_b",
    } <= set(lines)
    assert "class step_a,step_b entry" in lines


def test_edge_labels_list_statuses_in_order_and_the_escaped_when():
    flow = Flow(
        id=FlowId("f"),
        name="branches",
        steps={
            "score": Step("Score"),
            "approve": Step(
                "Decide",
                run_after={
                    "score": after(
                        "Skipped", "Succeeded", when="@steps('score').output.n >= 5"
                    )
                },
            ),
            "audit": Step("Audit", run_after={"score": []}),
        },
    )

    lines = lines_of(flow)

    assert (
        'step_score -->|"Succeeded, Skipped<br/>when '
        "@steps('score').output.n #gt;= 5\"| step_approve"
    ) in lines
    # No statuses: any final status, drawn as a plain arrow.
    assert "step_score --> step_audit" in lines


def test_an_entry_step_with_a_when_carries_it_on_the_trigger_edge():
    flow = Flow(
        id=FlowId("f"),
        name="gated",
        steps={
            "only": Step("A", run_after={"": after(when='@triggerBody().go == "y"')})
        },
    )

    assert (
        'trigger_manual -->|"when @triggerBody().go == #quot;y#quot;"| step_only'
        in lines_of(flow)
    )


def test_a_for_each_step_is_a_subgraph_around_its_body():
    flow = Flow(
        id=FlowId("f"),
        name="batch",
        steps={
            "items": for_each(
                "@triggerBody().items",
                {
                    "fetch": Step("Fetch"),
                    "save": Step("Save", run_after={"fetch": ["Succeeded"]}),
                },
                concurrency=3,
            ),
            "sum": Step("Sum", run_after={"items": ["Succeeded"]}),
        },
    )

    lines = lines_of(flow)

    start = lines.index(
        'subgraph step_items ["items<br/>ForEach @triggerBody().items (3 at a time)"]'
    )
    end = lines.index("end", start)
    assert lines[start + 1 : end] == [
        "direction TB",
        'step_items_fetch["fetch<br/>Fetch"]',
        'step_items_save["save<br/>Save"]',
    ]
    assert 'step_items_fetch -->|"Succeeded"| step_items_save' in lines
    assert 'step_items -->|"Succeeded"| step_sum' in lines
    assert "trigger_manual --> step_items" in lines
    assert "class step_items loop" in lines
    # Children of a loop are not entry steps of the flow: no edge from the trigger.
    assert "trigger_manual --> step_items_fetch" not in lines


def test_node_ids_are_safe_and_unique_whatever_the_keys():
    flow = Flow(
        id=FlowId("f"),
        name="odd",
        steps={"a-b": Step("A"), "a_b": Step("B"), "a b": Step("C <x>")},
    )

    lines = lines_of(flow)

    assert 'step_a_b["a-b<br/>A"]' in lines
    assert 'step_a_b_2["a_b<br/>B"]' in lines
    assert 'step_a_b_3["a b<br/>C #lt;x#gt;"]' in lines


def test_polling_steps_are_marked():
    flow = Flow(
        id=FlowId("f"),
        name="poll",
        steps={"check": Step("Check", inputs={"pollIntervalSeconds": 1})},
    )

    assert "class step_check polling" in lines_of(flow)
