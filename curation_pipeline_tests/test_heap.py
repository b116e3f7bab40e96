"""A run freezes what lives as long as its process (imports and definitions, then the models) once each, so
later full collections skip them."""

import gc
import subprocess
import sys

import dagster as dg

from curation_pipeline import heap
from curation_pipeline.definitions import ASSETS, build_resources
from curation_pipeline.resources import ScoringResource
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES

SHARD = "sample-000000"


def test_each_point_freezes_once_per_process_and_a_forked_child_inherits_it():
    code = """
import gc, os
from curation_pipeline import heap
kept = [[i] for i in range(1000)]
assert gc.get_freeze_count() == 0
print(heap.freeze(heap.IMPORTED), gc.get_freeze_count() >= 1000)
before = gc.get_freeze_count()
more = [[i] for i in range(1000)]
print(heap.freeze(heap.IMPORTED), gc.get_freeze_count() == before)  # once: the new objects stay collectable
print(heap.freeze(heap.MODELS), gc.get_freeze_count() >= before + 1000)
pid = os.fork()
if pid == 0:
    os._exit(0 if not heap.freeze(heap.MODELS) else 1)
print(os.waitpid(pid, 0)[1] == 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["True", "True", "False", "True", "True", "True", "True"], out


def test_local_scoring_freezes_the_loaded_models(tmp_path, monkeypatch):
    frozen: list[int] = []
    monkeypatch.setattr(heap, "_FROZEN", set())  # this test process may have reached the points already
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(len(gc.get_objects())))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [SHARD])
    resources = build_resources(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path),
                                scoring=ScoringResource(profile="text"))
    dg.materialize(ASSETS, selection=["pairs"], partition_key=SHARD, instance=instance, resources=resources,
                   run_config=QUIET)
    assert heap._FROZEN == set() and not frozen  # reading a shard loads no model
    dg.materialize(ASSETS, selection=["quality_scores"], partition_key=SHARD, instance=instance,
                   resources=resources, run_config=QUIET)
    assert heap._FROZEN == {heap.MODELS} and len(frozen) == 1
