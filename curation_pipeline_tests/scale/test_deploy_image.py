"""The image (``deploy/Dockerfile``) carries what its run pods' Dagster instance loads.

Every run pod runs this image, with the instance Dagster's chart writes (its
``configmap-instance.yaml``): run, event log and schedule storage from ``dagster_postgres`` and the
run launcher the values name (``dagster_k8s`` for ``K8sRunLauncher``). A package missing there
fails each run at start (``CheckError: Couldn't import module dagster_postgres.run_storage``).
Checked offline from the Dockerfile's own ``pip install`` commands; no image is built.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from packaging.requirements import Requirement

from curation_pipeline_tests.conftest import REPO_ROOT
from curation_pipeline_tests.scale.helpers import require

DEPLOY = REPO_ROOT / "deploy"
# the modules Dagster's chart names in the instance (configmap-instance.yaml)
STORAGE_MODULES = ("dagster_postgres.run_storage", "dagster_postgres.event_log", "dagster_postgres.schedule_storage")
LAUNCHER_MODULES = {"K8sRunLauncher": "dagster_k8s", "CeleryK8sRunLauncher": "dagster_celery_k8s"}
# the distribution that gives SQLAlchemy each driver without a system libpq (the image is python:*-slim)
DRIVER_DISTRIBUTIONS = {"psycopg": ("psycopg", "binary"), "psycopg2": ("psycopg2-binary", None)}
OPTIONS_WITH_VALUE = {"-i", "--index-url", "--extra-index-url", "-c", "--constraint", "-r", "--requirement",
                      "-f", "--find-links", "--target", "-t", "--prefix", "--root"}


def pip_installs(dockerfile: str) -> list[tuple[set[str], dict[str, Requirement]]]:
    """Each ``pip install`` in the Dockerfile's RUN instructions: its options and its requirements
    by normalised name (local paths such as ``'.[scale]'`` left out). Comment lines are dropped, also
    inside a continued instruction, as Docker drops them."""
    instructions, current = [], ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        instructions.append(current + line)
        current = ""
    installs = []
    for instruction in instructions:
        if not instruction.startswith("RUN "):
            continue
        for command in re.split(r"&&|;", instruction[4:]):
            words = shlex.split(command)
            if "install" not in words or not {"pip", "pip3"} & {Path(w).name for w in words[:words.index("install")]}:
                continue
            args = words[words.index("install") + 1:]
            options, requirements, skip = set(), {}, False
            for arg in args:
                if skip:
                    skip = False
                elif arg.startswith("-"):
                    options.add(arg.split("=")[0])
                    skip = arg in OPTIONS_WITH_VALUE
                elif not arg.startswith((".", "/")):
                    requirement = Requirement(arg)
                    requirements[re.sub(r"[-_.]+", "-", requirement.name).lower()] = requirement
            installs.append((options, requirements))
    return installs


def _installed(installs) -> dict[str, tuple[Requirement, set[str]]]:
    return {name: (req, options) for options, requirements in installs for name, req in requirements.items()}


def _pin(requirement: Requirement) -> str:
    [spec] = requirement.specifier
    assert spec.operator == "==", f"{requirement} is not pinned"
    return spec.version


def _makefile_pin(name: str) -> str:
    """The version the Makefile installs for the offline deploy tests (dagster-k8s, kubernetes)."""
    [version] = re.findall(rf"\b{re.escape(name)}==([\w.]+)", (REPO_ROOT / "Makefile").read_text())
    return version


def test_the_image_installs_what_the_charts_instance_loads():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    installed = _installed(pip_installs(dockerfile))
    launcher = yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())["runLauncher"]["type"]
    modules = [*STORAGE_MODULES, LAUNCHER_MODULES[launcher]]
    version = _makefile_pin("dagster-k8s")  # the release the deploy tests validate the launcher with
    for module in modules:
        name = module.split(".")[0].replace("_", "-")
        assert name in installed, f"the instance loads {module}: the image must install {name}"
        requirement, options = installed[name]
        # their releases pin an older dagster than the image's: pip would downgrade it, or fail
        assert "--no-deps" in options, f"{name} must be installed with --no-deps"
        assert _pin(requirement) == version, f"{name} {requirement.specifier} (the launcher is validated at {version})"

    # dagster-postgres's SQLAlchemy URL is postgresql://, whose driver this SQLAlchemy picks
    from sqlalchemy.engine import make_url

    driver = make_url("postgresql://user@host/db").get_dialect().driver
    distribution, extra = DRIVER_DISTRIBUTIONS[driver]
    assert distribution in installed, f"SQLAlchemy connects postgresql:// with {driver}: install {distribution}"
    requirement, _ = installed[distribution]
    _pin(requirement)
    assert extra is None or extra in requirement.extras or f"{distribution}-{extra}" in installed, (
        f"{distribution} needs libpq: the slim image has none, so install {distribution}[{extra}]")


def test_the_image_installs_dagster_k8s_dependencies_at_the_validated_versions():
    """dagster-k8s comes without its dependencies: the Kubernetes client it imports must be there,
    at the version the offline launcher tests use and within dagster-k8s's own bound."""
    installed = _installed(pip_installs((DEPLOY / "Dockerfile").read_text()))
    assert "kubernetes" in installed, "dagster-k8s imports the kubernetes client"
    requirement, _ = installed["kubernetes"]
    assert _pin(requirement) == _makefile_pin("kubernetes")
    [metadata] = list((REPO_ROOT / ".venv" / "k8s-launcher").glob("dagster_k8s-*.dist-info/METADATA")) or [None]
    require(metadata is not None, "dagster-k8s's metadata: make setup-scale puts it in .venv/k8s-launcher")
    bounds = [Requirement(line.split(":", 1)[1].strip()) for line in metadata.read_text().splitlines()
              if line.startswith("Requires-Dist:") and "extra ==" not in line]
    [kubernetes_bound] = [r for r in bounds if r.name == "kubernetes"]
    assert kubernetes_bound.specifier.contains(_pin(requirement)), (requirement, kubernetes_bound)


def test_the_pip_parser_reads_options_extras_and_skips_comments():
    commented = "RUN pip install '.[scale]' \\\n# pip install --no-deps dagster-postgres==1\n && true\n"
    assert _installed(pip_installs(commented)) == {}
    [(options, requirements)] = pip_installs("RUN pip install --no-deps x==1 'psycopg[binary]==3.3.9'\n")
    assert options == {"--no-deps"} and requirements["psycopg"].extras == {"binary"}
