"""Cross-shard dedup publishes the same set whatever the order or parallelism of shard runs, and a
duplicate group keeps a usable copy: the largest usable image, then the best caption, then the key.

Shards ``dup-a`` and ``dup-b`` share 20 photos: 5 where a's copy is the 375x500 original and b's a
125 px thumbnail (too small for DataComp's rule), 5 the other way round, and 10 identical copies.
Before the dedup index, b-then-a published the 10 identical pairs twice, and a thumbnail could be
kept while its original was dropped as "the duplicate". ``dup-a`` also holds a thumbnail and its
original under two keys, the thumbnail's key first.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation_pipeline.decisions.dedup import build_index, load_pool, pool_vectors, read_index
from curation_pipeline.decisions.policy import DecisionPolicy
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import REPO_ROOT, run_pipeline
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.photos import CAPTIONS, ORDER, photo_bytes

pytestmark = pytest.mark.faults

SHARDS = ["dup-a", "dup-b"]


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _pattern(seed: int) -> bytes:
    """A photo-like picture no other one resembles (random blocks and gradients): a unique pair."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 225, size=(6, 8, 3)).astype(np.uint8)
    image = Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 12, size=(240, 320, 3))
    return _jpeg(Image.fromarray(np.clip(np.asarray(image, dtype=float) + noise, 0, 255).astype(np.uint8)))


def _original(i: int) -> Image.Image:
    return Image.open(io.BytesIO(photo_bytes(ORDER[i % len(ORDER)], 500 + i, size=(375, 500)))).convert("RGB")


def _thumb(i: int) -> bytes:
    return _jpeg(_original(i).resize((94, 125), Image.Resampling.LANCZOS))


def _caption(i: int) -> bytes:
    return CAPTIONS[ORDER[i % len(ORDER)]][i % 5].encode()


def shard_members() -> dict[str, list[tuple[str, bytes]]]:
    a, b = [], []
    for i in range(20):
        big = _jpeg(_original(i))
        if i < 5:
            a_img, b_img = big, _thumb(i)
        elif i < 10:
            a_img, b_img = _thumb(i), big
        else:
            a_img = b_img = big
        a += [(f"s{i:03d}.jpg", a_img), (f"s{i:03d}.txt", _caption(i))]
        b += [(f"t{i:03d}.jpg", b_img), (f"t{i:03d}.txt", _caption(i))]
    for i in range(10):
        a += [(f"u{i:03d}.jpg", _pattern(i)), (f"u{i:03d}.txt", CAPTIONS["brick"][i % 5].encode())]
        b += [(f"v{i:03d}.jpg", _pattern(100 + i)), (f"v{i:03d}.txt", CAPTIONS["grass"][i % 5].encode())]
    # one shard, one photo twice: the thumbnail's key sorts first
    a += [("a-thumb.jpg", _thumb(20)), ("a-thumb.txt", _caption(20)),
          ("b-original.jpg", _jpeg(_original(20))), ("b-original.txt", _caption(20))]
    return {"dup-a": a, "dup-b": b}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup-raw")
    for shard, members in shard_members().items():
        builders.write_members(root / f"{shard}.tar", members)
    return root


def published(warehouse) -> dict[str, list[str]]:
    out = {}
    for shard in SHARDS:
        with tarfile.open(warehouse / "curated" / f"{shard}.tar") as tar:
            out[shard] = sorted({m.name.split(".")[0] for m in tar.getmembers()})
    return out


def image_hashes(warehouse) -> list[str]:
    hashes = []
    for shard in SHARDS:
        with tarfile.open(warehouse / "curated" / f"{shard}.tar") as tar:
            hashes += [hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar.getmembers()
                       if m.name.endswith(".jpg")]
    return hashes


EXPECTED = {
    "dup-a": sorted([f"s{i:03d}" for i in range(5)] + [f"s{i:03d}" for i in range(10, 20)]
                    + [f"u{i:03d}" for i in range(10)] + ["b-original"]),
    "dup-b": sorted([f"t{i:03d}" for i in range(5, 10)] + [f"v{i:03d}" for i in range(10)]),
}


@pytest.fixture(scope="module")
def a_then_b(raw, tmp_path_factory):
    wh = tmp_path_factory.mktemp("a-then-b")
    _, results = run_pipeline(raw, wh, ["dup-a", "dup-b"], report=False)
    assert all(r.success for r in results.values()), [k for k, r in results.items() if not r.success]
    return wh, results


def test_a_then_b_keeps_the_largest_usable_copy(a_then_b):
    wh, results = a_then_b
    assert published(wh) == EXPECTED
    hashes = image_hashes(wh)
    assert len(hashes) == len(set(hashes))  # no photo published twice
    decisions = Warehouse(str(wh)).read_table("caption_decisions", "dup-a").set_index("key")
    assert decisions.loc["a-thumb", "dup_of"] == "b-original"  # the thumbnail is the copy that goes...
    assert decisions.loc["b-original", "action"] != "drop" and decisions.loc["b-original", "dup_of"] is None
    assert decisions.loc["s005", "dup_of"] == "dup-b/t005"  # a's thumbnail gives way to b's original
    # a was decided before b existed; the index over both re-selected it
    assert "reselect:dup-a" in results


def test_b_then_a_publishes_the_same_set(a_then_b, raw, tmp_path):
    """b runs first and keeps its copies; a, decided against the pool of both, keeps the identical ones
    too: until the index settles them (here through the automation sensor's requests), 10 pairs are
    published twice. Settled, the set equals a-then-b's."""
    from curation_pipeline.assets.dedup import dedup_settle_sensor, settle_duplicates
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import PolicyResource, WarehouseResource

    instance, results = run_pipeline(raw, tmp_path, ["dup-b", "dup-a"], report=False, settle=False)
    assert all(r.success for r in results.values())
    hashes = image_hashes(tmp_path)
    assert len(hashes) - len(set(hashes)) == 10  # unsettled: b decided before a existed
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path))
    resources = {"warehouse": WarehouseResource(raw_root=str(raw), root=str(tmp_path)), "policy": PolicyResource()}

    def sensor():  # a context with resources is a context manager: left open, it leaves the instance current
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return dedup_settle_sensor(context)

    (request,) = sensor()
    assert request.job_name == "dedup_index_job"
    assert defs.resolve_job_def("dedup_index_job").execute_in_process(instance=instance).success
    (request,) = sensor()
    assert (request.job_name, request.partition_key) == ("reselect_shards", "dup-b")
    assert settle_duplicates(defs, instance) == []
    assert isinstance(sensor(), dg.SkipReason)
    assert published(tmp_path) == published(a_then_b[0]) == EXPECTED


LAUNCH = """
import sys
import dagster as dg
from curation_pipeline.definitions import build_definitions
defs = build_definitions()
with dg.DagsterInstance.get() as instance:
    result = defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=sys.argv[1], instance=instance, raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    sys.exit(0 if result.success else 1)
"""


def test_parallel_shard_runs_publish_the_same_set(a_then_b, raw, tmp_path):
    from curation_pipeline.assets.dedup import settle_duplicates
    from curation_pipeline.definitions import build_definitions

    home, wh = tmp_path / "home", tmp_path / "wh"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    env = dict(os.environ, DAGSTER_HOME=str(home), CURATION_RAW=str(raw), CURATION_WAREHOUSE=str(wh),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    os.environ["DAGSTER_HOME"], previous = str(home), os.environ.get("DAGSTER_HOME")
    try:
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("shards", SHARDS)
            procs = [subprocess.Popen([sys.executable, "-c", LAUNCH, shard], env=env, cwd=REPO_ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for shard in SHARDS]
            outputs = [p.communicate(timeout=600)[0] for p in procs]
            assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outputs]
            defs = build_definitions(raw_root=str(raw), warehouse_root=str(wh))
            assert settle_duplicates(defs, instance) == []
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    assert published(wh) == published(a_then_b[0]) == EXPECTED


def test_index_is_the_same_built_at_once_or_shard_by_shard(a_then_b):
    """Incremental build (b compared against the stored pool) gives the groups of a fresh build."""
    wh = Warehouse(str(a_then_b[0]))
    stored = read_index(wh)
    pool = load_pool(wh, SHARDS, "text_quality")
    fresh = build_index(pool, DecisionPolicy(), None, stored.identity, vectors=pool_vectors(wh, pool))
    columns = ["shard", "key", "dup_group", "dup_kind", "dup_keep", "dup_of"]
    pd.testing.assert_frame_equal(stored.groups[columns].sort_values(["shard", "key"]).reset_index(drop=True),
                                  fresh.groups[columns].sort_values(["shard", "key"]).reset_index(drop=True))
