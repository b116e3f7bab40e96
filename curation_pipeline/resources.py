"""Dagster resources: where data lives, which models score and rewrite, and the thresholds.

Every threshold and switch is configuration here (editable in the launchpad or via
environment variables), not code. Models are built once per process and cached, so a
run's steps never reload them per batch.
"""


import os
from functools import lru_cache
from pathlib import Path

import dagster as dg
from pydantic import Field

from curation_pipeline.decisions.policy import DecisionPolicy
from curation_pipeline.rewriting.base import Rewriter
from curation_pipeline.rewriting.verify import AcceptanceRules
from curation_pipeline.scoring.base import Scorer
from curation_pipeline.scoring.profiles import ScoringProfile, build_scorers
from curation_pipeline.shards.keys import InvalidShardName, shard_key, validate_key
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline.validation.drift import DriftThresholds


def default_path(env: str, relative: str) -> str:
    return os.environ.get(env) or str(Path.cwd() / relative)


class WarehouseResource(dg.ConfigurableResource):
    """Raw shards in, Parquet tables, curated shards and the DuckDB report out (fsspec URLs work)."""

    raw_root: str = Field(description="Folder or URL holding raw webdataset .tar shards (env CURATION_RAW).")
    root: str = Field(description="Warehouse root for Parquet tables, curated shards, quality.duckdb (env CURATION_WAREHOUSE).")
    batch_size: int = Field(default=32, description="Pairs decoded and scored together; bounds memory.")

    def warehouse(self) -> Warehouse:
        return Warehouse(self.root)

    def raw_url(self, shard: str) -> str:
        return f"{self.raw_root.rstrip('/')}/{validate_key(shard)}.tar"

    def list_raw(self) -> tuple[dict[str, str], list[str]]:
        """Shard key -> URL for every valid ``.tar``, and messages for rejected names."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.raw_root)
        if not fs.exists(root):
            raise FileNotFoundError(f"raw shard location {self.raw_root!r} does not exist")
        found, rejected = {}, []
        for path in sorted(fs.glob(f"{root.rstrip('/')}/*.tar")):
            try:
                found[shard_key(path)] = fs.unstrip_protocol(path)
            except InvalidShardName as exc:
                rejected.append(str(exc))
        return found, rejected

    def raw_mtime(self, shard: str) -> float | None:
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.raw_url(shard))
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
        mtime = info.get("mtime") or info.get("LastModified") or info.get("updated")
        return float(mtime.timestamp()) if hasattr(mtime, "timestamp") else (float(mtime) if mtime else None)


@lru_cache(maxsize=4)
def _scorers(profile: ScoringProfile) -> tuple[Scorer, ...]:
    return tuple(build_scorers(profile))


class ScoringResource(dg.ConfigurableResource):
    """Which scorers run. ``offline`` needs no model hub; model profiles name ids or local paths."""

    profile: str = Field(default="offline", description="offline | text | clip | mlm | full")
    clip_model: str = Field(default="", description="CLIP/SigLIP HuggingFace id or local path (clip, full).")
    clip_prefix: bool = Field(default=True, description='Prefix each caption with "A photo depicts" before CLIPScore (as the reference does); false scores the caption alone.')
    clip_dtype: str = Field(default="auto", description="CLIP/SigLIP precision: auto (fp32 on CPU, fp16 on GPU, as the reference runs) | float32 | float16 | bfloat16.")
    mlm_model: str = Field(default="", description="Released MLM-Filter checkpoint (e.g. weizhiwang/mlm-filter-qwen2.5-1.5b-gpt4o) or chat VLM, id or local path (mlm, full).")
    mlm_vision_tower: str = Field(default="", description="Where the checkpoint's vision tower loads from (id or local path); empty = the id its config names.")
    mlm_prompt_set: str = Field(default="", description="llava_v1 | llama_3 | qwen_instruct | zero_shot; empty = the checkpoint's own (zero_shot for chat VLMs).")
    mlm_pad_to_square: str = Field(default="", description="true | false: pad images to a square (LLaVA's expand2square) first; empty = as MLM_Filter's scoring scripts (no padding).")
    aitqe_model: str = Field(default="", description="AITQE checkpoint (HymanH/AITQE) id or path: adds aitqe_overall (1-10) and aitqe_recaption to the scores (not in the text profile).")
    mlm_metrics: list[str] = Field(default=["itm", "odf", "ctq", "su"], description="Subset of itm, odf, ctq, su.")
    mlm_mode: str = Field(default="logits", description="logits (one forward pass) or generate (parity).")
    mlm_min_mass: float = Field(default=0.05, description="Below this probability on score tokens a metric is NaN.")
    device: str = Field(default="", description="cuda | mps | cpu; empty picks automatically.")
    batch_size: int = Field(default=32, description="Model batch size.")
    trust_remote_code: list[str] = Field(default=[], description="Model ids allowed to run their own code.")

    def as_profile(self) -> ScoringProfile:
        return ScoringProfile(
            name=self.profile, clip_model=self.clip_model or None, mlm_model=self.mlm_model or None,
            clip_prefix=self.clip_prefix, clip_dtype=self.clip_dtype or "auto",
            mlm_metrics=tuple(self.mlm_metrics), mlm_mode=self.mlm_mode, mlm_min_mass=self.mlm_min_mass,
            mlm_prompt_set=self.mlm_prompt_set or None, mlm_vision_tower=self.mlm_vision_tower or None,
            mlm_pad_to_square={"": None, "true": True, "false": False}[self.mlm_pad_to_square.strip().lower()],
            aitqe_model=self.aitqe_model or None, device=self.device or None,
            batch_size=self.batch_size, trust_remote_code=tuple(self.trust_remote_code))

    def scorers(self) -> tuple[Scorer, ...]:
        """Built once per process for a given configuration."""
        return _scorers(self.as_profile())


@lru_cache(maxsize=4)
def _rewriter(kind: str, model: str, prompt: str, max_new_tokens: int, num_beams: int, batch_size: int,
              device: str, trust_remote_code: bool) -> Rewriter:
    generation = {"max_new_tokens": max_new_tokens} if max_new_tokens > 0 else {}
    if kind == "cleaner":
        from curation_pipeline.rewriting.cleaner import CaptionCleaner

        return CaptionCleaner()
    if kind == "vlm":
        from curation_pipeline.rewriting.vlm import VlmRewriter

        return VlmRewriter(model, prompt=prompt or None, num_beams=num_beams, batch_size=batch_size,
                           device=device or None, trust_remote_code=trust_remote_code, **generation)
    if kind == "aitqe":
        from curation_pipeline.rewriting.aitqe import AitqeRewriter

        return AitqeRewriter(model, instruction=prompt or None, batch_size=batch_size, device=device or None,
                             trust_remote_code=trust_remote_code, **generation)
    raise ValueError(f"unknown rewriter kind {kind!r}; choose cleaner, vlm or aitqe")


class RewriterResource(dg.ConfigurableResource):
    """Who rewrites weak captions: the offline rule-based cleaner, a chat VLM, or AITQE."""

    kind: str = Field(default="cleaner", description="cleaner | vlm | aitqe")
    model: str = Field(default="", description="HuggingFace id or local path (vlm, aitqe).")
    prompt: str = Field(default="", description="Rewrite prompt with a {caption} placeholder (vlm) or AITQE instruction; empty = built-in.")
    max_new_tokens: int = Field(default=0, description="Generation budget per caption; 0 = the rewriter's default (vlm 64, aitqe 384 as its reference).")
    num_beams: int = Field(default=1, description="1 = greedy; >1 = beam search.")
    batch_size: int = Field(default=8, description="Captions rewritten together.")
    device: str = Field(default="", description="cuda | mps | cpu; empty picks automatically.")
    trust_remote_code: bool = Field(default=False, description="Allow a chat VLM rewriter's own code (never needed for the released AITQE checkpoint).")

    def rewriter(self) -> Rewriter:
        return _rewriter(self.kind, self.model, self.prompt, self.max_new_tokens, self.num_beams, self.batch_size,
                         self.device, self.trust_remote_code)


class PolicyResource(dg.ConfigurableResource):
    """Decision thresholds, rewrite acceptance rules and drift limits."""

    quality_column: str = Field(default="text_quality", description="Score that decides keep / rewrite / drop.")
    keep_threshold: float = Field(default=95.0, description="Keep the caption as is at or above this score (95: any fired text rule sends it to the rewriter).")
    drop_threshold: float = Field(default=65.0, description="Drop pairs whose final caption scores below this (65: one-word captions and stacked problems).")
    keep_fraction: float = Field(default=-1.0, description="Keep as is only this top fraction by quality_column, ONE cut over all scored shards (floor(N*f), ties by a stable hash of shard and key); materialize selection_cut with the same value before caption_decisions (-1 = off).")
    rewrite: bool = Field(default=True, description="False turns the pipeline into a plain filter.")
    keep_expression: str = Field(default="", description='Extra keep condition, e.g. "mlm_itm >= 66 and mlm_odf >= 20".')
    require_image_rules: bool = Field(default=True, description="Drop images failing DataComp's size/aspect rules.")
    caption_rules_mark_weak: bool = Field(default=True, description="Failing DataComp caption rules marks a caption weak.")
    fallback: str = Field(default="keep_original", description="After a rejected rewrite: keep_original or drop.")
    min_improvement: float = Field(default=1.0, description="A rewrite must raise the score by this much.")
    max_edit_ratio: float = Field(default=-1.0, description="Minimality: max share of words changed (-1 = off).")
    min_length_ratio: float = Field(default=-1.0, description="Minimality: min rewritten/original words (-1 = off).")
    max_length_ratio: float = Field(default=-1.0, description="Minimality: max rewritten/original words (-1 = off).")
    min_similarity: float = Field(default=-1.0, description="Minimality: min MiniLM cosine to the original (-1 = off).")
    nsfw_drop: float = Field(default=0.8, description="Drop at or above this NSFW probability.")
    nsfw_review: float = Field(default=0.2, description="Report (not drop) from this NSFW probability.")
    max_text_area: float = Field(default=-1.0, description="Drop images with more OCR text area than this (-1 = off).")
    min_sharpness: float = Field(default=-1.0, description="Drop images blurrier than this Laplacian variance (-1 = off).")
    min_brightness: float = Field(default=0.03, description="Drop nearly black images (-1 = off).")
    max_brightness: float = Field(default=0.97, description="Drop nearly white images (-1 = off).")
    min_entropy: float = Field(default=1.0, description="Drop flat images (bits; -1 = off).")
    drop_duplicates: bool = Field(default=True, description="Keep one pair per duplicate group.")
    drift_max_kl: float = Field(default=0.25, description="Caption-length drift: max KL divergence.")
    drift_mean_ratio_min: float = Field(default=0.8, description="Caption-length drift: min final/original mean.")
    drift_mean_ratio_max: float = Field(default=1.25, description="Caption-length drift: max final/original mean.")
    drift_quantile_tolerance: float = Field(default=0.5, description="Caption-length drift: relative quantile band.")
    drift_quantile_floor: float = Field(default=3.0, description="Caption-length drift: quantile band never narrower than this many words.")
    warn_drop_share: float = Field(default=0.9, description="The kept_share check warns (never blocks) above this dropped share, or when a shard keeps nothing.")
    drift_min_rows: int = Field(default=20, description="Caption-length drift: fewer kept pairs pass with a note.")

    @staticmethod
    def _opt(value: float) -> float | None:
        return None if value < 0 else value

    def decision_policy(self) -> DecisionPolicy:
        o = self._opt
        return DecisionPolicy(
            quality_column=self.quality_column, keep_threshold=self.keep_threshold,
            drop_threshold=self.drop_threshold, rewrite=self.rewrite, keep_expression=self.keep_expression or None,
            keep_fraction=o(self.keep_fraction),
            require_image_rules=self.require_image_rules, caption_rules_mark_weak=self.caption_rules_mark_weak,
            fallback=self.fallback, min_improvement=self.min_improvement, nsfw_drop=self.nsfw_drop,
            nsfw_review=self.nsfw_review, max_text_area=o(self.max_text_area), min_sharpness=o(self.min_sharpness),
            min_brightness=o(self.min_brightness), max_brightness=o(self.max_brightness),
            min_entropy=o(self.min_entropy), drop_duplicates=self.drop_duplicates)

    def acceptance_rules(self) -> AcceptanceRules:
        o = self._opt
        return AcceptanceRules(min_improvement=self.min_improvement, max_edit_ratio=o(self.max_edit_ratio),
                               min_length_ratio=o(self.min_length_ratio), max_length_ratio=o(self.max_length_ratio),
                               min_similarity=o(self.min_similarity))

    def drift_thresholds(self) -> DriftThresholds:
        return DriftThresholds(max_kl=self.drift_max_kl, mean_ratio_min=self.drift_mean_ratio_min,
                               mean_ratio_max=self.drift_mean_ratio_max,
                               quantile_tolerance=self.drift_quantile_tolerance,
                               quantile_abs_floor=self.drift_quantile_floor, min_rows=self.drift_min_rows)
