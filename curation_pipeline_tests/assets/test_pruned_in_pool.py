"""A shard whose raw file is gone (or whose partition was pruned) keeps its tables and its published tar in
the pool, and cannot be re-selected. When a new shard duplicates it, the pairs it publishes must stay the
survivors of their groups (the new copy drops them), or they are published twice; re-selection must not be
asked of it, nor fail other shards' runs, `curate run` or the settle sensor, over and over."""

import hashlib
import shutil
import tarfile
import warnings
from collections import Counter

from curation_pipeline.assets.dedup import settle_duplicates, settle_requests
from curation_pipeline.decisions.dedup import read_index, stale_shards
from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import PolicyResource, WarehouseResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES, run_pipeline

SHARDS = ["sample-000000", "copy-000000", "sample-000001"]


def _published(wh: Warehouse) -> tuple[Counter, Counter]:
    """How many times each image (its bytes' digest) and each key is published, over every curated tar."""
    images, keys = Counter(), Counter()
    for shard in SHARDS:
        with tarfile.open(wh.curated_path(shard)) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    images[hashlib.sha256(tar.extractfile(member).read()).hexdigest()] += 1
                    keys[member.name] += 1
    return images, keys


def _published_once(wh: Warehouse) -> None:
    images, keys = _published(wh)
    assert images and max(images.values()) == 1, sum(n > 1 for n in images.values())
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:5]


def curated_pool(tmp_path):
    """Two sample shards curated: (raw folder, instance, warehouse resource)."""
    raw, warehouse = tmp_path / "raw", tmp_path / "warehouse"
    raw.mkdir()
    for name in ("sample-000000", "sample-000001"):
        shutil.copy(RAW_SAMPLES / f"{name}.tar", raw / f"{name}.tar")
    instance, results = run_pipeline(raw, warehouse, ["sample-000000", "sample-000001"], report=False)
    assert all(r.success for r in results.values())
    return raw, instance, WarehouseResource(raw_root=str(raw), root=str(warehouse))


def test_a_shard_that_cannot_be_reselected_keeps_its_pairs_and_its_copy_drops_them(tmp_path):
    raw, instance, resource = curated_pool(tmp_path)
    warehouse = tmp_path / "warehouse"
    wh = resource.warehouse()
    with tarfile.open(wh.curated_path("sample-000000")) as tar:
        frozen_pairs = set(tar.getnames())

    (raw / "sample-000000.tar").unlink()  # curated and deleted to save space: its tables and tar stay
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "copy-000000.tar")  # its every pair again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, results = run_pipeline(raw, warehouse, ["copy-000000"], instance=instance, report=False)
    assert all(r.success for r in results.values()), [k for k, r in results.items() if not r.success]
    with tarfile.open(wh.curated_path("sample-000000")) as tar:
        assert set(tar.getnames()) == frozen_pairs  # untouched: it still publishes them
    _published_once(wh)  # so its copy publishes none of them
    assert "reselect:sample-000000" not in results
    assert not [w for w in caught if "not re-selected" in str(w.message)]  # not stale: nothing passed over
    index = read_index(wh)
    assert list(index.frozen) == ["sample-000000"]
    assert "sample-000000" not in stale_shards(wh)  # its pairs are the survivors it was decided with

    instance.delete_dynamic_partition("shards", "sample-000000")  # pruned: frozen all the same
    assert settle_requests(instance, resource, PolicyResource()) == (
        "duplicate index current for 3 shards; no shard is stale")

    # the raw file comes back and the shard is registered again: it can be re-selected, so the index
    # assumed another frozen set and is rebuilt (not reused), and the pool settles to one copy again
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "sample-000000.tar")
    instance.add_dynamic_partitions("shards", ["sample-000000"])
    requests = settle_requests(instance, resource, PolicyResource())
    assert [r.job_name for r in requests] == ["dedup_index_job"]
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse))
    assert settle_duplicates(defs, instance, QUIET) == []
    assert read_index(wh).frozen == {}
    _published_once(wh)
    assert stale_shards(wh) == {}
