"""The pipeline on a real Ray cluster (a head and a worker node, ``ray start``) with a real S3
server, all inside a private network namespace the test creates (root: ``unshare``), so every
packet stays on loopback. The scenario itself runs in ``cluster_scenarios`` (PID 1 of the
namespace); these tests start it once and assert on what it reports."""

from __future__ import annotations

import pytest

from curation_pipeline_tests.scale.helpers import require, run_scenario, s3_available


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, curated):
    ok, why = s3_available()
    require(ok, why)
    out = tmp_path_factory.mktemp("ray-cluster")
    return run_scenario("both", out, "--reference", str(curated["warehouse"]), timeout=600)


@pytest.mark.slow
def test_the_cluster_lives_in_a_private_loopback_only_network(cluster_run):
    assert cluster_run["interfaces"] == ["lo"]
    assert cluster_run["cluster_nodes"] == 2  # a head and a worker node
    assert cluster_run["node_addresses"] == ["127.0.0.1"]


@pytest.mark.slow
def test_whole_pipeline_from_s3_to_s3_on_ray_equals_the_local_run(cluster_run):
    e2e = cluster_run["e2e"]
    assert all(e2e["success"].values()), (e2e["success"], e2e["errors"])
    assert e2e["differences"] == []  # the same Parquet rows and curated tar bytes as the local run
    # decoding and scoring ran on both nodes of the cluster
    assert max(e2e["ray_nodes"]["quality_scores"]) >= 2, e2e["ray_nodes"]
    assert e2e["ray_nodes"]["rewritten_captions"], e2e["ray_nodes"]
    assert e2e["report"] and e2e["temp_objects"] == []
    assert not e2e["secret_logged"]


@pytest.mark.slow
def test_the_pairs_inventory_on_ray_equals_the_local_one(cluster_run):
    pairs = cluster_run["pairs"]
    assert pairs["differences"] == [], pairs
    assert pairs["rows"] == {"sample-000000": 40, "sample-000001": 40}
    assert max(pairs["nodes"].values()) >= 1, pairs


@pytest.mark.slow
def test_a_killed_ray_run_resumes_only_the_unfinished_partition(cluster_run):
    resume = cluster_run["resume"]
    first, second = "sample-000000", "sample-000001"
    assert resume["killed_exit"] == -9 and resume["killed_during"], resume  # killed while on the cluster
    assert resume["curated_before_rerun"] == {first: 1, second: 0}
    assert resume["requested"] == [second]  # only the unfinished partition runs again
    assert resume["rerun_success"] == {second: True}, resume["rerun_errors"]
    assert resume["curated_after_rerun"] == {first: 1, second: 1}  # the finished shard was not redone
    assert resume["scored"][first] == 1
    assert set(resume["duplicate_keys"].values()) == {0} and len(resume["duplicate_keys"]) == 8
    assert resume["temp_objects"] == []  # the killed writer's temp objects are gone
    assert resume["differences"] == []  # and the outcome equals an uninterrupted run


@pytest.mark.slow
def test_a_model_profile_scores_on_ray_as_it_does_locally(cluster_run):
    """A model scorer (CLIP) names itself and its columns per instance: the Ray path must describe it
    from what the cluster built, not from its class."""
    clip = cluster_run["clip"]
    assert clip["local"] and clip["ray"], clip.get("errors")
    assert clip["same_columns"] and "clip_score" in clip["clip_columns"]
    assert clip["clip_score_max_difference"] <= 1e-5 and clip["other_columns_differ"] == []
