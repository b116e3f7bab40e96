"""Which prompt sets a checkpoint takes: a released MLM-Filter checkpoint its own format or another
released one, never the chat VLMs' zero_shot (which renders through a processor's chat template it has
not: a bare ``KeyError: None`` at the first pair); a chat VLM only zero_shot."""

from __future__ import annotations

import pytest

from curation_pipeline.scoring.mlm import MlmFilterScorer
from curation_pipeline_tests.tiny_models import RELEASED

TOWER = str(RELEASED / "clip-vit-tiny-patch8-32")
CHECKPOINT = str(RELEASED / "mlm-filter-llava-13b-tiny")


def test_zero_shot_is_refused_for_a_released_checkpoint_before_it_loads(monkeypatch):
    from curation_pipeline.scoring.mlm import scorer

    monkeypatch.setattr(scorer, "load_released", lambda *a, **k: pytest.fail("loaded before the refusal"))
    with pytest.raises(ValueError, match="prompt_set 'zero_shot' is for chat VLMs.*leave prompt_set unset"):
        MlmFilterScorer(CHECKPOINT, vision_tower=TOWER, device="cpu", prompt_set="zero_shot")


@pytest.mark.parametrize("prompt_set,expected", [(None, "llava_v1"), ("llama_3", "llama_3")])
def test_a_released_checkpoint_takes_its_own_format_or_another_released_one(prompt_set, expected):
    scorer = MlmFilterScorer(CHECKPOINT, vision_tower=TOWER, device="cpu", prompt_set=prompt_set)
    assert scorer.prompts.name == expected
    assert "a dog" in scorer.prompts.prompt("a dog", "itm")
