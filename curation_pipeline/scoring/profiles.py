"""Which scorers run: an offline profile that needs no hub, plus model scorers by id or path."""

from __future__ import annotations

from dataclasses import dataclass, field

from curation_pipeline.scoring.base import Scorer

PROFILES = ("offline", "text", "clip", "mlm", "full")


@dataclass(frozen=True)
class ScoringProfile:
    """``offline``: DataComp rules, caption text quality and the bundled content signals.
    ``text``: only the caption scorers (fastest; no image signals). ``clip`` / ``mlm`` /
    ``full`` add CLIPScore and/or MLM-Filter's metrics from ``clip_model`` /
    ``mlm_model`` (a HuggingFace id or a local directory).
    """

    name: str = "offline"
    clip_model: str | None = None
    mlm_model: str | None = None
    mlm_metrics: tuple[str, ...] = ("itm", "odf", "ctq", "su")
    mlm_mode: str = "logits"
    mlm_min_mass: float = 0.05
    device: str | None = None
    batch_size: int = 32
    trust_remote_code: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.name not in PROFILES:
            raise ValueError(f"unknown scoring profile {self.name!r}; choose one of {', '.join(PROFILES)}")
        if self.name in ("clip", "full") and not self.clip_model:
            raise ValueError(f"profile {self.name!r} needs clip_model (a HuggingFace id or a local path)")
        if self.name in ("mlm", "full") and not self.mlm_model:
            raise ValueError(f"profile {self.name!r} needs mlm_model (a HuggingFace id or a local path)")


def caption_scorers() -> list[Scorer]:
    from curation_pipeline.scoring.datacomp import DataCompBasicRules
    from curation_pipeline.scoring.text_quality import CaptionTextQuality

    return [DataCompBasicRules(), CaptionTextQuality()]


def signal_scorers() -> list[Scorer]:
    from curation_pipeline.scoring.signals.duplicates import DuplicateSignals
    from curation_pipeline.scoring.signals.image_quality import ImageQualityScorer
    from curation_pipeline.scoring.signals.nsfw import NsfwScorer
    from curation_pipeline.scoring.signals.ocr import TextInImageScorer

    return [NsfwScorer(), TextInImageScorer(), ImageQualityScorer(), DuplicateSignals()]


def build_scorers(profile: ScoringProfile) -> list[Scorer]:
    """Instantiate (and so load) every scorer of a profile; a missing model fails here, at once."""
    scorers = caption_scorers()
    if profile.name != "text":
        scorers += signal_scorers()
    if profile.name in ("clip", "full"):
        from curation_pipeline.scoring.clip import ClipScorer

        scorers.append(ClipScorer(profile.clip_model, device=profile.device, batch_size=profile.batch_size))
    if profile.name in ("mlm", "full"):
        from curation_pipeline.scoring.mlm_filter import MlmFilterScorer

        scorers.append(MlmFilterScorer(
            profile.mlm_model, metrics=tuple(profile.mlm_metrics), mode=profile.mlm_mode, device=profile.device,
            min_mass=profile.mlm_min_mass,
            trust_remote_code=profile.mlm_model in profile.trust_remote_code))
    return scorers
