"""What the Ray tests run INSIDE a private network namespace (``python -m`` this module).

``test_ray_cluster.py`` starts it with ``run_in_private_network``: it is PID 1 of fresh network
and PID namespaces whose only interface is ``lo``. It starts the servers itself (s3rver, then a
Ray head and a worker node with ``ray start``), runs the scenario, writes ``result.json`` into
the output folder and exits; the kernel then ends every process it started. The test asserts
on ``result.json``. Scenarios:

``e2e``     the whole pipeline on two shards, S3 to S3, on the Ray cluster; its tables and tars
            are compared with the local run's (``--reference``, a local warehouse).
``pairs``   ``pairs_inventory`` (the ``pairs`` table built on the cluster) for both shards, read
            from S3, compared with ``ShardReader`` iterated locally (rows, skips, fingerprint).
``resume``  once the first shard's run finished, a Ray-backed run of the second is killed while its
            scoring is on the cluster; the nightly ``fill_missing_shards`` logic then re-runs what is
            unfinished. ``e2e`` and ``resume`` share one warehouse and Dagster instance (either name
            runs both): e2e's second shard is the re-run one, then cross-shard dedup settles.
``clip``    ``quality_scores`` with a model profile (a tiny CLIP) locally, then on the cluster over the
            same ``pairs``: a model scorer's name and columns are its instance's, not its class's.

``actor-options`` (its own cluster, no S3: a head with no CPUs and no memory, as KubeRay's, and a
            worker with a GPU slot, no device needed) what model actors and coordinators ask of Ray:
            scoring with ``gpus_per_actor: 1``, what a GPU-less actor sees of the node's GPUs, a
            batch that kills its actor every time, and the coordinator's memory and node.

Each phase's wall and CPU seconds go into ``result.json`` (``phases``) and onto stderr, and each Dagster
run's step seconds into its scenario's ``runs``: where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SHARDS = ["sample-000000", "sample-000001"]
PHASES: dict[str, float] = {}  # wall and CPU seconds per phase


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    started, cpu = time.monotonic(), CPU.sample()
    try:
        yield
    finally:
        PHASES[name] = round(time.monotonic() - started, 1)
        PHASES[f"{name} (cpu)"] = round(CPU.sample() - cpu, 1)
        print(f"phase {name}: {PHASES[name]} s, {PHASES[name + ' (cpu)']} cpu s", file=sys.stderr, flush=True)


class _CpuMeter:
    """CPU seconds of every process of this PID namespace, sampled each second by a thread (Ray's raylet
    reaps its workers unwaited, SIGCHLD ignored, so a worker's CPU time is only seen while it lives): with
    the wall time, whether a phase computes or waits."""

    def __init__(self):
        self.seen: dict[tuple[str, str], int] = {}  # (pid, start time) -> ticks
        self.tick = os.sysconf("SC_CLK_TCK")
        self.lock = threading.Lock()

    def sample(self) -> float:
        with self.lock:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:  # ended meanwhile
                    continue
                # its own utime and stime (children are sampled themselves); its start time tells pids apart
                self.seen[(stat.parent.name, fields[19])] = int(fields[11]) + int(fields[12])
            return sum(self.seen.values()) / self.tick

    def start(self) -> "_CpuMeter":
        def run():
            while True:
                self.sample()
                time.sleep(1)

        threading.Thread(target=run, daemon=True).start()
        return self


CPU = _CpuMeter()


def _run_timings(instance) -> list[dict]:
    """Per Dagster run of ``instance``: its job and partition, seconds from its start to its first step (the
    resources' setup: the Ray connection) and each step's seconds, for the report."""
    import dagster as dg

    out = []
    for run in reversed(instance.get_runs()):
        started, starts, steps = None, {}, {}
        for entry in instance.all_logs(run.run_id):
            kind = entry.dagster_event_type
            if kind == dg.DagsterEventType.RUN_START:
                started = entry.timestamp
            elif kind == dg.DagsterEventType.STEP_START:
                starts[entry.step_key] = entry.timestamp
                steps[entry.step_key] = None  # until it ends (a killed run's last step never does)
            elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                steps[entry.step_key] = round(entry.timestamp - starts[entry.step_key], 1)
        first = min(starts.values(), default=None)
        out.append({"job": run.job_name, "partition": run.tags.get("dagster/partition"),
                    "setup": round(first - started, 1) if started and first else None, "steps": steps})
    return out


def _compute(address: str, actors: int = 2):
    from curation_pipeline.resources import ComputeResource

    # two model actors, one per node (SPREAD); small batches so both get work on 40-pair shards
    return ComputeResource(engine="ray", address=address, actors=actors, batch_size=0)


def _materializations(instance, asset: str) -> list:
    import dagster as dg

    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset)), limit=1000)
    return [r.event_log_entry for r in records.records]


def _ray_nodes(instance) -> dict[str, list[int]]:
    """ray_nodes metadata of every Ray-backed materialization, by asset."""
    out: dict[str, list[int]] = {}
    for asset in ("quality_scores", "rewritten_captions"):
        for entry in _materializations(instance, asset):
            meta = entry.asset_materialization.metadata
            if "ray_nodes" in meta:
                out.setdefault(asset, []).append(int(meta["ray_nodes"].value))
    return out


def _s3_objects(prefix: str) -> list[str]:
    from curation_pipeline_tests.scale.helpers import fresh_s3fs

    fs = fresh_s3fs()
    return sorted(fs.find(prefix)) if fs.exists(prefix) else []


def _failures(results) -> list[str]:
    """The first failure events of these Dagster runs, with their errors, for a test's message."""
    return [str(e.event_specific_data.error)[-6000:] if getattr(e.event_specific_data, "error", None)
            else e.message for r in results for e in r.all_events if e.is_failure][:4]


def pairs_on_ray(args, server, cluster) -> dict:
    import pandas as pd
    import ray
    import tenacity

    from curation_pipeline.compute.options import RayOptions
    from curation_pipeline.compute.ray_data import pairs_inventory
    from curation_pipeline.shards.reader import RECORD_COLUMNS, ShardReader

    out: dict = {"differences": [], "nodes": {}}
    # as a run pod does, retrying as dagster-ray's connect does: now and then the head's proxy fails to
    # start a connection's server process ("Starting Ray client server failed", an empty log), and the
    # next attempt gets one
    connect = tenacity.retry(stop=tenacity.stop_after_attempt(4), wait=tenacity.wait_fixed(2), reraise=True,
                             retry=tenacity.retry_if_exception_type(ConnectionError))(ray.init)
    connect(address=cluster.client_address, logging_level="ERROR", log_to_driver=False)
    try:
        for shard in SHARDS:
            url = f"s3://{server.bucket}/raw/{shard}.tar"
            got = pairs_inventory(url, shard, RayOptions(batch_size=8, decode_cpus=0.5))
            reader = ShardReader(url, shard, decode="header")  # pairs' default: image headers only
            local = pd.DataFrame.from_records([s.record for s in reader], columns=RECORD_COLUMNS)
            if not local.equals(got.inventory):
                out["differences"].append(f"{shard}: rows differ")
            if [vars(s) for s in reader.skips] != [vars(s) for s in got.skips]:
                out["differences"].append(f"{shard}: skips differ")
            if (reader.fingerprint.sha256, reader.fingerprint.size) != (got.fingerprint.sha256, got.fingerprint.size):
                out["differences"].append(f"{shard}: fingerprints differ")
            out["nodes"][shard] = len(got.stats.nodes)
            out.setdefault("rows", {})[shard] = len(got.inventory)
    finally:
        ray.shutdown()
    return {"pairs": out}


def clip_on_ray(args, server, cluster) -> dict:
    """Locally, ``pairs`` and ``quality_scores``; then on the cluster ``quality_scores`` alone, over the same
    ``pairs`` (the ``pairs`` scenario and ``e2e`` build it on the cluster)."""
    import dagster as dg

    from curation_pipeline.assets.ingest import pairs
    from curation_pipeline.assets.scoring import quality_scores
    from curation_pipeline.definitions import build_resources
    from curation_pipeline.resources import ClipConfig, ComputeResource, ScoringResource
    from curation_pipeline.storage.warehouse import Warehouse
    from curation_pipeline_tests.tiny_models import make_tiny_clip

    shard, out, tables = SHARDS[1], {}, {}
    root = str(Path(args.out) / "clip-warehouse")
    with phase("clip: tiny model"):
        scoring = ScoringResource(profile="clip", clip=ClipConfig(model=make_tiny_clip(Path(args.out) / "tiny-clip")))
    for engine, assets in (("local", [pairs, quality_scores]), ("ray", [quality_scores])):
        with phase(f"clip: {engine}"):
            # one model actor: what the cluster built is what it describes (two would load CLIP twice)
            compute = _compute(cluster.client_address, actors=1) if engine == "ray" else ComputeResource()
            instance = dg.DagsterInstance.ephemeral()
            instance.add_dynamic_partitions("shards", [shard])
            result = dg.materialize(
                assets, partition_key=shard, instance=instance, raise_on_error=False, run_config=QUIET,
                resources=build_resources(raw_root=f"s3://{server.bucket}/raw", warehouse_root=root,
                                          scoring=scoring, compute=compute))
            out[engine] = result.success
            if result.success:
                tables[engine] = Warehouse(root).read_table("quality_scores", shard)
            else:
                out.setdefault("errors", []).extend(_failures([result]))
                break  # no pairs for the cluster to score
    if len(tables) == 2:
        local, ray_ = tables["local"], tables["ray"]
        out["same_columns"] = list(local.columns) == list(ray_.columns)
        out["clip_columns"] = sorted(c for c in ray_.columns if c.startswith("clip"))
        out["clip_score_max_difference"] = float((local["clip_score"] - ray_["clip_score"]).abs().max())
        out["other_columns_differ"] = [c for c in local.columns if not c.startswith("clip")
                                       and not local[c].equals(ray_[c])]
    return {"clip": out}


def run_shards(args) -> None:
    """The run that gets killed (a child of the scenario): once told to go (a line on stdin, so its imports
    overlap the run before it), each of ``--shards``' jobs in turn, on Ray."""
    import dagster as dg

    from curation_pipeline.definitions import build_definitions

    defs = build_definitions(raw_root=args.raw, warehouse_root=args.warehouse, compute=_compute(args.address))
    job = defs.resolve_job_def("curate_shards")
    with dg.DagsterInstance.get() as instance:
        if not sys.stdin.readline():  # the scenario ended without a go
            return
        for shard in args.shards:
            job.execute_in_process(partition_key=shard, instance=instance, raise_on_error=False, run_config=QUIET)


def _step_started(instance, shard: str, step: str) -> bool:
    import dagster as dg

    for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": shard})):
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START):
            if entry.step_key == step:
                return True
    return False


def _count(instance, asset: str) -> dict[str, int]:
    """Materializations of ``asset`` per shard."""
    return {s: len([e for e in _materializations(instance, asset) if e.dagster_event.partition == s]) for s in SHARDS}


def e2e_and_resume(args, server, cluster) -> dict:
    """``e2e`` and ``resume`` on one warehouse and one Dagster instance, so no shard runs twice but the killed
    one: the first shard's run on Ray, a child's Ray run of the second killed while its scoring is on the
    cluster, the ``fill_missing_shards`` rule re-running only that one (what ``resume`` reports is measured
    then), and as ``curate run`` ends, cross-shard dedup settled and the report (``e2e``)."""
    import dagster as dg

    from curation_pipeline.automation import shards_to_refresh
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.storage.warehouse import Warehouse
    from curation_pipeline_tests.conftest import run_pipeline
    from curation_pipeline_tests.scale.helpers import SECRET, table_differences

    first, second = SHARDS
    raw, root = f"s3://{server.bucket}/raw", f"s3://{server.bucket}/ray-warehouse"
    home = Path(args.out) / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    os.environ["DAGSTER_HOME"] = str(home)  # the killed child's runs and ours in one instance
    compute = _compute(cluster.client_address)
    child = subprocess.Popen([sys.executable, "-m", "curation_pipeline_tests.scale.cluster_scenarios", "run-shards",
                              "--raw", raw, "--warehouse", root, "--address", cluster.client_address,
                              "--out", args.out, "--shards", second],
                             stdin=subprocess.PIPE, text=True,
                             stdout=open(Path(args.out) / "killed-run.log", "ab"), stderr=subprocess.STDOUT,
                             # the cluster ends a vanished Ray Client driver's job after this many seconds
                             env={**os.environ, "RAY_CLIENT_RECONNECT_GRACE_PERIOD": "3"})
    killed_during = None
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("shards", SHARDS)
        with phase("e2e: first shard"):
            _, results = run_pipeline(raw, root, [first], instance=instance, settle=False, report=False,
                                      compute=compute)
        with phase("resume: the run until killed"):
            child.stdin.write("go\n")
            child.stdin.close()
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and child.poll() is None:
                if _step_started(instance, second, "quality_scores"):
                    time.sleep(4)  # connected, actors starting or scoring on the cluster
                    killed_during = [s for s in ("quality_scores", "caption_decisions")
                                     if _step_started(instance, second, s)]
                    child.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.2)
            child.wait(timeout=60)
        # the killed child's run stays STARTED, which the schedule leaves alone (it may be live): marked failed
        # as run monitoring marks a dead run worker's (Kubernetes), or a user terminating it in the UI
        for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            instance.report_run_failed(record.dagster_run, "run worker killed")
        finished_before = _count(instance, "curated_shards")

        # re-execution: the fill_missing_shards schedule's own rule picks what to run
        defs = build_definitions(raw_root=raw, warehouse_root=root, compute=compute)
        todo = shards_to_refresh(instance, defs.resources["warehouse"], defs.get_repository_def())
        with dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                       resources={"warehouse": defs.resources["warehouse"]}) as context:
            requests = defs.resolve_schedule_def("fill_missing_shards").evaluate_tick(context).run_requests or []
        requested = sorted(r.partition_key for r in requests)
        if requested != sorted(todo):
            raise AssertionError(f"the schedule requested {requested}, its rule says {sorted(todo)}")
        with phase("resume: rerun"):
            runs = {s: defs.resolve_job_def("curate_shards").execute_in_process(
                partition_key=s, instance=instance, raise_on_error=False, run_config=QUIET) for s in requested}
        wh, reference = Warehouse(root), Warehouse(args.reference)
        duplicates = {}
        for table in ("pairs", "quality_scores", "caption_decisions", "final_captions"):
            for shard in SHARDS:
                if wh.has_table(table, shard):
                    keys = wh.read_table(table, shard)["key"]
                    duplicates[f"{table}/{shard}"] = int(keys.duplicated().sum())
        resumed = {
            "killed_during": killed_during,
            "killed_exit": child.returncode,
            "curated_before_rerun": finished_before,
            "requested": requested,
            "rerun_success": {s: r.success for s, r in runs.items()},
            "rerun_errors": _failures(runs.values()),
            "curated_after_rerun": _count(instance, "curated_shards"),
            "scored": _count(instance, "quality_scores"),
            "ray_nodes": _ray_nodes(instance),
            "duplicate_keys": duplicates,
            "temp_objects": [o for o in _s3_objects(f"{server.bucket}/ray-warehouse") if ".tmp-" in o],
            # an uninterrupted run: the same scores for both shards and the same everything for the
            # resumed one (the reference also settled cross-shard duplicates, which re-decides the first)
            "differences": table_differences(reference, wh, SHARDS, ("pairs", "skips", "quality_scores"), tars=False)
            + table_differences(reference, wh, SHARDS[1:]),
        }

        results.update(runs)  # e2e's second shard: the re-run
        with phase("e2e: settle and report"):
            _, finished = run_pipeline(raw, root, [], instance=instance, compute=compute)
        results.update(finished)
        logged = "\n".join(str(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id))
        ok = all(r.success for r in results.values())
        e2e = {
            "success": {name: r.success for name, r in results.items()},
            "errors": _failures(results.values()),
            "ray_nodes": _ray_nodes(instance),
            "differences": table_differences(reference, wh, SHARDS) if ok else ["failed"],
            "temp_objects": [o for o in _s3_objects(f"{server.bucket}/ray-warehouse") if ".tmp-" in o],
            "report": f"{server.bucket}/ray-warehouse/quality.duckdb" in _s3_objects(f"{server.bucket}/ray-warehouse"),
            "secret_logged": SECRET in logged,
            "runs": _run_timings(instance),
        }
    return {"e2e": e2e, "resume": resumed}


class ProbeActor:
    """A model actor that reports what it sees of its node's GPUs instead of scoring."""

    def __init__(self, threads: int):
        pass

    def __call__(self, block):
        import pyarrow as pa
        import ray

        seen = json.dumps({"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                           "gpu_ids": [str(i) for i in ray.get_gpu_ids()]})
        return pa.table({"batch": block.column("batch"), "seen": [seen] * block.num_rows})


def _actor_sees(gpus: float) -> dict:
    """On the cluster (a coordinator task): what an actor of ``ray_data._actors`` sees."""
    import ray

    from curation_pipeline.compute import ray_data
    from curation_pipeline.compute.options import RayOptions

    options = RayOptions(gpus_per_actor=gpus, spread=False)
    with ray_data._data_context(options):
        rows = ray_data._actors(ray.data.from_items([{"batch": 0}]), ProbeActor, {"threads": 1}, options).take_all()
    return json.loads(rows[0]["seen"])


def _score_with_poison(url: str, shard: str, options, poison: int):
    """On the cluster: ``_score_shard`` whose actors' processes die on batch ``poison`` (as an OOM kill
    on one huge image would), every time."""
    from curation_pipeline.compute import ray_data
    from curation_pipeline.scoring.profiles import ScoringProfile

    class PoisonScoreActor(ray_data.ScoreActor):
        def __call__(self, block):
            if poison in block.column("batch").to_pylist():
                os._exit(137)
            return super().__call__(block)

    real, ray_data.ScoreActor = ray_data.ScoreActor, PoisonScoreActor  # this worker process only
    try:
        return ray_data._score_shard(url, shard, ScoringProfile("offline"), options)
    finally:
        ray_data.ScoreActor = real


def _coordinator_sees() -> dict:
    import ray

    context = ray.get_runtime_context()
    return {"node": context.get_node_id(), "resources": context.get_assigned_resources(),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}


def actor_options(args) -> dict:
    import pandas as pd
    import ray

    from curation_pipeline.compute import ray_data
    from curation_pipeline.compute.options import RayOptions
    from curation_pipeline.scoring.profiles import ScoringProfile, build_scorers
    from curation_pipeline.scoring.run import score_stream
    from curation_pipeline.shards.reader import iter_pair_batches
    from curation_pipeline_tests.conftest import RAW_SAMPLES

    shard = SHARDS[1]
    url = str(RAW_SAMPLES / f"{shard}.tar")
    out: dict = {"head": [n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"]]}

    def probe(name: str, fn) -> None:
        try:
            out[name] = fn()
        except Exception:
            out[name] = {"error": traceback.format_exc()[-4000:]}

    def gpu_scoring() -> dict:
        profile = ScoringProfile("offline")
        table, _, stats = ray_data.score_shard(url, shard, profile, RayOptions(
            batch_size=8, gpus_per_actor=1, spread=False, decode_cpus=0.5))
        local = score_stream(build_scorers(profile), iter_pair_batches(url, shard, 8))
        try:
            pd.testing.assert_frame_equal(local, table)
            differences = ""
        except AssertionError as e:
            differences = str(e)[:2000]
        return {"rows": len(table), "batches": stats.batches, "differences": differences}

    def poisoned() -> dict:
        options = RayOptions(batch_size=8, spread=False, decode_cpus=0.5, max_retries=1)
        ref = ray.remote(num_cpus=0, max_retries=0)(_score_with_poison).remote(url, shard, options, 1)
        done, _ = ray.wait([ref], timeout=420)  # a generous deadline: without a bound it never ends
        if not done:
            ray.cancel(ref, force=True)
            return {"finished": False}
        try:
            ray.get(ref)
            return {"finished": True, "error": None}
        except Exception as e:
            return {"finished": True, "error": str(e)[-3000:]}

    probe("gpu_scoring", gpu_scoring)
    for gpus in (0, 1):
        probe(f"actor_sees_{gpus}", lambda: ray.get(ray.remote(num_cpus=0)(_actor_sees).remote(gpus)))
    probe("coordinator", lambda: ray_data._on_cluster(RayOptions(), _coordinator_sees))
    probe("poisoned", poisoned)
    return out


def run_actor_options(args) -> None:
    """``actor-options`` as PID 1 of the namespace: its own cluster, shaped as KubeRay's."""
    from curation_pipeline.compute.cluster import LocalRayCluster, enter_private_network

    out = Path(args.out)
    result: dict = {"interfaces": enter_private_network()}
    try:
        with LocalRayCluster(head_cpus=0, head_memory_mb=0, worker_cpus=(2,), worker_gpus=(1,),
                             log_dir=str(out)) as cluster:
            import ray

            ray.init(address=cluster.client_address, logging_level="ERROR", log_to_driver=False)  # as a run pod
            result["actor-options"] = actor_options(args)
            ray.shutdown()
    except BaseException:
        result["error"] = traceback.format_exc()
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    sys.stdout.flush()
    os._exit(0)  # PID 1 of the namespace: the kernel ends everything else now


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["e2e", "pairs", "resume", "clip", "both", "run-shards", "actor-options"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--reference", default="")
    parser.add_argument("--raw", default="")
    parser.add_argument("--warehouse", default="")
    parser.add_argument("--address", default="")
    parser.add_argument("--shards", nargs="+", default=SHARDS)
    args = parser.parse_args()
    if args.scenario == "run-shards":
        return run_shards(args)
    if args.scenario == "actor-options":
        return run_actor_options(args)

    from curation_pipeline.compute.cluster import LocalRayCluster, enter_private_network
    from curation_pipeline_tests.conftest import RAW_SAMPLES
    from curation_pipeline_tests.scale.helpers import S3Server, fresh_s3fs, upload_shards

    out = Path(args.out)
    result: dict = {"interfaces": enter_private_network()}
    CPU.start()
    try:
        with contextlib.ExitStack() as stack:
            with phase("s3 start"):
                server = stack.enter_context(S3Server(out))
            os.environ.update(server.env)  # the driver and every Ray node get the same standard variables
            with phase("upload"):
                upload_shards(fresh_s3fs(), RAW_SAMPLES, f"s3://{server.bucket}/raw", SHARDS)
            with phase("cluster start"):
                cluster = stack.enter_context(LocalRayCluster(head_cpus=2, worker_cpus=(2,), log_dir=str(out)))
            import ray

            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            result["cluster_nodes"] = len([n for n in ray.nodes() if n["Alive"]])
            result["node_addresses"] = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
            ray.shutdown()
            for names, scenario in ((("pairs",), pairs_on_ray), (("e2e", "resume"), e2e_and_resume),
                                    (("clip",), clip_on_ray)):
                if args.scenario in (*names, "both"):
                    with phase("+".join(names)):
                        result.update(scenario(args, server, cluster))
    except BaseException:
        result["error"] = traceback.format_exc()
    result["phases"] = PHASES
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    sys.stdout.flush()
    os._exit(0)  # PID 1 of the namespace: the kernel ends everything else now


if __name__ == "__main__":
    main()
