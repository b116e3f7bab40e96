"""The Ray rewrite takes AITQE's candidates from the replies its scorer stored, as the local rewrite does
(``rewriting.reuse``): decided on the driver for the call the rewrite actors would make, a target with a usable
reply gets no model call, and when every target has one the actors build the rewriter without its model. The
Ray stages run in this process (``rewrite_shard`` and ``_rewrite_shard`` as they are; only Ray Data's read,
decode, actor pool and the planning task are swapped for direct calls), so the model calls can be counted."""

from __future__ import annotations

import functools
import json
import shutil

import pandas as pd
import pytest

from curation_pipeline.compute import ray_data
from curation_pipeline.compute.options import RayOptions
from curation_pipeline.rewriting import aitqe
from curation_pipeline.rewriting.aitqe import DEFAULT_INSTRUCTION
from curation_pipeline.rewriting.verify import AcceptanceRules
from curation_pipeline.storage.provenance import RAW_SHA_KEY
from curation_pipeline_tests.conftest import RAW_SAMPLES
from curation_pipeline_tests.rewriting.test_aitqe_reply_reuse import calls  # noqa: F401 - the fixture
from curation_pipeline_tests.tiny_models import RELEASED

SHARD, SHA, TARGETS = "sample-000001", "0" * 64, 5
URL = str(RAW_SAMPLES / f"{SHARD}.tar")
LOOSE = AcceptanceRules(min_improvement=-100.0, check_wellformed=False)


@pytest.fixture(scope="module")
def aitqe_dir(tmp_path_factory):
    """The tiny checkpoint naming its vision tower by path, as the scoring and rewriter settings take none."""
    directory = shutil.copytree(RELEASED / "aitqe-tiny", tmp_path_factory.mktemp("aitqe") / "aitqe-tiny")
    config = json.loads((directory / "config.json").read_text())
    tower = str(RELEASED / "siglip-tiny-patch8-32")
    (directory / "config.json").write_text(json.dumps({**config, "vision_model_name_or_path": tower}))
    return str(directory)


@pytest.fixture(scope="module")
def targets():
    """The shard's first pairs with an image and a caption, with their text quality as the score before."""
    from curation_pipeline.pairs import PairBatch
    from curation_pipeline.scoring.text_quality import CaptionTextQuality
    from curation_pipeline.shards.reader import iter_pair_batches

    keys, captions = [], []
    for batch, _ in iter_pair_batches(URL, SHARD, batch_size=16):
        for key, caption, image in zip(batch.keys, batch.captions, batch.images):
            if image is not None and caption and len(keys) < TARGETS:
                keys.append(key)
                captions.append(caption)
    before = CaptionTextQuality().score(PairBatch(keys, captions))["text_quality"]
    return pd.DataFrame({"key": keys, "caption": captions, "quality_before": before.astype(float).to_numpy()})


@pytest.fixture()
def loads(monkeypatch):
    """Every AITQE model load (``load_aitqe``), by model."""
    seen, real = [], aitqe.load_aitqe

    def load(model, **kwargs):
        seen.append(model)
        return real(model, **kwargs)

    monkeypatch.setattr(aitqe, "load_aitqe", load)
    return seen


@pytest.fixture()
def stored(aitqe_dir, targets, calls):  # noqa: F811
    """What the AITQE scorer stored for the targets (batch size 1: no padding, as the rewriter's)."""
    from curation_pipeline.rewriting.targets import target_batches
    from curation_pipeline.scoring.aitqe import AitqeScorer

    scorer = AitqeScorer(aitqe_dir, batch_size=1, device="cpu")
    frames = [scorer.score(b).assign(key=b.keys, caption=b.captions)
              for b in target_batches(targets, URL, SHARD, True, 16)]
    calls.clear()
    return pd.concat(frames, ignore_index=True), {"scorers": json.dumps({"aitqe": scorer.version}), RAW_SHA_KEY: SHA}


@pytest.fixture()
def in_process(monkeypatch):
    """Ray Data's stages as direct calls in this process; the actors built (their kwargs) are recorded."""
    actors: list[dict] = []

    def run_actors(ds, actor, kwargs, options):
        actors.append(kwargs)
        built = actor(**kwargs)
        return [built(table) for table in ds]

    monkeypatch.setattr(ray_data, "limit_threads", lambda threads: None)  # an actor's; not this process's pools
    monkeypatch.setattr(ray_data, "_on_cluster", lambda _options, fn, /, *args, **kwargs: fn(*args, **kwargs))
    monkeypatch.setattr(ray_data, "_plan_call", lambda rewriter, options: ray_data._planned_call(rewriter, 1),
                        raising=False)  # (absent before the Ray path reused replies)
    monkeypatch.setattr(ray_data, "_read", lambda source: list(ray_data.read_shard_batches(*source.args)))
    monkeypatch.setattr(ray_data, "_decode_tasks", lambda ds, options, fn=ray_data.decode_batches, **kw:
                        [fn(table, **kw) for table in ds])
    monkeypatch.setattr(ray_data, "_actors", run_actors)
    monkeypatch.setattr(ray_data, "_rows", lambda ds: (row for table in ds for row in table.to_pylist()))
    return actors


def _settings(model: str, **extra) -> dict:
    from curation_pipeline.resources import RewriterResource

    return RewriterResource(kind="aitqe", model=model, batch_size=1, device="cpu", **extra).model_dump()


def _local(settings: dict, targets, stored):
    """The local asset's rewrite: the lineage and the reuse it reports."""
    from curation_pipeline import resources
    from curation_pipeline.rewriting.attempts import rewrite_batches
    from curation_pipeline.rewriting.reuse import reuse_stored_replies
    from curation_pipeline.rewriting.targets import known_embeddings, target_batches
    from curation_pipeline.scoring.profiles import caption_scorers
    from curation_pipeline.scoring.run import score_batch
    from curation_pipeline.scoring.signals.embedding import caption_similarity

    resources._rewriter.cache_clear()
    model = reuse_stored_replies(resources.RewriterResource(**settings).rewriter(), lambda: stored, SHA)
    rescorers = [s for s in caption_scorers() if "text_quality" in s.columns]
    lineage = rewrite_batches(
        target_batches(targets, URL, SHARD, True, 1), shard=SHARD, rewriter=model,
        rescore=lambda b: score_batch(rescorers, b), quality_column="text_quality",
        scores_before=dict(zip(targets["key"], targets["quality_before"])), rules=LOOSE, run_id="r1",
        similarity=functools.partial(caption_similarity, known=known_embeddings(targets)))
    return lineage, model


def _on_ray(settings: dict, targets, stored):
    from curation_pipeline import resources
    from curation_pipeline.scoring.profiles import ScoringProfile

    resources._rewriter.cache_clear()  # an actor loads its own

    return ray_data.rewrite_shard(
        URL, SHARD, targets, with_images=True, rewriter=settings, profile=ScoringProfile("text"),
        needed={"text_quality"}, quality_column="text_quality", rules=LOOSE, run_id="r1",
        options=RayOptions(batch_size=1, coordinator_memory_mb=0), stored=lambda: stored, raw_file=SHA)


def _generated(calls) -> int:  # noqa: F811
    return sum(n for _, n in calls)


def test_ray_answers_every_target_from_the_stored_replies_without_loading_the_model(
        aitqe_dir, targets, stored, calls, loads, in_process):  # noqa: F811
    from curation_pipeline.rewriting.reuse import AitqeCall

    settings = _settings(aitqe_dir)
    local, model = _local(settings, targets, stored)
    assert len(model.reused) == TARGETS and _generated(calls) == 0  # the local rewrite reuses every reply
    planned, asker = ray_data._planned_call(settings, 1)  # the plan is what the loaded rewriter asks
    assert planned == AitqeCall.of(model.rewriter) and asker == model.rewriter.ident
    calls.clear(), loads.clear()

    lineage, stats, reuse = _on_ray(settings, targets, stored)
    assert loads == [] and calls == []  # no AITQE model loaded, no generation
    assert [kwargs["load_model"] for kwargs in in_process] == [False]
    drop = ["created_at"]
    pd.testing.assert_frame_equal(lineage.drop(columns=drop), local.drop(columns=drop))
    assert reuse.reused == model.reused and reuse.summary(len(lineage)) == model.summary(len(local))
    assert f"{TARGETS} of {TARGETS} from the replies aitqe@9:" in reuse.summary(len(lineage))
    assert stats.pairs == TARGETS and lineage["rewriter_output"].notna().all()


def test_ray_generates_a_target_whose_stored_reply_is_for_another_caption(
        aitqe_dir, targets, stored, calls, loads, in_process):  # noqa: F811
    frame, meta = stored
    frame = frame.copy()
    frame.loc[0, "caption"] = frame.loc[0, "caption"] + "."  # the rewriter is asked about another caption
    settings = _settings(aitqe_dir)
    local, model = _local(settings, targets, (frame, meta))
    calls.clear(), loads.clear()

    lineage, _, reuse = _on_ray(settings, targets, (frame, meta))
    assert loads == [aitqe_dir] and _generated(calls) == 1  # the model loads, for that target alone
    assert [kwargs["load_model"] for kwargs in in_process] == [True]
    pd.testing.assert_frame_equal(lineage.drop(columns="created_at"), local.drop(columns="created_at"))
    assert reuse.reused == model.reused and len(reuse.reused) == TARGETS - 1
    assert reuse.summary(len(lineage)) == model.summary(len(local))


def test_ray_with_a_custom_instruction_generates_every_target(aitqe_dir, targets, stored, calls, loads,
                                                               in_process):  # noqa: F811
    settings = _settings(aitqe_dir, prompt=DEFAULT_INSTRUCTION + "\nBe brief.")
    local, model = _local(settings, targets, stored)
    assert _generated(calls) == TARGETS
    calls.clear(), loads.clear()

    lineage, _, reuse = _on_ray(settings, targets, stored)
    assert loads == [aitqe_dir] and _generated(calls) == TARGETS
    assert [kwargs["load_model"] for kwargs in in_process] == [True]
    pd.testing.assert_frame_equal(lineage.drop(columns="created_at"), local.drop(columns="created_at"))
    assert reuse.reused == set() and reuse.summary(TARGETS) == model.summary(TARGETS)
    assert reuse.summary(TARGETS).startswith(f"all {TARGETS} generated: the rewriter's instruction")


def test_an_aitqe_rewriter_without_its_model_loads_nothing_and_never_generates(aitqe_dir, loads):
    """What a Ray actor builds when every target has a stored reply: the settings, version and ``answer`` of the
    loaded rewriter, no model; asked to generate it says why rather than generating nothing. Only AITQE's
    rewriter is built so."""
    from curation_pipeline.pairs import ContractError
    from curation_pipeline.resources import RewriterResource

    settings = {"kind": "aitqe", "model": aitqe_dir, "device": "cpu"}
    unloaded = RewriterResource(**settings).rewriter(load_model=False)
    assert loads == []
    loaded = RewriterResource(**settings).rewriter()
    assert loads == [aitqe_dir] and unloaded is not loaded
    assert (unloaded.ident, unloaded.prompt, unloaded.max_new_tokens) == (loaded.ident, loaded.prompt,
                                                                          loaded.max_new_tokens)
    reply = '{"Recaption": "A dog runs on grass.", "Overall": 8}'
    assert unloaded.answer("a dog", reply) == loaded.answer("a dog", reply)
    with pytest.raises(ContractError, match="without its model"):
        unloaded.generator.generate([None], ["x"])
    with pytest.raises(ValueError, match="only an aitqe rewriter"):
        RewriterResource(kind="cleaner").rewriter(load_model=False)


def test_ray_actor_whose_model_asks_otherwise_than_planned_generates_and_says_why(
        aitqe_dir, targets, stored, calls, loads, in_process, monkeypatch):  # noqa: F811
    """A GPU node loading the model in another precision than the planning task found: its actor generates
    every target, and the run's summary says why, as the local rewrite's does."""
    import dataclasses

    frame, meta = stored
    frame = frame.copy()
    frame.loc[0, "caption"] = frame.loc[0, "caption"] + "."  # one target without a reply: the actor loads the model
    real = ray_data._planned_call
    monkeypatch.setattr(ray_data, "_plan_call", lambda rewriter, options: (
        lambda call, asker: (dataclasses.replace(call, dtype="float16"), asker))(*real(rewriter, 1)))
    calls.clear(), loads.clear()

    lineage, _, reuse = _on_ray(_settings(aitqe_dir), targets, (frame, meta))
    assert loads == [aitqe_dir] and _generated(calls) == TARGETS and reuse.reused == set()
    summary = reuse.summary(len(lineage))
    assert summary.startswith(f"0 of {TARGETS} from the replies aitqe@9:"), summary
    assert "; an actor generated all its targets: the rewriter loaded as AitqeCall(" in summary
    assert "dtype='float32'" in summary and "dtype='float16'" in summary
