"""CLIPScore (Hessel et al. 2021) over CLIP and SigLIP / SigLIP2 dual encoders.

The raw cosine is stored beside ``2.5 * max(cos, 0)`` because DataComp-style selection thresholds
it; sigmoid-trained models also get their calibrated match probability (CLIP has none). Precision
follows ``clipscore.py`` (fp32 on CPU, fp16 on GPU); embeddings are compared in fp32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from curation_pipeline.models.aspect import bound_aspect, model_input
from curation_pipeline.models.loading import inference_mode, load_clip, model_ident, pick_device
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import Scorer, scorable
from curation_pipeline.scoring.columns import ScoreColumn, error_column
from curation_pipeline.shards.reader import stored_image

if TYPE_CHECKING:
    import torch

CLIPSCORE_WEIGHT = 2.5
CLIPSCORE_PREFIX = "A photo depicts"
# dtype names -> torch's (resolved on use: importing this module does not import torch)
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
# image-side inputs a processor may return; SigLIP2 NaFlex adds the last two
IMAGE_INPUTS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")


def clipscore(cosine: np.ndarray) -> np.ndarray:
    return CLIPSCORE_WEIGHT * np.maximum(cosine, 0.0)


def centre_offset(excess: int) -> int:
    """torchvision's ``CenterCrop`` offset, ``int(round(excess / 2.0))`` (half to even), not transformers' floor."""
    return int(round(excess / 2.0))


def clipscore_side(image_processor) -> int | None:
    """clipscore.py's ``n_px`` for a CLIP-style processor (short side resized, centre-cropped square);
    None for one that resizes otherwise (SigLIP's fixed size, NaFlex), which keeps its own processor."""
    size = getattr(image_processor, "size", None)
    crop = getattr(image_processor, "crop_size", None)
    if (size is None or not size.get("shortest_edge") or size.get("longest_edge") or crop is None
            or not getattr(image_processor, "do_center_crop", False)):
        return None
    if not (crop.get("height") == crop.get("width") == size.get("shortest_edge")):
        raise ValueError(f"clipscore.py resizes and crops to one side; this processor resizes to {size} "
                         f"and crops to {crop}")
    return int(crop["height"])


def clipscore_pixels(image, n_px: int, mean, std, out: np.ndarray | None = None) -> np.ndarray:
    """clipscore.py's transform (openai/CLIP ``_transform``) of a PIL image in its stored mode, as
    torchvision does it, without torchvision: short side to ``n_px`` (long ``int(n_px * long / short)``),
    bicubic in the image's own mode (PIL: P and 1 nearest, RGBA premultiplied), centre crop (rounded
    offset), then RGB, ``/ 255`` and normalised in float32 (``normalising_table``). (3, n_px, n_px), written
    into ``out`` when given (a row of the batch: no copy to stack)."""
    from PIL import Image

    width, height = image.size
    short, long = min(width, height), max(width, height)
    resized = (n_px, int(n_px * long / short))
    target = resized if width <= height else resized[::-1]
    if target != image.size:
        image = image.resize(target, Image.Resampling.BICUBIC)
    left, top = centre_offset(target[0] - n_px), centre_offset(target[1] - n_px)
    rgb = np.asarray(image.crop((left, top, left + n_px, top + n_px)).convert("RGB"), dtype=np.uint8)
    table = normalising_table(*(tuple(np.asarray(v, dtype=np.float64).reshape(-1).tolist()) for v in (mean, std)))
    out = np.empty((3, n_px, n_px), dtype=np.float32) if out is None else out
    for channel in range(3):
        table[channel].take(rgb[:, :, channel], out=out[channel])
    return out


@functools.lru_cache(maxsize=8)
def normalising_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(v / 255 - mean) / std`` in float32 for every byte value v, per channel (3, 256): the same float32
    operations as on each pixel, so bit-for-bit the same values, looked up at a third of the cost."""
    def per_channel(name: str, value) -> np.ndarray:  # one value for all three channels broadcasts, as per pixel
        array = np.asarray(value, dtype=np.float32).reshape(-1)
        if array.size not in (1, 3):
            raise ValueError(f"the image processor's {name} has {array.size} values; RGB pixels need 1 or 3")
        return np.broadcast_to(array, (3,))[:, None]

    values = np.arange(256, dtype=np.float32)[None, :] / np.float32(255)
    table = (values - per_channel("image_mean", mean)) / per_channel("image_std", std)
    table.flags.writeable = False  # shared by every call
    return table


def clip_text(text: str) -> str:
    """What ``clip.tokenize`` (openai/CLIP's ``basic_clean``, clipscore.py's tokenizer) makes of a text before
    its BPE, and transformers' CLIP tokenizer does not: mojibake and curly quotes repaired (ftfy), HTML entities
    decoded twice ("Tom &amp; Jerry" is "Tom & Jerry"). Its whitespace and case rules are the tokenizer's own."""
    import html

    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``auto`` (or None / ""): fp16 on a GPU (cuda, mps), fp32 elsewhere, as clipscore.py runs."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.float16 if device.startswith(("cuda", "mps")) else torch.float32
    try:
        return getattr(torch, DTYPES[dtype.lower()])
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(DTYPES)}") from None


@dataclass
class ClipInputs:
    """A batch made ready for the model: per pair the reason it cannot be scored (or None), and
    per forward batch its rows with the processor's tensors."""

    pairs: int
    errors: list[str | None]
    chunks: list[tuple[list[int], object]] = field(default_factory=list)


def _features(output) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is the projected embedding."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def _clip_outputs(name: str = "clip") -> tuple[ScoreColumn, ...]:
    return (ScoreColumn(f"{name}_score", "CLIPScore: 2.5 * max(cosine, 0).", range=(0, 2.5)),
            ScoreColumn(f"{name}_cosine", "Cosine of the image and caption embeddings.", range=(-1, 1)),
            ScoreColumn(f"{name}_sigmoid", "SigLIP's match probability (sigmoid models only).", range=(0, 1)),
            error_column(name))


class ClipScorer(Scorer):
    """``<name>_score``, ``_cosine``, ``_sigmoid`` (sigmoid models only) and ``_error``; ``prefix``
    None or "" scores the caption alone. Non-default prefix/dtype are appended to ``version``."""

    name = "clip"  # an instance's own: its columns' prefix
    # the code's: CLIP's (``__init__`` says why each), which an instance's version starts with and adds its model
    # and settings to; a SigLIP instance's starts with ``siglip_version``, its inputs having changed less often.
    # quality_scores' code version reads ``version`` only: a change to SigLIP's bumps both.
    version = "4"
    siglip_version = "3"
    needs_images = True
    outputs = _clip_outputs()  # with name="clip"; an instance without a sigmoid head writes no _sigmoid

    @classmethod
    def from_profile(cls, profile) -> "ClipScorer":
        return cls(profile.clip_model, device=profile.device, batch_size=profile.batch_size, dtype=profile.clip_dtype,
                   prefix=CLIPSCORE_PREFIX if profile.clip_prefix else None)

    def __init__(self, model: str, *, device: str | None = None, dtype: str | torch.dtype | None = "auto",
                 batch_size: int = 32, prefix: str | None = CLIPSCORE_PREFIX, name: str = "clip"):
        import torch

        self.name = name
        self.batch_size = batch_size
        self.prefix = prefix.strip() if prefix else None
        device = pick_device(device)
        self.dtype = resolve_dtype(dtype, device)
        self.model, self.processor = load_clip(model, device=device, dtype=self.dtype)
        self.device = next(self.model.parameters()).device
        # SigLIP's sigmoid loss gives a calibrated match probability; CLIP's softmax does not.
        self.has_sigmoid = getattr(self.model, "logit_bias", None) is not None
        self.columns = [c.name for c in _clip_outputs(name) if self.has_sigmoid or not c.name.endswith("_sigmoid")]
        settings = [] if self.prefix == CLIPSCORE_PREFIX else [f"prefix={self.prefix or 'none'}"]
        if self.dtype != torch.float32:
            settings.append(str(self.dtype).removeprefix("torch."))
        image_processor = getattr(self.processor, "image_processor", None)
        self._n_px = clipscore_side(image_processor)
        # 3: images as clipscore.py loads them (no EXIF rotation, alpha dropped: ``model_image``)
        # 4 (CLIP; SigLIP's inputs are unchanged): and transforms them (``clipscore_pixels``: resized in
        #    the file's own mode, then RGB; the crop offset rounded as torchvision's, not HF's floor), and
        #    cleans the text as clip.tokenize does (``clip_text``)
        code = ClipScorer.siglip_version if self._n_px is None else ClipScorer.version
        self.version = ":".join([f"{code}:{model_ident(model)}", *settings])
        # SigLIP was trained on texts padded to the full context; CLIP on the longest in batch.
        self._padding = "max_length" if "siglip" in self.model.config.model_type else True
        self._max_length = self.model.config.text_config.max_position_embeddings
        # NaFlex (SigLIP2): the processor's class defaults (patch 16, 256 patches) override the
        # checkpoint's own image-processor settings unless they are passed at call time.
        self._image_kwargs = {k: getattr(image_processor, k) for k in ("patch_size", "max_num_patches")
                              if getattr(image_processor, "max_num_patches", None) is not None
                              and getattr(image_processor, k, None) is not None}

    def _text(self, caption: str) -> str:
        text = f"{self.prefix} {caption.strip()}" if self.prefix else caption.strip()
        return clip_text(text) if self._n_px is not None else text  # clipscore.py's model: its tokenizer's cleaning

    def inputs(self, images: list, texts: list[str]):
        """The tensors for one forward batch (CPU): the tokens, and the pixels (``clipscore_pixels`` for
        CLIP, given the stored decode; the processor's own for SigLIP, given the RGB decode)."""
        if self._n_px is None:
            return self.processor(text=texts, images=images, return_tensors="pt", padding=self._padding,
                                  truncation=True, max_length=self._max_length, **self._image_kwargs)
        import torch

        image_processor = self.processor.image_processor
        inputs = self.processor(text=texts, return_tensors="pt", padding=self._padding, truncation=True,
                                max_length=self._max_length)
        pixels = np.empty((len(images), 3, self._n_px, self._n_px), dtype=np.float32)
        for row, image in enumerate(images):
            clipscore_pixels(image, self._n_px, image_processor.image_mean, image_processor.image_std, out=pixels[row])
        inputs["pixel_values"] = torch.from_numpy(pixels)
        return inputs

    @inference_mode
    def forward(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised fp32 image and text embeddings from the processor's tensors."""
        import torch

        inputs = inputs.to(self.device)
        image_kwargs = {k: inputs[k] for k in IMAGE_INPUTS if k in inputs}
        image_kwargs["pixel_values"] = image_kwargs["pixel_values"].to(self.model.dtype)
        image_emb = _features(self.model.get_image_features(**image_kwargs))
        text_kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        text_emb = _features(self.model.get_text_features(**text_kwargs))
        return (torch.nn.functional.normalize(image_emb.float(), dim=-1),
                torch.nn.functional.normalize(text_emb.float(), dim=-1))

    def sigmoid(self, cosine: np.ndarray) -> np.ndarray:
        """SigLIP's match probability from the cosine: sigmoid(exp(logit_scale) * cos + logit_bias)."""
        import torch

        scale = float(self.model.logit_scale.detach().float().exp().item())
        bias = float(self.model.logit_bias.detach().float().item())
        return torch.sigmoid(torch.from_numpy(scale * np.asarray(cosine, dtype=np.float64) + bias)).numpy()

    def prepare(self, batch: PairBatch) -> ClipInputs:
        """Which pairs can be scored, and each forward batch's tensors: CPU work, run in the prefetch
        thread while the model scores the previous batch. An image of extreme aspect ratio is first
        reduced to what the centre crop sees (``bound_aspect``), so its cost is bounded."""
        valid, errors = scorable(batch)
        image_processor = getattr(self.processor, "image_processor", None)
        chunks = []
        for start in range(0, len(valid), self.batch_size):
            rows = valid[start:start + self.batch_size]
            images = [model_input(batch.images[i], image_processor) if self._n_px is None
                      else bound_aspect(stored_image(batch.images[i]), image_processor, crop_offset=centre_offset)
                      for i in rows]
            chunks.append((rows, self.inputs(images,
                                             [self._text(batch.captions[i]) for i in rows])))
        return ClipInputs(len(batch), errors, chunks)

    def score(self, batch: PairBatch, prepared: ClipInputs | None = None) -> pd.DataFrame:
        """Score a batch; ``prepared`` is ``prepare(batch)`` if it was already made (prefetch)."""
        prepared = prepared if prepared is not None else self.prepare(batch)
        if prepared.pairs != len(batch):
            raise ValueError(f"prepared inputs are for {prepared.pairs} pairs, the batch has {len(batch)}")
        cosine = np.full(len(batch), np.nan)
        for rows, inputs in prepared.chunks:
            image_emb, text_emb = self.forward(inputs)
            cosine[rows] = (image_emb * text_emb).sum(-1).cpu().numpy()
        columns = {f"{self.name}_score": clipscore(cosine), f"{self.name}_cosine": cosine}
        if self.has_sigmoid:
            columns[f"{self.name}_sigmoid"] = self.sigmoid(cosine)
        columns[f"{self.name}_error"] = pd.Series(prepared.errors, dtype=object)
        return pd.DataFrame(columns)[list(self.columns)]
