"""Ray Data pipelines for the heavy work of ``pairs``, ``quality_scores`` and ``rewritten_captions``.

Per shard: one read task streams the tar with the shard reader (``ShardDatasource``; a row is one
batch of ``batch_size`` samples, as the local engine batches them), decode tasks run the reader's
own ``decode_image``, and an actor pool (``ScoreActor`` / ``RewriteActor``: models load once per
actor) calls the local engine's functions on whole batches; rows come back sorted by batch and are
assembled as the local engine assembles them. A batch is one row, and each row its own block
(``_data_context``), so memory per worker is bounded by a batch, never by the shard. The dataset's
coordinator runs as a 0-CPU task on the cluster (``_on_cluster``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import pickle
import re
import resource
import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Iterator

import pandas as pd
import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from curation_pipeline.compute.options import RayOptions, RayStats
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.run import Faults
from curation_pipeline.scoring.signals import limit_torch_threads
from curation_pipeline.shards.fingerprint import RawFingerprint
from curation_pipeline.shards.reader import (ReaderLimits, Sample, ShardReader, ShardSkip, attach_model_image,
                                             decode_image, kept_decode, open_image, open_stored)


READ_CPUS = 0.5  # the read task streams one tar (I/O and hashing); decode and the models take the CPUs
Warn = Callable[[str], None]  # the step's log, for what the cluster should know before a shard waits on it
TRAILER = -1  # the inventory read's last row: the reader's skips and fingerprint, after every batch
# Ray 2.60 no longer hides a node's GPUs from a worker that reserves none (CUDA_VISIBLE_DEVICES stays
# as the node has it), so a CPU actor on a GPU node would load its models on a GPU it does not hold,
# and in fp16: rows unlike its CPU peers' under the same scorer version. Ray's switch for the old
# behaviour (no GPU reserved: CUDA_VISIBLE_DEVICES="", likewise for other accelerators) restores it.
NO_UNRESERVED_ACCELERATORS = {"env_vars": {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}}
# Remote arguments such as SPREAD scheduling go in as keyword arguments, deprecated from Ray 2.64 on
# (ray is pinned to 2.60 in pyproject.toml).
warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _node_id() -> str:
    """The Ray node this runs on ("" outside Ray, e.g. a unit test calling a stage function)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def limit_threads(threads: int) -> None:
    """Size every model runtime of this actor to its CPU share (``RayOptions.threads``) before any model
    loads, so actors sharing a node never ask for more threads than it has cores."""
    os.environ["CURATION_THREADS"] = str(threads)  # what the bundled ONNX Runtime sessions read
    os.environ["OMP_NUM_THREADS"] = str(threads)  # torch reads it when imported (only profiles with its models do)
    limit_torch_threads(threads)  # if this worker imported it already
    # the BLAS pools (numpy's OpenBLAS) were sized when the worker process started
    setters = (("cv2", "setNumThreads"), ("threadpoolctl", "threadpool_limits"))
    for module, limit in setters:
        try:
            getattr(importlib.import_module(module), limit)(threads)
        except ImportError:  # pragma: no cover - all are dependencies (threadpoolctl via scikit-learn)
            pass


# --- read ------------------------------------------------------------------------------------

def _batch_row(batch: int, records: list[str], images: list[bytes | None]) -> pa.Table:
    return pa.table({
        "batch": pa.array([batch], pa.int64()),
        "records": pa.array([records], pa.list_(pa.string())),
        "images": pa.array([images], pa.list_(pa.large_binary())),
    })


def read_shard_batches(url: str, shard: str, batch_size: int, expected=None, keys: frozenset[str] | None = None,
                       limits: ReaderLimits = ReaderLimits(), trailer: bool = False) -> Iterator[pa.Table]:
    """The shard's samples, undecoded, one row per batch of ``batch_size`` samples (as ``iter_pair_batches``
    batches them, ``keys`` alike: only those samples, in full batches). With ``trailer``, a last row (batch
    ``TRAILER``) holds the reader's skips and the fingerprint, known only once the whole tar streamed."""
    reader = ShardReader(url, shard, limits, decode=False, expected=expected, keys=keys)
    batch, pixels, records, images = 0, 0, [], []
    for sample in reader:
        pixels += sample.pixels(limits)  # as iter_pair_batches cuts a batch of large images early
        records.append(json.dumps(sample.record))
        images.append(sample.image_data)
        if len(records) == batch_size or pixels >= limits.max_batch_pixels:
            yield _batch_row(batch, records, images)
            batch, pixels, records, images = batch + 1, 0, [], []
    if records:
        yield _batch_row(batch, records, images)
    if trailer:
        summary = {"skips": [vars(s) for s in reader.skips], "fingerprint": reader.fingerprint.to_json()}
        yield _batch_row(TRAILER, [json.dumps(summary)], [])


def read_inventory_batches(url: str, shard: str, batch_size: int,
                           limits: ReaderLimits = ReaderLimits()) -> Iterator[pa.Table]:
    """``read_shard_batches`` for ``pairs``: every sample, then the trailer row."""
    return read_shard_batches(url, shard, batch_size, limits=limits, trailer=True)


class ShardDatasource(Datasource):
    """One raw webdataset shard (local path or any fsspec URL, s3:// included) as a Ray Data
    source: a single read task that streams the tar, so samples stay in shard order."""

    def __init__(self, url: str, shard: str, batch_size: int, expected=None, keys: frozenset[str] | None = None,
                 limits: ReaderLimits = ReaderLimits(), trailer: bool = False):
        super().__init__()
        self.args = (url, shard, batch_size, expected, keys, limits, trailer)

    def get_name(self) -> str:
        return "ReadShardInventory" if self.args[-1] else "ReadShard"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        args = self.args
        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=[args[0]], exec_stats=None)
        return [ReadTask(lambda: read_shard_batches(*args), metadata)]


# --- decode ----------------------------------------------------------------------------------

def _decode_rows(table: pa.Table, limits: ReaderLimits,
                 full: bool | str) -> Iterator[tuple[int, list[str], list, list[bytes | None]]]:
    """(batch, records, images, encoded bytes) per row: each sample's image decoded exactly as the reader
    does, its record gaining the decode info. The trailer row passes through."""
    for batch, texts, datas in zip(table.column("batch").to_pylist(), table.column("records").to_pylist(),
                                   table.column("images").to_pylist()):
        if batch == TRAILER:
            yield batch, texts, [], []
            continue
        records, images = [], []
        for text, data in zip(texts, datas):
            record = json.loads(text)
            # a member the reader skipped unread (too large, not a file, cut short) says why in the record
            absent = (record["decode_status"], record["decode_error"]) if "decode_status" in record else None
            image, info = decode_image(data, limits, full=full, absent=absent)
            record.update(info)
            records.append(json.dumps(record))
            images.append(image)
        yield batch, records, images, datas


def _worker_columns(n: int, prefix: str) -> dict[str, pa.Array]:
    return {f"{prefix}node": pa.array([_node_id()] * n, pa.string()),
            f"{prefix}rss_mb": pa.array([_peak_rss_mb()] * n, pa.float64())}


def _pixels(images) -> dict[str, pa.Array]:
    """Per row, each image's RGB bytes, width and height (None for no image)."""
    def per_image(value) -> list:
        return [[value(im) if im is not None else None for im in row] for row in images]

    return {"pixels": pa.array(per_image(lambda im: im.tobytes()), pa.list_(pa.large_binary())),
            "widths": pa.array(per_image(lambda im: im.width), pa.list_(pa.int64())),
            "heights": pa.array(per_image(lambda im: im.height), pa.list_(pa.int64()))}


def decode_batches(table: pa.Table, limits: ReaderLimits = ReaderLimits(), full: bool | str = True) -> pa.Table:
    """Decode each sample's image exactly as the reader does; each record gains the decode info
    and each row the RGB pixels of its batch. ``full="verify"`` (no scorer reads pixels): images are
    verified as the local engine verifies them, and each good one travels as its own encoded bytes,
    opened (header only) where it is scored: no pixels cross the object store."""
    rows = list(_decode_rows(table, limits, full))
    batches, records, images, datas = zip(*rows) if rows else ((), (), (), ())

    if full == "verify":
        encoded = [[data if im is not None else None for data, im in zip(row_datas, row)]
                   for row_datas, row in zip(datas, images)]
        pictures = {"encoded": pa.array(encoded, pa.list_(pa.large_binary()))}
    else:
        pictures = _pixels(images)
        # the file's own decode the model scorers get (``model_image``, ``stored_image``), where the reader
        # kept one: it travels as the file's bytes, opened again where it is scored (its mode and palette
        # are what CLIPScore resizes), with whether its RGB differs from the pixels above
        kept = [[kept_decode(im) for im in row] for row in images]
        pictures["stored"] = pa.array([[data if k is not None else None for data, k in zip(row_datas, row_kept)]
                                       for row_datas, row_kept in zip(datas, kept)], pa.list_(pa.large_binary()))
        pictures["stored_differs"] = pa.array(kept, pa.list_(pa.bool_()))
    return pa.table({
        "batch": pa.array(batches, pa.int64()),
        "records": pa.array(records, pa.list_(pa.string())),
        **pictures,
        **_worker_columns(table.num_rows, "decode_"),
    })


def _images(row: dict) -> list:
    from PIL import Image

    if "encoded" in row:  # verified where decoded: the same unloaded image the local reader hands on
        return [open_image(data) if data is not None else None for data in row["encoded"]]

    def rgb(prefix: str) -> list:
        return [Image.frombytes("RGB", (int(w), int(h)), data) if data is not None else None
                for data, w, h in zip(row[f"{prefix}pixels"], row[f"{prefix}widths"], row[f"{prefix}heights"])]

    return [attach_model_image(image, open_stored(data), differs=bool(differs)) if data is not None else image
            for image, data, differs in zip(rgb(""), row["stored"], row["stored_differs"])]


def _decode_mode(profile) -> bool | str:
    """The local engine's choice, judged from the profile's scorer classes (the driver loads no model)."""
    from curation_pipeline.scoring.registry import scorer_classes
    from curation_pipeline.scoring.run import decode_mode

    return decode_mode(scorer_classes(profile.name))


def _result(row: dict, pairs: PairBatch, work: Callable[[], pd.DataFrame], **extra) -> dict:
    """One batch's result row: the frame ``work()`` makes, with its wall and CPU time and where it ran."""
    t0, c0 = time.time(), time.process_time()
    frame = work()
    t1, cpu_s = time.time(), time.process_time() - c0
    return {"batch": int(row["batch"]), "frame": pickle.dumps(frame, protocol=5), "node": _node_id(),
            "pid": os.getpid(), "rss_mb": max(_peak_rss_mb(), float(row.get("decode_rss_mb") or 0.0)),
            "pairs": len(pairs), "t0": t0, "t1": t1, "cpu_s": cpu_s, "decode_node": row.get("decode_node") or "",
            **extra}


# --- the pairs inventory ---------------------------------------------------------------------

def inventory_batches(table: pa.Table, limits: ReaderLimits = ReaderLimits(), full: bool | str = False) -> pa.Table:
    """Each sample's record with its decode info, as ``ShardReader`` makes it (the pixels stay here);
    the trailer row passes through."""
    rows = [(batch, records) for batch, records, _, _ in _decode_rows(table, limits, full)]
    return pa.table({
        "batch": pa.array([batch for batch, _ in rows], pa.int64()),
        "records": pa.array([records for _, records in rows], pa.list_(pa.string())),
        **_worker_columns(table.num_rows, ""),
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
                    full_decode: bool = False, warn: Warn | None = None) -> PairsInventory:
    """``pairs`` on the cluster: the same rows, skips and fingerprint as ``ShardReader(url, shard)``
    iterated locally; decode tasks work on batches of ``options.batch_size`` samples."""
    return _on_cluster(options, _pairs_inventory, url, shard, options, limits, full_decode, actors=False, warn=warn)


def _pairs_inventory(url: str, shard: str, options: RayOptions, limits: ReaderLimits,
                     full_decode: bool) -> PairsInventory:
    from curation_pipeline.shards.reader import RECORD_COLUMNS

    with _data_context(options):
        ds = _read(ShardDatasource(url, shard, options.batch_size, limits=limits, trailer=True))
        # a full inventory needs every image's status, never its pixels: verified, as locally
        rows = list(_rows(_decode_tasks(ds, options, inventory_batches, limits=limits,
                                        full="verify" if full_decode else False)))
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
    """Loads the profile's scorers once; each call scores whole batches (``score_records``) and returns, with
    each batch's rows, what its scorers raised (``Faults``, as JSON): the step logs a scorer's traceback from it."""

    def __init__(self, profile, threads: int):
        limit_threads(threads)
        from curation_pipeline.scoring.profiles import build_scorers

        self.scorers = build_scorers(profile)  # what ScoringResource.scorers() builds, without Dagster
        limit_torch_threads(threads)  # if a model imported it
        self.described = json.dumps([[s.name, s.version, list(s.columns)] for s in self.scorers])

    def __call__(self, block: pa.Table) -> pa.Table:
        from curation_pipeline.scoring.run import score_records

        out = []
        for row in block.to_pylist():
            records = [json.loads(text) for text in row["records"]]
            samples = [Sample(r["key"], r["caption"], None, r) for r in records]
            pairs = PairBatch([s.key for s in samples], [s.caption for s in samples], _images(row),
                              [s.original_size for s in samples])
            faults = Faults()
            result = _result(row, pairs, lambda: score_records(self.scorers, pairs, records, faults=faults),
                             scorers=self.described)
            out.append({**result, "faults": json.dumps(faults.seen)})
        return pa.Table.from_pylist(out)


def _named(what: str, **models: str | None) -> str:
    """What a model actor loads, for the error that it could not: ``what`` and the models it was given."""
    named = ", ".join(f"{key} {value!r}" for key, value in models.items() if value)
    return f"{what} ({named})" if named else what


def _profile_models(profile) -> str:
    return _named(f"the {profile.name!r} profile's scorers", clip_model=profile.clip_model,
                  mlm_model=profile.mlm_model, aitqe_model=profile.aitqe_model)


def _describe_scorers(profile, threads: int) -> str:
    return ScoreActor(profile, threads).described


# --- rewriting -------------------------------------------------------------------------------

def _planned_call(rewriter: dict, threads: int):
    """(the call, the rewriter's ident) an ``aitqe`` rewrite actor would make, planned where it would load
    (run with the actors' resources: the precision depends on the GPU), without loading the model."""
    from curation_pipeline.resources import RewriterResource
    from curation_pipeline.rewriting.reuse import AitqeCall

    limit_threads(threads)
    unloaded = RewriterResource(**rewriter).rewriter(load_model=False)
    return AitqeCall.planned(unloaded, rewriter.get("device") or None), unloaded.ident


class RewriteActor:
    """Loads the rewriter, the re-scorers and the similarity model once; each call rewrites whole
    batches with ``rewrite_batches``, as the local engine does. With ``reuse`` (AITQE's stored replies,
    ``rewriting.reuse``) a target is answered from its reply as locally; ``load_model=False`` (every target
    has one) builds the rewriter without its model."""

    def __init__(self, rewriter: dict, profile, needed: list[str], quality_column: str, rules, run_id: str,
                 shard: str, scores_before: dict[str, float], known: dict, threads: int, reuse=None,
                 load_model: bool = True, needs: dict[str, float] | None = None):
        limit_threads(threads)
        from curation_pipeline.resources import RewriterResource
        from curation_pipeline.rewriting.reuse import ReplyReuse
        from curation_pipeline.rewriting.targets import rescored_columns
        from curation_pipeline.scoring.profiles import build_scorers, caption_scorers
        from curation_pipeline.scoring.signals.embedding import caption_similarity

        self.model, self.not_reused = RewriterResource(**rewriter).rewriter(load_model), ""
        if reuse is not None:  # a loaded model must make the planned call, else it generates every target
            checked = reuse.checked(self.model) if load_model else reuse
            self.model = ReplyReuse(self.model, checked)
            self.not_reused = checked.why_not if checked is not reuse else ""  # the plan's own why: the driver's
        # the profile's scorers that make a needed column (as locally); the caption scorers come first
        # in every profile, so when they make all of them the image models are not loaded at all
        needed = rescored_columns(set(needed), rules)  # with the weak-caption rules' columns, as locally
        cheap = caption_scorers()
        scorers = cheap if needed <= {c for s in cheap for c in s.columns} else build_scorers(profile)
        self.rescorers = [s for s in scorers if needed & set(s.columns)]
        limit_torch_threads(threads)
        self.similarity = functools.partial(caption_similarity, known=known)  # as locally: originals' stored vectors
        self.quality_column, self.rules, self.run_id, self.shard = quality_column, rules, run_id, shard
        self.scores_before, self.needs = scores_before, needs

    def __call__(self, block: pa.Table) -> pa.Table:
        from curation_pipeline.rewriting.attempts import rewrite_batches
        from curation_pipeline.scoring.run import score_batch

        out = []
        for row in block.to_pylist():
            records = [json.loads(text) for text in row["records"]]
            keys, captions = [r["key"] for r in records], [r["caption"] for r in records]
            # as the local engine: the shard's batch, filtered, images without sizes
            pairs = (PairBatch(keys, captions, _images(row)) if "pixels" in row or "encoded" in row
                     else PairBatch(keys, captions))
            result = _result(row, pairs, lambda: rewrite_batches(
                [pairs], shard=self.shard, rewriter=self.model, rescore=lambda b: score_batch(self.rescorers, b),
                quality_column=self.quality_column, scores_before=self.scores_before, rules=self.rules,
                run_id=self.run_id, similarity=self.similarity, needs=self.needs))
            reused = getattr(self.model, "reused", set())  # the batch's targets answered from stored replies
            out.append({**result, "reused": json.dumps([k for k in keys if k in reused]),
                        "not_reused": self.not_reused})
        return pa.Table.from_pylist(out)


# --- the driver side -------------------------------------------------------------------------

@contextlib.contextmanager
def _data_context(options: RayOptions | None = None) -> Iterator[None]:
    """Blocks leave each stage in the order they entered, and every row (one batch) is its own block, so
    batches spread over the actors even for a small shard (not packed into 128 MiB blocks)."""
    ctx = ray.data.DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.target_max_block_size, ctx.enable_progress_bars
    saved_wait, saved_limits = ctx.wait_for_min_actors_s, ctx.execution_options.resource_limits
    given = dict(options.data_context) if options is not None else {}  # dagster-ray's data_execution_options
    saved_given = {name: getattr(_holder(ctx, name), name) for name in given if name != "resource_limits"}
    for name, value in given.items():
        if name == "resource_limits":
            ctx.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(*value)
        else:
            setattr(_holder(ctx, name), name, value)
    if options is not None and options.wait_for_actors_s > 0:  # the pool starts whole (see RayOptions)
        ctx.wait_for_min_actors_s = options.wait_for_actors_s
    # progress bars would land in the Dagster step's log as carriage-return noise; the step records
    # the run's figures (nodes, actors, batches, model seconds) as metadata instead
    ctx.execution_options.preserve_order, ctx.target_max_block_size, ctx.enable_progress_bars = True, 1, False
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.target_max_block_size, ctx.enable_progress_bars = saved
        ctx.wait_for_min_actors_s, ctx.execution_options.resource_limits = saved_wait, saved_limits
        for name, value in saved_given.items():  # a worker process runs later tasks too
            setattr(_holder(ctx, name), name, value)


def _holder(ctx, name: str):
    """Where a Ray Data setting lives: ``verbose_progress`` on the execution options, the rest on the context."""
    return ctx.execution_options if name == "verbose_progress" else ctx


def _remote_args(options: RayOptions) -> dict:
    """What every task and actor of a dataset asks of Ray besides its resources."""
    return {"runtime_env": NO_UNRESERVED_ACCELERATORS,
            **({"scheduling_strategy": "SPREAD"} if options.spread else {})}


def _read(source: ShardDatasource):
    """One read task per shard: Ray Data must not try to split the read."""
    return ray.data.read_datasource(source, num_cpus=READ_CPUS, override_num_blocks=1,
                                    runtime_env=NO_UNRESERVED_ACCELERATORS)


def _decode_tasks(ds, options: RayOptions, fn=decode_batches, **fn_kwargs):
    """Decoding as its own Ray Data tasks (retried if a node is lost; decoding is idempotent). The
    retry setting also keeps Ray Data from fusing decode into the read task (one task per shard)
    or into the model actors: decode scales on CPUs while the actors keep their GPUs busy."""
    return ds.map_batches(fn, fn_kwargs=fn_kwargs, batch_size=None, batch_format="pyarrow",
                          num_cpus=options.decode_cpus, concurrency=options.decode_concurrency or None,
                          max_retries=3, **_remote_args(options))


def _actors(ds, actor: type, kwargs: dict, options: RayOptions):
    """The model actor pool. A row is one whole batch of the shard, so each call gets one (``batch_size=1``;
    Ray also refuses a GPU request without a batch size). An actor that dies is restarted and its batch
    retried ``max_retries`` times, not Ray Data's endless default: each restart reloads the models, and a
    batch that kills its actor every time (an OOM kill) would hold the step forever."""
    return ds.map_batches(
        actor, fn_constructor_kwargs=kwargs, batch_size=1, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=options.actors,
                                           max_tasks_in_flight_per_actor=options.max_tasks_in_flight),
        num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None,
        max_restarts=options.max_retries, max_task_retries=options.max_retries, **_remote_args(options))


def _rows(ds) -> Iterator[dict]:
    for block in ds.iter_batches(batch_format="pandas", batch_size=None):
        yield from block.to_dict("records")


def _creation_error(error: ray.exceptions.RayActorError) -> BaseException | None:
    """What a model actor's constructor raised (loading its models), when that is why it died, else None. Ray
    makes that ActorDiedError from the constructor's RayTaskError, whose ``cause`` is the exception itself."""
    if not error.actor_init_failed:
        return None
    task_error = next((a for a in error.args if isinstance(a, ray.exceptions.RayTaskError)), None)
    return task_error.cause if task_error is not None else error


def _collect(ds, shard: str, options: RayOptions, loads: str) -> tuple[list[dict], RayStats]:
    """The per-batch result rows in batch order, and the workers' report. A model actor whose models failed to
    load (``loads``: what it loads) fails the shard with its own exception, as building them locally does: Ray
    restarts no actor whose constructor raised. One that died more often than ``max_retries`` fails the shard,
    naming the batches that came back (numbered by their place in the shard: a rewrite's batches are those with
    targets, so the numbers may have gaps); it died on one of the others."""
    rows: list[dict] = []
    try:
        for row in _rows(ds):
            rows.append(row)
    except ray.exceptions.RayActorError as error:
        cause = _creation_error(error)
        if cause is not None:
            raise RuntimeError(f"{shard}: a model actor could not load {loads}: {type(cause).__name__}: "
                               f"{str(cause).strip()}") from error
        # the batches are numbered by their place in the shard: a rewrite's hold only those with targets
        done = sorted({r["batch"] for r in rows})
        last = str(error).strip().splitlines()[-1][:300] if str(error).strip() else ""
        came = (f"{len(done)} batch(es) came back ({_numbers(done)}), it died on one of the others" if done
                else "no batch came back")
        if isinstance(error, ray.exceptions.ActorUnavailableError):  # its node lost: no restart was tried
            raise RuntimeError(
                f"{shard}: a model actor became unreachable (its node or raylet lost); the shard is not retried "
                f"on the cluster: run it again once the cluster has the nodes it needs; {came} "
                f"({options.batch_size} pairs a batch). {type(error).__name__}: {last}") from error
        again = (f"and again after each of its {options.max_retries} restarts" if options.max_retries
                 else "with no restart allowed")
        raise RuntimeError(
            f"{shard}: a model actor died (killed for memory, crashed, or its node lost) {again} (compute "
            f"max_retries; each restart reloads the models); {came} ({options.batch_size} pairs a batch). "
            f"{type(error).__name__}: {last}") from error
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


def _numbers(batches: list[int]) -> str:
    """``0-3, 5, 7-8`` for sorted batch numbers."""
    runs: list[list[int]] = []
    for b in batches:
        if runs and b == runs[-1][1] + 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _on_cluster(options: RayOptions, fn, /, *args, actors: bool = True, warn: Warn | None = None, **kwargs):
    """``fn`` (which builds and runs a dataset) as a 0-CPU task on the cluster: Ray Data's executor needs
    a core worker, which a Ray Client driver (``ray://``, a Dagster run pod on KubeRay) does not have.
    It holds the shard's result rows, so it reserves ``coordinator_memory_mb``: Ray places it only on a node
    with that much memory unreserved, so however many runs start at once, coordinators cannot outgrow one.
    ``warn`` (the step's log) first hears why the cluster as it is cannot run the work (``capacity_shortfall``)."""
    _say_shortfall(options, actors, warn)
    memory = {"memory": options.coordinator_memory_mb * 1024 * 1024} if options.coordinator_memory_mb else {}
    task = ray.remote(num_cpus=0, max_retries=0, runtime_env=NO_UNRESERVED_ACCELERATORS, **memory)(fn)
    asks = (f"model actors ask for {options.cpus_per_actor:g} CPU and {options.gpus_per_actor:g} GPU each "
            f"({options.actors} actor(s)), the coordinator for {options.coordinator_memory_mb} MiB") if actors else (
            f"the coordinator asks for {options.coordinator_memory_mb} MiB, each decode task "
            f"{options.decode_cpus:g} CPU")
    try:
        return _get(task.remote(*args, **kwargs), options, asks)
    except (ModuleNotFoundError, ray.exceptions.RayError) as exc:
        if not _package_missing(exc):
            raise
        raise ModuleNotFoundError(
            f"the Ray cluster's nodes cannot import this package ({_missing(exc)}): the driver has it, the "
            "cluster's workers do not. Install this version of curation-pipeline, with its dependencies, on every "
            "node (README, Scaling out)", name=PACKAGE) from exc


def capacity_shortfall(options: RayOptions, nodes: list[dict], actors: bool = True) -> str | None:
    """Why the cluster's live ``nodes`` (``ray.nodes()``) can never run a shard's work at once, or None. The
    model actors hold their CPUs and GPUs for the whole shard, and the read and decode tasks need theirs
    beside them: where the actors take every CPU, Ray waits for ever, saying nothing. An autoscaler may
    still add nodes (KubeRay's GPU group starts at none), so this is said, not refused."""
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive")]
    cpus, gpus = (sum(r.get(kind, 0) for r in alive) for kind in ("CPU", "GPU"))
    beside = max(READ_CPUS, options.decode_cpus)  # the read task, then decode tasks, beside the actors
    need_cpus = beside + (options.actors * options.cpus_per_actor if actors else 0)
    need_gpus = options.actors * options.gpus_per_actor if actors else 0
    fits_one = any(r.get("CPU", 0) >= options.cpus_per_actor and r.get("GPU", 0) >= options.gpus_per_actor
                   for r in alive)
    if cpus >= need_cpus and gpus >= need_gpus and (fits_one or not actors):
        return None
    asks = (f"{options.actors} model actor(s) of {options.cpus_per_actor:g} CPU and {options.gpus_per_actor:g} GPU, "
            f"which hold them for the whole shard, and beside them {beside:g} CPU to read and decode"
            if actors else f"{beside:g} CPU to read and decode")
    until = (f"it fails after compute shard_timeout_s ({options.shard_timeout_s} s)" if options.shard_timeout_s
             else "without one it waits for ever: set compute shard_timeout_s to fail instead")
    return (f"the Ray cluster has {cpus:g} CPU and {gpus:g} GPU on {len(alive)} node(s)"
            f"{'' if fits_one or not actors else ', and no node holds one model actor'}; this shard's work needs "
            f"{need_cpus:g} CPU and {need_gpus:g} GPU at once ({asks}). It waits until an autoscaler adds nodes; "
            f"{until}. Lower compute actors, cpus_per_actor or gpus_per_actor to run on the cluster as it is")


def _say_shortfall(options: RayOptions, actors: bool, warn: Warn | None) -> None:
    short = capacity_shortfall(options, ray.nodes(), actors=actors) if warn is not None else None
    if short:
        warn(short)


PACKAGE = __name__.split(".")[0]


def _package_missing(exc: BaseException) -> bool:
    """A worker could not import this package: over Ray Client the driver gets the worker's ModuleNotFoundError
    itself, as if it lacked the package; through a GCS address, a RayTaskError of a RaySystemError saying so."""
    if isinstance(exc, ModuleNotFoundError):
        return (exc.name or "").split(".")[0] == PACKAGE
    return f"No module named '{PACKAGE}" in str(exc)


def _missing(exc: BaseException) -> str:
    """``No module named '...'``, out of a worker's traceback too."""
    said = re.search(rf"No module named '{PACKAGE}[^']*'", str(exc))
    return said.group(0) if said else str(exc)


ACTORS_LATE = "Timed out while starting actors"  # Ray Data's error when its actor pool is not up in time


def _get(ref, options: RayOptions, asks: str):
    """``ray.get`` of a task that runs a shard's work, within ``shard_timeout_s``: past it the task is cancelled
    (the actors and tasks it started go with it) and the step fails, saying what the work asked of the cluster."""
    try:
        return ray.get(ref, timeout=options.shard_timeout_s or None)
    except ray.exceptions.RayTaskError as exc:  # the work itself raised (a timeout of its own is no shard_timeout_s)
        # Ray Data's wait for the pool (wait_for_actors_s) ran out: the shard fails
        if ACTORS_LATE in str(getattr(exc, "cause", None)) or ACTORS_LATE in str(exc):
            raise TimeoutError(
                f"not every model actor had loaded its models within compute wait_for_actors_s "
                f"({options.wait_for_actors_s} s), so Ray Data failed the shard: raise it past the models' load "
                f"time, or set 0 to start with the actors that are up. Its {asks}") from exc
        raise
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True, recursive=True)
        raise TimeoutError(
            f"the shard's work on the cluster did not finish within {options.shard_timeout_s} s (compute "
            f"shard_timeout_s) and was cancelled. Its {asks}; the cluster has "
            f"{_resources(ray.cluster_resources())} in all ({_resources(ray.available_resources())} free now): "
            "a request no node can meet waits for ever") from None


def _resources(resources: dict) -> str:
    """``4 CPU, 0 GPU, 7.5 GiB memory`` of what Ray reports."""
    return (f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU, "
            f"{resources.get('memory', 0) / 2**30:.1f} GiB memory")


def score_shard(url: str, shard: str, profile, options: RayOptions, expected=None,
                limits: ReaderLimits = ReaderLimits(), faults: Faults | None = None,
                warn: Warn | None = None) -> tuple[pd.DataFrame, list[SimpleNamespace], RayStats]:
    """``quality_scores`` on the cluster: (score table, the scorers the cluster built as name, version and
    columns, stats), the table equal to ``score_stream`` over ``iter_pair_batches`` with the same ``batch_size``;
    ``faults`` collects what the scorers raised, as ``score_stream``'s does."""
    table, specs, stats, raised = _on_cluster(options, _score_shard, url, shard, profile, options, expected, limits,
                                              warn=warn)
    if faults is not None:
        faults.merge(raised)
    return table, specs, stats


def rewrite_shard(url: str, shard: str, targets: pd.DataFrame, *, with_images: bool, rewriter: dict,
                  profile, needed: set[str], quality_column: str, rules, run_id: str, options: RayOptions,
                  expected=None, limits: ReaderLimits = ReaderLimits(), stored=None,
                  raw_file: str | None = None, warn: Warn | None = None) -> tuple[pd.DataFrame, RayStats, object]:
    """``rewritten_captions`` on the cluster: the lineage table (one row per target of ``targets``: key,
    quality_before, caption), as ``rewrite_batches`` builds it locally, stats, and for an ``aitqe`` rewriter
    the targets answered from the replies its scorer stored (``rewriting.reuse.Reuse``; None for another
    rewriter). ``stored``, ``raw_file``: as ``reuse_stored_replies`` takes them (None: nothing reused)."""
    _say_shortfall(options, True, warn)  # before the planning task, which asks for an actor's resources
    reuse = plan_reuse(targets, rewriter, options, stored, raw_file)
    # a chat VLM's caption handling needs its processor: only the released checkpoint is answered unloaded
    load_model = (reuse is None or not reuse.call.released
                  or not reuse.answers_all(targets["key"], targets["caption"]))
    lineage, stats, (reused, not_reused) = _on_cluster(
        options, _rewrite_shard, url, shard, targets, with_images=with_images, rewriter=rewriter, profile=profile,
        needed=needed, quality_column=quality_column, rules=rules, run_id=run_id, options=options,
        expected=expected, limits=limits, reuse=reuse, load_model=load_model)
    if reuse is None:
        return lineage, stats, None
    from curation_pipeline.rewriting.reuse import Reuse

    return lineage, stats, Reuse(reuse, reused, not_reused)


def plan_reuse(targets: pd.DataFrame, rewriter: dict, options: RayOptions, stored, raw_file: str | None):
    """The stored replies (``rewriting.reuse.StoredReplies``) that answer ``targets``, decided on the driver for
    the call the rewrite actors would make, or None when the rewriter is not AITQE's or nothing is stored."""
    if rewriter.get("kind") != "aitqe" or stored is None:
        return None
    from curation_pipeline.rewriting.reuse import stored_replies

    call, asker = _plan_call(rewriter, options)
    return stored_replies(call, asker, stored, raw_file).for_pairs(targets["key"], targets["caption"])


def _plan_call(rewriter: dict, options: RayOptions):
    """``_planned_call`` as a task with the rewrite actors' resources (no model loads)."""
    task = ray.remote(num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None,
                      max_retries=options.max_retries, runtime_env=NO_UNRESERVED_ACCELERATORS)(_planned_call)
    return _get(task.remote(rewriter, options.threads), options,
                f"reply-reuse planning task asks for the rewrite actors' {options.cpus_per_actor:g} CPU and "
                f"{options.gpus_per_actor:g} GPU")


def _score_shard(url: str, shard: str, profile, options: RayOptions, expected=None,
                 limits: ReaderLimits = ReaderLimits()) -> tuple[pd.DataFrame, list[SimpleNamespace], RayStats, Faults]:
    from curation_pipeline.scoring.run import assemble_scores

    with _data_context(options):
        ds = _decode_tasks(_read(ShardDatasource(url, shard, options.batch_size, expected, limits=limits)), options,
                           limits=limits, full=_decode_mode(profile))
        rows, stats = _collect(_actors(ds, ScoreActor, {"profile": profile, "threads": options.threads}, options),
                               shard, options, _profile_models(profile))
    faults = Faults()
    for r in rows:  # in batch order: the first traceback is the one the local stream keeps
        faults.merge(Faults(json.loads(r["faults"])))
    if rows:
        described = json.loads(rows[0]["scorers"])
        if len(rows) != rows[-1]["batch"] + 1:
            raise RuntimeError(f"{shard}: batches {[r['batch'] for r in rows]} came back, not 0..{len(rows) - 1}")
    else:  # an empty shard: ask the cluster what the profile's columns are (no model runs on pairs)
        task = ray.remote(num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None,
                          max_retries=options.max_retries, runtime_env=NO_UNRESERVED_ACCELERATORS)(_describe_scorers)
        described = json.loads(ray.get(task.remote(profile, options.threads)))
    specs = [SimpleNamespace(name=name, version=version, columns=tuple(columns))
             for name, version, columns in described]
    table = assemble_scores([pickle.loads(r["frame"]) for r in rows], specs)
    return table, specs, stats, faults


def rewrite_actor_kwargs(shard: str, targets: pd.DataFrame, *, rewriter: dict, profile, needed: set[str],
                         quality_column: str, rules, run_id: str, threads: int, reuse=None,
                         load_model: bool = True) -> dict:
    """What each ``RewriteActor`` is built with."""
    from curation_pipeline.rewriting.targets import known_embeddings, rewrite_needs_of

    scores_before = dict(zip(targets["key"], targets["quality_before"].astype(float)))
    return {"rewriter": rewriter, "profile": profile, "needed": sorted(needed), "quality_column": quality_column,
            "rules": rules, "run_id": run_id, "shard": shard, "scores_before": scores_before,
            "known": known_embeddings(targets), "threads": threads, "reuse": reuse, "load_model": load_model,
            "needs": rewrite_needs_of(targets)}


def rewrite_lineage(rows: list[dict], shard: str, targets: pd.DataFrame) -> tuple[pd.DataFrame, set[str], set[str]]:
    """The lineage of the actors' rows (in batch order), the targets answered from stored replies, and why an
    actor answered none from them (its loaded model asks otherwise than the driver planned)."""
    from curation_pipeline.rewriting.attempts import LINEAGE_COLUMNS, empty_lineage

    records = [row for r in rows for row in pickle.loads(r["frame"]).to_dict("records")]
    lineage = pd.DataFrame(records, columns=LINEAGE_COLUMNS) if records else empty_lineage()
    if len(lineage) != len(targets):
        raise RuntimeError(f"{shard}: {len(lineage)} lineage rows for {len(targets)} pairs to rewrite")
    return (lineage, {key for r in rows for key in json.loads(r.get("reused") or "[]")},
            {r["not_reused"] for r in rows if r.get("not_reused")})


def _rewrite_shard(url: str, shard: str, targets: pd.DataFrame, *, with_images: bool, rewriter: dict,
                   profile, needed: set[str], quality_column: str, rules, run_id: str, options: RayOptions,
                   expected=None, limits: ReaderLimits = ReaderLimits(), reuse=None,
                   load_model: bool = True) -> tuple[pd.DataFrame, RayStats, tuple[set[str], set[str]]]:
    kwargs = rewrite_actor_kwargs(shard, targets, rewriter=rewriter, profile=profile, needed=needed,
                                  quality_column=quality_column, rules=rules, run_id=run_id, threads=options.threads,
                                  reuse=reuse, load_model=load_model)
    with _data_context(options):
        if with_images:  # the shard's batches, filtered to the targets, decoded on the cluster
            ds = _read(ShardDatasource(url, shard, options.batch_size, expected, frozenset(targets["key"]), limits))
            ds = _decode_tasks(ds, options, limits=limits)
        else:  # captions only: the targets in chunks, one row (= one block) per chunk
            keys, captions = targets["key"].tolist(), targets["caption"].tolist()
            step = options.batch_size
            ds = ray.data.from_arrow([
                pa.table({"batch": pa.array([batch], pa.int64()),
                          "records": pa.array([[json.dumps({"key": k, "caption": c})
                                                for k, c in zip(keys[i:i + step], captions[i:i + step])]],
                                              pa.list_(pa.string()))})
                for batch, i in enumerate(range(0, len(keys), step))])
        what = "rewriter" if load_model else "rewriter's settings (every target answered from its stored reply)"
        loads = _named(f"the {rewriter['kind']} {what} and its re-scorers", model=rewriter["model"])
        rows, stats = _collect(_actors(ds, RewriteActor, kwargs, options), shard, options, loads)
    lineage, reused, not_reused = rewrite_lineage(rows, shard, targets)
    return lineage, stats, (reused, not_reused)


def score_model_stage(url: str, shard: str, profile, options: RayOptions,
                      limits: ReaderLimits = ReaderLimits()) -> tuple[int, RayStats]:
    """The model stage of ``score_shard`` alone, for benchmarks: the decoded batches are materialized
    first, so decoding does not compete with the actors for cores. Returns (pairs scored, stats)."""
    with _data_context(options):
        decoded = _decode_tasks(_read(ShardDatasource(url, shard, options.batch_size, limits=limits)), options,
                                limits=limits, full=_decode_mode(profile)).materialize()
        rows, stats = _collect(_actors(decoded, ScoreActor, {"profile": profile, "threads": options.threads},
                                       options), shard, options, _profile_models(profile))
    return sum(int(r["pairs"]) for r in rows), stats
