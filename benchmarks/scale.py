"""Decode + score throughput of one shard (the heavy work of ``quality_scores``) on the local
engine and on a Ray cluster with one and with two model workers, for the offline profile and a
tiny-CLIP profile (the offline signals plus clip_speed.py's "small" random-weight CLIP: 384
wide, 6 layers, ViT 224 px, patch 32), and the
peak memory of a Ray worker on a small and a big shard.

The cluster is real (``ray start``: a head node and two worker nodes of one CPU each) and runs in
a private network namespace (root: the script re-runs itself under ``unshare``), so every packet
stays on loopback. A "worker" is one model actor on one CPU (one intra-op thread); the local
engine is given every core (``CURATION_THREADS`` set to ``cores``, the cores this process may run on,
recorded as ``local_threads``: left unset, a run divides the cores by the ``max_concurrent_runs`` of
``$DAGSTER_HOME/dagster.yaml``, one thread on two cores under the Makefile's home). Figures per
profile: ``<p>_local_pairs_per_s`` (scorers already built),
``<p>_local_1thread_pairs_per_s`` (the local engine with one model thread, the budget of one Ray
worker and of each of two shard runs side by side; ``<p>_ray1_vs_local_1thread`` compares them),
``<p>_ray1_pairs_per_s`` / ``<p>_ray2_pairs_per_s`` (wall time of the whole Ray pipeline, actor
start-up and model loading included), ``<p>_ray1_loaded_pairs_per_s`` / ``..._ray2_...`` (the same
run from its first model call on: models loaded, as the local figure's are;
``<p>_ray1_loaded_vs_local``), ``<p>_ray1_allcores_...`` (one worker whose actor's models get every
core, the local engine's budget, wall and loaded, and their ratios to local),
``<p>_ray1_model_pairs_per_s`` / ``..._ray2_...`` (the model stage alone, measured the same way for
both: the shard decoded and materialized first, then the actor pool over it; the sum of each
actor's pairs over its seconds in model calls, so two actors taking turns on one core show 2x with
no gain), ``<p>_ray1_model_wall_pairs_per_s`` / ``..._ray2_...`` (the same stage's pairs over its
wall time, first model call's start to last one's end; ``<p>_ray2_vs_ray1_model_wall`` is what the
1.6x target judges); 1 and 2 workers take turns ``--repeats`` times and each keeps its best round
of each figure,
``<p>_ray1_ceiling_vs_local`` (one worker's model stage alone over the local rate: the most one
worker can reach, with decoding and streaming free),
``..._pipelined_model_pairs_per_s`` (the same sum inside the streaming run, where decoding
competes with the actors for the cores), ``..._cores_per_actor`` (CPU seconds over busy seconds
of the model calls: ~1 when each actor's one thread has a core), ``<p>_load_average`` (the
machine's 1-minute load when that profile started), and the ratios the targets name. Worker
peak memory: the largest peak RSS of any model actor or decode process, for a shard of a
quarter of the pairs and for the whole (the first profile's 2-worker runs).

``--profiles`` picks the profiles (both by default); ``--smoke`` measures tiny CLIP alone, with
the tests' tiny checkpoint (``--clip-shape tiny``): every code path, a fraction of the start-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from _common import (add_smoke_flag, compile_package, image_rows, parse_args, remove_generated, result_line,
                     verdict)

from curation_pipeline.compute.cluster import (
    LocalRayCluster,
    enter_private_network,
    in_private_network,
    private_network_available,
    run_in_private_network,
)

PROFILES = ("offline", "tiny_clip")


def write_shard(path: Path, n: int, smoke: bool) -> Path:
    from curation_pipeline.shards.writer import write_tar

    rows = image_rows(None, smoke=smoke) if not smoke else image_rows(max(n, 8), smoke=True)

    def members():
        for i in range(n):
            image, caption = rows[i % len(rows)]
            key = f"{i:09d}"
            yield from ((f"{key}.jpg", Path(image).read_bytes()), (f"{key}.txt", caption.encode()),
                        (f"{key}.json", json.dumps({"key": key, "caption": caption}).encode()))

    return write_tar(path, members())


def profile_for(name: str, folder: Path, clip_shape: str):
    from curation_pipeline.scoring.profiles import ScoringProfile

    if name == "offline":
        return ScoringProfile("offline")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from clip_speed import make_clip

    from curation_pipeline_tests import tiny_models

    # clip_speed's "small" random-weight CLIP by default (ViT and text 384 wide, 6 layers; 224 px,
    # patch 32); "tiny": the test suite's checkpoint (seconds less per actor start-up, for --smoke)
    path = str(folder / "tiny-clip")
    return ScoringProfile("clip", clip_model=tiny_models.make_tiny_clip(path) if clip_shape == "tiny"
                          else make_clip(path, clip_shape))


def cores() -> int:
    """The cores this process may run on (its affinity mask, not the host's count)."""
    from curation_pipeline.scoring.signals import _cores

    return _cores()


def local_rate(profile, shard: Path, batch_size: int, threads: int | None = None) -> float:
    """The local engine, its pools sized by ``CURATION_THREADS`` = ``threads`` (None: every core). Always set:
    unset, a run would divide the cores by the Dagster home's ``max_concurrent_runs``."""
    from curation_pipeline.scoring.profiles import build_scorers
    from curation_pipeline.scoring.run import score_stream
    from curation_pipeline.scoring.signals import THREADS_ENV
    from curation_pipeline.shards.reader import iter_pair_batches

    with mock.patch.dict(os.environ):
        os.environ[THREADS_ENV] = str(threads or cores())
        scorers = build_scorers(profile)  # ONNX sessions take their thread count when built
        start = time.perf_counter()
        table = score_stream(scorers, iter_pair_batches(str(shard), shard.stem, batch_size))
        return len(table) / (time.perf_counter() - start)


def _options(batch_size: int, workers: int, threads: int = 0):
    from curation_pipeline.compute.options import RayOptions

    # one model actor per worker node, one CPU each: its models get one intra-op thread
    # (RayOptions.threads = its CPU allotment), so two actors never ask for more than the two cores;
    # ``threads``: the one actor's models get that many (every core: the local engine's budget)
    return RayOptions(batch_size=batch_size, actors=workers, cpus_per_actor=1, threads_per_actor=threads,
                      decode_cpus=0.5, max_tasks_in_flight=2, wait_for_actors_s=600)


def ray_run(profile, shard: Path, batch_size: int, workers: int, threads: int = 0):
    """The whole Ray pipeline (read -> decode -> actors, streaming), wall time from the driver."""
    from curation_pipeline.compute.ray_data import score_shard

    start = time.perf_counter()
    table, _, stats = score_shard(str(shard), shard.stem, profile, _options(batch_size, workers, threads))
    wall, end = time.perf_counter() - start, time.time()
    # the same span as the local figure, whose scorers are built before its clock starts: from the
    # first model call (actors up, models loaded; the nodes share this machine's clock) to the end
    loaded = len(table) / (end - stats.first_start)
    return len(table) / wall, loaded, stats.model_pairs_per_s, stats


def ray_model_stage(profile, shard: Path, batch_size: int, workers: int):
    """The model stage alone, measured the same way for 1 and 2 workers: the shard decoded first
    (materialized), then the actor pool over it; rates: the sum over actors of pairs / busy seconds,
    and pairs / the stage's wall seconds (what a second actor gains in fact)."""
    from curation_pipeline.compute.ray_data import score_model_stage

    pairs, stats = score_model_stage(str(shard), shard.stem, profile, _options(batch_size, workers))
    return stats.model_pairs_per_s, stats.model_wall_pairs_per_s, stats


def measure(args) -> dict:
    import ray

    figures: dict = {"pairs": args.pairs, "batch_size": args.batch_size, "cores": cores(), "local_threads": cores(),
                     "profiles": args.profiles, "clip_shape": args.clip_shape}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = Path(tmp)
        big = write_shard(folder / "bench-big.tar", args.pairs, args.smoke)
        small = write_shard(folder / "bench-small.tar", max(args.pairs // 4, args.batch_size), args.smoke)
        profiles = {name: profile_for(name, folder, args.clip_shape) for name in args.profiles}
        big_two_workers = {}  # each profile's 2-worker run on the big shard: its worker peak memory
        with LocalRayCluster(head_cpus=2, worker_cpus=(1, 1), object_store_mb=512) as cluster:
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            try:
                for name, profile in profiles.items():
                    # local right before the same profile's Ray runs (the idle cluster beside it), so
                    # both see the same load from whatever else the machine runs
                    # every core (local_threads); a warm-up first: lazily loaded models (MiniLM), caches
                    local_rate(profile, small, args.batch_size, threads=figures["local_threads"])
                    figures[f"{name}_local_pairs_per_s"] = local_rate(profile, big, args.batch_size,
                                                                      threads=figures["local_threads"])
                    # the same model-thread budget as one Ray worker (1), as each of two shard runs side by side has;
                    # its own warm-up, as MiniLM's session is built for the thread budget when first used
                    local_rate(profile, small, args.batch_size, threads=1)
                    figures[f"{name}_local_1thread_pairs_per_s"] = local_rate(profile, big, args.batch_size, threads=1)
                    figures[f"{name}_load_average"] = os.getloadavg()[0]
                    for workers in (1, 2):
                        wall, loaded, model, stats = ray_run(profile, big, args.batch_size, workers)
                        figures[f"{name}_ray{workers}_pairs_per_s"] = wall
                        figures[f"{name}_ray{workers}_loaded_pairs_per_s"] = loaded
                        figures[f"{name}_ray{workers}_pipelined_model_pairs_per_s"] = model
                        figures[f"{name}_ray{workers}_pipelined_cores_per_actor"] = stats.model_cores_per_actor
                        figures[f"{name}_ray{workers}_nodes"] = len(stats.nodes)
                        if workers == 2:
                            big_two_workers[name] = stats
                    # one worker given the local engine's budget: its actor's models use every core
                    # (a one-node cluster's actor would take its node's CPUs), decoding as in the runs above
                    wall, loaded, _, _ = ray_run(profile, big, args.batch_size, 1, threads=figures["local_threads"])
                    figures[f"{name}_ray1_allcores_pairs_per_s"] = wall
                    figures[f"{name}_ray1_allcores_loaded_pairs_per_s"] = loaded
                    figures[f"{name}_ray1_allcores_vs_local"] = wall / figures[f"{name}_local_pairs_per_s"]
                    figures[f"{name}_ray1_allcores_loaded_vs_local"] = loaded / figures[f"{name}_local_pairs_per_s"]
                    # 1 and 2 workers take turns, ``--repeats`` times; each keeps its best round (as
                    # clip_speed.py does): both see the same spells of load from the rest of the machine
                    for _ in range(args.repeats):
                        for workers in (1, 2):
                            model, model_wall, stats = ray_model_stage(profile, big, args.batch_size, workers)
                            if model > figures.get(f"{name}_ray{workers}_model_pairs_per_s", 0):
                                figures[f"{name}_ray{workers}_model_pairs_per_s"] = model
                                figures[f"{name}_ray{workers}_model_cores_per_actor"] = stats.model_cores_per_actor
                                figures[f"{name}_ray{workers}_model_actors"] = len(stats.workers)
                            wall_key = f"{name}_ray{workers}_model_wall_pairs_per_s"
                            figures[wall_key] = max(model_wall, figures.get(wall_key, 0))
                    figures[f"{name}_ray1_vs_local"] = figures[f"{name}_ray1_pairs_per_s"] / figures[f"{name}_local_pairs_per_s"]
                    figures[f"{name}_ray1_vs_local_1thread"] = (figures[f"{name}_ray1_pairs_per_s"]
                                                                / figures[f"{name}_local_1thread_pairs_per_s"])
                    figures[f"{name}_ray1_loaded_vs_local"] = (figures[f"{name}_ray1_loaded_pairs_per_s"]
                                                               / figures[f"{name}_local_pairs_per_s"])
                    figures[f"{name}_ray1_loaded_vs_local_1thread"] = (figures[f"{name}_ray1_loaded_pairs_per_s"]
                                                                       / figures[f"{name}_local_1thread_pairs_per_s"])
                    # the most one worker can reach: its model stage alone (inputs decoded beforehand, no
                    # streaming) against the local engine, which decodes and scores on every core
                    figures[f"{name}_ray1_ceiling_vs_local"] = (figures[f"{name}_ray1_model_pairs_per_s"]
                                                                / figures[f"{name}_local_pairs_per_s"])
                    figures[f"{name}_ray2_vs_ray1_model"] = (figures[f"{name}_ray2_model_pairs_per_s"]
                                                             / figures[f"{name}_ray1_model_pairs_per_s"])
                    figures[f"{name}_ray2_vs_ray1_model_wall"] = (figures[f"{name}_ray2_model_wall_pairs_per_s"]
                                                                  / figures[f"{name}_ray1_model_wall_pairs_per_s"])
                    figures[f"{name}_ray2_vs_ray1_pipelined_model"] = (
                        figures[f"{name}_ray2_pipelined_model_pairs_per_s"]
                        / figures[f"{name}_ray1_pipelined_model_pairs_per_s"])
                # worker memory: the first profile's 2-worker run on the big shard against the same on the small one
                memory_profile = args.profiles[0]
                *_, small_stats = ray_run(profiles[memory_profile], small, args.batch_size, 2)
                big_stats = big_two_workers[memory_profile]
            finally:
                ray.shutdown()
        figures["memory_profile"] = memory_profile
        figures["small_shard_pairs"] = max(args.pairs // 4, args.batch_size)
        figures["ray_worker_peak_rss_small_mb"] = small_stats.peak_worker_rss_mb
        figures["ray_worker_peak_rss_big_mb"] = big_stats.peak_worker_rss_mb
        figures["ray_worker_peak_rss_ratio_big_small"] = big_stats.peak_worker_rss_mb / small_stats.peak_worker_rss_mb
    figures["targets"] = {  # None in a smoke run
        "ray1_ge_0.8x_local": {p: verdict(figures[f"{p}_ray1_vs_local"] >= 0.8) for p in args.profiles},
        "ray1_ge_0.8x_local_same_threads": {p: verdict(figures[f"{p}_ray1_vs_local_1thread"] >= 0.8)
                                            for p in args.profiles},
        "ray1_loaded_ge_0.8x_local": {p: verdict(figures[f"{p}_ray1_loaded_vs_local"] >= 0.8) for p in args.profiles},
        "ray1_allcores_ge_0.8x_local": {p: verdict(figures[f"{p}_ray1_allcores_vs_local"] >= 0.8)
                                        for p in args.profiles},
        "ray1_allcores_loaded_ge_0.8x_local": {p: verdict(figures[f"{p}_ray1_allcores_loaded_vs_local"] >= 0.8)
                                               for p in args.profiles},
        # judged on wall time: the busy-time sum shows 2x for two actors taking turns on one core
        "ray2_model_wall_ge_1.6x_ray1": {p: verdict(figures[f"{p}_ray2_vs_ray1_model_wall"] >= 1.6)
                                         for p in args.profiles},
    }
    return figures


def measured_keys(profiles) -> list[str]:
    """The measured RESULT keys of a run over ``profiles``: null in the RESULT of a run that could start no cluster."""
    per_profile = (
        "local_pairs_per_s", "local_1thread_pairs_per_s", "load_average", "ray1_vs_local_1thread",
        "ray1_pairs_per_s", "ray2_pairs_per_s", "ray1_loaded_pairs_per_s", "ray2_loaded_pairs_per_s",
        "ray1_loaded_vs_local", "ray1_loaded_vs_local_1thread", "ray1_allcores_pairs_per_s",
        "ray1_allcores_loaded_pairs_per_s", "ray1_allcores_vs_local", "ray1_allcores_loaded_vs_local",
        "ray1_model_pairs_per_s", "ray2_model_pairs_per_s", "ray1_vs_local", "ray1_ceiling_vs_local",
        "ray2_vs_ray1_model", "ray1_model_wall_pairs_per_s", "ray2_model_wall_pairs_per_s",
        "ray2_vs_ray1_model_wall", "ray1_pipelined_model_pairs_per_s", "ray2_pipelined_model_pairs_per_s",
        "ray2_vs_ray1_pipelined_model", "ray1_pipelined_cores_per_actor", "ray2_pipelined_cores_per_actor",
        "ray1_model_cores_per_actor", "ray2_model_cores_per_actor", "ray1_model_actors", "ray2_model_actors",
        "ray1_nodes", "ray2_nodes")
    return [*[f"{p}_{k}" for p in profiles for k in per_profile], "memory_profile", "ray_worker_peak_rss_small_mb",
            "ray_worker_peak_rss_big_mb", "ray_worker_peak_rss_ratio_big_small", "targets"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=512, help="pairs in the big shard (the small one has a quarter)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds of the model-stage measurement (1 and 2 workers in turn); the best counts")
    parser.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES),
                        help="the profiles to measure; the first one's workers also give the peak memory figures")
    parser.add_argument("--clip-shape", default="small", choices=["tiny", "small", "b32"],
                        help="the random-weight CLIP of the tiny_clip profile (clip_speed.py's shapes; tiny: the tests')")
    # the smoke run measures tiny CLIP alone: the same loop as the offline profile, whose signals it
    # also runs (each profile costs about 100 s of actor start-ups on a 2-core machine)
    add_smoke_flag(parser, pairs=32, batch_size=8, repeats=1, profiles=["tiny_clip"], clip_shape="tiny")
    args = parse_args(parser)
    if not in_private_network():
        compile_package()  # once, before the cluster's workers import the package
        ok, why = private_network_available()
        if not ok:  # no Ray cluster may run outside a private namespace: say so, measure nothing
            print(f"Ray runs need a private network namespace: {why}", file=sys.stderr)
            result_line({"pairs": args.pairs, "batch_size": args.batch_size, "cores": cores(),
                         "profiles": args.profiles, "clip_shape": args.clip_shape,
                         "small_shard_pairs": max(args.pairs // 4, args.batch_size), "ray": f"skipped: {why}",
                         **{k: None for k in measured_keys(args.profiles)}})
            return
        env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
        done = run_in_private_network([sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
                                      timeout=3600, env=env)
        sys.exit(done.returncode)
    enter_private_network()
    try:
        figures = measure(args)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        remove_generated()
        os._exit(1)
    result_line(figures)
    sys.stdout.flush()
    remove_generated()
    os._exit(0)  # PID 1 of the namespace: the kernel ends the Ray nodes


if __name__ == "__main__":
    main()
