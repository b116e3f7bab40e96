"""The compute resource and the parts of the Ray path that need no cluster."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest

from curation_pipeline.compute.options import RayOptions, RayStats
from curation_pipeline.resources import ComputeResource
from curation_pipeline_tests.conftest import RAW_SAMPLES, REPO_ROOT


def test_local_is_the_default_and_never_imports_ray():
    code = """
import sys
import dagster as dg
from curation_pipeline.definitions import build_resources, defs
import curation_pipeline.assets.scoring, curation_pipeline.assets.rewriting
compute = build_resources()["compute"]
with compute.yield_for_execution(dg.build_init_resource_context()) as ready:
    print(ready.engine, ready.uses_ray, "ray" in sys.modules)
"""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["local", "False", "False"]


def test_the_environment_selects_ray_and_the_cluster(monkeypatch):
    from curation_pipeline.definitions import build_resources

    monkeypatch.setenv("CURATION_COMPUTE", "ray")
    monkeypatch.setenv("CURATION_RAY_ADDRESS", "ray://head.example:10001")
    compute = build_resources()["compute"]
    # the definitions may hand Dagster the variables themselves (dg.EnvVar, read when a run starts)
    value = lambda v: v.get_value() if isinstance(v, dg.EnvVar) else v  # noqa: E731
    compute = ComputeResource(engine=value(compute.engine), address=value(compute.address))
    assert compute.uses_ray and compute.ray_address == "ray://head.example:10001" and compute.host == "head.example"


def test_no_address_is_a_private_local_ray_and_the_log_says_what_happened(monkeypatch):
    """ray.init(address=None) joins RAY_ADDRESS or the last `ray start` on the machine: no address must start a
    private Ray ("local"); and the step log says connected / disconnected, not dagster-ray's "via Ray Client"
    for any address and "Deleted" for a cluster nothing deleted."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert ComputeResource(engine="ray").ray_address == "local"
    said = []
    log = type("Log", (), {"info": lambda self, text: said.append(text)})()
    context = type("Context", (), {"log": log})()
    never = ComputeResource(engine="ray", address="ray://head:10001")
    never.on_cleanup(context, deleted=True)  # dagster-ray's cleanup after a connection that failed
    for compute in (ComputeResource(engine="ray"), ComputeResource(engine="ray", address="ray://head:10001")):
        compute.on_connect(context)
        compute.on_cleanup(context, deleted=True)
    assert said == ["Connected to Ray cluster (private local)", "Disconnected from Ray cluster (private local)",
                    "Connected to Ray cluster ray://head:10001 (Ray Client)",
                    "Disconnected from Ray cluster ray://head:10001"]


def test_an_unknown_engine_is_refused_naming_the_setting(monkeypatch):
    """Refused when the resource is made (not when a step first asks), naming the field or the variable."""
    with pytest.raises(ValueError, match=r"engine\n.*unknown compute engine 'spark'; choose local or ray"):
        ComputeResource(engine="spark")
    monkeypatch.setenv("CURATION_COMPUTE", "spark")
    with pytest.raises(ValueError, match="CURATION_COMPUTE='spark' is not a valid compute engine: unknown compute"):
        ComputeResource()
    monkeypatch.delenv("CURATION_COMPUTE")
    with pytest.raises(Exception, match="unknown compute engine"):
        with ComputeResource(engine="spark").yield_for_execution(dg.build_init_resource_context()):
            pass


def test_gpus_batch_size_and_concurrency_are_configuration():
    compute = ComputeResource(engine="ray", actors=4, gpus_per_actor=0.5, cpus_per_actor=2, rewrite_actors=2,
                              rewrite_gpus_per_actor=1, decode_concurrency=8)
    score, rewrite = compute.options("score", 32), compute.options("rewrite", 8)
    assert (score.actors, score.gpus_per_actor, score.batch_size, score.threads) == (4, 0.5, 32, 2)
    assert (rewrite.actors, rewrite.gpus_per_actor, rewrite.batch_size) == (2, 1, 8)
    assert score.decode_concurrency == 8
    assert ComputeResource(engine="ray", batch_size=16).options("score", 32).batch_size == 16
    with pytest.raises(ValueError):
        RayOptions(actors=0)


def test_actor_retries_and_coordinator_memory_are_configuration():
    """Declared once (``RayOptions``), bounded by default (Ray Data's own default retries without end)."""
    default = ComputeResource(engine="ray").options("rewrite", 8)
    assert (default.max_retries, default.coordinator_memory_mb) == (RayOptions.max_retries,
                                                                    RayOptions.coordinator_memory_mb)
    assert 0 <= RayOptions.max_retries < 5 and RayOptions.coordinator_memory_mb > 0
    chosen = ComputeResource(engine="ray", max_retries=0, coordinator_memory_mb=2048).options("score", 32)
    assert (chosen.max_retries, chosen.coordinator_memory_mb) == (0, 2048)
    with pytest.raises(ValueError):
        RayOptions(max_retries=-1)


def test_ray_stats_wall_rate_shows_actors_taking_turns():
    """Two actors that take turns (one core between them) sum to twice one actor's busy rate, yet the stage's
    wall time is what one actor alone would take: the wall rate says so (synthetic timings, no cluster)."""
    turns = RayStats()
    for i in range(4):  # 4 batches of 10 pairs, 1 s each, the actors alternating: 4 s of wall time
        turns.add_batch("n", 1 + i % 2, 100.0, 10, 100.0 + i, 101.0 + i)
    assert turns.model_pairs_per_s == pytest.approx(20.0)
    assert turns.model_seconds == pytest.approx(4.0)
    assert turns.model_wall_pairs_per_s == pytest.approx(10.0)
    side_by_side = RayStats()
    for i in range(4):  # the same batches, two at a time: 2 s
        side_by_side.add_batch("n", 1 + i % 2, 100.0, 10, 100.0 + i // 2, 101.0 + i // 2)
    assert side_by_side.model_pairs_per_s == pytest.approx(20.0)
    assert side_by_side.model_wall_pairs_per_s == pytest.approx(20.0)
    assert RayStats().model_wall_pairs_per_s == 0.0


@pytest.mark.parametrize("batch_size", [7, 32])
def test_the_ray_read_makes_the_local_engines_batches(batch_size):
    from curation_pipeline.compute.ray_data import read_shard_batches
    from curation_pipeline.shards.reader import iter_pair_batches

    url = str(RAW_SAMPLES / "sample-000001.tar")
    local = [(batch.keys, records) for batch, records in iter_pair_batches(url, "sample-000001", batch_size)]
    rows = [row for table in read_shard_batches(url, "sample-000001", batch_size) for row in table.to_pylist()]
    assert [r["batch"] for r in rows] == list(range(len(local)))
    for (keys, records), row in zip(local, rows):
        remote = [json.loads(text) for text in row["records"]]
        assert [r["key"] for r in remote] == keys
        undecoded = [{k: v for k, v in r.items() if k not in DECODE_FIELDS} for r in records]
        assert remote == undecoded  # the reader's records, decoding left to the decode tasks

    # a rewrite's targets: full batches of them alone, in shard order, locally and on Ray alike
    order = [k for keys, _ in local for k in keys]
    wanted = frozenset(order[::3])
    filtered = [row for table in read_shard_batches(url, "sample-000001", batch_size, keys=wanted)
                for row in table.to_pylist()]
    targets = [k for k in order if k in wanted]
    expected = [targets[i:i + batch_size] for i in range(0, len(targets), batch_size)]
    assert [[json.loads(t)["key"] for t in row["records"]] for row in filtered] == expected
    assert [batch.keys for batch, _ in iter_pair_batches(url, "sample-000001", batch_size, keys=wanted)] == expected


DECODE_FIELDS = {"image_format", "image_mode", "width", "height", "n_frames", "decode_status", "decode_error"}


@pytest.mark.parametrize("profile", ["offline", "text"])
@pytest.mark.parametrize("kind,needed", [
    ("cleaner", {"text_quality"}), ("cleaner", {"text_quality", "nsfw_prob"}), ("cleaner", {"width"}),
    ("cleaner", {"iq_entropy", "text_quality"}), ("cleaner", {"text_quality", "datacomp_pass"}),
    ("vlm", {"text_quality"}), ("aitqe", {"text_quality"}),
])
def test_the_ray_path_decodes_images_exactly_when_the_local_one_does(kind, needed, profile):
    """From the names alone (the asset loads only key and caption of the scores), as the local engine
    decides with the profile's loaded scorers."""
    from curation_pipeline.rewriting.targets import rewrite_needs_images
    from curation_pipeline.rewriting.aitqe import AitqeRewriter
    from curation_pipeline.rewriting.cleaner import CaptionCleaner
    from curation_pipeline.rewriting.vlm import VlmRewriter
    from curation_pipeline.scoring.profiles import ScoringProfile, build_scorers

    scorers = build_scorers(ScoringProfile(profile))
    model = {"cleaner": CaptionCleaner, "vlm": VlmRewriter, "aitqe": AitqeRewriter}[kind]
    rescorers = [s for s in scorers if needed & set(s.columns)]
    local = model.needs_images or any(s.needs_images for s in rescorers)
    assert rewrite_needs_images(kind, needed, profile) == local
    if profile == "offline" and needed & {"nsfw_prob", "iq_entropy", "datacomp_pass"}:
        assert local  # an image scorer judges the rewrite: the images are decoded again


def _odd_shard(path) -> str:
    """A shard with a good pair, a corrupt image, a caption without image, an image without
    caption, a member that is not a sample (a skip) and an image that is a link (a skip its pair names)."""
    import io
    import tarfile

    from PIL import Image

    good = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good, format="PNG")
    members = [("a.png", good.getvalue()), ("a.txt", b"a red  box"), ("b.jpg", b"not a jpeg"), ("b.txt", b"broken"),
               ("c.txt", b"no image"), ("d.png", good.getvalue()), ("README", b"not a sample"),
               ("e.png", good.getvalue()), ("e.json", b'{"caption": "from json", "original_width": 80}')]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("f.png")
        link.type, link.linkname = tarfile.SYMTYPE, "a.png"
        tar.addfile(link)
        info = tarfile.TarInfo("f.txt")
        info.size = len(b"a linked image")
        tar.addfile(info, io.BytesIO(b"a linked image"))
    return str(path)


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_the_ray_pairs_inventory_stages_make_the_local_rows(tmp_path, batch_size):
    """The stages of ``pairs_inventory`` (read task, decode task, assembly), called here without
    Ray, give the rows, skips and fingerprint of ``ShardReader`` iterated locally (as ``pairs``)."""
    import pyarrow as pa

    from curation_pipeline.compute import ray_data
    from curation_pipeline.shards.reader import RECORD_COLUMNS, ShardReader

    odd = _odd_shard(tmp_path / "odd-1.tar")
    for (url, shard), full in [((odd, "odd-1"), False), ((str(RAW_SAMPLES / "sample-000001.tar"), "sample-000001"), False),
                               ((str(RAW_SAMPLES / "sample-000001.tar"), "sample-000001"), "verify")]:
        reader = ShardReader(url, shard, decode=full or "header")  # as pairs reads (header by default)
        local = pd.DataFrame.from_records([s.record for s in reader], columns=RECORD_COLUMNS)
        tables = list(ray_data.read_inventory_batches(url, shard, batch_size))
        decoded = ray_data.inventory_batches(pa.concat_tables(tables), full=full)
        rows = decoded.to_pylist()
        assert [r["batch"] for r in rows] == [*range(len(rows) - 1), ray_data.TRAILER]
        records = [json.loads(t) for r in rows[:-1] for t in r["records"]]
        remote = pd.DataFrame.from_records(records, columns=RECORD_COLUMNS)
        pd.testing.assert_frame_equal(local, remote)
        trailer = json.loads(rows[-1]["records"][0])
        assert trailer["skips"] == [vars(s) for s in reader.skips]
        assert trailer["fingerprint"] == reader.fingerprint.to_json()
        if shard == "odd-1":
            assert reader.skips and (local["decode_status"] != "ok").any()
            linked = local.set_index("key").loc["f"]  # the skip's reason reaches the pair on both engines
            assert linked["decode_status"] == "missing" and "no image member" not in linked["decode_error"]
        if full:  # inventory_decode: full verifies: the rows of a full decode
            decoded_fully = [s.record for s in ShardReader(url, shard)]
            pd.testing.assert_frame_equal(local, pd.DataFrame.from_records(decoded_fully, columns=RECORD_COLUMNS))
            assert local["decode_status"].eq("corrupt").any()


def test_an_actor_sizes_every_thread_pool_to_its_cpu_allotment():
    """What a model actor does before loading models (``RayOptions.threads`` = its CPUs): torch,
    OpenCV, the BLAS pools and the ONNX signals all get that many threads, whatever the host has."""
    code = """
import numpy, torch, cv2, threadpoolctl
from curation_pipeline.compute.options import RayOptions, RayStats
from curation_pipeline.compute.ray_data import limit_threads
from curation_pipeline.scoring.signals import cpu_threads
limit_threads(RayOptions(cpus_per_actor=1).threads)
pools = {p["num_threads"] for p in threadpoolctl.threadpool_info()}
print(torch.get_num_threads(), cv2.getNumThreads(), cpu_threads(), sorted(pools))
"""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["1", "1", "1", "[1]"]
    assert RayOptions(cpus_per_actor=2.5).threads == 3 and RayOptions(cpus_per_actor=4, threads_per_actor=2).threads == 2


def test_when_no_scorer_reads_pixels_the_ray_stages_verify_and_score_as_the_local_engine(monkeypatch):
    """The text profile: decode tasks verify (no pixels cross the object store) and the actors' rows
    equal the local engine's, with and without the cheaper decode."""
    from curation_pipeline.compute import ray_data
    from curation_pipeline.scoring.profiles import ScoringProfile
    from curation_pipeline.scoring.run import assemble_scores, score_stream
    from curation_pipeline.shards.reader import iter_pair_batches

    url, shard = str(RAW_SAMPLES / "sample-000001.tar"), "sample-000001"  # a truncated JPEG among good ones
    profile = ScoringProfile("text")
    assert ray_data._decode_mode(profile) == "verify" and ray_data._decode_mode(ScoringProfile("offline")) is True
    read = list(ray_data.read_shard_batches(url, shard, 16))
    monkeypatch.setattr(ray_data, "limit_threads", lambda threads: None)  # an actor's; not this process's pools
    actor = ray_data.ScoreActor(profile, threads=1)
    frames = {}
    for full in (True, "verify"):
        decoded = [ray_data.decode_batches(table, full=full) for table in read]
        assert ("encoded" in decoded[0].column_names) == (full == "verify")
        assert ("pixels" in decoded[0].column_names) == (full is True)
        rows = [row for table in decoded for row in actor(table).to_pylist()]
        frames[full] = assemble_scores([pickle.loads(r["frame"]) for r in rows], actor.scorers)  # as _score_shard
    local = score_stream(actor.scorers, iter_pair_batches(url, shard, 16, decode="verify"))
    pd.testing.assert_frame_equal(frames[True], frames["verify"])
    pd.testing.assert_frame_equal(frames["verify"], local)
    assert local["decode_status"].eq("corrupt").any()


def test_the_ray_decode_carries_the_files_own_decode_as_the_local_reader_keeps_it(tmp_path):
    """CLIPScore resizes the file as opened (its mode, its palette) and the released checkpoints get its
    RGB: across the object store both must arrive as the local reader keeps them, for every kind of file."""
    import numpy as np

    from curation_pipeline.compute import ray_data
    from curation_pipeline.shards.reader import iter_pair_batches, model_image, stored_image
    from curation_pipeline_tests.faults import builders
    from curation_pipeline_tests.shards.test_reader_artefacts import IMAGES

    members = []
    for i, (name, (data, _)) in enumerate(IMAGES.items()):
        extension = "jpg" if data[:2] == b"\xff\xd8" else "png"  # the reader decodes by content either way
        members += [(f"{i:03d}.{extension}", data), (f"{i:03d}.txt", name.encode())]
    path = builders.write_members(tmp_path / "kinds.tar", members)
    (local, _), = iter_pair_batches(str(path), "kinds", 64)
    (table,) = ray_data.read_shard_batches(str(path), "kinds", 64)
    (row,) = ray_data.decode_batches(table, full=True).to_pylist()
    remote = ray_data._images(row)
    assert len(remote) == len(local.images) == len(IMAGES)
    for name, here, there in zip(local.captions, local.images, remote):
        assert np.array_equal(np.asarray(here), np.asarray(there)), name
        for view in (model_image, stored_image):
            mine, theirs = view(here), view(there)
            assert (mine.mode, mine.size) == (theirs.mode, theirs.size), (name, view.__name__)
            assert np.array_equal(np.asarray(mine), np.asarray(theirs)), (name, view.__name__)
            assert mine.getpalette() == theirs.getpalette(), (name, view.__name__)
