"""ASPP decoder of DeepLab-v2 (the paper's Dec1 / Dec2): parallel dilated 3x3 convs to class scores, summed.

All four branches are summed. AdaptSegNet's head returns inside its loop, so its checkpoints were trained
with only the dilation-6 and -12 branches (the other two exist in the file but are unused);
``num_active=2`` reproduces that for such checkpoints, ADVENT and this project use 4.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DILATIONS = (6, 12, 18, 24)


def aspp_forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                 dilations: Sequence[int]) -> torch.Tensor:
    """Functional ASPP: lets Dec^T run with WTM-transformed kernels while gradients reach WTM and Dec."""
    out = None
    for w, b, d in zip(weights, biases, dilations):
        y = F.conv2d(x, w, b, padding=d, dilation=d)
        out = y if out is None else out + y
    return out


class ASPP(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, dilations: Sequence[int] = DILATIONS,
                 num_active: int = 4):
        super().__init__()
        if not 1 <= num_active <= len(dilations):
            raise ValueError(f"aspp_branches must be in 1..{len(dilations)}, got {num_active}")
        self.dilations = tuple(dilations)
        self.num_active = num_active
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in self.dilations
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0.0, 0.01)  # as the references
            nn.init.zeros_(conv.bias)

    @property
    def active(self) -> list[nn.Conv2d]:
        return list(self.branches[: self.num_active])

    def kernels(self) -> list[torch.Tensor]:
        return [conv.weight for conv in self.active]

    def biases(self) -> list[torch.Tensor]:
        return [conv.bias for conv in self.active]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aspp_forward(x, self.kernels(), self.biases(), self.dilations[: self.num_active])

    def forward_with_kernels(self, x: torch.Tensor, kernels: Sequence[torch.Tensor]) -> torch.Tensor:
        return aspp_forward(x, kernels, self.biases(), self.dilations[: self.num_active])
