"""The Kubernetes deployment in ``deploy/`` renders and validates offline.

Rendering: the repository's chart ``deploy/helm/curation-pipeline`` (the Dagster code server and
the KubeRay ``RayCluster``) is rendered by Helm's own template engine, Helm v4's Go SDK, which the
``helm-python-sdk`` wheel bundles (``make setup-scale`` installs it; no helm binary installs
offline): the equivalent of ``helm template curation deploy/helm/curation-pipeline -n curation``.
Dagster's official chart cannot be fetched offline, so its values (``dagster-values.yaml``) are
checked where they matter: the run launcher's config against ``dagster_k8s.K8sRunLauncher``'s
own config schema, the workspace entry against the chart's code-server Service.

Validators (no cluster, no network): ``kubernetes-validate`` checks every rendered and plain
Kubernetes object, and every pod template inside the ``RayCluster`` and the run launcher's config,
against the Kubernetes 1.33 OpenAPI schemas it ships, in strict mode (unknown fields fail). The
``RayCluster``'s own fields are checked against the schema below (KubeRay's v1 API, the fields
this deployment uses), each ``rayStartParams`` entry against ``ray start``'s own options; the code
server's run-pod container context against dagster-k8s's. The rest of ``dagster-values.yaml``:
``test_deploy_dagster_values.py``; the image's packages: ``test_deploy_image.py``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import dagster as dg
import jsonschema
import pytest
import yaml

from curation_pipeline_tests.conftest import REPO_ROOT
from curation_pipeline_tests.scale.helpers import require

DEPLOY = REPO_ROOT / "deploy"
K8S_VERSION = "1.33"
DAGSTER_PG_SECRET = "dagster-postgresql-secret"  # Dagster's chart's default global.postgresqlSecretName

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


def _docs(folder: str) -> list[dict]:
    return [d for path in sorted((DEPLOY / folder).glob("*.yaml"))
            for d in yaml.safe_load_all(path.read_text()) if d]


def _pod_template(template: dict, name: str) -> dict:
    """A pod template as the Kubernetes PodTemplate object it is part of."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def _kubernetes_validate():
    """The validator (the scale extra): skipped without it on a developer machine, failed in CI."""
    try:
        import kubernetes_validate
    except ImportError:
        require(False, "kubernetes-validate checks the manifests: the scale extra (make setup) installs it")
    return kubernetes_validate


def _valid(obj: dict) -> None:
    _kubernetes_validate().validate(obj, K8S_VERSION, strict=True)


def _raycluster() -> dict:
    [cluster] = [d for d in _docs("kuberay") if d["kind"] == "RayCluster"]
    return cluster


def _values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())


CHART = DEPLOY / "helm" / "curation-pipeline"


def _render(values: dict | None = None, namespace: str = "curation") -> list[dict]:
    """``helm template curation deploy/helm/curation-pipeline -n <namespace>`` through Helm's Go SDK."""
    try:
        import helm_python as helm
    except ImportError:
        require(False, "helm-python-sdk renders the chart: make setup-scale installs it")
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name="curation", namespace=namespace)
    return [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]


def _kind(docs: list[dict], kind: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


K8S_LAUNCHER = REPO_ROOT / ".venv" / "k8s-launcher"  # make setup-scale: dagster-k8s, outside the venv's packages


def _dagster_k8s():
    """dagster-k8s 0.29.27 (its release pins dagster 1.13.27, which the virtualenv cannot take:
    Makefile), from its own folder, behind the virtualenv's packages on sys.path."""
    import sys
    import warnings

    if str(K8S_LAUNCHER) not in sys.path and K8S_LAUNCHER.is_dir():
        sys.path.append(str(K8S_LAUNCHER))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "dagster-k8s 0.29.27 expects dagster 1.13.27"
            import dagster_k8s
            from dagster_k8s.container_context import K8sContainerContext
    except ImportError as exc:
        require(False, f"dagster-k8s is not installed ({exc}): make setup-scale puts it in {K8S_LAUNCHER}")
    assert dagster_k8s.__version__ == "0.29.27"
    return dagster_k8s.K8sRunLauncher, K8sContainerContext


def _dagster_pg_secret(values: dict) -> str:
    """The Postgres password secret Dagster's chart creates (or is given) for these values."""
    return values.get("global", {}).get("postgresqlSecretName") or DAGSTER_PG_SECRET


def _launcher_config(values: dict) -> dict:
    """What Dagster's chart writes into the instance's ``run_launcher.config`` for these values
    (its ``_run-launcher.tpl``: camelCase keys become dagster-k8s's snake_case ones; the chart adds
    the instance config map, the Postgres secret, DAGSTER_HOME and the service account)."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    snake = lambda key: re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()  # noqa: E731
    config = {"instance_config_map": "dagster-instance", "postgres_password_secret": _dagster_pg_secret(values),
              "dagster_home": "/opt/dagster/dagster_home", "load_incluster_config": True,
              "service_account_name": values["global"]["serviceAccountName"]}
    for key, value in launcher.items():
        if key in ("envSecrets", "envConfigMaps"):
            value = [item["name"] for item in value]
        elif key == "runK8sConfig":
            value = {snake(k): v for k, v in value.items()}
        config["job_image" if key == "image" else snake(key)] = value
    return config


def _run_launcher(tmp_path: Path):
    """The ``K8sRunLauncher`` Dagster's chart configures from ``dagster-values.yaml`` (a kubeconfig
    file stands in for the in-cluster one; nothing connects)."""
    from dagster._config import process_config, resolve_to_config_type

    K8sRunLauncher, _ = _dagster_k8s()
    result = process_config(resolve_to_config_type(K8sRunLauncher.config_type()), _launcher_config(_values()))
    assert result.success, [e.message for e in result.errors]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "users": [{"name": "u", "user": {}}]}))
    return K8sRunLauncher(**{**result.value, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})


def _run_pod_job(deployment: dict, tmp_path: Path) -> dict:
    """The Job Dagster's daemon launches for a run of the code server ``deployment`` renders:
    ``K8sContainerContext.create_for_run`` with the chart's run launcher (``dagster-values.yaml``)
    and the container context and image the code server reports (``DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT``,
    ``DAGSTER_CURRENT_IMAGE``)."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun

    _, K8sContainerContext = _dagster_k8s()
    import kubernetes  # dagster-k8s's own, in its folder
    from dagster_k8s.job import construct_dagster_k8s_job

    [server] = deployment["spec"]["template"]["spec"]["containers"]
    env = _env(server)
    image = env["DAGSTER_CURRENT_IMAGE"]
    origin = JobPythonOrigin("curate_shards", RepositoryPythonOrigin(
        "python", ModuleCodePointer("curation_pipeline.definitions", "defs", None),
        container_image=image, container_context=json.loads(env["DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT"])))
    run = DagsterRun(job_name="curate_shards", run_id="r1", job_code_origin=origin)
    launcher = _run_launcher(tmp_path)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"], job_name="dagster-run-r1", pod_name="dagster-run-r1",
        component="run_worker", user_defined_k8s_config=context.run_k8s_config,
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": "curate_shards"}])
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def _ray_start_errors(params: dict[str, str]) -> list[str]:
    """What ``ray start`` would refuse in a group's ``rayStartParams``, each entry as KubeRay passes it:
    ``--key=value``, or a bare ``--key`` for "true" (nothing for "false"; log-color and
    include-dashboard take true/false as values). A misspelt key fails the pod's start, not the schema."""
    import click
    from ray.scripts.scripts import start

    options = {opt: param for param in start.params for opt in param.opts if opt.startswith("--")}
    errors = []
    for key, value in params.items():
        option = options.get(f"--{key}")
        if option is None:
            errors.append(f"{key}: not an option of `ray start`")
        elif value.lower() in ("true", "false") and key not in ("log-color", "include-dashboard"):
            if not option.is_flag:
                errors.append(f"{key}={value}: KubeRay passes it as a bare flag, and it takes a value")
        elif option.is_flag:
            errors.append(f"{key}={value}: a flag, set it to \"true\"")
        else:
            try:
                option.type.convert(value, option, None)
            except click.BadParameter as exc:
                errors.append(f"{key}={value}: {exc.message}")
    return errors


def _groups(cluster: dict) -> list[tuple[str, dict]]:
    return [("head", cluster["spec"]["headGroupSpec"]),
            *[(g["groupName"], g) for g in cluster["spec"]["workerGroupSpecs"]]]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_plain_kubernetes_objects_validate_strictly():
    docs = _docs("k8s")
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "Secret"}
    for doc in docs:
        _valid(doc)
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "ServiceAccount"))
    broken["metadata"]["nmae"] = "typo"  # the validator does catch unknown fields
    with pytest.raises(_kubernetes_validate().ValidationError):
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


def test_the_chart_renders_valid_kubernetes_objects():
    docs = _render()
    assert sorted(d["kind"] for d in docs) == ["Deployment", "RayCluster", "Service"]
    for doc in docs:
        if doc["kind"] == "RayCluster":  # a custom resource: its own schema, its pods as pods
            jsonschema.validate(doc, RAYCLUSTER)
            for group in [doc["spec"]["headGroupSpec"], *doc["spec"]["workerGroupSpecs"]]:
                _valid(_pod_template(group["template"], "ray"))
        else:
            _valid(doc)
    assert {d["metadata"]["namespace"] for d in docs} == {"curation"}
    # the plain manifest (for `kubectl apply` without Helm) is what the chart renders
    rendered, plain = _kind(docs, "RayCluster"), _raycluster()
    assert rendered["spec"] == plain["spec"] and rendered["metadata"]["name"] == plain["metadata"]["name"]
    # values change what they should: another namespace, a CPU-only cluster
    other = _render({"ray": {"workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 2,
                                               "gpus": 0, "resources": {"requests": {"cpu": "2"}, "limits": {}}}]}},
                    namespace="elsewhere")
    groups = _kind(other, "RayCluster")["spec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu"] and "nvidia.com/gpu" not in json.dumps(groups)
    env = _env(_kind(other, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert env["CURATION_RAY_ADDRESS"] == "ray://curation-ray-head-svc.elsewhere.svc.cluster.local:10001"


def test_the_code_server_points_runs_at_the_ray_cluster_and_object_storage():
    docs, values = _render(), _values()
    cluster, deployment, service = _kind(docs, "RayCluster"), _kind(docs, "Deployment"), _kind(docs, "Service")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert env["CURATION_RAY_ADDRESS"] == f"ray://{name}-head-svc.{namespace}.svc.cluster.local:10001"
    assert env["CURATION_COMPUTE"] == "ray"
    assert env["CURATION_RAW"].startswith("s3://") and env["CURATION_WAREHOUSE"].startswith("s3://")
    assert container["args"][-2:] == ["--module-name", "curation_pipeline.definitions"]
    # one image for the code server, its run pods and every Ray node
    image = container["image"]
    pods = [cluster["spec"]["headGroupSpec"]["template"], *[g["template"] for g in cluster["spec"]["workerGroupSpecs"]]]
    assert {c["image"] for pod in pods for c in pod["spec"]["containers"]} == {image} == {env["DAGSTER_CURRENT_IMAGE"]}
    # Dagster's chart (enableSubchart: false) points its workspace at this Service
    [entry] = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enableSubchart"] is False
    assert entry["name"] == service["metadata"]["name"] and entry["port"] == service["spec"]["ports"][0]["port"]
    assert f"{entry['image']['repository']}:{entry['image']['tag']}" == image


def test_automation_starts_on_and_a_null_engine_is_the_local_one():
    """The runMonitoring comment and the README's resume rely on the nightly schedule: without
    CURATION_AUTOMATION the location's sensors and schedules start stopped. compute.engine null rendered
    CURATION_COMPUTE='<nil>', which the code location refused to load."""
    from curation_pipeline.resources import ComputeResource

    def env(values: dict) -> dict:
        [container] = _kind(_render(values), "Deployment")["spec"]["template"]["spec"]["containers"]
        return _env(container)

    assert env({})["CURATION_AUTOMATION"] == "on"
    assert "CURATION_AUTOMATION" not in env({"automation": False})
    local = env({"compute": {"engine": None}})["CURATION_COMPUTE"]
    assert local == "local" and not ComputeResource(engine=local).uses_ray


def test_the_code_server_reads_the_dagster_instances_postgres_password():
    """The daemon sends the instance (Dagster's chart: ``password: {env: DAGSTER_PG_PASSWORD}``) to the
    code server for each sensor and schedule tick, which resolves it in its own environment: without
    the variable every tick failed. Dagster's own user deployments set it from the same secret."""
    def password(docs: list[dict]) -> dict:
        [server] = _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
        [entry] = [e for e in server["env"] if e["name"] == "DAGSTER_PG_PASSWORD"]
        return entry

    secret = _dagster_pg_secret(_values())  # what Dagster's chart, installed with dagster-values.yaml, creates
    assert password(_render()) == {"name": "DAGSTER_PG_PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": secret, "key": "postgresql-password"}}}
    other = password(_render({"dagster": {"postgresqlSecretName": "managed-postgres"}}))
    assert other["valueFrom"]["secretKeyRef"] == {"name": "managed-postgres", "key": "postgresql-password"}


def test_run_pods_get_the_code_servers_settings_from_the_launcher(monkeypatch, tmp_path):
    """The run pod's Job as Dagster's daemon builds it, in a process without the code server's
    variables, like the daemon's and webserver's pods (a name-only entry, resolved there, failed
    every launch)."""
    deployment = _kind(_render(), "Deployment")
    [server] = deployment["spec"]["template"]["spec"]["containers"]
    server_env = {e["name"]: e for e in server["env"] if not e["name"].startswith("DAGSTER_")}
    env = _env(server)
    assert {"CURATION_COMPUTE", "CURATION_RAY_ADDRESS", "CURATION_RAW", "CURATION_WAREHOUSE",
            "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "HF_HUB_OFFLINE"} <= set(server_env)
    for name in server_env:
        monkeypatch.delenv(name, raising=False)
    assert not set(server_env) & set(os.environ)

    image = env["DAGSTER_CURRENT_IMAGE"]
    job = _run_pod_job(deployment, tmp_path)
    _valid(job)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    run_env = {e["name"]: e for e in container["env"]}

    # every setting of the code server, with its value; the Ray token from its secret, never literal
    assert {name: run_env.get(name) for name in server_env} == server_env
    assert run_env["CURATION_COMPUTE"]["value"] == "ray"
    assert run_env["CURATION_RAY_ADDRESS"]["value"] == "ray://curation-ray-head-svc.curation.svc.cluster.local:10001"
    assert run_env["CURATION_RAW"]["value"] == "s3://curation-bucket/raw"
    assert run_env["CURATION_WAREHOUSE"]["value"] == "s3://curation-bucket/warehouse"
    assert run_env["RAY_AUTH_TOKEN"] == {"name": "RAY_AUTH_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "curation-ray-auth", "key": "auth_token"}}}
    # Ray Client sends the token only in the cluster's auth mode: without it the head refuses the run
    assert run_env["RAY_AUTH_MODE"]["value"] == _kind(_render(), "RayCluster")["spec"]["authOptions"]["mode"] == "token"
    # the instance's Postgres password: from the run launcher (Dagster's chart's secret), not the context
    assert run_env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == _dagster_pg_secret(_values())
    assert [f["secretRef"]["name"] for f in container["envFrom"]] == [f["secretRef"]["name"] for f in server["envFrom"]]
    assert container["image"] == image and pod["serviceAccountName"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    # the launcher's run pod resources still apply (deep merge), and no GPU
    resources = _values()["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["resources"]
    assert container["resources"] == resources
    # its pools sized to the CPU it requests: a pod with no CPU limit sees every core of its node
    assert "cpu" not in resources.get("limits", {})
    assert run_env["CURATION_THREADS"]["value"] == resources["requests"]["cpu"]
    assert "nvidia.com/gpu" not in json.dumps(job)

    # the definitions read that configuration from the run pod's environment
    from curation_pipeline.definitions import build_resources

    for name, entry in run_env.items():
        if "value" in entry:
            monkeypatch.setenv(name, entry["value"])
    resources = build_resources()
    value = lambda v: v.get_value() if isinstance(v, dg.EnvVar) else v  # noqa: E731 (read at run start)
    assert value(resources["compute"].engine) == "ray"
    assert value(resources["compute"].address) == env["CURATION_RAY_ADDRESS"]
    assert value(resources["warehouse"].root) == env["CURATION_WAREHOUSE"]


def test_the_run_launcher_is_dagster_k8s_and_its_config_validates(tmp_path):
    from dagster._config import process_config, resolve_to_config_type

    K8sRunLauncher, _ = _dagster_k8s()
    values = _values()
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    config = _launcher_config(values)
    schema = resolve_to_config_type(K8sRunLauncher.config_type())
    result = process_config(schema, config)
    assert result.success, [e.message for e in result.errors]
    typo = process_config(schema, {**config, "job_namespce": "x"})  # the schema does catch typos
    assert not typo.success

    # the real class takes it
    instance = _run_launcher(tmp_path)
    assert instance.job_namespace == "curation" and not instance.env_secrets  # the code server's context names them

    # run pods: valid pod specs, light, no GPU (the GPUs are Ray's)
    run_k8s = config["run_k8s_config"]
    image = "registry.example.com/curation-pipeline:0.1.0"
    run_pod = {**run_k8s["pod_spec_config"], "containers": [{"name": "run", "image": image, **run_k8s["container_config"]}]}
    _valid(_pod_template({"spec": run_pod}, "run"))
    assert "nvidia.com/gpu" not in str(run_k8s)


def test_ray_start_params_are_options_of_ray_start():
    """KubeRay turns each ``rayStartParams`` entry into a ``ray start`` option; an unknown one (a
    misspelt ``memroy``) stops the node from starting, which no schema of the manifest notices."""
    for cluster in (_raycluster(), _kind(_render(), "RayCluster")):
        for name, group in _groups(cluster):
            assert not _ray_start_errors(group["rayStartParams"]), (name, _ray_start_errors(group["rayStartParams"]))
    # the check does catch them
    assert _ray_start_errors({"memroy": "0"}) == ["memroy: not an option of `ray start`"]
    assert len(_ray_start_errors({"num-cpus": "two", "block": "yes", "num-gpus": "true"})) == 3
    assert not _ray_start_errors({"block": "true", "include-dashboard": "false", "object-store-memory": "1000000000"})


def test_gpu_workers_mount_a_models_claim_only_when_one_is_named():
    """Nothing here creates a PersistentVolumeClaim: a claim named by default would hold every GPU pod
    Pending. So none by default; a claim the user created and named is mounted read-only as HF_HOME."""
    for cluster in (_raycluster(), _kind(_render(), "RayCluster")):
        assert "persistentVolumeClaim" not in json.dumps(cluster) and "HF_HOME" not in json.dumps(cluster)
    groups = yaml.safe_load((CHART / "values.yaml").read_text())["ray"]["workerGroups"]
    assert [g["modelsClaim"] for g in groups if "modelsClaim" in g] == [""]
    named = [{**g, "modelsClaim": "hf-cache"} if g["name"] == "gpu" else g for g in groups]
    gpu = next(g for g in _kind(_render({"ray": {"workerGroups": named}}), "RayCluster")["spec"]["workerGroupSpecs"]
               if g["groupName"] == "gpu")
    _valid(_pod_template(gpu["template"], "ray-gpu"))
    pod = gpu["template"]["spec"]
    [container] = pod["containers"]
    assert pod["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": "hf-cache"}}]
    assert container["volumeMounts"] == [{"name": "models", "mountPath": "/models", "readOnly": True}]
    assert _env(container)["HF_HOME"] == "/models/hf" and _env(container)["HF_HUB_OFFLINE"] == "1"


def test_without_a_credentials_secret_no_pod_references_one(tmp_path):
    """With IRSA or workload identity (deploy/k8s/namespace.yaml) the secret does not exist: a pod
    whose ``envFrom`` names it stays in CreateContainerConfigError. ``storage.credentialsSecret: ""``
    must take it out of everything, the run pods Dagster's run launcher creates included."""
    secret = yaml.safe_load((CHART / "values.yaml").read_text())["storage"]["credentialsSecret"]
    assert secret == "curation-object-store"
    docs = _render({"storage": {"credentialsSecret": ""}})
    job = _run_pod_job(_kind(docs, "Deployment"), tmp_path)
    named = [*[(d["kind"], d) for d in docs], ("run pod", job), ("run launcher", _launcher_config(_values()))]
    for name, obj in named:
        assert secret not in json.dumps(obj), name
    # and with it (the default), the code server, every run pod and every Ray pod read it
    docs = _render()
    server = _kind(docs, "Deployment")
    pods = [server["spec"]["template"], _run_pod_job(server, tmp_path)["spec"]["template"],
            *[g["template"] for _, g in _groups(_kind(docs, "RayCluster"))]]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            assert [f["secretRef"]["name"] for f in container["envFrom"]] == [secret]


def test_the_readme_forwards_to_the_webserver_service_of_dagsters_chart():
    """Dagster's chart names its webserver Service ``<release>-webserver`` (its
    ``dagster.webserver.fullname``: the release name and "webserver", no chart name), port 80."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("### Kubernetes"):]
    section = section[:section.index("\n### ", 1)]
    [release] = re.findall(r"helm upgrade --install (\S+) dagster/dagster ", section)
    [(service, port)] = re.findall(r"port-forward svc/(\S+) \d+:(\d+)", section)
    assert (service, port) == (f"{release}-webserver", "80")


def test_the_image_installs_the_scale_extra():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "'.[scale]'" in dockerfile
    assert Path(REPO_ROOT / "pyproject.toml").read_text().count("scale = [") == 1


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in bytes (the suffixes these manifests use)."""
    number, suffix = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity)).groups()
    units = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return int(float(number) * units[suffix])


# A Ray Client connection starts a server process on the head (~150 MB idle), and each run
# holds one (in-process executor): RUN_CLIENT_MEMORY each with headroom, HEAD_BASE_MEMORY for GCS, the
# dashboard and its agent, the autoscaler
RUN_CLIENT_MEMORY, HEAD_BASE_MEMORY = 200 * 2**20, 2 * 2**30


def _head_memory_errors(cluster: dict, runs: int) -> list[str]:
    [container] = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    need = runs * RUN_CLIENT_MEMORY + HEAD_BASE_MEMORY
    return [f"head {kind}.memory {resources[kind]['memory']} < {runs} runs x 200Mi + 2Gi"
            for kind, resources in (("requests", container["resources"]), ("limits", container["resources"]))
            if _bytes(resources[kind]["memory"]) < need]


def test_the_ray_head_has_memory_for_a_client_server_per_concurrent_run():
    """Dagster's run queue admits maxConcurrentRuns runs at once, each a Ray Client of the head: a head
    sized for fewer is OOM-killed with every run on it (the cluster's GCS goes with it)."""
    runs = _values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"]
    for cluster in (_raycluster(), _kind(_render(), "RayCluster")):
        assert not _head_memory_errors(cluster, runs), _head_memory_errors(cluster, runs)
    assert _head_memory_errors(_kind(_render(), "RayCluster"), 2 * runs)  # the rule does bind


def test_gpu_workers_select_nodes_only_when_told_to():
    """``nvidia.com/gpu.present`` is set by NVIDIA's GPU Feature Discovery alone: a node selector on it
    held every GPU worker Pending on clusters with just the device plugin. The GPU request is enough."""
    for cluster in (_raycluster(), _kind(_render(), "RayCluster")):
        assert "nodeSelector" not in json.dumps(cluster["spec"]["workerGroupSpecs"])
    groups = yaml.safe_load((CHART / "values.yaml").read_text())["ray"]["workerGroups"]
    selector = {"nvidia.com/gpu.present": "true"}
    labelled = [{**g, "nodeSelector": selector} if g["name"] == "gpu" else g for g in groups]
    cluster = _kind(_render({"ray": {"workerGroups": labelled}}), "RayCluster")
    workers = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert workers["gpu"]["template"]["spec"]["nodeSelector"] == selector
    assert "nodeSelector" not in workers["cpu"]["template"]["spec"]
    _valid(_pod_template(workers["gpu"]["template"], "ray-gpu"))


def test_the_example_objects_are_the_ones_everything_names():
    """deploy/k8s creates the namespace, the service account and (as templates) the secrets; the chart,
    dagster-values.yaml and the plain RayCluster name them. A name or key that differs leaves pods in
    CreateContainerConfigError or forbidden, which no schema notices."""
    objects = _docs("k8s")
    [namespace] = [d["metadata"]["name"] for d in objects if d["kind"] == "Namespace"]
    [account] = [d["metadata"]["name"] for d in objects if d["kind"] == "ServiceAccount"]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in objects if d["kind"] == "Secret"}
    chart, values, plain = yaml.safe_load((CHART / "values.yaml").read_text()), _values(), _raycluster()
    docs = _render(namespace=namespace)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]

    # one namespace: the objects here, the plain cluster, the run pods, the install commands
    assert {d["metadata"]["namespace"] for d in objects if d["kind"] != "Namespace"} == {namespace}
    assert plain["metadata"]["namespace"] == launcher["jobNamespace"] == namespace
    header = (DEPLOY / "helm" / "dagster-values.yaml").read_text()
    installs = re.findall(r"helm upgrade --install \S+ \S+ .*?-n (\S+)", header)
    assert installs and set(installs) == {namespace}

    # one service account: every pod of the chart, of the plain cluster and of every run
    pods = [_kind(docs, "Deployment")["spec"]["template"],
            *[g["template"] for _, g in [*_groups(_kind(docs, "RayCluster")), *_groups(plain)]]]
    assert {pod["spec"]["serviceAccountName"] for pod in pods} == {account} == {chart["serviceAccountName"]}
    run_account = launcher["runK8sConfig"]["podSpecConfig"]["serviceAccountName"]
    assert values["global"]["serviceAccountName"] == run_account == account

    # the secrets: exactly the ones the chart names, with the keys read from them
    store, auth = chart["storage"]["credentialsSecret"], chart["ray"]["authSecret"]
    assert set(secrets) == {store, auth}
    assert plain["spec"]["authOptions"]["secretName"] == auth
    assert auth in json.dumps(_kind(docs, "RayCluster")["spec"]["authOptions"])
    refs = {e["valueFrom"]["secretKeyRef"]["name"]: e["valueFrom"]["secretKeyRef"]["key"]
            for e in _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"] if "valueFrom" in e}
    assert refs[auth] in secrets[auth] and list(secrets[auth]) == ["auth_token"]  # KubeRay reads auth_token
    assert refs[chart["dagster"]["postgresqlSecretName"]] == "postgresql-password"  # Dagster's chart makes it
    assert chart["dagster"]["postgresqlSecretName"] == _dagster_pg_secret(values)
    # envFrom takes every key as a variable: only the ones s3fs (botocore) reads, the key pair together
    assert set(secrets[store]) <= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                   "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL"}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secrets[store])
    plain_refs = {f["secretRef"]["name"] for _, g in _groups(plain) for c in g["template"]["spec"]["containers"]
                  for f in c.get("envFrom", [])}
    assert plain_refs == {store}


def test_the_locations_settings_reach_the_code_server_and_every_run_pod(monkeypatch, tmp_path):
    """Values ``settings`` (README "Configuration"): a ConfigMap of the settings file, mounted in the code server
    and in each run pod, named by CURATION_SETTINGS; none of it without settings."""
    settings = {"scoring": {"profile": "clip", "clip": {"model": "openai/clip-vit-base-patch32"}},
                "rewriter": {"kind": "aitqe", "model": "HymanH/AITQE"}, "policy": {"keep_threshold": 80}}
    docs = _render({"settings": settings})
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "RayCluster", "Service"]
    config_map = _kind(docs, "ConfigMap")
    _valid(config_map)
    assert yaml.safe_load(config_map["data"]["settings.yaml"]) == settings
    deployment = _kind(docs, "Deployment")
    _valid(deployment)
    pod = deployment["spec"]["template"]["spec"]
    [server] = pod["containers"]
    path = _env(server)["CURATION_SETTINGS"]
    [mount] = server["volumeMounts"]
    assert path == f"{mount['mountPath']}/settings.yaml" and mount["readOnly"] is True
    assert pod["volumes"] == [{"name": mount["name"], "configMap": {"name": config_map["metadata"]["name"]}}]

    for entry in server["env"]:
        monkeypatch.delenv(entry["name"], raising=False)
    job = _run_pod_job(deployment, tmp_path)
    _valid(job)
    run_pod = job["spec"]["template"]["spec"]
    [container] = run_pod["containers"]
    assert {"name": "CURATION_SETTINGS", "value": path} in container["env"]
    assert container["volumeMounts"] == server["volumeMounts"] and run_pod["volumes"] == pod["volumes"]

    # what the code location builds from the mounted file
    from curation_pipeline.definitions import build_resources

    (tmp_path / "settings.yaml").write_text(config_map["data"]["settings.yaml"])
    monkeypatch.setenv("CURATION_SETTINGS", str(tmp_path / "settings.yaml"))
    resources = build_resources()
    scoring = resources["scoring"]
    assert scoring.profile == "clip" and scoring.clip.model == settings["scoring"]["clip"]["model"]
    assert resources["rewriter"].kind == "aitqe" and resources["policy"].keep_threshold == 80

    # other settings restart the code server (it reads them once): its pod template changes with them
    other = _kind(_render({"settings": {**settings, "policy": {"keep_threshold": 70}}}), "Deployment")
    assert other["spec"]["template"] != deployment["spec"]["template"]
    plain = _kind(_render(), "Deployment")  # no settings: no file, no variable, no volume
    assert "CURATION_SETTINGS" not in _env(plain["spec"]["template"]["spec"]["containers"][0])
    assert "volumes" not in plain["spec"]["template"]["spec"]


def test_nothing_deployed_reports_usage_where_the_local_setup_does_not():
    """Dagster's telemetry is off in the local dagster.yaml and the local Ray clusters report no usage stats
    (``compute/cluster.py``): the same on Kubernetes."""
    assert yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["telemetry"] == {"enabled": False}
    assert _values()["telemetry"] == {"enabled": False}
    for cluster in (_kind(_render(), "RayCluster"), *[d for d in _docs("kuberay") if d["kind"] == "RayCluster"]):
        spec = cluster["spec"]
        pods = [spec["headGroupSpec"]["template"], *[g["template"] for g in spec.get("workerGroupSpecs", [])]]
        for pod in pods:
            for container in pod["spec"]["containers"]:
                assert _env(container)["RAY_USAGE_STATS_ENABLED"] == "0", container["name"]
