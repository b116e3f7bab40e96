"""AITQE rates and recaptions in one generation: where the scores hold the reply to the very call the ``aitqe``
rewriter would make (same checkpoint, instruction, stop, budget, precision; same key and caption), the rewriter
answers from it instead of generating again, and its lineage is the one a generating run writes. Anything
else (another model, instruction or budget; scores of another version or raw file) is generated."""

from __future__ import annotations

import hashlib
import json
import shutil

import pandas as pd
import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import DEFAULT_INSTRUCTION, AitqeGenerator, AitqeRewriter
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.verify import AcceptanceRules
from curation_pipeline.scoring.aitqe import AitqeScorer
from curation_pipeline.scoring.text_quality import CaptionTextQuality
from curation_pipeline.storage.provenance import RAW_SHA_KEY
from curation_pipeline_tests.tiny_models import RELEASED

MODEL, TOWER = str(RELEASED / "aitqe-tiny"), str(RELEASED / "siglip-tiny-patch8-32")
LOOSE = AcceptanceRules(min_improvement=-100.0, check_wellformed=False)
PAD = "<|endoftext|>"  # the checkpoint's pad token: the reference refuses a caption holding it
CAPTIONS = ["a red bicycle leaning on a wall", "  a dog  on the beach ", "IMG_2041.JPG", "girl girl girl girl",
            f"a cat {PAD} on a mat", "two kids play in the sand", None, "www.example.com", "a photo of a bus"]
SHA = "0" * 64


def _shaped(instruction: str, reply: str) -> str:
    """A known reply for this instruction, as a fine-tuned AITQE might answer (the random checkpoint never
    writes one): a recaption, one with a sub-score, one cut off, or the model's own (unparseable) reply."""
    caption = instruction.partition("Evaluate the caption: ")[2].partition("\n")[0].strip() or "a photo"
    kind = hashlib.sha256(instruction.encode()).digest()[0] % 4
    if kind == 0:
        return f'{{"Recaption": "{caption.capitalize()}, seen in daylight.", "Overall Score": "3<Overall>'
    if kind == 1:
        return f'{{"Recaption": "{caption.capitalize()}.", "Text Quality Score": 4, "Overall Score": "2<Overall>'
    if kind == 2:
        return f'{{"Recaption": "{caption.capitalize()} next to a'
    return reply


@pytest.fixture()
def calls(monkeypatch):
    """Every generate call, by generator: the model still runs (at most 24 new tokens, whatever its budget: the
    random checkpoint writes nothing worth more), its replies shaped by ``_shaped``."""
    seen: list[tuple[object, int]] = []
    real = AitqeGenerator.generate

    def generate(self, images, instructions):
        seen.append((self, len(instructions)))
        budget, self.max_new_tokens = self.max_new_tokens, min(self.max_new_tokens, 24)
        try:
            replies = real(self, images, instructions)
        finally:
            self.max_new_tokens = budget
        return [_shaped(t, r) for t, r in zip(instructions, replies)]

    monkeypatch.setattr(AitqeGenerator, "generate", generate)
    return seen


@pytest.fixture(scope="module")
def batch():
    image = Image.open(RELEASED / "images" / "wide_48x32.png").convert("RGB")
    images = [image] * len(CAPTIONS)
    images[-2] = None  # a pair without an image
    return PairBatch([f"k{i}" for i in range(len(CAPTIONS))], list(CAPTIONS), images)


@pytest.fixture(scope="module")
def scorer():
    return AitqeScorer(MODEL, max_new_tokens=48, batch_size=2, device="cpu", vision_tower=TOWER)


def _stored(scorer, batch, version=None, sha=SHA):
    frame = scorer.score(batch).assign(key=batch.keys, caption=batch.captions)
    return frame, {"scorers": json.dumps({"aitqe": version or scorer.version}), RAW_SHA_KEY: sha}


def _lineage(rewriter, batch) -> pd.DataFrame:
    quality = CaptionTextQuality()
    before = dict(zip(batch.keys, quality.score(batch)["text_quality"]))
    lineage = rewrite_batches(batch.chunks(4), shard="s-000", rewriter=rewriter, rescore=quality.score,
                              quality_column="text_quality", scores_before=before, rules=LOOSE, run_id="r1")
    return lineage.drop(columns="created_at")


def _called(calls, rewriter) -> int:
    return sum(n for generator, n in calls if generator is rewriter.generator)


def test_the_rewriter_answers_from_the_stored_reply_with_the_same_lineage(calls, scorer, batch):
    from curation_pipeline.rewriting.reuse import reuse_stored_replies

    stored = _stored(scorer, batch)
    rewriter = AitqeRewriter(MODEL, max_new_tokens=48, batch_size=2, device="cpu", vision_tower=TOWER)
    generated = _lineage(rewriter, batch)  # as before: the rewriter asks the model
    assert _called(calls, rewriter) == 7  # not the refused pair, nor the one without an image
    calls.clear()
    reusing = reuse_stored_replies(rewriter, lambda: stored, SHA)
    reused = _lineage(reusing, batch)
    assert _called(calls, rewriter) == 0 and calls == []
    assert reusing.reused == {k for k, reply in zip(batch.keys, stored[0]["aitqe_reply"]) if reply} and \
        len(reusing.reused) == 7
    pd.testing.assert_frame_equal(reused, generated)
    # every kind of reply went through: recaptions (one with a sub-score), cut off, unparseable, refused, no image
    reasons = " | ".join(generated["reason"])
    assert generated["candidate_caption"].notna().sum() >= 2 and "aitqe_text_quality" in "".join(
        generated["rewriter_scores"].dropna())
    for reason in ("recaption cut off", "no recaption", "which the reference refuses", "no candidate: no image"):
        assert reason in reasons, reason
    assert reused["rewriter_version"].eq(rewriter.version).all() and reused["rewriter"].eq("aitqe").all()
    assert "7 of 9 from the replies aitqe@9:" in reusing.summary(len(reused))


def test_a_pair_scored_with_another_caption_or_without_its_image_is_generated(calls, scorer, batch):
    from curation_pipeline.rewriting.reuse import reuse_stored_replies

    frame, meta = _stored(scorer, batch)
    frame.loc[0, "caption"] = "a red bicycle leaning on a wall."  # not the caption the rewriter is asked about
    rewriter = AitqeRewriter(MODEL, max_new_tokens=48, batch_size=2, device="cpu", vision_tower=TOWER)
    calls.clear()
    reusing = reuse_stored_replies(rewriter, lambda: (frame, meta), SHA)
    images = list(batch.images)
    images[1] = None  # the image cannot be read now: the rewriter says so, as without reuse
    candidates = reusing.rewrite(PairBatch(batch.keys, batch.captions, images))
    assert _called(calls, rewriter) == 1 and "k0" not in reusing.reused and "k1" not in reusing.reused
    assert candidates[1].error == "no image" and len(reusing.reused) == 5


@pytest.mark.parametrize("change", ["another model", "custom instruction", "another max_new_tokens", "old scores",
                                    "another raw file", "no stop at <Overall>"])
def test_another_call_is_generated(calls, scorer, batch, tmp_path, change):
    from curation_pipeline.rewriting.reuse import reuse_stored_replies

    model, settings, version, sha = MODEL, {"max_new_tokens": 48}, None, SHA
    if change == "another model":  # the same weights under another name: the scores do not say they are the same
        model = str(shutil.copytree(MODEL, tmp_path / "aitqe-copy"))
    elif change == "custom instruction":
        settings["instruction"] = DEFAULT_INSTRUCTION + "\nBe brief."
    elif change == "another max_new_tokens":
        settings["max_new_tokens"] = 47
    elif change == "old scores":  # parsed before the <Overall> marker decided the overall (version 6)
        version = "6:" + scorer.version.partition(":")[2]
    elif change == "another raw file":
        sha = "1" * 64
    else:
        settings["stop_after_overall"] = False
    stored = _stored(scorer, batch, version)
    rewriter = AitqeRewriter(model, batch_size=2, device="cpu", vision_tower=TOWER, **settings)
    calls.clear()
    reusing = reuse_stored_replies(rewriter, lambda: stored, sha)
    reusing.rewrite(batch)
    assert _called(calls, rewriter) == 7 and reusing.reused == set()
    assert reusing.summary(9).startswith("all 9 generated: ")


def test_a_call_planned_where_the_model_is_keeps_its_snapshot_on_a_driver_without_it(scorer, batch, monkeypatch):
    """On Ray the call is planned in a task with the rewrite actors' resources, on a node holding the model, and the
    driver (which may hold no copy: the README's gpu group) compares it with the version stored with the scores:
    that comparison reads the snapshot named where the call was planned, not the driver's cache."""
    from curation_pipeline.models import loading
    from curation_pipeline.rewriting.reuse import AitqeCall, stored_replies

    rewriter = AitqeRewriter(MODEL, max_new_tokens=48, batch_size=2, device="cpu", vision_tower=TOWER, load_model=False)
    commit = "1a2b3c4d5e6f" + "0" * 28
    with monkeypatch.context() as node:  # the node with the model: its cache holds the checkpoint's snapshot
        node.setattr(loading, "model_revision", lambda model: commit if model == MODEL else None)
        call = AitqeCall.planned(rewriter, "cpu")
    assert f"{MODEL}@1a2b3c4d5e6f:" in call.scorer_version  # as the scorer on that node stored it
    found = stored_replies(call, rewriter.ident, lambda: _stored(scorer, batch, call.scorer_version), SHA)
    assert found.why_not is None and len(found.replies) == 7


def test_only_aitqe_is_wrapped_and_the_scores_are_read_only_when_they_can_serve(scorer):
    from curation_pipeline.rewriting.cleaner import CaptionCleaner
    from curation_pipeline.rewriting.reuse import reuse_stored_replies

    def unread():
        raise AssertionError("the scores were read")

    cleaner = CaptionCleaner()
    assert reuse_stored_replies(cleaner, unread, SHA) is cleaner
    custom = AitqeRewriter(MODEL, instruction="Rate: {caption}", device="cpu", vision_tower=TOWER)
    assert "instruction" in reuse_stored_replies(custom, unread, SHA).summary(3)
    assert scorer.version.startswith("9:") and ":dtype=float32:" in scorer.version and TOWER in scorer.version


@pytest.fixture(scope="module")
def aitqe_dir(tmp_path_factory):
    """The tiny checkpoint naming its vision tower by path, as the scoring and rewriter settings take none."""
    directory = shutil.copytree(MODEL, tmp_path_factory.mktemp("aitqe") / "aitqe-tiny")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "vision_model_name_or_path": TOWER}))
    return str(directory)


SHARD = "sample-000001"


def _resources(model):
    from curation_pipeline.resources import DriftConfig, PolicyResource, RewriterResource, ScoringResource

    # batch size 1 in both steps: no padding, so the two runs' replies cannot differ by batch composition
    return {"rewriter": RewriterResource(kind="aitqe", model=model, batch_size=1, device="cpu"),
            "scoring": ScoringResource(profile="offline", aitqe_model=model, batch_size=1, device="cpu"),
            "policy": PolicyResource(drift=DriftConfig(max_kl=10, mean_ratio_min=0, mean_ratio_max=10,
                                                       quantile_tolerance=10))}


def _outputs(instance, root, settings):
    """The rewriter the run used, its lineage, the final captions and the rewrite's run metadata."""
    import dagster as dg

    from curation_pipeline.storage.warehouse import Warehouse

    wh = Warehouse(str(root))
    record = instance.fetch_materializations(dg.AssetKey("rewritten_captions"), limit=1).records[0]
    return (settings["rewriter"].rewriter(), wh.read_table("rewritten_captions", SHARD),
            wh.read_table("final_captions", SHARD), record.event_log_entry.asset_materialization.metadata)


@pytest.mark.slow  # the shard through the pipeline (about 40 s here), then its rewrite again
def test_a_pipeline_run_takes_the_scored_replies_and_publishes_the_same_captions(calls, aitqe_dir, tmp_path,
                                                                                monkeypatch):
    import dagster as dg

    from curation_pipeline import resources
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES, run_pipeline

    settings = _resources(aitqe_dir)
    resources._rewriter.cache_clear()
    instance, results = run_pipeline(RAW_SAMPLES, tmp_path, [SHARD], report=False, settle=False, **settings)
    assert results[SHARD].success
    model, lineage, final, meta = _outputs(instance, tmp_path, settings)
    targets = len(lineage)
    asked = lineage["rewriter_output"].notna().sum()  # the targets the model answered (with an image)
    assert targets >= 5 and asked >= 5
    assert _called(calls, model) == 0 and calls  # the scorer generated; the rewriter did not
    assert meta["reused_from_quality_scores"].value == asked
    assert f"{asked} of {targets} from the replies aitqe@9:" in meta["aitqe_replies"].value

    # The rewrite again, as before this reuse: every target generated, the same lineage and captions.
    from curation_pipeline.rewriting import reuse as module

    monkeypatch.setattr(module, "not_the_same_call", lambda rewriter: "reuse off in this test")
    calls.clear()
    resources._rewriter.cache_clear()
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path), **settings)
    result = defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=SHARD, instance=instance, raise_on_error=False, run_config=QUIET,
        asset_selection=[dg.AssetKey("rewritten_captions"), dg.AssetKey("final_captions")])
    assert result.success
    again, lineage_off, final_off, meta_off = _outputs(instance, tmp_path, settings)
    assert again is not model and _called(calls, again) == asked and calls == [(again.generator, 1)] * asked
    assert meta_off["reused_from_quality_scores"].value == 0 and "reuse off" in meta_off["aitqe_replies"].value
    ignore = ["run_id", "created_at"]
    pd.testing.assert_frame_equal(lineage.drop(columns=ignore), lineage_off.drop(columns=ignore))
    assert lineage["candidate_caption"].notna().any() and lineage["accepted"].any()
    pd.testing.assert_frame_equal(final, final_off)
