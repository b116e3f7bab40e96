"""The unit everything works on: a batch of image-text pairs from one shard."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

from PIL import Image


@dataclass
class PairBatch:
    """Parallel lists, one entry per pair, in shard order. ``images``: decoded RGB, or None where there is
    no usable image (scorers return NaN, never a guess); when no scorer reads pixels, verified but
    unloaded images in their stored mode and orientation (``decode_image(full="verify")``: only an
    orientation-free use of ``.size`` matches a full decode); ``captions``: None for no caption;
    ``original_sizes``: (width, height) before resizing as the json records it, or None.
    """

    keys: list[str]
    captions: list[str | None]
    images: list[Image.Image | None] = field(default_factory=list)
    original_sizes: list[tuple[int, int] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.images:
            self.images = [None] * len(self.keys)
        if not self.original_sizes:
            self.original_sizes = [None] * len(self.keys)
        if not (len(self.keys) == len(self.captions) == len(self.images) == len(self.original_sizes)):
            raise ValueError(f"PairBatch lists differ in length: keys={len(self.keys)} captions={len(self.captions)} "
                             f"images={len(self.images)} original_sizes={len(self.original_sizes)}")

    def __len__(self) -> int:
        return len(self.keys)

    def chunks(self, size: int) -> Iterator["PairBatch"]:
        for start in range(0, len(self), size):
            stop = start + size
            yield PairBatch(self.keys[start:stop], self.captions[start:stop], self.images[start:stop],
                            self.original_sizes[start:stop])


R = TypeVar("R")


class ContractError(RuntimeError):
    """A model broke its contract (e.g. returned another number of rows): reported, never split."""


def split_on_failure(batch: PairBatch, run: Callable[[PairBatch], R], failed: Callable[[PairBatch, Exception], R],
                     combine: Callable[[list[R]], R], min_batch: int = 1) -> R:
    """``run(batch)``; if a model raises (out of memory, one bad pair), halve the batch down to
    ``min_batch`` pairs and hand what still fails to ``failed``, so one pair never stops a shard. A model
    that fails on every pair is not one bad pair: the caller must count what ``failed`` got (scoring's
    ``scores_complete`` check fails such a shard)."""
    try:
        return run(batch)
    except ContractError:
        raise
    except Exception as exc:  # model code raises anything, torch OOM included
        if len(batch) <= min_batch:
            return failed(batch, exc)
        half = max(len(batch) // 2, 1)
        return combine([split_on_failure(part, run, failed, combine, min_batch) for part in batch.chunks(half)])
