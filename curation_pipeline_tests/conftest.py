"""Shared fixtures. HF_HUB_OFFLINE is set before anything imports transformers."""

import os

# set outright, not by default: a shell's HF_HUB_OFFLINE=0 must not let the suite look up the hub
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the code location's settings file is a test's own (test_location_settings.py), never the shell's
os.environ.pop("CURATION_SETTINGS", None)
# the GX helper that runs with a DAGSTER_HOME (curation_pipeline.helper) leaves soon after a test's runs
os.environ.setdefault("CURATE_HELPER_IDLE_S", "15")
# each test's `curate` processes run in their own process (a warm server per test environment would
# only add background imports); test_forkserver.py turns the warm start on for its own runs
os.environ.setdefault("CURATE_FORKSERVER", "off")

import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def pytest_configure(config):
    """A Dagster home of this pytest process (the controller, each xdist worker), never the shell's: `make` exports
    the checkout's data/dagster_home. A test that gives none writes nowhere in the checkout, and its GX checks go to
    a helper of this process's own, not one shared with another worker or a developer's `make ui`. Here, not at
    import: scripts and Ray workers that import this module keep the home they were given."""
    config._curate_home = tempfile.mkdtemp(prefix="curate-tests-home-")
    os.environ["DAGSTER_HOME"] = config._curate_home
    # and a cache of its own (compiled caption patterns): the suite leaves nothing in the user's ~/.cache
    config._curate_cache = tempfile.mkdtemp(prefix="curate-tests-cache-")
    os.environ["CURATE_CACHE_DIR"] = config._curate_cache


# Files that keep one xdist worker busy for minutes (--dist loadfile gives a file to one worker, in collection
# order): scheduled first, so the other worker runs the rest meanwhile. Collected in their place (near the end),
# the benchmarks' smoke runs (scale.py alone 4-7 min) were the suite's last minutes, on one worker.
FIRST = ("test_benchmarks.py",)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in FIRST)  # a stable sort: the rest keep their order


def pytest_unconfigure(config):
    for folder in (getattr(config, "_curate_home", None), getattr(config, "_curate_cache", None)):
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


REPO_ROOT = Path(__file__).resolve().parents[1]
# The shared Flickr8k photos are optional: CURATE_EVALDATA=/nonexistent runs the suite as on a fresh clone.
EVALDATA = Path(os.environ.get("CURATE_EVALDATA") or REPO_ROOT.parent / "shared" / "evaldata")


def require(condition: bool, why: str, installs: str = ".ci/run -> make setup-scale") -> None:
    """Skip on a developer machine without the tool (or root); in CI (CI=true, as .ci/run sets) a
    missing tool fails: a check that cannot run there must not pass as skipped."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI provides it: {installs})")
        pytest.skip(why)
FLICKR = EVALDATA / "flickr8k_1k_small"


def photo_root() -> Path:
    """The Flickr8k folder when it is there, else the set the repository makes (same layout:
    ``images/*.jpg``, ``captions.jsonl``) from scikit-image's bundled public-domain photos."""
    if (FLICKR / "captions.jsonl").is_file():
        return FLICKR
    import hashlib
    import tempfile

    from curation_pipeline_tests import photos

    version = hashlib.sha256(Path(photos.__file__).read_bytes()).hexdigest()[:12]
    return photos.make_photo_set(Path(tempfile.gettempdir()) / f"curation-photo-set-{version}")


@pytest.fixture
def shipped_home(tmp_path, monkeypatch) -> Path:
    """A DAGSTER_HOME with the shipped dagster.yaml (its ``CurationInstance``), as `make demo` and `curate` make it."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _process_settings_do_not_leak():
    """An in-process ``curate run`` (click's CliRunner) sets DAGSTER_HOME, as the real process must, and a
    scoring resource with ``threads`` sets CURATION_THREADS: neither may reach the next test."""
    names = ("DAGSTER_HOME", "CURATION_THREADS", "OMP_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def flickr_dir() -> Path:
    """Real photos with human captions: Flickr8k if present, never required (see ``photo_root``)."""
    return photo_root()


@pytest.fixture(scope="session")
def real_flickr() -> bool:
    return photo_root() == FLICKR


RAW_SAMPLES = REPO_ROOT / "data" / "raw"
# run config that keeps Dagster's console to warnings: a test's output shows what failed
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_pipeline(raw: Path, warehouse: Path, shards: list[str], instance=None, report: bool = True,
                 settle: bool = True, **resources):
    """Materialize the per-shard job for each shard, settle cross-shard dedup (as ``curate run`` does),
    then the report; returns (instance, results)."""
    import dagster as dg

    from curation_pipeline.definitions import build_definitions

    defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse), **resources)
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [s for s in shards if not instance.has_dynamic_partition("shards", s)])
    results = {}
    for shard in shards:
        results[shard] = defs.resolve_job_def("curate_shards").execute_in_process(
            partition_key=shard, instance=instance, raise_on_error=False, run_config=QUIET)
    if settle:  # cross-shard dedup: the index over every shard, then re-select shards decided before it
        from curation_pipeline.assets.dedup import settle_duplicates

        settle_duplicates(defs, instance, QUIET, results)
    if report:
        results["quality_report"] = defs.resolve_job_def("quality_report_job").execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET)
    return instance, results


def failure_alone(warehouse: Path, instance, shard: str, asset: str, **resources) -> str:
    """The step failure of a run of ``asset`` alone for ``shard`` (the UI's Materialize of it, a re-selection),
    which must fail: its description."""
    import dagster as dg

    from curation_pipeline.definitions import build_definitions

    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse), **resources)
    later = defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=shard, instance=instance, asset_selection=[dg.AssetKey(asset)], raise_on_error=False,
        run_config=QUIET)
    assert not later.success
    failure = next(e for e in later.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.user_failure_data.description


def one_shard_curated(tmp_path: Path, shard: str, scoring=None):
    """``shard`` copied into ``tmp_path / "raw"`` and curated into ``tmp_path / "warehouse"`` (no report, no settle):
    (raw, warehouse, instance), for a test that then runs some of its steps again."""
    raw, warehouse = tmp_path / "raw", tmp_path / "warehouse"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / f"{shard}.tar", raw / f"{shard}.tar")
    instance, results = run_pipeline(raw, warehouse, [shard], report=False, settle=False,
                                     **({"scoring": scoring} if scoring is not None else {}))
    assert results[shard].success
    return raw, warehouse, instance


@pytest.fixture(scope="session")
def curated(tmp_path_factory):
    """The sample shards 000000 and 000001 through the whole offline pipeline, once per session."""
    warehouse = tmp_path_factory.mktemp("warehouse")
    shards = ["sample-000000", "sample-000001"]
    instance, results = run_pipeline(RAW_SAMPLES, warehouse, shards)
    return {"warehouse": warehouse, "shards": shards, "instance": instance, "results": results}


def _reencode(image, fmt: str = "JPEG", **options):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def dup_photos(flickr_dir):
    from PIL import Image

    paths = sorted((flickr_dir / "images").glob("*.jpg"))[:4]
    return [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture(scope="module")
def dup_signals():
    from curation_pipeline.scoring.signals.duplicates import DuplicateSignals

    return DuplicateSignals()


@pytest.fixture(scope="module")
def dup_shard(dup_photos, dup_signals):
    """Duplicate fingerprints of real photos, a re-encoded and a resized copy of the first, a
    lossless copy of the second with another caption, the third with the first's caption, a
    missing image: for the signal tests and the grouping tests."""
    from curation_pipeline.pairs import PairBatch

    a, b, c, _ = dup_photos
    images = [a, _reencode(a, quality=60), a.resize((a.width // 2, a.height // 2)), b, _reencode(b, "PNG"), c, None]
    captions = [
        "A girl climbs the stairs of a wooden playhouse .",
        "a girl climbs the stairs of a wooden playhouse",
        "A little girl going into a wooden building .",
        "Two dogs on the road .",
        "Two dogs stare at each other in the street !",
        "A girl climbs the stairs of a wooden playhouse .",
        None,
    ]
    keys = [f"k{i}" for i in range(len(images))]
    frame = dup_signals.score(PairBatch(keys, captions, images))
    frame.insert(0, "key", keys)
    return frame


def truncated_captions_copy(source, target) -> None:
    """The same samples with each .txt caption cut to its first word, as a broken scraper would."""
    import io
    import tarfile

    with tarfile.open(source) as src, tarfile.open(target, "w") as out:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".txt"):
                data = (data.decode().split() or [""])[0].encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))
