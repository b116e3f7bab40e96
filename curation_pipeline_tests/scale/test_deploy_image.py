"""The image (``deploy/Dockerfile``) carries what its run pods' Dagster instance loads.

Every run pod runs this image, with the instance Dagster's chart writes (its
``configmap-instance.yaml``): run, event log and schedule storage from ``dagster_postgres`` and the
run launcher the values name (``dagster_k8s`` for ``K8sRunLauncher``). A package missing there
fails each run at start (``CheckError: Couldn't import module dagster_postgres.run_storage``).
Every Ray pod runs it too: Ray's node agent must serve KubeRay's health probe. And the build itself:
each COPY source exists and ``.dockerignore`` sends it; the image drops root. Checked offline from
the Dockerfile's own instructions; no image is built.
"""

from __future__ import annotations

import os
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


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (keyword, arguments), continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") or not (current or line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (current + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def pip_installs(dockerfile: str) -> list[tuple[set[str], dict[str, Requirement]]]:
    """Each ``pip install`` in the Dockerfile's RUN instructions: its options and its requirements
    by normalised name (local paths such as ``'.[scale]'`` left out). Comment lines are dropped, also
    inside a continued instruction, as Docker drops them."""
    installs = []
    for keyword, arguments in _instructions(dockerfile):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;", arguments):
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


def _scale_extra_ray() -> Requirement:
    import tomllib

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    [ray] = [Requirement(r) for r in extras["scale"] if Requirement(r).name == "ray"]
    return ray


def test_the_image_installs_ray_with_its_node_agent_at_the_scale_extras_pin():
    """KubeRay (>= 1.6, rayVersion >= 2.53) probes every Ray pod at the node agent's
    ``:52365/api/healthz``; without Ray's ``default`` extra the agent runs ``--minimal``, serves no
    HTTP, and no Ray pod ever got ready (the liveness probe restarted them). The scale extra stays
    without it for the tests' clusters, so the image adds it at the same version."""
    installed = _installed(pip_installs((DEPLOY / "Dockerfile").read_text()))
    assert "ray" in installed, "the image must install ray[default] (KubeRay's health probe)"
    requirement, _ = installed["ray"]
    scale = _scale_extra_ray()
    assert "default" in requirement.extras, f"{requirement}: the node agent needs the default extra"
    assert scale.extras <= requirement.extras, f"{requirement} drops extras of the scale extra's {scale}"
    assert _pin(requirement) == _pin(scale), f"{requirement} is not the scale extra's {scale}"


def _copy_sources(dockerfile: str) -> list[str]:
    """What each COPY / ADD takes from the build context (not from another stage, nor a URL)."""
    sources = []
    for keyword, arguments in _instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(arguments)
        options = [w for w in words if w.startswith("--")]
        if any(o.startswith("--from") for o in options):
            continue
        sources += [w for w in [w for w in words if not w.startswith("--")][:-1] if "://" not in w]
    return sources


def _dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    """``.dockerignore`` as Docker reads it (moby/patternmatcher): (exclusion, regex) in order; ``*`` and
    ``?`` stop at ``/``, ``**`` spans folders; a leading ``!`` re-includes."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = not line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                i += 2 + pattern.startswith("/", i + 2)
                regex += ".*" if i >= len(pattern) else "(.*/)?"
                continue
            char = pattern[i]
            regex += "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
            i += 1
        patterns.append((exclusion, re.compile(f"^{regex}$")))
    return patterns


def _ignored(path: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves ``path`` out of the context: the last pattern matching it or a folder above it."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for exclusion, regex in patterns:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = exclusion
    return ignored


def _context_files(source: str) -> list[str]:
    """The files under a COPY source, less the bytecode caches a checkout may hold (the image compiles its own)."""
    root = REPO_ROOT / source
    if root.is_file():
        return [source]
    return sorted(str(p.relative_to(REPO_ROOT)) for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def test_every_copy_source_is_in_the_repository_and_in_the_build_context():
    """A misspelt COPY source, or one ``.dockerignore`` leaves out, fails the build (`not found`)."""
    sources = _copy_sources((DEPLOY / "Dockerfile").read_text())
    assert {"pyproject.toml", "README.md", "curation_pipeline"} <= set(sources)
    patterns = _dockerignore_patterns((REPO_ROOT / ".dockerignore").read_text())
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        files = _context_files(source)
        assert files, source
        left_out = [f for f in files if _ignored(f, patterns)]
        assert not left_out, f".dockerignore leaves out what COPY {source} needs: {left_out[:5]}"
    # and it keeps the repository's bulk out of the context (sent to the builder on every build)
    for heavy in (".venv/bin/python", ".git/HEAD", "data/warehouse/x.parquet", ".pytest_cache/v",
                  "curation_pipeline/__pycache__/cli.cpython-311.pyc", "curation_pipeline.egg-info/PKG-INFO"):
        assert _ignored(heavy, patterns), heavy


def test_the_dockerignore_reader_follows_dockers_rules():
    patterns = _dockerignore_patterns("# c\n*\n!src\n**/__pycache__\nsrc/*.tmp\n!src/keep.tmp\n")
    assert _ignored("other/file", patterns) and _ignored("file", patterns)
    assert not _ignored("src/a/b.py", patterns) and not _ignored("src", patterns)
    assert _ignored("src/a/__pycache__/b.pyc", patterns) and _ignored("src/x.tmp", patterns)
    assert not _ignored("src/keep.tmp", patterns) and not _ignored("src/a/x.tmp", patterns)  # * stops at /
    dockerfile = "FROM x\n# COPY nothing .\nCOPY --chown=1:1 a b \\\n  ./\nCOPY --from=build /x /y\n"
    assert _copy_sources(dockerfile) == ["a", "b"]


def test_the_image_runs_as_a_user_that_owns_dagster_home():
    """Not root (a container escape is then not root on the node), with a fixed uid that exists (a home
    for ~/.cache) and owns DAGSTER_HOME, where the run pods' instance writes; the package is compiled
    while the build is still root, since the user cannot write its __pycache__."""
    instructions = _instructions((DEPLOY / "Dockerfile").read_text())
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "the image runs as root: add USER <uid>"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and uid != "0", f"USER {users[-1]}: a numeric uid other than 0 (runAsNonRoot checks it)"
    runs = " && ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b[^&]*--create-home", runs), f"no user with uid {uid} and a home"
    [home] = [m for keyword, arguments in instructions if keyword == "ENV"
              for m in re.findall(r"DAGSTER_HOME=(\S+)", arguments)]
    owned = re.findall(rf"chown (?:-R )?{uid}(?::\d+)? (\S+)", runs)
    assert any(home == path or home.startswith(path.rstrip("/") + "/") for path in owned), (
        f"DAGSTER_HOME {home} is not owned by uid {uid}")
    compiled = [i for i, (keyword, arguments) in enumerate(instructions) if "compileall" in arguments]
    last_user = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
    assert compiled and compiled[-1] < last_user, "compile the package before USER"
