"""``deploy/helm/dagster-values.yaml`` holds only keys Dagster's Helm chart reads, with their types.

Helm checks values against the chart's ``values.schema.json`` at install; the chart cannot be
fetched offline, and a key it does not know is not always refused there (its root, ``global`` and
``runMonitoring`` accept anything): the template then ignores it, so a misspelt
``maxConcurentRuns`` left the run queue unbounded without a word. ``VALUES`` below restates, for
the sections this file sets, the constraints of the chart's schema (dagster-io/dagster,
``helm/dagster/values.schema.json``, generated from ``helm/dagster/schema``: property names, types,
enums, ``additionalProperties: false``; its ``$ref``s to kubernetesjsonschema.dev replaced by the
two Kubernetes types used here), and closes the objects it leaves open to the keys the chart's
templates read (``runMonitoring``: ``configmap-instance.yaml``). ``required`` is left out: Helm
validates the values merged with the chart's defaults, which this file does not repeat; list items
are not merged, so a user deployment keeps its required keys. A key the chart gains in a later
version is added here with the version that brings it.
"""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from curation_pipeline_tests.conftest import REPO_ROOT

VALUES_FILE = REPO_ROOT / "deploy" / "helm" / "dagster-values.yaml"
CHART_VERSION = "1.13.28"  # the chart version the file is installed with (its header) = the pinned dagster

STR, INT, BOOL, OBJ, ARRAY, ANY = ({"type": "string"}, {"type": "integer"}, {"type": "boolean"},
                                   {"type": "object"}, {"type": "array"}, {})
NULL = {"type": "null"}
STR_MAP = {"type": "object", "additionalProperties": STR}


def _closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return {**schema, "required": list(required)} if required else schema


def _optional(schema: dict) -> dict:
    return {"anyOf": [schema, NULL]}


def _array(items: dict) -> dict:
    return {"type": "array", "items": items}


PULL_POLICY = {"enum": ["Always", "IfNotPresent", "Never"]}
IMAGE = _closed({"repository": STR, "tag": {"type": ["string", "integer", "null"]}, "pullPolicy": PULL_POLICY},
                required=("repository", "pullPolicy"))
ENV_SOURCE = _closed({"name": STR, "optional": BOOL}, required=("name",))  # Kubernetes Secret/ConfigMapEnvSource
INT_SOURCE = {"anyOf": [INT, _closed({"env": STR}, required=("env",)), NULL]}  # an int or {env: VAR}

K8S_RUN_LAUNCHER = _closed({
    "image": _optional(IMAGE), "imagePullPolicy": PULL_POLICY, "jobNamespace": _optional(STR),
    "loadInclusterConfig": BOOL, "kubeconfigFile": _optional(STR), "envConfigMaps": _array(ENV_SOURCE),
    "envSecrets": _array(ENV_SOURCE), "envVars": _array(STR), "volumeMounts": ARRAY, "volumes": ARRAY,
    "labels": _optional(STR_MAP), "failPodOnRunFailure": _optional(BOOL), "resources": _optional(OBJ),
    "schedulerName": _optional(STR), "securityContext": _optional(OBJ),
    "runK8sConfig": _optional(_closed({key: _optional(OBJ) for key in (
        "containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata")})),
})
RUN_LAUNCHER = _closed({
    "type": {"enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]},
    "config": _closed({"celeryK8sRunLauncher": _optional(OBJ), "k8sRunLauncher": _optional(K8S_RUN_LAUNCHER),
                       "customRunLauncher": _optional(OBJ)}),
})
QUEUED_RUN_COORDINATOR = _closed({
    "maxConcurrentRuns": INT_SOURCE, "tagConcurrencyLimits": _optional(ARRAY), "dequeueIntervalSeconds": INT_SOURCE,
    "dequeueNumWorkers": INT_SOURCE, "dequeueUseThreads": _optional(BOOL), "blockOpConcurrencyLimitedRuns": _optional(OBJ),
})
RUN_COORDINATOR = _closed({
    "enabled": BOOL, "type": {"enum": ["QueuedRunCoordinator", "CustomRunCoordinator"]},
    "config": _closed({"queuedRunCoordinator": _optional(QUEUED_RUN_COORDINATOR), "customRunCoordinator": _optional(OBJ)}),
})
RUN_MONITORING = _closed({"enabled": BOOL, **{key: INT for key in (  # configmap-instance.yaml's run_monitoring
    "startTimeoutSeconds", "cancelTimeoutSeconds", "maxResumeRunAttempts", "pollIntervalSeconds",
    "freeSlotsAfterRunEndSeconds")}})
DAEMON = _closed({
    "enabled": BOOL, "image": IMAGE, "runCoordinator": RUN_COORDINATOR, "heartbeatTolerance": INT,
    "runMonitoring": RUN_MONITORING, "runRetries": OBJ, **{key: ANY for key in (
        "env", "envConfigMaps", "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
        "annotations", "sensors", "schedules", "schedulerName", "volumeMounts", "volumes", "initContainerResources")},
})
USER_DEPLOYMENT = _closed({
    "name": STR, "image": IMAGE, "dagsterApiGrpcArgs": _array(STR), "codeServerArgs": _array(STR), "port": INT,
    "deploymentNamespace": STR, "includeConfigInLaunchedRuns": _closed({"enabled": BOOL}), **{key: ANY for key in (
        "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
        "labels", "volumeMounts", "volumes", "schedulerName", "initContainers", "sidecarContainers")},
}, required=("name", "image", "port"))
VALUES = _closed({
    "global": _closed({key: STR for key in (  # the schema's four, and the two names its helpers read
        "postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
        "nameOverride", "fullnameOverride")}),
    "serviceAccount": _closed({"create": BOOL, "name": STR, "annotations": STR_MAP}),
    # open: the values of the user-deployments and PostgreSQL subcharts pass through these two
    "dagster-user-deployments": {"type": "object", "properties": {
        "enabled": BOOL, "enableSubchart": BOOL, "imagePullSecrets": ARRAY, "deployments": _array(USER_DEPLOYMENT)}},
    "postgresql": {"type": "object", "properties": {
        "enabled": BOOL, "postgresqlHost": STR, "postgresqlUsername": STR, "postgresqlPassword": STR,
        "postgresqlDatabase": STR, "postgresqlParams": OBJ, "postgresqlScheme": STR, "image": OBJ, "service": OBJ}},
    "runLauncher": RUN_LAUNCHER,
    "dagsterDaemon": DAEMON,
    **{key: ANY for key in (
        "dagsterWebserver", "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
        "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "pythonLogs", "busybox", "migrate",
        "telemetry", "retention", "concurrency", "additionalInstanceConfig")},
})


def _errors(values: dict) -> list[str]:
    """Each error where it is: inside an ``anyOf`` (a section or null), the section's own error."""
    errors = []
    for error in jsonschema.Draft7Validator(VALUES).iter_errors(values):
        while error.context:
            error = min(error.context, key=lambda e: e.validator == "type")  # not "is not of type 'null'"
        errors.append(f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}")
    return errors


def _values() -> dict:
    return yaml.safe_load(VALUES_FILE.read_text())


def test_the_values_are_for_the_chart_version_of_the_pinned_dagster():
    import dagster

    assert dagster.__version__ == CHART_VERSION
    assert f"--version {CHART_VERSION}" in VALUES_FILE.read_text()


def test_dagster_values_hold_only_keys_the_chart_reads():
    assert not _errors(_values()), _errors(_values())


def _set(values: dict, path: str, key: str, value) -> dict:
    broken = copy.deepcopy(values)
    node = broken
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[key] = value
    return broken


@pytest.mark.parametrize("path, key, value", [
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator", "maxConcurentRuns", 64),  # misspelt
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator", "maxConcurrentRuns", "64"),  # a string
    ("dagsterDaemon.runMonitoring", "startTimeoutSecond", 600),
    ("dagsterDaemon", "runCoordinater", {}),
    ("runLauncher.config.k8sRunLauncher", "envSecret", []),
    ("runLauncher.config.k8sRunLauncher.runK8sConfig", "containerConfigs", {}),
    ("runLauncher", "type", "K8sLauncher"),
    ("global", "serviceAcountName", "curation-pipeline"),
    ("dagster-user-deployments.deployments.0", "prot", 3030),
    ("dagster-user-deployments.deployments.0.image", "pullPolicy", "Sometimes"),
])
def test_the_check_catches_a_wrong_key_or_type(path, key, value):
    values = _values()
    assert _errors(_set(values, path, key, value))


def test_the_check_catches_an_unknown_top_level_section():
    values = _values()
    values["runLaucher"] = values.pop("runLauncher")
    assert _errors(values) == ["<root>: Additional properties are not allowed ('runLaucher' was unexpected)"]
