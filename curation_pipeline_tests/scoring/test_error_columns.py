"""Every pair a scorer cannot score carries a reason in the error columns that scorer declares, and is
counted from them; a failing stream releases its reader; a batch size that cannot work is refused."""

import threading
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from curation_pipeline.pairs import ContractError, PairBatch
from curation_pipeline.scoring.base import Scorer
from curation_pipeline.scoring.columns import ScoreColumn
from curation_pipeline.scoring.registry import columns_of
from curation_pipeline.scoring.run import assemble_scores, score_stream, unscored
from curation_pipeline_tests import tiny_models


def _records(batch):
    return [{"shard": "s", "key": k} for k in batch.keys]


def test_image_quality_pairs_without_a_value_are_counted_from_its_declared_error_column():
    from curation_pipeline.scoring.signals.image_quality import ImageQualityScorer

    scorer = ImageQualityScorer()  # named image_quality, declares iq_error
    batch = PairBatch(["a", "b", "c"], ["x", "y", "z"], [None, Image.new("RGB", (64, 64), "red"), None])
    scores = score_stream([scorer], [(batch, _records(batch))], prefetch_depth=0)
    assert scores["iq_error"].tolist() == ["no image", None, "no image"]
    assert "image_quality_error" not in scores  # no undeclared, always-empty column
    assert unscored(scores, [scorer]) == {"image_quality": 2}
    # the Ray engine's description of the scorer (name and columns) counts the same
    assert unscored(scores, [SimpleNamespace(name="image_quality", columns=columns_of("image_quality"))]) == {
        "image_quality": 2}


def test_a_failed_model_batch_gives_its_reason_in_every_declared_mlm_error_column(tmp_path):
    from curation_pipeline.scoring.mlm import MlmFilterScorer

    scorer = MlmFilterScorer(tiny_models.make_tiny_llava(tmp_path / "vlm"), metrics=("itm", "odf"), batch_size=2,
                             device="cpu")

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    scorer._logits = out_of_memory
    image = Image.new("RGB", (32, 32), "red")
    batch = PairBatch(["a", "b", "c"], ["a dog", "a cat", None], [image, image, image])
    scores = score_stream([scorer], [(batch, _records(batch))], prefetch_depth=0)
    oom = "RuntimeError: CUDA out of memory"
    for metric in ("itm", "odf"):
        assert scores[f"mlm_{metric}"].isna().all()
        assert scores[f"mlm_{metric}_error"].tolist() == [oom, oom, "no caption"]
    assert "mlm_error" not in scores
    assert unscored(scores, [scorer]) == {"mlm": 3, "mlm_itm": 3, "mlm_odf": 3}


def test_a_pair_with_a_reason_for_one_metric_counts_as_unscored_and_per_metric():
    described = SimpleNamespace(name="mlm", columns=("mlm_itm", "mlm_itm_error", "mlm_su", "mlm_su_error"))
    scores = pd.DataFrame({"mlm_itm": [1.0, None, 3.0], "mlm_itm_error": [None, "low score-token mass", None],
                           "mlm_su": [1.0, 2.0, None], "mlm_su_error": [None, None, "unparseable"]})
    assert unscored(scores, [described]) == {"mlm": 2, "mlm_itm": 1, "mlm_su": 1}


class Flaky(Scorer):
    """Declares no error column: a failed batch's reason goes to ``flaky_error``."""

    name, outputs = "flaky", (ScoreColumn("flaky_score", "x"),)

    def score(self, batch):
        if "poison" in batch.keys:
            raise ValueError("cannot score")
        return pd.DataFrame({"flaky_score": [1.0] * len(batch)})


def test_a_scorer_declaring_no_error_column_still_has_one_for_its_failures():
    batch = PairBatch(["a", "poison"], ["x", "y"])
    scores = score_stream([Flaky()], [(batch, _records(batch))], prefetch_depth=0)
    assert pd.isna(scores["flaky_error"][0]) and scores["flaky_error"][1] == "ValueError: cannot score"
    assert unscored(scores, [Flaky()]) == {"flaky": 1}
    empty = assemble_scores([], [Flaky()])  # the same schema for a shard with no pairs
    assert "flaky_error" in empty and len(empty) == 0


class WrongRows(Scorer):
    """Breaks the contract: scoring raises (not split and retried)."""

    name, needs_images, outputs = "broken", True, (ScoreColumn("broken_x", "x"),)

    def score(self, batch):
        return pd.DataFrame({"broken_x": [1.0]})


@pytest.mark.parametrize("depth", [2, 0])
def test_a_failing_stream_closes_its_reader_and_stops_its_thread_at_once(depth):
    closed = threading.Event()
    before = {t for t in threading.enumerate() if t.name == "curate-prefetch"}

    def batches():
        try:
            for i in range(1000):
                batch = PairBatch([f"{i}a", f"{i}b"], ["a", "b"], [Image.new("RGB", (8, 8))] * 2)
                yield batch, _records(batch)
        finally:
            closed.set()  # as the shard reader closes its tar

    with pytest.raises(ContractError) as raised:
        score_stream([WrongRows()], batches(), prefetch_depth=depth)
    assert raised.value.__traceback__ is not None  # still held, as Dagster holds it
    assert closed.is_set()
    assert {t for t in threading.enumerate() if t.name == "curate-prefetch"} <= before


@pytest.mark.parametrize("size", [0, -1])
def test_a_batch_size_below_one_is_a_configuration_error(size, tmp_path):
    from pydantic import ValidationError

    from curation_pipeline.resources import ScoringResource, WarehouseResource
    from curation_pipeline.scoring.mlm import MlmFilterScorer
    from curation_pipeline.scoring.profiles import ScoringProfile

    with pytest.raises(ValidationError, match="batch_size"):
        ScoringResource(batch_size=size)
    with pytest.raises(ValidationError, match="batch_size"):
        WarehouseResource(raw_root=str(tmp_path), root=str(tmp_path), batch_size=size)
    with pytest.raises(ValueError, match="batch_size"):
        ScoringProfile(batch_size=size)
    with pytest.raises(ValueError, match="batch_size"):
        MlmFilterScorer(tiny_models.make_tiny_llava(tmp_path / "vlm"), batch_size=size)
    assert ScoringResource(batch_size=1).as_profile().batch_size == 1
