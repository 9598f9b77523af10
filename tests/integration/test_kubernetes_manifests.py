"""deploy/kubernetes: every kustomization renders and validates; the manifests match the app.

Rendered with ``kubectl kustomize`` (``make test`` installs Debian's kubernetes-client when no
kubectl is there). Built-in kinds are validated strictly (unknown fields refused) against the
Kubernetes schemas ``kubernetes-validate`` ships; custom resources (ServiceMonitor, HTTPRoute,
InferencePool, Envoy Gateway's BackendTrafficPolicy) against the upstream CRDs' OpenAPI schemas
kept in tests/data/crd-schemas, made strict the same way. Both run offline. (CEL rules in the
CRDs, ``x-kubernetes-validations``, are the API server's job and are not checked here.)

Then the facts the manifests repeat are checked against their one home: the probes' paths
against the app's route table, the grace period against the shutdown timeout, the image names,
user and model folder against the Dockerfiles, the metric names against /metrics.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, latest_version

from app.api.app import create_app
from app.api.metrics import ENGINE_GAUGES, GATEWAY_GAUGES, KV_USAGE_NAMES
from app.settings import Settings
from tests.support.api import app_client, eventually
from tests.support.fake_engine import FakeEngine

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
CRD_SCHEMAS = REPO / "tests" / "data" / "crd-schemas"
KUSTOMIZATIONS = sorted(p.parent.relative_to(DEPLOY) for p in DEPLOY.rglob("kustomization.yaml"))
OVERLAYS = {"cpu": DEPLOY / "overlays" / "cpu", "cuda": DEPLOY / "overlays" / "cuda"}
# The oldest Kubernetes the manifests are for (grpc probes, autoscaling/v2, policy/v1 PDBs)
# and the newest that kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.28.0", latest_version())
UVICORN_CLOSE_S = 5  # app/serve.py: uvicorn's timeout_graceful_shutdown after the drain
Doc = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl is missing: `make test` installs Debian's kubernetes-client"
    return path


@cache
def render(folder: Path) -> tuple[Doc, ...]:
    """``kubectl kustomize folder`` as a tuple of documents."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def strict(schema: Any) -> Any:
    """An OpenAPI v3 schema with unknown properties refused wherever it lists properties
    (what ``kubectl apply --validate=strict`` does with a CRD's structural schema)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    open_ended = out.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in out
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> the strict schema of each CRD in tests/data/crd-schemas."""
    schemas = {}
    for path in CRD_SCHEMAS.glob("*.json"):
        crd = json.loads(path.read_text())
        api_version = f"{crd['group']}/{crd['version']}"
        schemas[(api_version, crd["kind"])] = strict(crd["openAPIV3Schema"])
    return schemas


def validate(doc: Doc) -> None:
    """Strict validation of one object; raises on any problem, fails on an unknown kind."""
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError:
            break  # not a built-in kind: a custom resource
    else:
        return
    schema = crd_schemas().get((doc["apiVersion"], doc["kind"]))
    assert schema is not None, f"no schema for {doc['apiVersion']} {doc['kind']}"
    # OpenAPI v3.0 schemas are JSON Schema draft 4 in this respect (boolean exclusiveMaximum)
    jsonschema.Draft4Validator(schema).validate(doc)


def find(docs: tuple[Doc, ...], kind: str, name: str | None = None) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"{len(matches)} {kind} {name or ''}"
    return matches[0]


def container(docs: tuple[Doc, ...]) -> Doc:
    pod = find(docs, "Deployment", "cria-server")["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "cria-server"]
    return dict(server)


def env(server: Doc) -> dict[str, str]:
    return {item["name"]: item["value"] for item in server.get("env", []) if "value" in item}


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=str)
def test_every_kustomization_renders_and_validates_strictly(folder: Path) -> None:
    docs = render(folder)
    assert docs
    for doc in docs:
        validate(doc)


def test_the_validation_is_strict() -> None:
    """A misspelled field fails both validators (they would not pass anything)."""
    deployment = json.loads(json.dumps(find(render(Path("overlays/cpu")), "Deployment")))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(jsonschema.ValidationError, match="terminationGracePeriod"):
        validate(deployment)
    monitor = json.loads(json.dumps(find(render(Path("overlays/cpu")), "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="scrapeInterval"):
        validate(monitor)


@cache
def get_routes() -> frozenset[str]:
    """The GET routes of the app's route table (as its OpenAPI document lists them)."""
    app = create_app(Settings(model="fake-model"), FakeEngine())
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return frozenset(path for path, operations in paths.items() if "get" in operations)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_real_routes_on_the_served_port(overlay: str) -> None:
    server = container(render(OVERLAYS[overlay]))
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    assert ports["http"] == int(env(server)["CRIA_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        action = server[probe]["httpGet"]
        assert action["path"] in get_routes(), (probe, action["path"])
        assert action["port"] in ports
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"  # 503 while draining
    assert server["startupProbe"]["httpGet"]["path"] == "/health"  # 503 while loading
    service = find(render(OVERLAYS[overlay]), "Service", "cria-server")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitor = find(render(OVERLAYS[overlay]), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] in get_routes()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_outlasts_a_whole_drain(overlay: str) -> None:
    docs = render(OVERLAYS[overlay])
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    server = container(docs)
    grace = pod["terminationGracePeriodSeconds"]
    default = Settings.model_fields["shutdown_timeout"].default
    shutdown_s = float(env(server).get("CRIA_SHUTDOWN_TIMEOUT", default))
    command = server["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    assert pre_stop_s > 0  # the endpoints update before SIGTERM starts the drain
    assert grace > shutdown_s
    assert grace > default
    assert grace > pre_stop_s + shutdown_s + UVICORN_CLOSE_S
    # Liveness (also /health: 503 while draining) never fails a drain that is running.
    liveness = server["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > (
        pre_stop_s + shutdown_s + UVICORN_CLOSE_S
    )


def dockerfile_facts(name: str) -> dict[str, str]:
    text = (REPO / name).read_text()
    tag = re.search(rf"docker build -f {name} -t (\S+) \.", text)
    uid = re.search(r"useradd .*--uid (\d+)", text)
    models = re.search(r"CRIA_MODELS_DIR=(\S+)", text)
    assert tag, name
    assert uid, name
    assert models, name
    return {"image": tag[1], "uid": uid[1], "models": models[1]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_image_user_and_model_folder_are_the_dockerfiles(overlay: str) -> None:
    facts = dockerfile_facts(f"Dockerfile.{overlay}")
    docs = render(OVERLAYS[overlay])
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    server = container(docs)
    assert server["image"] == facts["image"]
    assert str(pod["securityContext"]["runAsUser"]) == facts["uid"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (mount,) = server["volumeMounts"]
    assert mount["mountPath"] == facts["models"]
    assert mount["readOnly"] is True
    gpus = server["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == "1") == (overlay == "cuda")


def test_autoscaling_and_the_endpoint_picker_read_metrics_the_server_serves() -> None:
    served = {name for _, name, _ in ENGINE_GAUGES + GATEWAY_GAUGES} | set(KV_USAGE_NAMES)
    hpa = find(render(Path("overlays/cpu")), "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] in served
    assert hpa["spec"]["scaleTargetRef"]["name"] == "cria-server"
    adapter = yaml.safe_load((DEPLOY / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    docs = render(Path("gateway/inference-pool"))
    args = find(docs, "Deployment", "cria-epp")["spec"]["template"]["spec"]["containers"][0]
    flags = dict(zip(args["args"][::2], args["args"][1::2], strict=True))
    for flag in (
        "--total-queued-requests-metric",
        "--total-running-requests-metric",
        "--kv-cache-usage-percentage-metric",
    ):
        assert flags[flag] in served, flag
    pool = find(docs, "InferencePool")
    server = container(render(OVERLAYS["cuda"]))
    assert pool["spec"]["targetPorts"][0]["number"] == server["ports"][0]["containerPort"]
    labels = find(render(OVERLAYS["cuda"]), "Deployment")["spec"]["template"]["metadata"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= labels["labels"].items()
    policy = find(render(Path("gateway/consistent-hash")), "BackendTrafficPolicy")
    assert policy["spec"]["loadBalancer"]["consistentHash"]["header"]["name"] == "X-Session-Id"
    assert policy["spec"]["healthCheck"]["active"]["http"]["path"] in get_routes()


async def test_the_probed_route_is_ready_only_with_the_model_loaded() -> None:
    """What the probes see: 503 while the model loads, 200 once it is ready."""
    path = container(render(OVERLAYS["cpu"]))["readinessProbe"]["httpGet"]["path"]
    engine = FakeEngine(start_delay_s=0.3)
    async with app_client(engine, wait_ready=False) as (client, _):
        loading = await client.get(path)
        await eventually(lambda: engine.health().ready)
        ready = await client.get(path)
    assert (loading.status_code, ready.status_code) == (503, 200)
