"""The shipped Grafana dashboard and alert rules: valid, and about metrics that exist.

Metric names are read from `service.metrics.METRICS`, not from a copied list, so a
renamed metric breaks this test instead of a dashboard in production. The rule file
goes through `promtool check rules` (scripts/install-promtool puts it in .cache/tools;
`./scripts/check` runs that first).
"""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter, Histogram

from service import metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "flow-orchestrator.json"
RULES = REPO / "deploy" / "prometheus" / "flow-orchestrator.rules.yaml"
_NAME = re.compile(r"\bflow_[a-z_]+\b")


def series_names() -> set[str]:
    """Every series name the metrics module exports (with _total, _bucket, ...)."""
    names: set[str] = set()
    for family in metrics.METRICS:
        name = family._name
        if isinstance(family, Counter):
            names.add(f"{name}_total")
        elif isinstance(family, Histogram):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def label_names() -> set[str]:
    return {label for family in metrics.METRICS for label in family._labelnames}


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


@pytest.mark.parametrize(
    ("where", "expr"), [*dashboard_exprs(), *rule_exprs()], ids=lambda v: v[:40]
)
def test_every_query_names_existing_metrics(where, expr):
    words = set(_NAME.findall(expr))
    metric_words = words & series_names()

    assert metric_words, f"{where}: no flow_* metric in {expr}"
    assert words <= series_names() | label_names(), f"{where}: {words - series_names()}"


def test_the_dashboard_has_the_panels_on_call_asks_for():
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(panel["title"] for panel in dashboard["panels"]).lower()

    for topic in (
        "throughput",
        "failures",
        "queue wait",
        "dead-letter",
        "timer lag",
        "saturation",
    ):
        assert topic in titles
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert {v["name"] for v in dashboard["templating"]["list"]} == {
        "datasource",
        "flow",
    }


def promtool() -> str:
    found = shutil.which("promtool") or REPO / ".cache" / "tools" / "promtool"
    if not Path(found).exists():
        pytest.fail("promtool is missing: run scripts/install-promtool", pytrace=False)
    return str(found)


def test_the_alert_rules_pass_promtool():
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_promtool_refuses_a_broken_rule(tmp_path):
    broken = tmp_path / "broken.rules.yaml"
    broken.write_text(RULES.read_text().replace("> 0", "> > 0", 1))

    done = subprocess.run(
        [promtool(), "check", "rules", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode != 0
