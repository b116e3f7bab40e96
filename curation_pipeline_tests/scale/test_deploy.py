"""The Kubernetes deployment in ``deploy/`` parses and validates offline.

Validators (no cluster, no network): ``kubernetes-validate`` (PyPI) checks every Kubernetes
object, and every pod template inside the KubeRay ``RayCluster`` and the Dagster Helm values,
against the Kubernetes 1.33 OpenAPI schemas it ships, in strict mode (unknown fields fail).
The ``RayCluster``'s own fields are checked against the schema below (KubeRay's v1 API, the
fields this deployment uses). ``helm template`` of Dagster's chart is not run: no Helm binary
installs here (not in Debian 12, npm or PyPI for Python 3.11); the values are checked field by
field instead, and the pieces that become pod specs are validated as pod specs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from curation_pipeline_tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
K8S_VERSION = "1.33"
kubernetes_validate = pytest.importorskip("kubernetes_validate")

STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
POD_TEMPLATE = {"type": "object", "required": ["spec"]}
GROUP = {
    "type": "object", "additionalProperties": False,
    "required": ["groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"],
    "properties": {"groupName": {"type": "string", "pattern": "^[a-z0-9-]+$"}, "replicas": {"type": "integer"},
                   "minReplicas": {"type": "integer", "minimum": 0}, "maxReplicas": {"type": "integer", "minimum": 1},
                   "rayStartParams": STR_MAP, "template": POD_TEMPLATE},
}
RAYCLUSTER = {  # KubeRay ray.io/v1 RayCluster: the fields used here, nothing unknown
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayCluster"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["rayVersion", "headGroupSpec"],
            "properties": {
                "rayVersion": {"type": "string"}, "enableInTreeAutoscaling": {"type": "boolean"},
                "authOptions": {"type": "object", "additionalProperties": False,
                                "properties": {"mode": {"enum": ["token", "disabled"]}, "secretName": {"type": "string"}}},
                "headGroupSpec": {"type": "object", "additionalProperties": False,
                                  "required": ["rayStartParams", "template"],
                                  "properties": {"serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                                                 "rayStartParams": STR_MAP, "template": POD_TEMPLATE}},
                "workerGroupSpecs": {"type": "array", "items": GROUP},
            },
        },
    },
}
K8S_RUN_LAUNCHER_KEYS = {  # runLauncher.config.k8sRunLauncher in Dagster's chart
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
    "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "resources", "schedulerName", "securityContext",
    "runK8sConfig", "failPodOnRunFailure", "podSpecConfig",
}


def _docs(folder: str) -> list[dict]:
    return [d for path in sorted((DEPLOY / folder).glob("*.yaml"))
            for d in yaml.safe_load_all(path.read_text()) if d]


def _pod_template(template: dict, name: str) -> dict:
    """A pod template as the Kubernetes PodTemplate object it is part of."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def _valid(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _raycluster() -> dict:
    [cluster] = [d for d in _docs("kuberay") if d["kind"] == "RayCluster"]
    return cluster


def _values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_plain_kubernetes_objects_validate_strictly():
    docs = _docs("k8s")
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "Secret"}
    for doc in docs:
        _valid(doc)
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "ServiceAccount"))
    broken["metadata"]["nmae"] = "typo"  # the validator does catch unknown fields
    with pytest.raises(kubernetes_validate.ValidationError):
        _valid(broken)


def test_the_ray_cluster_validates_and_its_pods_are_kubernetes_pods():
    import ray

    cluster = _raycluster()
    jsonschema.validate(cluster, RAYCLUSTER)
    assert cluster["spec"]["rayVersion"] == ray.__version__  # the nodes run the Ray the pipeline pins
    groups = cluster["spec"]["workerGroupSpecs"]
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    for name, template in [("head", cluster["spec"]["headGroupSpec"]["template"]),
                           *[(g["groupName"], g["template"]) for g in groups]]:
        _valid(_pod_template(template, f"curation-ray-{name}"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**cluster, "spec": {**cluster["spec"], "workerGroupSpec": []}}, RAYCLUSTER)


def test_model_stages_request_gpus_where_the_ray_cluster_offers_them():
    cluster = _raycluster()
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    container = gpu["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert gpu["rayStartParams"]["num-gpus"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["template"]["spec"]["tolerations"])
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # only coordinators (0-CPU tasks) on the head
    assert 10001 in [p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]]


def test_dagster_values_point_runs_at_the_ray_cluster_and_object_storage(monkeypatch):
    values, cluster = _values(), _raycluster()
    [deployment] = values["dagster-user-deployments"]["deployments"]
    env = _env(deployment)
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert env["CURATION_RAY_ADDRESS"] == f"ray://{name}-head-svc.{namespace}.svc.cluster.local:10001"
    assert env["CURATION_COMPUTE"] == "ray"
    assert env["CURATION_RAW"].startswith("s3://") and env["CURATION_WAREHOUSE"].startswith("s3://")
    # one image for the user code, its run pods and every Ray node
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    pods = [cluster["spec"]["headGroupSpec"]["template"], *[g["template"] for g in cluster["spec"]["workerGroupSpecs"]]]
    assert {c["image"] for pod in pods for c in pod["spec"]["containers"]} == {image}
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "curation_pipeline.definitions"]

    # the user deployment's container and the run pods' config are valid pod-spec pieces
    container = {"name": "user-code", "image": image, "env": deployment["env"],
                 "envFrom": [{"secretRef": {"name": s["name"]}} for s in deployment["envSecrets"]],
                 "resources": deployment["resources"]}
    _valid(_pod_template({"spec": {"containers": [container]}}, "user-code"))
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    config = launcher["config"]["k8sRunLauncher"]
    assert set(config) <= K8S_RUN_LAUNCHER_KEYS, set(config) - K8S_RUN_LAUNCHER_KEYS
    run_k8s = config["runK8sConfig"]
    run_pod = {**run_k8s["podSpecConfig"], "containers": [{"name": "run", "image": image, **run_k8s["containerConfig"]}]}
    _valid(_pod_template({"spec": run_pod}, "run"))
    assert "nvidia.com/gpu" not in str(run_k8s)  # run pods coordinate; the GPUs are Ray's

    # the definitions read that configuration from the environment, as the run pods get it
    for key in ("CURATION_COMPUTE", "CURATION_RAY_ADDRESS", "CURATION_RAW", "CURATION_WAREHOUSE"):
        monkeypatch.setenv(key, env[key])
    from curation_pipeline.definitions import build_resources

    resources = build_resources()
    assert resources["compute"].uses_ray and resources["compute"].address == env["CURATION_RAY_ADDRESS"]
    assert resources["warehouse"].root == env["CURATION_WAREHOUSE"]


def test_the_image_installs_the_scale_extra():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "'.[scale]'" in dockerfile
    assert Path(REPO_ROOT / "pyproject.toml").read_text().count("scale = [") == 1
