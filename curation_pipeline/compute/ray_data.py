"""Ray Data pipelines for the heavy work of ``quality_scores`` and ``rewritten_captions``.

``pairs_inventory`` builds the ``pairs`` table the same way (read task -> decode tasks, no
actors): the reader's records with the decode status each image gets, its skips and the
fingerprint of the bytes read, in shard order.

The stream, per shard::

    ShardDatasource   one read task streams the tar with the shard reader (no decoding);
                      a row = one batch of ``batch_size`` samples, as the local engine
                      batches them (each sample's record as json + its image bytes)
    decode            Ray Data tasks: ``decode_image`` (the reader's own) on each row;
                      the records gain the decode status, the row the RGB pixels
    ScoreActor /      an actor pool (fixed size, CPUs / GPUs per actor): models load once
    RewriteActor      in ``__init__``; each call scores or rewrites whole batches with the
                      functions the local engine uses, and returns one row per batch
    the Dagster step  rows come back sorted by batch and are assembled exactly as the
                      local engine assembles them

A batch never changes shape on the way: it is one row, and Ray Data never splits a row.
Each row is its own block (``target_max_block_size``), so batches spread over the actors.
Memory per worker is bounded by a batch (the read task holds one batch of raw bytes, a
decode task one batch and its pixels, an actor one batch and its models), never by the
shard. The dataset's coordinator runs as a 0-CPU task on the cluster (``_on_cluster``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import resource
import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator

import pandas as pd
import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from curation_pipeline.compute.options import RayOptions, RayStats
from curation_pipeline.pairs import PairBatch
from curation_pipeline.shards.fingerprint import RawFingerprint
from curation_pipeline.shards.reader import ReaderLimits, Sample, ShardReader, ShardSkip, decode_image


READ_CPUS = 0.5  # the read task streams one tar (I/O and hashing); decode and the models take the CPUs
# One read task per shard (override_num_blocks=1: Ray Data must not try to split the read). Remote arguments such as SPREAD scheduling go in as
# keyword arguments, deprecated from Ray 2.64 on (ray is pinned to 2.60 in pyproject.toml).
warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _node_id() -> str:
    """The Ray node this runs on ("" outside Ray, e.g. a unit test calling a stage function)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def limit_threads(threads: int) -> None:
    """Size every model runtime of this actor to its CPU share (``RayOptions.threads``: its
    ``cpus_per_actor``, rounded up), before any model loads, so actors sharing a node never ask
    for more threads than it has cores: the bundled ONNX Runtime sessions read
    ``CURATION_THREADS``; torch, OpenCV and the BLAS pools are told directly."""
    os.environ["CURATION_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover
        pass
    try:  # BLAS pools (numpy's OpenBLAS, torch's MKL) were sized when the worker process started
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (sentence-transformers)
        pass


# --- read ------------------------------------------------------------------------------------

def _batch_row(batch: int, records: list[str], images: list[bytes | None]) -> pa.Table:
    return pa.table({
        "batch": pa.array([batch], pa.int64()),
        "records": pa.array([records], pa.list_(pa.string())),
        "images": pa.array([images], pa.list_(pa.large_binary())),
    })


def read_shard_batches(url: str, shard: str, batch_size: int, expected=None, keys: frozenset[str] | None = None,
                       limits: ReaderLimits = ReaderLimits()) -> Iterator[pa.Table]:
    """The shard's samples, undecoded, one row per batch of ``batch_size`` samples (the local
    engine's ``iter_pair_batches`` batches). With ``keys`` only those samples stay, each in the
    batch it was read in. With ``expected`` the bytes read must hash to the recorded fingerprint."""
    reader = ShardReader(url, shard, limits, decode=False, expected=expected)
    batch, seen, records, images = 0, 0, [], []
    for sample in reader:
        seen += 1
        if keys is None or sample.key in keys:
            records.append(json.dumps(sample.record))
            images.append(sample.image_data)
        if seen == batch_size:
            if records:
                yield _batch_row(batch, records, images)
            batch, seen, records, images = batch + 1, 0, [], []
    if records:
        yield _batch_row(batch, records, images)


class ShardDatasource(Datasource):
    """One raw webdataset shard (local path or any fsspec URL, s3:// included) as a Ray Data
    source: a single read task that streams the tar, so samples stay in shard order."""

    def __init__(self, url: str, shard: str, batch_size: int, expected=None, keys: frozenset[str] | None = None,
                 limits: ReaderLimits = ReaderLimits()):
        super().__init__()
        self.url, self.shard, self.batch_size = url, shard, batch_size
        self.expected, self.keys, self.limits = expected, keys, limits

    def get_name(self) -> str:
        return "ReadShard"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        url, shard, size, expected, keys, limits = (self.url, self.shard, self.batch_size, self.expected,
                                                    self.keys, self.limits)
        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=[url], exec_stats=None)
        return [ReadTask(lambda: read_shard_batches(url, shard, size, expected, keys, limits), metadata)]


# --- decode ----------------------------------------------------------------------------------

def decode_batches(table: pa.Table, limits: ReaderLimits = ReaderLimits()) -> pa.Table:
    """Decode each sample's image exactly as the reader does; each record gains the decode info
    and each row the RGB pixels of its batch."""
    out = {"batch": [], "records": [], "pixels": [], "widths": [], "heights": []}
    for batch, texts, datas in zip(table.column("batch").to_pylist(), table.column("records").to_pylist(),
                                   table.column("images").to_pylist()):
        records, pixels, widths, heights = [], [], [], []
        for text, data in zip(texts, datas):
            record = json.loads(text)
            image, info = decode_image(data, limits)
            record.update(info)
            records.append(json.dumps(record))
            pixels.append(image.tobytes() if image is not None else None)
            widths.append(image.width if image is not None else None)
            heights.append(image.height if image is not None else None)
        for name, value in zip(out, (batch, records, pixels, widths, heights)):
            out[name].append(value)
    n = table.num_rows
    return pa.table({
        "batch": pa.array(out["batch"], pa.int64()),
        "records": pa.array(out["records"], pa.list_(pa.string())),
        "pixels": pa.array(out["pixels"], pa.list_(pa.large_binary())),
        "widths": pa.array(out["widths"], pa.list_(pa.int64())),
        "heights": pa.array(out["heights"], pa.list_(pa.int64())),
        "decode_node": pa.array([_node_id()] * n, pa.string()),
        "decode_rss_mb": pa.array([_peak_rss_mb()] * n, pa.float64()),
    })


def _images(row: dict) -> list:
    from PIL import Image

    return [Image.frombytes("RGB", (int(w), int(h)), data) if data is not None else None
            for data, w, h in zip(row["pixels"], row["widths"], row["heights"])]


def _result(row: dict, frame: pd.DataFrame, pairs: int, t0: float, t1: float, cpu_s: float = 0.0, **extra) -> dict:
    return {"batch": int(row["batch"]), "frame": pickle.dumps(frame, protocol=5), "node": _node_id(),
            "pid": os.getpid(), "rss_mb": max(_peak_rss_mb(), float(row.get("decode_rss_mb") or 0.0)),
            "pairs": pairs, "t0": t0, "t1": t1, "cpu_s": cpu_s, "decode_node": row.get("decode_node") or "",
            **extra}


def _results(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


# --- the pairs inventory ---------------------------------------------------------------------

TRAILER = -1  # the read task's last row: the reader's skips and fingerprint, after every batch


def read_inventory_batches(url: str, shard: str, batch_size: int,
                           limits: ReaderLimits = ReaderLimits()) -> Iterator[pa.Table]:
    """``read_shard_batches`` for ``pairs``: every sample (undecoded) in batches of ``batch_size``,
    then one trailer row (batch ``TRAILER``) holding the reader's skips and the fingerprint of the
    bytes it read, which are only known once the whole tar has streamed."""
    reader = ShardReader(url, shard, limits, decode=False)
    batch, records, images = 0, [], []
    for sample in reader:
        records.append(json.dumps(sample.record))
        images.append(sample.image_data)
        if len(records) == batch_size:
            yield _batch_row(batch, records, images)
            batch, records, images = batch + 1, [], []
    if records:
        yield _batch_row(batch, records, images)
    trailer = {"skips": [vars(s) for s in reader.skips], "fingerprint": reader.fingerprint.to_json()}
    yield _batch_row(TRAILER, [json.dumps(trailer)], [])


class InventoryDatasource(ShardDatasource):
    def get_name(self) -> str:
        return "ReadShardInventory"

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        url, shard, size, limits = self.url, self.shard, self.batch_size, self.limits
        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=[url], exec_stats=None)
        return [ReadTask(lambda: read_inventory_batches(url, shard, size, limits), metadata)]


def inventory_batches(table: pa.Table, limits: ReaderLimits = ReaderLimits(), full: bool = False) -> pa.Table:
    """Decode each sample's image as the reader does and keep only its record (the decode
    status, size and mode join it, as ``ShardReader(decode=True)`` makes them); the pixels stay
    here. The trailer row passes through."""
    batches, out = table.column("batch").to_pylist(), []
    for batch, texts, datas in zip(batches, table.column("records").to_pylist(), table.column("images").to_pylist()):
        if batch == TRAILER:
            out.append(texts)
            continue
        records = []
        for text, data in zip(texts, datas):
            record = json.loads(text)
            record.update(decode_image(data, limits, full=full)[1])
            records.append(json.dumps(record))
        out.append(records)
    n = table.num_rows
    return pa.table({
        "batch": pa.array(batches, pa.int64()),
        "records": pa.array(out, pa.list_(pa.string())),
        "node": pa.array([_node_id()] * n, pa.string()),
        "rss_mb": pa.array([_peak_rss_mb()] * n, pa.float64()),
    })


@dataclass
class PairsInventory:
    """What ``pairs`` writes, made on the cluster: the inventory (``RECORD_COLUMNS``, shard
    order), the reader's skips, the fingerprint of the bytes read, and where the work ran."""

    inventory: pd.DataFrame
    skips: list[ShardSkip]
    fingerprint: RawFingerprint
    stats: RayStats


def pairs_inventory(url: str, shard: str, options: RayOptions, limits: ReaderLimits = ReaderLimits(),
                    full_decode: bool = False) -> PairsInventory:
    """``pairs`` on the cluster: the same rows, skips and fingerprint as ``ShardReader(url, shard)``
    iterated locally. One read task streams the tar; decode tasks (``options.decode_cpus`` each,
    at most ``options.decode_concurrency``) decode batches of ``options.batch_size`` samples."""
    return _on_cluster(_pairs_inventory, url, shard, options, limits, full_decode)


def _pairs_inventory(url: str, shard: str, options: RayOptions, limits: ReaderLimits,
                     full_decode: bool) -> PairsInventory:
    from curation_pipeline.shards.reader import RECORD_COLUMNS

    with _data_context(options):
        ds = ray.data.read_datasource(InventoryDatasource(url, shard, options.batch_size, None, None, limits),
                                      num_cpus=READ_CPUS, override_num_blocks=1)
        ds = ds.map_batches(inventory_batches, fn_kwargs={"limits": limits, "full": full_decode}, batch_size=None,
                            batch_format="pyarrow", num_cpus=options.decode_cpus,
                            concurrency=options.decode_concurrency or None, max_retries=3, **_spread(options))
        rows = [r for block in ds.iter_batches(batch_format="pandas", batch_size=None)
                for r in block.to_dict("records")]
    trailers = [r for r in rows if r["batch"] == TRAILER]
    rows = sorted((r for r in rows if r["batch"] != TRAILER), key=lambda r: r["batch"])
    if len(trailers) != 1 or [r["batch"] for r in rows] != list(range(len(rows))):
        raise RuntimeError(f"{shard}: batches {[r['batch'] for r in rows]} and {len(trailers)} trailers came back")
    stats = RayStats()
    for r in rows + trailers:
        if r["node"]:
            stats.nodes.add(r["node"])
        stats.peak_worker_rss_mb = max(stats.peak_worker_rss_mb, float(r["rss_mb"]))
    stats.batches = len(rows)
    records = [json.loads(text) for r in rows for text in r["records"]]
    stats.pairs = len(records)
    trailer = json.loads(list(trailers[0]["records"])[0])
    return PairsInventory(inventory=pd.DataFrame.from_records(records, columns=RECORD_COLUMNS),
                          skips=[ShardSkip(**s) for s in trailer["skips"]],
                          fingerprint=RawFingerprint.from_json(trailer["fingerprint"]), stats=stats)


# --- scoring ---------------------------------------------------------------------------------

class ScoreActor:
    """Loads the profile's scorers once; each call scores whole batches (``score_records``)."""

    def __init__(self, profile, threads: int):
        limit_threads(threads)
        from curation_pipeline.scoring.profiles import build_scorers

        self.scorers = build_scorers(profile)  # what ScoringResource.scorers() builds, without Dagster
        self.described = json.dumps([[s.name, s.version, list(s.columns)] for s in self.scorers])

    def __call__(self, block: pa.Table) -> pa.Table:
        from curation_pipeline.scoring.run import score_records

        out = []
        for row in block.to_pylist():
            records = [json.loads(text) for text in row["records"]]
            samples = [Sample(r["key"], r["caption"], None, r) for r in records]
            pairs = PairBatch([s.key for s in samples], [s.caption for s in samples], _images(row),
                              [s.original_size for s in samples])
            t0, c0 = time.time(), time.process_time()
            frame = score_records(self.scorers, pairs, records)
            out.append(_result(row, frame, len(pairs), t0, time.time(), time.process_time() - c0,
                               scorers=self.described))
        return _results(out)


def _describe_scorers(profile, threads: int) -> str:
    return ScoreActor(profile, threads).described


# --- rewriting -------------------------------------------------------------------------------

class RewriteActor:
    """Loads the rewriter, the re-scorers and the similarity model once; each call rewrites whole
    batches with ``rewrite_batches``, as the local engine does."""

    def __init__(self, rewriter: dict, profile, needed: list[str], quality_column: str, rules, run_id: str,
                 shard: str, scores_before: dict[str, float], threads: int):
        limit_threads(threads)
        from curation_pipeline.resources import RewriterResource
        from curation_pipeline.scoring.profiles import build_scorers, caption_scorers
        from curation_pipeline.scoring.signals.embedding import caption_similarity

        self.model = RewriterResource(**rewriter).rewriter()
        # the profile's scorers that make a needed column (as locally); the caption scorers come first
        # in every profile, so when they make all of them the image models are not loaded at all
        needed = set(needed)
        cheap = caption_scorers()
        scorers = cheap if needed <= {c for s in cheap for c in s.columns} else build_scorers(profile)
        self.rescorers = [s for s in scorers if needed & set(s.columns)]
        self.similarity = caption_similarity
        self.quality_column, self.rules, self.run_id, self.shard = quality_column, rules, run_id, shard
        self.scores_before = scores_before

    def __call__(self, block: pa.Table) -> pa.Table:
        from curation_pipeline.rewriting.attempts import rewrite_batches
        from curation_pipeline.scoring.run import score_batch

        out = []
        for row in block.to_pylist():
            records = [json.loads(text) for text in row["records"]]
            keys, captions = [r["key"] for r in records], [r["caption"] for r in records]
            if "pixels" in row:  # as the local engine: the shard's batch, filtered, images without sizes
                pairs = PairBatch(keys, captions, _images(row))
            else:
                pairs = PairBatch(keys, captions)
            t0, c0 = time.time(), time.process_time()
            frame = rewrite_batches([pairs], shard=self.shard, rewriter=self.model,
                                    rescore=lambda b: score_batch(self.rescorers, b),
                                    quality_column=self.quality_column, scores_before=self.scores_before,
                                    rules=self.rules, run_id=self.run_id, similarity=self.similarity)
            out.append(_result(row, frame, len(pairs), t0, time.time(), time.process_time() - c0))
        return _results(out)


# --- the driver side -------------------------------------------------------------------------

@contextlib.contextmanager
def _data_context(options: RayOptions | None = None) -> Iterator[None]:
    """For the datasets made inside: blocks leave each stage in the order they entered, and
    every row (= one batch) is its own block, so batches spread over the actors even for a
    small shard (Ray Data would otherwise pack rows into 128 MiB blocks). Restored after."""
    ctx = ray.data.DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.target_max_block_size, ctx.enable_progress_bars
    saved_wait = ctx.wait_for_min_actors_s
    if options is not None and options.wait_for_actors_s > 0:  # the pool starts whole (see RayOptions)
        ctx.wait_for_min_actors_s = options.wait_for_actors_s
    # progress bars would land in the Dagster step's log as carriage-return noise; the step records
    # the run's figures (nodes, actors, batches, model seconds) as metadata instead
    ctx.execution_options.preserve_order, ctx.target_max_block_size, ctx.enable_progress_bars = True, 1, False
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.target_max_block_size, ctx.enable_progress_bars = saved
        ctx.wait_for_min_actors_s = saved_wait


def _spread(options: RayOptions) -> dict:
    return {"scheduling_strategy": "SPREAD"} if options.spread else {}


def _decoded(ds, options: RayOptions, limits: ReaderLimits):
    """Decoding as its own Ray Data tasks (retried if a node is lost; decoding is idempotent). The
    retry setting also keeps Ray Data from fusing decode into the read task (one task per shard)
    or into the model actors: decode scales on CPUs while the actors keep their GPUs busy."""
    return ds.map_batches(decode_batches, fn_kwargs={"limits": limits}, batch_size=None, batch_format="pyarrow",
                          num_cpus=options.decode_cpus, concurrency=options.decode_concurrency or None,
                          max_retries=3, **_spread(options))


def _actors(ds, actor: type, kwargs: dict, options: RayOptions):
    return ds.map_batches(
        actor, fn_constructor_kwargs=kwargs, batch_size=None, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=options.actors,
                                           max_tasks_in_flight_per_actor=options.max_tasks_in_flight),
        num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None, **_spread(options))


def _collect(ds) -> tuple[list[dict], RayStats]:
    """The per-batch result rows in batch order, and the workers' report."""
    rows: list[dict] = []
    for block in ds.iter_batches(batch_format="pandas", batch_size=None):
        rows.extend(block.to_dict("records"))
    rows.sort(key=lambda r: r["batch"])
    batches = [r["batch"] for r in rows]
    if len(set(batches)) != len(batches):
        raise RuntimeError(f"a batch came back twice: {batches}")
    stats = RayStats()
    for r in rows:
        stats.add_batch(r["node"], r["pid"], r["rss_mb"], r["pairs"], r["t0"], r["t1"], r.get("cpu_s", 0.0))
        if r["decode_node"]:
            stats.nodes.add(r["decode_node"])
    return rows, stats


def _on_cluster(fn, *args, **kwargs):
    """Run ``fn`` (which builds and executes a dataset) as a task on the cluster and return its
    result. Ray Data's streaming executor needs a process with a core worker: a Ray Client driver
    (``ray://``, how a Dagster run pod reaches KubeRay) has none, so the dataset's coordinator is
    a zero-CPU task on a node, and only its small result (the table) travels back."""
    task = ray.remote(num_cpus=0, max_retries=0)(fn)
    return ray.get(task.remote(*args, **kwargs))


def score_shard(url: str, shard: str, profile, options: RayOptions, expected=None,
                limits: ReaderLimits = ReaderLimits()) -> tuple[pd.DataFrame, dict[str, str], RayStats]:
    """``quality_scores`` on the cluster: (score table, scorer versions, stats). ``profile`` is the
    ScoringProfile; the table equals ``score_stream`` over ``iter_pair_batches`` with the same
    ``batch_size``."""
    return _on_cluster(_score_shard, url, shard, profile, options, expected, limits)


def rewrite_shard(url: str, shard: str, targets: pd.DataFrame, *, with_images: bool, rewriter: dict,
                  profile, needed: set[str], quality_column: str, rules, run_id: str, options: RayOptions,
                  expected=None, limits: ReaderLimits = ReaderLimits()) -> tuple[pd.DataFrame, RayStats]:
    """``rewritten_captions`` on the cluster: the lineage table (as ``rewrite_batches`` builds it
    locally, one row per target) and stats. ``targets`` has key, quality_before and caption;
    ``options.batch_size`` is the rewriter's batch size, as the local engine batches."""
    return _on_cluster(_rewrite_shard, url, shard, targets, with_images=with_images, rewriter=rewriter,
                       profile=profile, needed=needed, quality_column=quality_column, rules=rules, run_id=run_id,
                       options=options, expected=expected, limits=limits)


def _score_shard(url: str, shard: str, profile, options: RayOptions, expected=None,
                 limits: ReaderLimits = ReaderLimits()) -> tuple[pd.DataFrame, dict[str, str], RayStats]:
    from curation_pipeline.scoring.run import assemble_scores

    with _data_context(options):
        ds = ray.data.read_datasource(ShardDatasource(url, shard, options.batch_size, expected, None, limits),
                                      num_cpus=READ_CPUS, override_num_blocks=1)
        ds = _actors(_decoded(ds, options, limits), ScoreActor, {"profile": profile, "threads": options.threads},
                     options)
        rows, stats = _collect(ds)
    if rows:
        described = json.loads(rows[0]["scorers"])
        if len(rows) != rows[-1]["batch"] + 1:
            raise RuntimeError(f"{shard}: batches {[r['batch'] for r in rows]} came back, not 0..{len(rows) - 1}")
    else:  # an empty shard: ask the cluster what the profile's columns are (no model runs on pairs)
        task = ray.remote(num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None)(
            _describe_scorers)
        described = json.loads(ray.get(task.remote(profile, options.threads)))
    specs = [SimpleNamespace(name=name, version=version, columns=tuple(columns)) for name, version, columns in described]
    table = assemble_scores([pickle.loads(r["frame"]) for r in rows], specs)
    return table, {s.name: s.version for s in specs}, stats


def _rewrite_shard(url: str, shard: str, targets: pd.DataFrame, *, with_images: bool, rewriter: dict,
                   profile, needed: set[str], quality_column: str, rules, run_id: str, options: RayOptions,
                   expected=None, limits: ReaderLimits = ReaderLimits()) -> tuple[pd.DataFrame, RayStats]:
    from curation_pipeline.rewriting.attempts import LINEAGE_COLUMNS, empty_lineage

    scores_before = dict(zip(targets["key"], targets["quality_before"].astype(float)))
    kwargs = {"rewriter": rewriter, "profile": profile, "needed": sorted(needed), "quality_column": quality_column,
              "rules": rules, "run_id": run_id, "shard": shard, "scores_before": scores_before,
              "threads": options.threads}
    with _data_context(options):
        if with_images:  # the shard's batches, filtered to the targets, decoded on the cluster
            ds = ray.data.read_datasource(ShardDatasource(url, shard, options.batch_size, expected,
                                                          frozenset(targets["key"]), limits),
                                          num_cpus=READ_CPUS, override_num_blocks=1)
            ds = _decoded(ds, options, limits)
        else:  # captions only: the targets in chunks, one row (= one block) per chunk
            keys, captions = targets["key"].tolist(), targets["caption"].tolist()
            step = options.batch_size
            ds = ray.data.from_arrow([
                pa.table({"batch": pa.array([batch], pa.int64()),
                          "records": pa.array([[json.dumps({"key": k, "caption": c})
                                                for k, c in zip(keys[i:i + step], captions[i:i + step])]],
                                              pa.list_(pa.string()))})
                for batch, i in enumerate(range(0, len(keys), step))])
        rows, stats = _collect(_actors(ds, RewriteActor, kwargs, options))
    records = [row for r in rows for row in pickle.loads(r["frame"]).to_dict("records")]
    lineage = pd.DataFrame(records, columns=LINEAGE_COLUMNS) if records else empty_lineage()
    if len(lineage) != len(targets):
        raise RuntimeError(f"{shard}: {len(lineage)} lineage rows for {len(targets)} pairs to rewrite")
    return lineage, stats


def score_model_stage(url: str, shard: str, profile, options: RayOptions,
                      limits: ReaderLimits = ReaderLimits()) -> tuple[int, RayStats]:
    """The model stage of ``score_shard`` alone, for benchmarks: the shard is read and decoded
    first (its batches materialized in the object store), then the actor pool scores them, so
    decoding does not compete with the actors for cores. Returns (pairs scored, stats); the
    stats' ``model_pairs_per_s`` is the stage's rate with every actor busy. Run from a driver on
    a node of the cluster."""
    with _data_context(options):
        decoded = _decoded(ray.data.read_datasource(ShardDatasource(url, shard, options.batch_size, None, None, limits),
                                                    num_cpus=READ_CPUS, override_num_blocks=1),
                           options, limits).materialize()
        rows, stats = _collect(_actors(decoded, ScoreActor, {"profile": profile, "threads": options.threads},
                                       options))
    return sum(int(r["pairs"]) for r in rows), stats
