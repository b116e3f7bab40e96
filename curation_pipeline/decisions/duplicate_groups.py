"""Duplicate groups from the fingerprints ``DuplicateSignals`` stores: which pairs are copies of each
other, and which copy is kept. The pipeline links every shard at once (``decisions/dedup.py``);
``assign_duplicate_groups`` links one shard against a fixed prior.

Links, strongest first: ``exact_pair`` (identical pixels and normalised caption), ``exact_image``
(identical pixels; the best caption survives), ``near_image`` (pHash within ``phash_max_distance``
bits: re-encodes, resizes, small edits) and ``near_caption`` (caption cosine >= ``caption_min_cosine``
and, by default, loosely alike images: alt-text boilerplate such as "image" repeats across unrelated
images).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curation_pipeline.scoring.signals import cpu_threads
from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING
from curation_pipeline.scoring.signals.embedding import EMBED_DIM

# On Flickr photos a JPEG q60 re-encode, a half-size copy or a slight blur moves the pHash by <= 2 bits; a crop
# of more than ~2.5% a side moves it 4-26; the closest different photos sit 12 bits apart (32 typical), and
# sparse text cards of one layout can sit within 6 (README: what counts as a duplicate). A loose
# paraphrase of a caption scores ~0.7 cosine, a light rewording ("plays" / "is playing") 0.96+.
PHASH_MAX_DISTANCE = 6
NEAR_CAPTION_PHASH_MAX_DISTANCE = 12
CAPTION_MIN_COSINE = 0.95

KINDS = (None, "near_caption", "near_image", "exact_image", "exact_pair")  # weakest to strongest
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}
_CHUNK_CELLS = 8_000_000  # vector pairs per numpy step: ~32 MB of float32 scores, bounded memory
_QUERY_BLOCK = 65_536  # hashes per range search

_FINGERPRINTS = ["dup_image_sha", "dup_phash", "dup_caption_norm_sha", CAPTION_EMBEDDING]
_HASHES = _FINGERPRINTS[:3]

# node positions -> their caption vectors (None where there is none), on those positions
Vectors = Callable[[np.ndarray], pd.Series]


def vectors_of(embeddings: pd.Series) -> Vectors:
    """A ``Vectors`` over nodes that carry their embeddings (``dup_caption_emb``) in memory."""
    column = embeddings.reset_index(drop=True)
    return lambda positions: column.iloc[positions].set_axis(positions)


def _hex_to_u64(values: np.ndarray) -> np.ndarray:
    return np.array([int(v, 16) for v in values], dtype=np.uint64)


def _near_hashes(queries: np.ndarray, pool: np.ndarray, max_distance: int) -> tuple[np.ndarray, ...]:
    """(query index, pool index, distance) for distinct hashes within ``max_distance`` bits.
    Exact at any distance (bit-block indexes are not at the loose near-caption distance): FAISS's
    flat binary range search, SIMD popcounts over the pool on the run's threads, about 8x numpy's
    XOR-and-count (10,000 x 110,000 hashes: 0.6 s against 5 s on 2 cores). Queries go in blocks, so
    the hits held at once stay bounded."""
    import faiss  # only a pool-wide dedup needs it

    none = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8))
    if not len(queries) or not len(pool):
        return none
    faiss.omp_set_num_threads(cpu_threads())
    index = faiss.IndexBinaryFlat(64)
    index.add(_as_codes(pool))
    codes, found = _as_codes(queries), [none]
    for start in range(0, len(codes), _QUERY_BLOCK):
        limits, dist, p = index.range_search(codes[start:start + _QUERY_BLOCK], max_distance + 1)  # d < radius
        q = np.repeat(np.arange(start, start + len(limits) - 1), np.diff(limits.astype(np.int64)))
        distinct = dist > 0
        found.append((q[distinct], p[distinct].astype(np.int64), dist[distinct].astype(np.uint8)))
    return tuple(np.concatenate(parts) for parts in zip(*found))


def _as_codes(hashes: np.ndarray) -> np.ndarray:
    """64-bit hashes as FAISS binary codes: 8 bytes a row (a byte view: popcounts of XOR do not see the order)."""
    return np.ascontiguousarray(hashes, dtype=np.uint64).view(np.uint8).reshape(-1, 8)


def _similar_vectors(queries: np.ndarray, pool: np.ndarray, min_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    """(query index, pool index) of unit vectors with cosine >= ``min_cosine``."""
    found = [(np.empty(0, np.int64), np.empty(0, np.int64))]
    step = max(1, _CHUNK_CELLS // max(1, len(queries)))
    for start in range(0, len(pool), step):
        q, p = np.nonzero(queries @ pool[start:start + step].T >= min_cosine)
        found.append((q, p + start))
    return tuple(np.concatenate(parts) for parts in zip(*found))


class _Graph:
    """Nodes are the rows of current, then of prior; an edge joins two duplicates and
    raises both nodes' ``rank`` (strongest link kind) to its kind."""

    def __init__(self, n_nodes: int):
        self.n = n_nodes
        self.rank = np.zeros(n_nodes, dtype=np.int8)
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._kinds: list[np.ndarray] = []

    def link(self, src, dst, kind: str) -> None:
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        self._edges.append((src, dst))
        self._kinds.append(np.full(len(src), _RANK[kind], dtype=np.int8))
        for nodes in (src, dst):
            np.maximum.at(self.rank, nodes, _RANK[kind])

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(src, dst, kind rank) of every link, self-links dropped."""
        src = np.concatenate([e[0] for e in self._edges] + [np.empty(0, np.int64)])
        dst = np.concatenate([e[1] for e in self._edges] + [np.empty(0, np.int64)])
        kind = np.concatenate(self._kinds + [np.empty(0, np.int8)])
        keep = src != dst
        return src[keep], dst[keep], kind[keep]

    def link_equal(self, values: pd.Series, kind: str) -> None:
        """Join every node to the first node sharing its (non-null) value."""
        repeated = values[values.notna() & values.duplicated(keep=False)]
        leaders = repeated[~repeated.duplicated()]
        first = repeated.map(pd.Series(leaders.index, index=leaders.to_numpy()))
        self.link(repeated.index, first.to_numpy(), kind)

    def link_value_pairs(self, values: pd.Series, a: np.ndarray, b: np.ndarray, kind: str) -> None:
        """For each pair of distinct similar values (a[i], b[i]), join every node holding one
        to the first node holding the other: linear in group sizes, never their product."""
        present = values.dropna()
        leaders = present[~present.duplicated()]
        first = pd.Series(leaders.index, index=leaders.to_numpy())
        nodes = pd.DataFrame({"value": present.to_numpy(), "node": present.index})
        for mine, other in ((a, b), (b, a)):
            pairs = pd.DataFrame({"value": mine, "rep": first.loc[other].to_numpy()}).merge(nodes, on="value")
            self.link(pairs["node"].to_numpy(), pairs["rep"].to_numpy(), kind)

    def components(self) -> np.ndarray:
        src, dst, _ = self.edges()
        adjacency = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(self.n, self.n))
        return connected_components(adjacency, directed=False)[1]


def _stack(embeddings: pd.Series) -> np.ndarray:
    vectors = [np.asarray(e, dtype=np.float32) for e in embeddings]
    return np.stack(vectors) if vectors else np.empty((0, EMBED_DIM), np.float32)


def _link_phash(graph: _Graph, nodes: pd.DataFrame, n_current: int, phash_max: int,
                loose_max: int | None, min_cosine: float, vectors: Vectors) -> None:
    """Near images by pHash, and near captions among loosely similar images (``loose_max``).
    Hashes are compared once per distinct value, the current shard's against all."""
    hashes = nodes["dup_phash"]
    graph.link_equal(hashes, "near_image")
    pool = hashes.dropna().unique()
    queries = hashes.iloc[:n_current].dropna().unique()
    if not len(queries):
        return
    q, p, dist = _near_hashes(_hex_to_u64(queries), _hex_to_u64(pool), max(phash_max, loose_max or 0))
    near = dist <= phash_max
    graph.link_value_pairs(hashes, queries[q[near]], pool[p[near]], "near_image")
    if loose_max is None or near.all():
        return
    by_hash = pd.DataFrame({"h": hashes, "node": nodes.index})
    loose = pd.DataFrame({"hq": queries[q[~near]], "hp": pool[p[~near]]})
    pairs = (loose.merge(by_hash.rename(columns={"h": "hq", "node": "u"}), on="hq")
             .merge(by_hash.rename(columns={"h": "hp", "node": "v"}), on="hp"))
    pairs = pairs[(pairs["u"] < n_current) | (pairs["v"] < n_current)]
    emb = vectors(np.union1d(pairs["u"], pairs["v"]))  # only these nodes' vectors are read
    pairs = pairs[emb.reindex(pairs["u"]).notna().to_numpy() & emb.reindex(pairs["v"]).notna().to_numpy()]
    cosine = np.einsum("ij,ij->i", _stack(emb.loc[pairs["u"]]), _stack(emb.loc[pairs["v"]]))
    keep = cosine >= min_cosine
    graph.link(pairs["u"].to_numpy()[keep], pairs["v"].to_numpy()[keep], "near_caption")


def _link_captions(graph: _Graph, nodes: pd.DataFrame, n_current: int, min_cosine: float,
                   vectors: Vectors) -> None:
    """Near captions whatever the images: one embedding per distinct normalised caption."""
    emb = vectors(np.arange(len(nodes)))
    shas = nodes["dup_caption_norm_sha"].where(emb.notna().to_numpy())
    graph.link_equal(shas, "near_caption")
    reps = shas.dropna().drop_duplicates()
    current = reps[reps.index < n_current]
    if current.empty:
        return
    q, p = _similar_vectors(_stack(emb.loc[current.index]), _stack(emb.loc[reps.index]), min_cosine)
    distinct = current.to_numpy()[q] != reps.to_numpy()[p]
    graph.link_value_pairs(shas, current.to_numpy()[q[distinct]], reps.to_numpy()[p[distinct]], "near_caption")


def assign_duplicate_groups(current: pd.DataFrame, prior: pd.DataFrame | None, quality: pd.Series,
                            **thresholds) -> pd.DataFrame:
    """Duplicate groups of one shard's pairs, against each other and against ``prior`` (the pairs
    already kept from earlier shards, with ``shard``), linked by ``duplicate_graph`` (``thresholds``:
    its keyword arguments). ``quality`` (on ``current``'s index, NaN lowest) picks the survivor.

    Returns, on ``current``'s index: ``dup_group`` (None without duplicates; else the kept pair's key,
    or ``shard/key`` of the group's first prior pair), ``dup_kind`` (the row's strongest link),
    ``dup_keep`` (one per group, best quality then smallest key; never when the group holds a prior
    pair) and ``dup_of`` (the group's kept pair; None for that pair and rows without duplicates).
    """
    prior = prior if prior is not None else pd.DataFrame(columns=_FINGERPRINTS + ["shard", "key"])
    nodes = pd.concat([current[_FINGERPRINTS].reset_index(drop=True),
                       prior[_FINGERPRINTS].reset_index(drop=True)], ignore_index=True)
    return _choose_survivors(current, prior, quality, duplicate_graph(nodes, len(current), **thresholds))


def duplicate_graph(
    nodes: pd.DataFrame,
    n_query: int,
    *,
    phash_max_distance: int = PHASH_MAX_DISTANCE,
    caption_min_cosine: float = CAPTION_MIN_COSINE,
    near_caption_requires_near_image: bool = True,
    near_caption_phash_max_distance: int = NEAR_CAPTION_PHASH_MAX_DISTANCE,
    vectors: Vectors | None = None,
) -> _Graph:
    """Links between ``nodes`` (the dup_* columns, any index): exact links among all nodes,
    near links (the costly comparisons) only for the first ``n_query`` nodes against all.

    Caption vectors come from ``vectors`` when given (then ``nodes`` need not carry
    ``dup_caption_emb``: a pool's vectors are most of its bytes, and only the few nodes that a
    comparison needs are read), else from the ``dup_caption_emb`` column."""
    vectors = vectors or vectors_of(nodes[CAPTION_EMBEDDING])
    nodes = nodes[_HASHES].reset_index(drop=True).astype(object)
    nodes["pair"] = nodes["dup_image_sha"].str.cat(nodes["dup_caption_norm_sha"], sep="|")
    graph = _Graph(len(nodes))
    graph.link_equal(nodes["dup_image_sha"], "exact_image")
    graph.link_equal(nodes["pair"], "exact_pair")
    loose = near_caption_phash_max_distance if near_caption_requires_near_image else None
    _link_phash(graph, nodes, n_query, phash_max_distance, loose, caption_min_cosine, vectors)
    if not near_caption_requires_near_image:
        _link_captions(graph, nodes, n_query, caption_min_cosine, vectors)
    return graph


def _choose_survivors(current: pd.DataFrame, prior: pd.DataFrame, quality: pd.Series,
                      graph: _Graph) -> pd.DataFrame:
    n = len(current)
    component = graph.components()
    keys = current["key"].astype(str).to_numpy()
    score = quality.reindex(current.index).to_numpy(dtype=float)
    score = np.where(np.isnan(score), -np.inf, score)

    order = np.lexsort((keys, -score, component[:n]))
    best = pd.Series(keys[order], index=component[:n][order]).groupby(level=0).first()
    prior_first = pd.Series(dtype=object)
    if len(prior):
        labels = (prior["shard"].astype(str) + "/" + prior["key"].astype(str)).to_numpy()
        by_label = np.argsort(labels, kind="stable")
        prior_first = pd.Series(labels[by_label], index=component[n:][by_label]).groupby(level=0).first()

    own = pd.Series(component[:n])
    from_prior = own.isin(prior_first.index).to_numpy()
    survivor = own.map(prior_first).where(from_prior, own.map(best)).to_numpy(dtype=object)
    in_group = graph.rank[:n] > 0
    keep = ~in_group | (~from_prior & (survivor == keys))
    return pd.DataFrame({
        "dup_group": np.where(in_group, survivor, None),
        "dup_kind": np.array(KINDS, dtype=object)[graph.rank[:n]],
        "dup_keep": keep,
        "dup_of": np.where(in_group & ~keep, survivor, None),
    }, index=current.index)
