"""Which scorers run: an offline profile that needs no hub, plus model scorers by id or path."""

from __future__ import annotations

from dataclasses import dataclass, field

from curation_pipeline.scoring.base import Scorer
from curation_pipeline.scoring.clip import DTYPES as CLIP_DTYPES  # the names CLIPScore resolves (no torch import)
from curation_pipeline.scoring.mlm.score import MIN_SCORE_MASS

PROFILES = ("offline", "text", "clip", "mlm", "full")


@dataclass(frozen=True)
class ScoringProfile:
    """``offline``: DataComp rules, caption text quality and the bundled content signals; ``text``: only
    the caption scorers; ``clip`` / ``mlm`` / ``full`` add CLIPScore and/or MLM-Filter from ``clip_model``
    / ``mlm_model`` (a HuggingFace id or a local directory)."""

    name: str = "offline"
    clip_model: str | None = None
    clip_prefix: bool = True
    clip_dtype: str = "auto"
    mlm_model: str | None = None
    mlm_metrics: tuple[str, ...] = ("itm", "odf", "ctq", "su")
    mlm_mode: str = "logits"
    mlm_min_mass: float = MIN_SCORE_MASS
    mlm_prompt_set: str | None = None  # None: the released checkpoint's own, or zero_shot for chat VLMs
    mlm_vision_tower: str | None = None  # None: the tower the checkpoint's config names
    mlm_pad_to_square: bool | None = None  # None: as MLM_Filter's scoring scripts (no padding)
    # auto: a released checkpoint as its reference runs (fp16 on CUDA), a chat VLM bf16 where supported;
    # fp32 on CPU
    mlm_dtype: str = "auto"
    aitqe_model: str | None = None  # adds AITQE's overall rating and recaption as scores
    aitqe_vision_tower: str | None = None  # None: the tower the AITQE checkpoint's config names
    device: str | None = None
    batch_size: int = 32
    trust_remote_code: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.name not in PROFILES:
            raise ValueError(f"unknown scoring profile {self.name!r}; choose one of {', '.join(PROFILES)}")
        if self.name in ("clip", "full") and not self.clip_model:
            raise ValueError(f"scoring profile {self.name!r} needs scoring.clip.model (--clip-model): a HuggingFace "
                             "id or a local path")
        if self.clip_dtype.lower() not in ("auto", *CLIP_DTYPES):
            raise ValueError(f"unknown clip_dtype {self.clip_dtype!r}; choose auto, {', '.join(CLIP_DTYPES)}")
        if self.mlm_dtype.lower() not in ("auto", *CLIP_DTYPES):
            raise ValueError(f"unknown mlm_dtype {self.mlm_dtype!r}; choose auto, {', '.join(CLIP_DTYPES)}")
        if self.name in ("mlm", "full") and not self.mlm_model:
            raise ValueError(f"scoring profile {self.name!r} needs scoring.mlm.model (--mlm-model): a HuggingFace id "
                             "or a local path")
        if self.aitqe_vision_tower and not self.aitqe_model:  # no scorer would read it
            raise ValueError("scoring.aitqe_vision_tower is set but scoring.aitqe_model is not: it is where that "
                             "checkpoint's vision tower loads from")
        if self.batch_size < 1:  # 0 fails every model pair, a negative one scores none and says nothing
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


def build_scorers(profile: ScoringProfile) -> list[Scorer]:
    """Instantiate (and so load) every registered scorer the profile runs; a missing model fails here,
    at once. Each scorer class builds itself from the profile (``Scorer.from_profile``)."""
    from curation_pipeline.scoring.registry import scorer_classes

    built = (cls.from_profile(profile) for cls in scorer_classes(profile.name))
    return [scorer for scorer in built if scorer is not None]


def caption_scorers() -> list[Scorer]:
    """The scorers that read only the caption (the text profile)."""
    return build_scorers(ScoringProfile(name="text"))
