"""LLaVA-Unified's ``aapool_mlp`` projector, in its own module so that importing ``released`` (which
every run does, for the scorers' declarations) does not import torch."""

from __future__ import annotations

import torch


class PooledProjector(torch.nn.Module):
    """The patch grid average-pooled to ``tokens`` cells (``AdaptiveAvgPool2d``), then the same
    Linear-GELU-Linear as the native projector."""

    def __init__(self, mlp: torch.nn.Module, tokens: int):
        super().__init__()
        side = int(round(tokens ** 0.5))
        if side * side != tokens:
            raise ValueError(f"mm_num_image_tokens must be a square number, got {tokens}")
        self.pool = torch.nn.AdaptiveAvgPool2d((side, side))
        self.linear_1, self.act, self.linear_2 = mlp.linear_1, mlp.act, mlp.linear_2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, length, dim = features.shape
        side = int(round(length ** 0.5))
        grid = features.transpose(1, 2).reshape(batch, dim, side, side)
        pooled = self.pool(grid).flatten(2).transpose(1, 2)
        return self.linear_2(self.act(self.linear_1(pooled)))
