"""The token tree: every metric's suffix and the score's digit walk, appended to a cached prompt
in one forward pass (how four metrics cost two model calls per batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from curation_pipeline.scoring.mlm.score import ScoreTokens

if TYPE_CHECKING:
    import torch


@dataclass
class TreeState:
    """A batch of sequences in the KV cache: which cached columns each row may attend to,
    and the text position its next token takes."""

    cache: object
    visible: torch.Tensor  # [rows, cached columns] bool
    next_pos: torch.Tensor  # [rows] long


@dataclass
class TokenTree:
    """Tokens appended after the cached prompt, as a tree (each node sees its ancestors and itself): one
    branch per metric suffix, under each the digits "1".."9" and "0" under "1" (``digit_split_expectation``)."""

    ids: list[int]
    ancestors: torch.Tensor  # [nodes, nodes] bool, self included
    depth: torch.Tensor  # [nodes] long
    reads: list[tuple[int, list[int], int]]  # per branch: (last suffix node or -1 = prompt end, digit nodes, zero)
    keep: list[int]  # nodes whose next-token distribution is read

    @classmethod
    def build(cls, suffixes: list[list[int]], tokens: ScoreTokens) -> TokenTree:
        import torch

        ids, parents = [], []

        def add(token: int, parent: int) -> int:
            ids.append(token)
            parents.append(parent)
            return len(ids) - 1

        reads = []
        for suffix in suffixes:
            last = -1
            for token in suffix:
                last = add(token, last)
            if tokens.kind == "whole":
                reads.append((last, [], -1))
                continue
            branches = [add(tokens.ids[d], last) for d in range(1, 10)]
            reads.append((last, branches, add(tokens.ids[0], branches[0])))
        n = len(ids)
        ancestors = torch.eye(n, dtype=torch.bool)
        depth = torch.zeros(n, dtype=torch.long)
        for node, parent in enumerate(parents):
            if parent >= 0:
                ancestors[node] |= ancestors[parent]
                depth[node] = depth[parent] + 1
        keep = sorted({node for last, branches, zero in reads for node in (last, *branches, zero) if node >= 0})
        return cls(ids, ancestors, depth, reads, keep)
