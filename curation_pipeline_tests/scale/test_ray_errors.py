"""What the Ray path says when a model fails, against what the local engine says, on a one-node Ray inside a
private network namespace (one tiny shard): a model that cannot load is named with its own exception, not
reported as an actor killed for memory, and a scorer that raises on every pair brings its traceback back
(``Faults``) for the step log. The scenario (``python -m curation_pipeline_tests.scale.test_ray_errors``) runs
once, as PID 1 of the namespace; the tests assert on what it reports."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import pytest

from curation_pipeline.compute.cluster import private_network_available, run_in_private_network
from curation_pipeline_tests.conftest import RAW_SAMPLES, REPO_ROOT
from curation_pipeline_tests.scale.helpers import SCENARIO_ENV_DROPPED, require

MODULE = "curation_pipeline_tests.scale.test_ray_errors"  # also what runs it: __name__ is then __main__
SHARD = "sample-tiny"
BROKEN = "the caption model broke (test)"


def break_caption_scorer() -> None:
    """In every process of the scenario (the driver and, as Ray's worker setup hook, each worker): the caption
    scorer raises on every batch, as a broken model would."""
    from curation_pipeline.scoring.text_quality import CaptionTextQuality

    def score(self, batch, prepared=None):
        raise RuntimeError(BROKEN)

    CaptionTextQuality.score = score


def _tiny_shard(target: Path, samples: int = 3) -> None:
    """The first ``samples`` samples of a bundled shard: two batches of 2."""
    import tarfile

    with tarfile.open(RAW_SAMPLES / "sample-000001.tar") as src, tarfile.open(target, "w") as out:
        keys: list[str] = []
        for member in src.getmembers():
            key = member.name.split(".")[0]
            if key not in keys:
                if len(keys) == samples:
                    break
                keys.append(key)
            out.addfile(member, src.extractfile(member))


def scenario(out: Path) -> dict:
    """Each part's report, or the traceback it raised."""
    import ray

    from curation_pipeline.compute.options import RayOptions
    from curation_pipeline.compute.ray_data import score_shard
    from curation_pipeline.scoring.profiles import ScoringProfile, build_scorers
    from curation_pipeline.scoring.run import Faults, decode_mode, score_stream
    from curation_pipeline.shards.reader import iter_pair_batches

    url = str(out / f"{SHARD}.tar")
    _tiny_shard(Path(url))
    options = RayOptions(batch_size=2, decode_cpus=0.5, spread=False, coordinator_memory_mb=0)

    def load_error() -> dict:
        missing, got = ScoringProfile("clip", clip_model=str(out / "no-clip-model")), {}
        try:
            build_scorers(missing)
        except Exception as e:
            got["local"] = f"{type(e).__name__}: {e}"
        try:
            score_shard(url, SHARD, missing, options)
        except Exception as e:  # the coordinator's RayTaskError: its cause is what _score_shard raised
            got["ray"] = str(e.cause if isinstance(e, ray.exceptions.RayTaskError) else e)
        return got

    def faults() -> dict:
        text, local, on_ray = ScoringProfile("text"), Faults(), Faults()
        scorers = build_scorers(text)
        score_stream(scorers, iter_pair_batches(url, SHARD, batch_size=2, decode=decode_mode(scorers)), faults=local)
        score_shard(url, SHARD, text, options, faults=on_ray)
        return {"local": local.seen, "ray": on_ray.seen, "ray_sole_traceback": on_ray.sole_traceback("text_quality")}

    def data_context() -> dict:
        """dagster-ray's data_execution_options reach the coordinator task that builds a shard's datasets (and
        leave its worker process as they found it)."""
        import dataclasses

        from curation_pipeline.compute.ray_data import _data_context, _on_cluster

        def probe(opts):
            with _data_context(opts):
                ctx = ray.data.DataContext.get_current()
                return {"cpu": ctx.execution_options.resource_limits.cpu, "use_polars": ctx.use_polars,
                        "verbose_progress": ctx.execution_options.verbose_progress}

        limited = dataclasses.replace(options, data_context=(("resource_limits", (1, None, None)),
                                                             ("use_polars", True), ("verbose_progress", False)))
        return {"limited": _on_cluster(limited, probe, limited), "plain": _on_cluster(options, probe, options)}

    def never_placed() -> dict:
        """A GPU actor on a cluster without one: cancelled after shard_timeout_s, saying what it asked for."""
        import dataclasses

        warned: list[str] = []
        try:
            score_shard(url, SHARD, ScoringProfile("text"), dataclasses.replace(options, gpus_per_actor=1,
                                                                                  shard_timeout_s=10),
                        warn=warned.append)
        except Exception as e:
            return {"raised": f"{type(e).__name__}: {e}", "warned": warned}
        return {"raised": None, "warned": warned}

    def capacity() -> dict:
        """What the step log is told of this 2-CPU cluster as ``ray.nodes()`` reports it."""
        import dataclasses

        from curation_pipeline.compute.ray_data import capacity_shortfall

        nodes = ray.nodes()
        return {"two_actors": capacity_shortfall(dataclasses.replace(options, actors=2), nodes),
                "one_actor": capacity_shortfall(options, nodes)}

    result = {}
    for name, part in (("load_error", load_error), ("data_context", data_context), ("never_placed", never_placed),
                       ("capacity", capacity), ("faults", faults)):  # faults after never_placed: it still works
        try:
            result[name] = part()
        except Exception:
            result[name] = {"error": traceback.format_exc()[-4000:]}
    return result


def _ok(part: dict) -> dict:
    assert "error" not in part, part["error"]
    return part


def main() -> None:
    """As PID 1 of the namespace: a one-node Ray on loopback, the scenario, ``result.json``."""
    from curation_pipeline.compute.cluster import enter_private_network

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = Path(parser.parse_args().out)
    result: dict = {"interfaces": enter_private_network()}
    try:
        import ray

        break_caption_scorer()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": f"{MODULE}.break_caption_scorer"})
        result.update(scenario(out))
        ray.shutdown()
    except BaseException:
        result["error"] = traceback.format_exc()
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    sys.stdout.flush()
    os._exit(0)  # PID 1 of the namespace: the kernel ends everything else now


@pytest.fixture(scope="module")
def errors(tmp_path_factory) -> dict:
    ok, why = private_network_available()
    require(ok, why)
    out = tmp_path_factory.mktemp("ray-errors")
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
    for variable in SCENARIO_ENV_DROPPED:
        env.pop(variable, None)
    done = run_in_private_network([sys.executable, "-m", MODULE, "--out",
                                   str(out)], timeout=600, env=env, cwd=str(REPO_ROOT), capture_output=True, text=True)
    result_file = out / "result.json"
    assert result_file.exists(), f"no result (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    result = json.loads(result_file.read_text())
    assert "error" not in result, result["error"]
    return result


@pytest.mark.slow
def test_a_model_that_cannot_load_on_ray_is_named_with_its_own_error(errors):
    """As locally, where building the scorers raises at once: the model and its exception's own message, not
    an actor 'killed for memory' quoting the exception's last line."""
    got = _ok(errors["load_error"])
    local, on_ray = got.get("local", "built"), got.get("ray", "scored")
    assert local.startswith("ModelUnavailableError: Model ") and "no-clip-model" in local, local
    assert on_ray.startswith(f"{SHARD}: a model actor could not load the 'clip' profile's scorers (clip_model "), on_ray
    assert on_ray.endswith(local), on_ray
    assert "killed for memory" not in on_ray and "restarts" not in on_ray, on_ray


@pytest.mark.slow
def test_a_scorer_raising_on_every_pair_on_ray_reports_its_traceback_as_locally(errors):
    """The actors return what their scorers raised with each batch; merged in batch order, the counts and the
    first traceback equal the local stream's, so the step logs the same traceback on either engine."""
    faults = _ok(errors["faults"])
    assert faults["ray"] == faults["local"]
    assert faults["ray"]["text_quality"]["RuntimeError"][0] == 3  # every pair of both batches
    trace = faults["ray_sole_traceback"]
    assert trace and trace.startswith("Traceback") and f"RuntimeError: {BROKEN}" in trace, trace


if __name__ == "__main__":
    main()


@pytest.mark.slow
def test_dagster_rays_data_execution_options_reach_the_coordinator_that_builds_the_datasets(errors):
    seen = _ok(errors["data_context"])
    assert seen["limited"] == {"cpu": 1, "use_polars": True, "verbose_progress": False}
    assert seen["plain"] == {"cpu": float("inf"), "use_polars": False, "verbose_progress": True}


@pytest.mark.slow
def test_a_request_no_node_can_meet_fails_after_the_shard_timeout_naming_it(errors):
    raised = _ok(errors["never_placed"])["raised"]
    assert raised is not None and raised.startswith("TimeoutError: the shard's work on the cluster did not finish "
                                                    "within 10 s (compute shard_timeout_s)"), raised
    assert "model actors ask for 1 CPU and 1 GPU each" in raised and "the cluster has 2 CPU, 0 GPU" in raised, raised
    # the step log heard why before the shard waited: the timeout is its only way out
    assert _ok(errors["never_placed"])["warned"] == [
        "the Ray cluster has 2 CPU and 0 GPU on 1 node(s), and no node holds one model actor; this shard's work needs "
        "1.5 CPU and 1 GPU at once (1 model actor(s) of 1 CPU and 1 GPU, which hold them for the whole shard, and "
        "beside them 0.5 CPU to read and decode). It waits until an autoscaler adds nodes; it fails after compute "
        "shard_timeout_s (10 s). Lower compute actors, cpus_per_actor or gpus_per_actor to run on the cluster as it is"]


@pytest.mark.slow
def test_model_actors_taking_every_cpu_are_named_from_the_clusters_own_node_table(errors):
    """Two 1-CPU actors on a 2-CPU cluster leave nothing for the read and decode tasks: Ray waits for ever."""
    seen = _ok(errors["capacity"])
    assert seen["one_actor"] is None
    assert seen["two_actors"].startswith("the Ray cluster has 2 CPU and 0 GPU on 1 node(s); this shard's work needs "
                                         "2.5 CPU and 0 GPU at once (2 model actor(s)"), seen
    assert "without one it waits for ever: set compute shard_timeout_s" in seen["two_actors"], seen


def _node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    """A ``ray.nodes()`` entry."""
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {}), "memory": 2.0**33}}


@pytest.mark.parametrize("nodes, options, short", [
    ([_node(4)], dict(actors=3), None),  # 3 CPU of actors + 1 to decode
    ([_node(4)], dict(actors=4), "has 4 CPU and 0 GPU on 1 node(s); this shard's work needs 5 CPU and 0 GPU"),
    ([_node(4), _node(8, alive=False)], dict(actors=4), "has 4 CPU and 0 GPU on 1 node(s);"),  # a dead one: none
    ([_node(1), _node(1), _node(1)], dict(cpus_per_actor=2), "has 3 CPU and 0 GPU on 3 node(s), and no node holds one"),
    ([_node(8, 1)], dict(actors=2, gpus_per_actor=0.5), None),  # two actors share the GPU
    ([_node(8, 1)], dict(actors=2, gpus_per_actor=1), "needs 3 CPU and 2 GPU at once"),
    ([_node(8, 1), _node(8, 1)], dict(cpus_per_actor=9, gpus_per_actor=1), "and no node holds one model actor"),
    ([_node(0.75)], dict(cpus_per_actor=0.25, decode_cpus=0.25), None),  # read's 0.5 CPU, then decode's 0.25
])
def test_capacity_shortfall_counts_the_actors_beside_read_and_decode(nodes, options, short):
    from curation_pipeline.compute.options import RayOptions
    from curation_pipeline.compute.ray_data import capacity_shortfall

    said = capacity_shortfall(RayOptions(**options), nodes)
    assert (said is None) if short is None else (said is not None and short in said), said


def test_capacity_shortfall_of_work_without_actors_counts_read_and_decode_only():
    from curation_pipeline.compute.options import RayOptions
    from curation_pipeline.compute.ray_data import capacity_shortfall

    assert capacity_shortfall(RayOptions(actors=4, gpus_per_actor=1), [_node(1)], actors=False) is None
    said = capacity_shortfall(RayOptions(decode_cpus=2), [_node(1)], actors=False)
    assert said is not None and "needs 2 CPU and 0 GPU at once (2 CPU to read and decode)" in said, said


def test_a_model_actor_whose_node_is_lost_is_not_said_to_have_restarted(monkeypatch):
    """Ray's ActorUnavailableError (the actor's node or raylet lost) is a RayActorError: the shard failed at once
    with "died ... and again after each of its 2 restarts", restarts that never happened."""
    import ray.exceptions

    from curation_pipeline.compute import ray_data
    from curation_pipeline.compute.options import RayOptions

    def lost(ds):
        yield {"batch": 0}
        raise ray.exceptions.ActorUnavailableError("The actor is temporarily unavailable: node lost", None)

    monkeypatch.setattr(ray_data, "_rows", lost)
    with pytest.raises(RuntimeError) as failed:
        ray_data._collect(None, SHARD, RayOptions(batch_size=2, max_retries=2), "its scorers")
    said = str(failed.value)
    assert said.startswith(f"{SHARD}: a model actor became unreachable (its node or raylet lost); the shard is not "
                           "retried on the cluster") and "restarts" not in said, said
    assert "1 batch(es) came back (0)" in said and "ActorUnavailableError" in said
