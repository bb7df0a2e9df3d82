"""The deployment manifests (deploy/kubernetes/, deploy/compose.yaml): valid against the
Kubernetes schemas (offline), and saying what the image and the app need: the health
probes, the unprivileged user, a read-only root with a writable /tmp, sessions pinned to
one replica."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
HEALTH = "/_stcore/health"


def _manifests() -> dict[str, dict]:
    return {doc["kind"]: doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())}


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, "1.37.0", strict=True)  # raises on any error or unknown field


def _dockerfile_user() -> str:
    return re.search(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M).group(1)


def test_the_deployment_runs_replicas_of_the_image_as_its_user_with_health_probes():
    m = _manifests()
    assert set(m) == {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler"}
    dep = m["Deployment"]
    assert dep["spec"]["replicas"] >= 2 and m["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    uid, gid = _dockerfile_user().split(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (str(pod["securityContext"]["runAsUser"]), str(pod["securityContext"]["runAsGroup"])) == (uid, gid)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {v["mountPath"]: v["name"] for v in container["volumeMounts"]}
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])  # the one writable place
    port = next(p for p in container["ports"] if p["name"] == "http")["containerPort"]
    assert f"EXPOSE {port}" in (ROOT / "Dockerfile").read_text()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": HEALTH, "port": "http"}, probe
    # the startup probe waits for the warm-up (serve.py) for minutes, not seconds
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # memory: the limit above the measured peak (docs/benchmarks.md), the request near it
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert container["resources"]["requests"]["memory"] == "1280Mi"


def test_a_browser_stays_on_the_replica_that_holds_its_session():
    m = _manifests()
    notes = m["Ingress"]["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600  # the websocket stays open
    assert m["Service"]["spec"]["sessionAffinity"] == "ClientIP"
    backend = m["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == m["Service"]["metadata"]["name"]
    assert m["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == m["Deployment"]["metadata"]["name"]


def test_compose_runs_the_same_image_the_same_way():
    svc = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]["attnviz"]
    assert svc["user"] == _dockerfile_user() and svc["read_only"] is True
    assert any(t.startswith("/tmp") for t in svc["tmpfs"])
    assert svc["ports"] == ["8501:8501"] and svc["build"]["context"] == ".."
