"""What the Ray path's model actors and coordinators ask of Ray, on a real cluster shaped as the
KubeRay one (a head with no CPUs and no ``memory``, a worker with a GPU slot; no device needed)
inside a private network namespace, driven over Ray Client as a run pod drives it. The scenario
(``cluster_scenarios actor-options``) runs once; these tests assert on what it reports."""

from __future__ import annotations

import json
import os
import sys

import pytest

from curation_pipeline.compute.cluster import private_network_available, run_in_private_network
from curation_pipeline_tests.conftest import REPO_ROOT
from curation_pipeline_tests.scale.helpers import require


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    ok, why = private_network_available()
    require(ok, why)
    out = tmp_path_factory.mktemp("ray-actor-options")
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
    for name in ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES"):  # a GPU pod leaves it unset
        env.pop(name, None)
    done = run_in_private_network(
        [sys.executable, "-m", "curation_pipeline_tests.scale.cluster_scenarios", "actor-options", "--out", str(out)],
        timeout=900, env=env, cwd=str(REPO_ROOT), capture_output=True, text=True)
    result_file = out / "result.json"
    assert result_file.exists(), f"the scenario wrote no result (exit {done.returncode}):\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-6000:]}"
    result = json.loads(result_file.read_text())
    assert "error" not in result, result["error"]
    return result["actor-options"]


def _ok(probe: dict) -> dict:
    assert "error" not in probe, probe["error"]
    return probe


@pytest.mark.slow
def test_model_actors_with_a_gpu_score_the_shard_as_the_local_engine(scenario):
    """``gpus_per_actor: 1`` builds and runs (Ray refuses a GPU request without a batch size), and every
    call is one whole batch of the shard: the rows equal the local engine's."""
    got = _ok(scenario["gpu_scoring"])
    assert got["differences"] == ""
    assert (got["rows"], got["batches"]) == (40, 5)  # 40 pairs in batches of 8


@pytest.mark.slow
def test_an_actor_without_a_gpu_sees_none_of_the_nodes_gpus(scenario):
    """On a node with a GPU, a CPU actor must not load its models there (nor in fp16)."""
    assert _ok(scenario["actor_sees_0"]) == {"CUDA_VISIBLE_DEVICES": "", "gpu_ids": []}
    assert _ok(scenario["actor_sees_1"]) == {"CUDA_VISIBLE_DEVICES": "0", "gpu_ids": ["0"]}


@pytest.mark.slow
def test_a_batch_that_kills_its_actor_fails_the_shard_after_the_retries(scenario):
    """Ray Data restarts a dead actor and retries its batch without end by default (each time reloading
    the models): the step would hang. With ``max_retries: 1`` the shard fails, saying why and where."""
    poisoned = scenario["poisoned"]
    assert poisoned["finished"], "the shard was still retrying at the deadline"
    error = poisoned["error"] or ""
    assert "sample-000001: a model actor died" in error, error
    assert "again after each of its 1 restarts (compute max_retries" in error and "ActorDiedError" in error, error


@pytest.mark.slow
def test_the_coordinator_reserves_memory_and_stays_off_a_head_without_any(scenario):
    """The shard's coordinator holds its result rows: it reserves memory, so Ray counts it, and a head
    started with ``memory: 0`` (README, Scaling out) never runs one. It sees no GPU either."""
    seen = _ok(scenario["coordinator"])
    assert seen["resources"].get("memory") == 512 * 1024 * 1024
    assert seen["node"] not in scenario["head"] and len(scenario["head"]) == 1
    assert seen["CUDA_VISIBLE_DEVICES"] == ""
