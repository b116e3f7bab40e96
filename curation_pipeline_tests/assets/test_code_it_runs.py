"""quality_scores' and rewritten_captions' code versions name the scorers and the rewriter they run, so a new
version of one marks the partitions it made stale (Dagster's staleness, which the schedule re-runs)."""

import dagster as dg

from curation_pipeline.assets.rewriting import rewritten_captions
from curation_pipeline.automation import SCORES_CURRENT, shards_to_refresh
from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import ClipConfig, MlmConfig, RewriterResource, ScoringResource
from curation_pipeline.rewriting import base as rewriter_base
from curation_pipeline.rewriting.aitqe import AITQE_MAX_NEW_TOKENS
from curation_pipeline.rewriting.vlm import VLM_MAX_NEW_TOKENS
from curation_pipeline.scoring.aitqe import AitqeScorer
from curation_pipeline.scoring.aitqe import scorer_version as aitqe_scorer_version
from curation_pipeline.scoring.clip import ClipScorer
from curation_pipeline.scoring.datacomp import DataCompBasicRules
from curation_pipeline.scoring.mlm.scorer import MlmFilterScorer
from curation_pipeline.scoring.signals.duplicates import DuplicateSignals
from curation_pipeline.scoring.signals.image_quality import ImageQualityScorer
from curation_pipeline.scoring.signals.nsfw import NsfwScorer
from curation_pipeline.scoring.signals.ocr import TextInImageScorer
from curation_pipeline.scoring.text_quality import CaptionTextQuality
from curation_pipeline_tests.conftest import RAW_SAMPLES, REPO_ROOT, run_pipeline

SCORES, REWRITES = dg.AssetKey("quality_scores"), dg.AssetKey("rewritten_captions")
REWRITE_OWN = rewritten_captions.specs_by_key[REWRITES].code_version  # the asset's own part


def _code(defs: dg.Definitions, key: dg.AssetKey) -> str:
    return defs.get_repository_def().asset_graph.get(key).code_version


def test_each_profile_names_the_scorers_it_runs_and_the_rewriter_its_kind(monkeypatch):
    text = f"2+datacomp.{DataCompBasicRules.version},text_quality.{CaptionTextQuality.version}"
    assert _code(build_definitions(scoring=ScoringResource(profile="text")), SCORES) == text
    offline = _code(build_definitions(), SCORES)
    assert offline == (f"{text},nsfw.{NsfwScorer.version},ocr.{TextInImageScorer.version},"
                       f"image_quality.{ImageQualityScorer.version},dup.{DuplicateSignals.version}")
    full = ScoringResource(profile="full", clip=ClipConfig(model="some/clip"), mlm=MlmConfig(model="some/mlm"),
                           aitqe_model="some/aitqe")
    assert _code(build_definitions(scoring=full), SCORES).startswith(
        f"{offline},clip.{ClipScorer.version},mlm.{MlmFilterScorer.version},aitqe.{AitqeScorer.version}@")
    cleaner, aitqe = rewriter_base.CODE_VERSIONS["cleaner"], rewriter_base.CODE_VERSIONS["aitqe"]
    assert _code(build_definitions(), REWRITES) == f"{REWRITE_OWN}+cleaner.{cleaner}"
    readme = (REPO_ROOT / "README.md").read_text()  # its examples are today's versions (they went out of date)
    assert f"e.g. `{text}`" in readme and f"`{REWRITE_OWN}+cleaner.{cleaner}`" in readme
    assert _code(build_definitions(rewriter=RewriterResource(kind="aitqe", model="some/aitqe")), REWRITES).startswith(
        f"{REWRITE_OWN}+aitqe.{aitqe}@")
    # the version a model scorer's instance stores starts with its class's, which these are made of
    assert AitqeScorer.version == aitqe_scorer_version("m", 8, "float32").split(":")[0]
    # a scorer the profile does not run changes nothing of its version; one it runs does
    monkeypatch.setattr(MlmFilterScorer, "version", "99")
    assert _code(build_definitions(), SCORES) == offline
    nsfw = f"nsfw.{NsfwScorer.version}"
    monkeypatch.setattr(NsfwScorer, "version", "99")
    assert _code(build_definitions(), SCORES) == offline.replace(nsfw, "nsfw.99") != offline
    # a model profile missing its model still loads (its runs fail naming the setting): its own version alone
    assert _code(build_definitions(scoring=ScoringResource(profile="clip")), SCORES) == "2"


def test_another_model_or_switch_changes_the_code_version_a_faster_setting_does_not():
    """A model and the switches that change its output are part of what quality_scores and rewritten_captions
    are made of; device, batch size, threads and prefetch only change how fast; a model the profile does not run
    changes nothing; the text and offline profiles and the cleaner name no settings at all."""
    clip = ScoringResource(profile="clip", clip=ClipConfig(model="some/clip"))
    base = _code(build_definitions(scoring=clip), SCORES)
    assert base.startswith(f"2+datacomp.{DataCompBasicRules.version},")
    for faster in ({"batch_size": 3}, {"device": "cpu"}, {"threads": 1}, {"prefetch": 0},
                   {"mlm": MlmConfig(model="some/mlm")}):  # the clip profile runs no MLM-Filter
        assert _code(build_definitions(scoring=clip.model_copy(update=faster)), SCORES) == base, faster
    for other in (ClipConfig(model="other/clip"), ClipConfig(model="some/clip", prefix=False),
                  ClipConfig(model="some/clip", dtype="float32")):
        assert _code(build_definitions(scoring=clip.model_copy(update={"clip": other})), SCORES) != base, other
    mlm = ScoringResource(profile="mlm", mlm=MlmConfig(model="some/mlm"))
    assert _code(build_definitions(scoring=mlm), SCORES) != _code(
        build_definitions(scoring=mlm.model_copy(update={"mlm": MlmConfig(model="some/mlm", mode="generate")})), SCORES)
    assert "@" not in _code(build_definitions(scoring=ScoringResource(profile="text")), SCORES)
    assert "@" not in _code(build_definitions(), SCORES)  # offline
    vlm = RewriterResource(kind="vlm", model="some/vlm")
    rewrites = _code(build_definitions(rewriter=vlm), REWRITES)
    assert _code(build_definitions(rewriter=vlm.model_copy(update={"batch_size": 2, "device": "cpu"})),
                 REWRITES) == rewrites
    assert _code(build_definitions(rewriter=vlm.model_copy(update={"model": "other/vlm"})), REWRITES) != rewrites
    assert _code(build_definitions(rewriter=vlm.model_copy(update={"prompt": "Fix: {caption}"})), REWRITES) != rewrites
    for kind, default in (("vlm", VLM_MAX_NEW_TOKENS), ("aitqe", AITQE_MAX_NEW_TOKENS)):  # 0 means the default
        implicit = _code(build_definitions(rewriter=RewriterResource(kind=kind, model="some/vlm")), REWRITES)
        assert _code(build_definitions(rewriter=RewriterResource(kind=kind, model="some/vlm", max_new_tokens=default)),
                     REWRITES) == implicit, kind
        assert _code(build_definitions(rewriter=RewriterResource(kind=kind, model="some/vlm",
                                                                 max_new_tokens=default + 1)), REWRITES) != implicit
    assert _code(build_definitions(rewriter=RewriterResource(model="unread")), REWRITES) == _code(
        build_definitions(), REWRITES)  # the cleaner reads no model


def test_a_new_scorer_or_rewriter_version_makes_the_shard_stale(tmp_path, monkeypatch):
    warehouse, text = tmp_path / "wh", ScoringResource(profile="text")
    with dg.instance_for_test() as instance:
        _, results = run_pipeline(RAW_SAMPLES, warehouse, ["sample-000000"], instance=instance, report=False,
                                  scoring=text)
        assert results["sample-000000"].success

        def todo():
            defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse), scoring=text)
            return shards_to_refresh(instance, defs.resources["warehouse"], defs.get_repository_def())

        assert todo() == {}
        original = CaptionTextQuality.version
        monkeypatch.setattr(CaptionTextQuality, "version", "99")
        why = todo()["sample-000000"]
        assert "quality_scores has a new code version" in why and "rewritten_captions" not in why
        assert why.startswith("stale: ")  # the whole shard runs again
        monkeypatch.setattr(CaptionTextQuality, "version", original)
        cleaner = rewriter_base.CODE_VERSIONS["cleaner"]
        monkeypatch.setitem(rewriter_base.CODE_VERSIONS, "cleaner", "99")
        why = todo()["sample-000000"]
        assert "rewritten_captions has a new code version" in why and "quality_scores" not in why
        assert why.startswith(SCORES_CURRENT)  # only its decide half: the scores stand
        monkeypatch.setitem(rewriter_base.CODE_VERSIONS, "cleaner", cleaner)
        assert todo() == {}
        # another profile in the code location: the scores it holds are not what the location would make
        defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
        assert "quality_scores" in shards_to_refresh(instance, defs.resources["warehouse"],
                                                     defs.get_repository_def())["sample-000000"]
