"""The `compute` resource's settings reach every run, and bad ones are refused before any step (no Ray needed).

Runs the sensor, the schedules, the Materialize button and `curate run` start have no run config: a deployment's
actors and GPUs reach them only through the environment (the chart's `compute` values), read by the resource
the code location's definitions build."""

from __future__ import annotations

import dagster as dg
import pytest

from curation_pipeline.compute.options import RayOptions
from curation_pipeline.resources import ComputeResource

# every setting a deployment gives, by its documented variable (README "Scaling out"), with a value that is
# not its default
ENVIRONMENT = {
    "CURATION_COMPUTE": ("engine", "local", "local"),  # local, so a run here needs no cluster
    "CURATION_RAY_ADDRESS": ("address", "ray://head.example:10001", "ray://head.example:10001"),
    "CURATION_RAY_ACTORS": ("actors", "4", 4),
    "CURATION_RAY_CPUS_PER_ACTOR": ("cpus_per_actor", "2.5", 2.5),
    "CURATION_RAY_GPUS_PER_ACTOR": ("gpus_per_actor", "0.5", 0.5),
    "CURATION_RAY_THREADS_PER_ACTOR": ("threads_per_actor", "3", 3),
    "CURATION_RAY_REWRITE_ACTORS": ("rewrite_actors", "2", 2),
    "CURATION_RAY_REWRITE_GPUS_PER_ACTOR": ("rewrite_gpus_per_actor", "1", 1.0),
    "CURATION_RAY_BATCH_SIZE": ("batch_size", "16", 16),
    "CURATION_RAY_DECODE_CONCURRENCY": ("decode_concurrency", "6", 6),
    "CURATION_RAY_SPREAD": ("spread", "false", False),
    "CURATION_RAY_MAX_TASKS_IN_FLIGHT": ("max_tasks_in_flight", "3", 3),
    "CURATION_RAY_WAIT_FOR_ACTORS_S": ("wait_for_actors_s", "120", 120),
    "CURATION_RAY_MAX_RETRIES": ("max_retries", "0", 0),
    "CURATION_RAY_COORDINATOR_MEMORY_MB": ("coordinator_memory_mb", "2048", 2048),
    "CURATION_RAY_SHARD_TIMEOUT_S": ("shard_timeout_s", "900", 900),
}


@pytest.fixture
def deployment(monkeypatch):
    for env, (_, raw, _) in ENVIRONMENT.items():
        monkeypatch.setenv(env, raw)


def _compute() -> ComputeResource:
    from curation_pipeline.definitions import build_definitions

    return build_definitions().resources["compute"]  # as the code server and every run pod build it


def test_every_compute_setting_comes_from_the_environment(deployment):
    compute = _compute()
    assert {field: getattr(compute, field) for field, _, _ in ENVIRONMENT.values()} == {
        field: value for field, _, value in ENVIRONMENT.values()}
    score, rewrite = compute.options("score", 32), compute.options("rewrite", 8)
    assert score == RayOptions(batch_size=16, actors=4, cpus_per_actor=2.5, gpus_per_actor=0.5, threads_per_actor=3,
                               decode_concurrency=6, spread=False, max_tasks_in_flight=3, wait_for_actors_s=120,
                               max_retries=0, coordinator_memory_mb=2048, shard_timeout_s=900)
    assert (rewrite.actors, rewrite.gpus_per_actor, rewrite.batch_size) == (2, 1.0, 16)


def test_without_the_environment_the_defaults_hold(monkeypatch):
    for env in ENVIRONMENT:
        monkeypatch.delenv(env, raising=False)
    compute = _compute()
    assert (compute.engine, compute.address, compute.rewrite_actors, compute.rewrite_gpus_per_actor) == ("local", "", 0, -1)
    assert compute.options("score", 32) == RayOptions(batch_size=32)


def test_a_launchpad_config_of_some_keys_keeps_the_environment_for_the_rest(deployment):
    """Dagster replaces a resource's whole config with a launchpad's: the keys left out come from the run's
    environment, not from the field defaults (a launchpad `{actors: 8}` ran one CPU actor, locally)."""
    @dg.asset
    def probe(compute: ComputeResource) -> dict:
        return {"actors": compute.actors, "options": compute.options("score", 32), "address": compute.address}

    defs = dg.Definitions(assets=[probe], resources={"compute": _compute()})
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        run_config={"resources": {"compute": {"config": {"actors": 8}}}})
    seen = result.output_for_node("probe")
    assert seen["actors"] == 8 and seen["address"] == "ray://head.example:10001"
    assert (seen["options"].gpus_per_actor, seen["options"].wait_for_actors_s, seen["options"].batch_size) == (0.5, 120, 16)


@pytest.mark.parametrize("env, raw, message", [
    ("CURATION_RAY_GPUS_PER_ACTOR", "1.5", "a fraction of one GPU (0 to 1) or 1, got 1.5"),
    ("CURATION_RAY_ACTORS", "0", "greater than or equal to 1"),
    ("CURATION_RAY_ACTORS", "four", "valid integer"),
    ("CURATION_RAY_THREADS_PER_ACTOR", "-1", "greater than or equal to 0"),
    ("CURATION_RAY_SPREAD", "maybe", "valid boolean"),
    ("CURATION_RAY_CPUS_PER_ACTOR", "inf", "finite number"),
    ("CURATION_RAY_GPUS_PER_ACTOR", "nan", "finite number"),
])
def test_a_bad_environment_value_names_its_variable(monkeypatch, env, raw, message):
    monkeypatch.setenv(env, raw)
    with pytest.raises(ValueError, match=f"environment variable {env}='{raw}' is not a valid compute") as info:
        _compute()
    assert message in str(info.value)


@pytest.mark.parametrize("setting, message", [
    ({"gpus_per_actor": 1.5}, "gpus_per_actor must be a fraction of one GPU (0 to 1) or 1"),
    # an actor loads its models on one device: a second GPU would be reserved and idle
    ({"gpus_per_actor": 2}, "got 2.0 (an actor runs its models on one GPU: for more GPUs, run more actors)"),
    ({"rewrite_gpus_per_actor": 2.5}, "rewrite_gpus_per_actor must be a fraction"),
    ({"rewrite_gpus_per_actor": -0.5}, "rewrite_gpus_per_actor must be a fraction"),
    ({"threads_per_actor": -1}, "threads_per_actor"),
    ({"decode_concurrency": -1}, "decode_concurrency"),
    ({"wait_for_actors_s": -5}, "wait_for_actors_s"),
    ({"actors": 0}, "actors"),
    ({"rewrite_actors": -3}, "rewrite_actors"),
    ({"max_tasks_in_flight": 0}, "max_tasks_in_flight"),
    ({"cpus_per_actor": float("inf")}, "finite number"),
    ({"gpus_per_actor": float("nan")}, "finite number"),
    ({"shard_timeout_s": -1}, "shard_timeout_s"),
])
def test_a_bad_setting_is_refused_when_the_resource_is_made(setting, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ComputeResource(engine="ray", **setting)


@pytest.mark.parametrize("options, message", [
    ({"gpus_per_actor": 1.5}, "or 1, got 1.5"),
    ({"gpus_per_actor": 2}, "run more actors"),
    ({"gpus_per_actor": -1}, "got -1"),
    ({"threads_per_actor": -1}, "threads_per_actor cannot be negative"),
    ({"decode_concurrency": -1}, "decode_concurrency cannot be negative"),
    ({"wait_for_actors_s": -5}, "wait_for_actors_s cannot be negative"),
    ({"cpus_per_actor": float("inf")}, "cpus_per_actor must be a finite number >= 0, got inf"),
    ({"gpus_per_actor": float("nan")}, "or 1, got nan"),
    ({"shard_timeout_s": -1}, "shard_timeout_s cannot be negative"),
])
def test_ray_options_refuse_what_ray_would_refuse_or_ignore(options, message):
    with pytest.raises(ValueError, match=message):
        RayOptions(**options)
    assert RayOptions(gpus_per_actor=0.25).gpus_per_actor == 0.25 and RayOptions(gpus_per_actor=1).gpus_per_actor == 1


def test_the_charts_compute_values_reach_every_runs_resource(monkeypatch):
    """The chart's `compute` values, rendered by Helm, are the code server's and run pods' environment."""
    from curation_pipeline_tests.scale.test_deploy import _env, _kind, _render

    values = {"actors": 4, "gpusPerActor": 0.5, "cpusPerActor": 2.5, "threadsPerActor": 3, "rewriteActors": 2,
              "rewriteGpusPerActor": 1, "batchSize": 16, "decodeConcurrency": 6, "spread": False,
              "maxTasksInFlight": 3, "waitForActorsS": 120, "maxRetries": 0, "coordinatorMemoryMb": 2048,
              "shardTimeoutS": 900}
    env = _env(_kind(_render({"compute": values}), "Deployment")["spec"]["template"]["spec"]["containers"][0])
    knobs = {name: raw for name, (_, raw, _) in ENVIRONMENT.items() if name not in ("CURATION_COMPUTE", "CURATION_RAY_ADDRESS")}
    assert {name: env.get(name) for name in knobs} == knobs
    for name, value in env.items():
        if name.startswith("CURATION_") and value is not None:
            monkeypatch.setenv(name, value)
    compute = _compute()
    assert (compute.engine, compute.actors, compute.gpus_per_actor, compute.coordinator_memory_mb) == ("ray", 4, 0.5, 2048)
    # unset values add no variable: the resource's defaults hold
    default = _env(_kind(_render(), "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert not {n for n in default if n.startswith("CURATION_RAY_")} - {"CURATION_RAY_ADDRESS"}


def test_a_steps_metadata_shows_the_settings_it_resolved(deployment, monkeypatch):
    """The launchpad form shows only what was typed; what a step ran with (an environment variable's value,
    a default) is in its materialization's ``compute_settings``."""
    monkeypatch.setenv("CURATION_COMPUTE", "ray")
    compute = _compute()
    score = compute.resolved("score", 32)
    assert score == {"engine": "ray", "address": "ray://head.example:10001", "batch_size": 16, "actors": 4,
                     "cpus_per_actor": 2.5, "gpus_per_actor": 0.5, "threads_per_actor": 3, "decode_concurrency": 6,
                     "decode_cpus": 1.0, "spread": False, "max_tasks_in_flight": 3, "wait_for_actors_s": 120, "max_retries": 0,
                     "coordinator_memory_mb": 2048, "shard_timeout_s": 900}
    limited = ComputeResource(engine="ray", data_execution_options={"execution_options": {"cpu": 1}, "use_polars": False})
    assert limited.resolved("score", 32)["data_execution_options"] == {"resource_limits": (1, None, None),
                                                                       "use_polars": False}
    assert limited.options("score", 32).data_context == (("resource_limits", (1, None, None)), ("use_polars", False))
    assert (compute.resolved("rewrite", 8)["actors"], compute.resolved("rewrite", 8)["gpus_per_actor"]) == (2, 1.0)
    monkeypatch.setenv("CURATION_COMPUTE", "local")
    assert _compute().resolved("score", 32) == {"engine": "local"}



def test_a_local_materialization_records_its_compute_settings(curated):
    instance, shard = curated["instance"], curated["shards"][0]
    for asset in ("quality_scores", "rewritten_captions"):
        metadata = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[shard]),
            limit=1).records[0].event_log_entry.asset_materialization.metadata
        assert metadata["compute_settings"].value == {"engine": "local"}, asset


def test_actors_late_for_wait_for_actors_s_is_said_so_not_a_shard_timeout(monkeypatch):
    """Ray Data fails the shard when its actor pool is not up within wait_for_actors_s; that error comes out of the
    coordinator task, as a RayTaskError that is also a GetTimeoutError, and was read as shard_timeout_s running out
    ("did not finish within 0 s"), the task cancelled and the cause dropped."""
    import ray

    from curation_pipeline.compute import ray_data
    from curation_pipeline.compute.options import RayOptions

    late = ray.exceptions.RayTaskError("run", "Traceback ...", ray.exceptions.GetTimeoutError(
        "Timed out while starting actors. This may mean that the cluster does not have enough resources")
    ).as_instanceof_cause()
    cancelled = []

    def get(ref, timeout=None):
        raise late

    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(ray, "cancel", lambda ref, **kwargs: cancelled.append(ref))
    with pytest.raises(TimeoutError, match=r"within compute wait_for_actors_s \(60 s\), so Ray Data failed the "
                                           r"shard: raise it past the models' load time") as raised:
        ray_data._get("ref", RayOptions(wait_for_actors_s=60, shard_timeout_s=0), "model actors ask for ...")
    assert raised.value.__cause__ is late and cancelled == []
    other = ray.exceptions.RayTaskError("run", "Traceback ...", ValueError("a scorer failed")).as_instanceof_cause()
    monkeypatch.setattr(ray, "get", lambda ref, timeout=None: (_ for _ in ()).throw(other))
    with pytest.raises(ValueError):  # the work's own error, as it came
        ray_data._get("ref", RayOptions(shard_timeout_s=900), "...")
    assert cancelled == []
