"""The pipeline on a real Ray cluster (a head and a worker node, ``ray start``) with a real S3
server, all inside a private network namespace the test creates (root: ``unshare``), so every
packet stays on loopback. The scenario itself runs in ``cluster_scenarios`` (PID 1 of the
namespace); these tests start it once and assert on what it reports. The last two check how the
cluster's nodes are started, without starting any."""

from __future__ import annotations

import shutil

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


# How LocalRayCluster starts its nodes (nothing is started: no root, no namespace needed)
@pytest.fixture
def started_nodes(monkeypatch, tmp_path) -> list[tuple[list[str], dict]]:
    """``LocalRayCluster.start()`` (a head and two worker nodes) with its ``ray start`` commands recorded, not
    run: (argv, environment) per node."""
    from curation_pipeline.compute import cluster as cluster_module

    monkeypatch.setenv(cluster_module.PRIVATE_ENV, "1")
    monkeypatch.setenv("GRPC_ENABLE_FORK_SUPPORT", "1")  # as a caller's environment may say
    started = []

    class Recorded:
        def __init__(self, argv, env, stdout, **kwargs):
            started.append((argv, env))
            stdout.close()  # the node's log file

        def poll(self):
            return None

    monkeypatch.setattr(cluster_module.subprocess, "Popen", Recorded)
    monkeypatch.setattr(cluster_module, "wait_for_port", lambda *args, **kwargs: None)
    monkeypatch.setattr(cluster_module.LocalRayCluster, "wait_for_nodes", lambda *args, **kwargs: None)
    cluster = cluster_module.LocalRayCluster(worker_cpus=(1, 1), log_dir=str(tmp_path)).start()
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return started


def test_the_clusters_nodes_run_without_grpc_fork_handlers(started_nodes):
    """With gRPC's fork handlers on, the head's Ray Client proxy now and then started a connection's server
    process that crashed or hung before its exec (5 of 20 fresh clusters' first connection), and the client
    waited some 40 s to try again: every node is started with them off, whatever the caller's environment."""
    assert [env["GRPC_ENABLE_FORK_SUPPORT"] for _, env in started_nodes] == ["0", "0", "0"]


def test_only_the_heads_log_monitor_sends_the_nodes_output_to_drivers(started_nodes):
    """All nodes write into the head's session folder on one host: a log monitor per node sent each line
    of a worker's output to the driver once per node."""
    assert ["--include-log-monitor=false" in argv for argv, _ in started_nodes] == [False, True, True]


def test_a_worker_node_started_again_leaves_no_process_of_its_first_try(monkeypatch, tmp_path):
    """A worker node that missed its registration is started once more; its first ``ray start`` may have
    exited or hung with its raylet and helpers alive in its process group, which must not live on beside the
    second try (they held the node's resources and CPU until the test ended)."""
    import subprocess

    from curation_pipeline.compute import cluster as cluster_module
    from curation_pipeline.compute.cluster import live_members

    monkeypatch.setenv(cluster_module.PRIVATE_ENV, "1")
    nodes: list[subprocess.Popen] = []

    def ray(self, *args, name):  # a node: a leader and a child in their own process group
        process = subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600"], start_new_session=True)
        self.processes.append(process)
        nodes.append(process)
        return process

    calls = []

    def wait_for_nodes(self, count, timeout, watch=None):
        calls.append(count)
        if len(calls) == 1:
            raise RuntimeError("a ray node exited with 1")

    monkeypatch.setattr(cluster_module.LocalRayCluster, "_ray", ray)
    monkeypatch.setattr(cluster_module, "wait_for_port", lambda *args, **kwargs: None)
    monkeypatch.setattr(cluster_module.LocalRayCluster, "wait_for_nodes", wait_for_nodes)
    cluster = cluster_module.LocalRayCluster(worker_cpus=(1,), log_dir=str(tmp_path)).start()
    try:
        head, first_try, second_try = nodes
        assert calls == [2, 2] and cluster.processes == [head, second_try]
        assert live_members(first_try.pid) == set()  # nothing of the first try's group is left
        running = {node.pid: live_members(node.pid) for node in (head, second_try)}
        assert all(running.values())
    finally:
        cluster.stop()
    assert [live_members(pid) & members for pid, members in running.items()] == [set(), set()]
