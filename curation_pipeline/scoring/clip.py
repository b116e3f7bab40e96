"""CLIPScore (Hessel et al. 2021) over CLIP and SigLIP dual encoders.

``score = 2.5 * max(cos, 0)`` with the "A photo depicts" prefix; the raw cosine is
stored beside it because DataComp-style selection thresholds the cosine itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from curation_pipeline.models.loading import load_clip
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import Scorer

CLIPSCORE_WEIGHT = 2.5


def clipscore(cosine: np.ndarray) -> np.ndarray:
    return CLIPSCORE_WEIGHT * np.maximum(cosine, 0.0)


def _features(output) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is the projected embedding."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


class ClipScorer(Scorer):
    needs_images = True

    def __init__(self, model: str, *, device: str | None = None, dtype=None, batch_size: int = 32,
                 prefix: str | None = "A photo depicts", name: str = "clip"):
        self.name = name
        self.version = f"1:{model}"
        self.columns = (f"{name}_score", f"{name}_cosine", f"{name}_error")
        self.batch_size = batch_size
        self.prefix = prefix
        self.model, self.processor = load_clip(model, device=device, dtype=dtype)
        self.device = next(self.model.parameters()).device
        # SigLIP was trained on texts padded to the full context; CLIP on the longest in batch.
        self._padding = "max_length" if "siglip" in self.model.config.model_type else True
        self._max_length = self.model.config.text_config.max_position_embeddings

    def _text(self, caption: str) -> str:
        return f"{self.prefix} {caption.strip()}" if self.prefix else caption.strip()

    @torch.inference_mode()
    def cosines(self, images: list, texts: list[str]) -> np.ndarray:
        """Cosine between L2-normalised image and text embeddings, one per pair."""
        inputs = self.processor(
            text=texts, images=images, return_tensors="pt", padding=self._padding,
            truncation=True, max_length=self._max_length,
        ).to(self.device)
        dtype = next(self.model.parameters()).dtype
        image_emb = _features(self.model.get_image_features(pixel_values=inputs["pixel_values"].to(dtype)))
        text_kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        text_emb = _features(self.model.get_text_features(**text_kwargs))
        image_emb = torch.nn.functional.normalize(image_emb.float(), dim=-1)
        text_emb = torch.nn.functional.normalize(text_emb.float(), dim=-1)
        return (image_emb * text_emb).sum(-1).cpu().numpy()

    def score(self, batch: PairBatch) -> pd.DataFrame:
        cosine = np.full(len(batch), np.nan)
        errors: list[str | None] = [None] * len(batch)
        valid = []
        for i, (image, caption) in enumerate(zip(batch.images, batch.captions)):
            if image is None:
                errors[i] = "no image"
            elif caption is None or not caption.strip():
                errors[i] = "no caption"
            else:
                valid.append(i)
        for start in range(0, len(valid), self.batch_size):
            rows = valid[start:start + self.batch_size]
            cosine[rows] = self.cosines([batch.images[i].convert("RGB") for i in rows],
                                        [self._text(batch.captions[i]) for i in rows])
        return pd.DataFrame({
            self.columns[0]: clipscore(cosine),
            self.columns[1]: cosine,
            self.columns[2]: pd.Series(errors, dtype=object),
        })
