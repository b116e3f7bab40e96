"""Each scorer declares its columns once; every consumer reads the declarations."""

import pandas as pd

from curation_pipeline.scoring.registry import bounds, score_columns, score_ranges, scorer_classes


def test_every_registered_scorer_declares_described_columns_and_its_error_column():
    for cls in scorer_classes():
        assert cls.outputs, f"{cls.__name__} declares no columns"
        for column in cls.outputs:
            assert column.description and column.kind in ("float", "int", "bool", "str", "json")
            if column.range is not None:
                assert column.numeric and column.range[0] < column.range[1]
    declared = score_columns()
    for bound in bounds():
        assert bound.column in declared, f"a bound on an undeclared column {bound.column}"


def test_the_offline_scorers_write_exactly_their_declared_columns(tmp_path):
    from curation_pipeline.scoring.profiles import ScoringProfile, build_scorers

    scorers = build_scorers(ScoringProfile(name="offline"))
    assert [s.name for s in scorers] == ["datacomp", "text_quality", "nsfw", "ocr", "image_quality", "dup"]
    for scorer in scorers:
        assert tuple(scorer.columns) == tuple(c.name for c in type(scorer).outputs)
    assert [s.name for s in build_scorers(ScoringProfile(name="text"))] == ["datacomp", "text_quality"]


def test_a_new_signal_is_registered_once_and_every_consumer_sees_it(monkeypatch):
    """A scorer added to the registry reaches the range check, the policy, the sidecars, the column schema
    and dedup's usability columns without any other edit."""
    from curation_pipeline import tables
    from curation_pipeline.decisions import dedup
    from curation_pipeline.decisions.policy import DecisionPolicy, image_drop_reasons
    from curation_pipeline.scoring import registry
    from curation_pipeline.scoring.base import Scorer
    from curation_pipeline.scoring.columns import Bound, ScoreColumn

    class Watermark(Scorer):
        name = "watermark"
        outputs = (ScoreColumn("watermark_prob", "Probability of a visible watermark.", range=(0, 1)),)
        bounds = (Bound("watermark_prob", ">=", "nsfw_drop", "watermarked"),)  # reuses a threshold setting

        def score(self, batch):
            raise NotImplementedError

    classes = (*scorer_classes(), Watermark)
    for cached in (registry.scorer_classes, registry.score_columns, registry.bounds):
        cached.cache_clear()
    monkeypatch.setattr(registry, "scorer_classes", lambda: classes)
    try:
        assert score_ranges()["watermark_prob"] == (0, 1)
        assert tables.describe("quality_scores", "watermark_prob") == "Probability of a visible watermark."
        assert "watermark_prob" in dedup.usability_columns()
        df = pd.DataFrame({"decode_status": ["ok", "ok"], "watermark_prob": [0.95, 0.1]})
        reasons = image_drop_reasons(df, DecisionPolicy())
        assert reasons[0] == "watermarked" and pd.isna(reasons[1])
    finally:
        for cached in (registry.score_columns, registry.bounds):
            cached.cache_clear()
