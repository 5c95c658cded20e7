"""Weight Transfer Module (paper Eqs. 6-9).

WTM_i is a C_in x C_in 1x1 convolution, initialised to the identity, that treats each ASPP kernel of
Dec_i (shape num_classes x C_in x 3 x 3) as an input map with C_in channels:

    W_{Dec_i^T} = WTM_i * W_{Dec_i}                         (Eq. 6)
    W^T[o, c, h, w] = sum_k M[c, k] W[o, k, h, w]

One WTM per level transforms all four branches; biases are shared with Dec_i (the paper transforms only the
kernels). Dec_i^T reads the same features as Dec_i (Eq. 7) and is trained only by the adversarial loss
through D_wtm (Eq. 9); at deployment Dec_2^T is folded once into a plain ASPP (``fold_decoder``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .aspp import ASPP


class WeightTransfer(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))

    @property
    def matrix(self) -> torch.Tensor:
        return self.conv.weight[:, :, 0, 0]

    def forward(self, kernel: torch.Tensor) -> torch.Tensor:
        """Eq. 6 for one kernel (num_classes, C_in, kh, kw): a 1x1 conv over the kernel's C_in axis."""
        return F.conv2d(kernel, self.conv.weight)


def transferred_kernels(decoder: ASPP, wtm: WeightTransfer, kernel_grad: bool = True) -> list[torch.Tensor]:
    """Dec^T kernels. With ``kernel_grad=False`` the adversarial loss of Eq. 9 updates only WTM (and the
    encoder), not the original kernels."""
    return [wtm(k if kernel_grad else k.detach()) for k in decoder.kernels()]


@torch.no_grad()
def fold_decoder(decoder: ASPP, wtm: WeightTransfer) -> ASPP:
    """A plain ASPP whose kernels are the fixed Dec^T kernels: what export ships instead of Dec + WTM."""
    folded = copy.deepcopy(decoder)
    for conv, kernel in zip(folded.active, transferred_kernels(decoder, wtm)):
        conv.weight.copy_(kernel)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded
