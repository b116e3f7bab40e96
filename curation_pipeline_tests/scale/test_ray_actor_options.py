"""What the Ray path's model actors and coordinators ask of Ray, on a real cluster shaped as the
KubeRay one (a head with no CPUs and no ``memory``, a worker with a GPU slot; no device needed)
inside a private network namespace, driven over Ray Client as a run pod drives it. The scenario
(``cluster_scenarios actor-options``) runs once; these tests assert on what it reports."""

from __future__ import annotations

import pytest

from curation_pipeline_tests.scale.helpers import run_scenario


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray-actor-options")
    # a GPU pod leaves CUDA_VISIBLE_DEVICES unset
    return run_scenario("actor-options", out, timeout=900, drop=("CUDA_VISIBLE_DEVICES",))["actor-options"]


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
