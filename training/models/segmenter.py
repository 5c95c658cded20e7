"""The two-level segmentation network G = (Enc, Dec1, Dec2) of the paper, with optional WTM per level.

Enc_1 is the encoder up to the low-level features (ResNet layer3 / VGG conv5_3), Enc_2 the rest (layer4 /
fc7). Dec1 and Dec2 are ASPP heads. Forward returns named maps at feature resolution (stride 8):
``low`` = Dec1(Enc_1(x)), ``high`` = Dec2(Enc(x)), and for each level with a WTM the transferred maps
``low_t`` = Dec1^T(Enc_1(x)), ``high_t`` = Dec2^T(Enc(x)) (Eq. 7).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .aspp import ASPP
from .norm import apply_bn_mode, check_bn_mode
from .wtm import WeightTransfer, transferred_kernels

LEVELS = ("low", "high")


def parse_wtm_levels(wtm: str | Iterable[str] | None) -> tuple[str, ...]:
    """'none' | 'low' | 'high' | 'both' | an iterable of levels -> a sorted tuple of levels."""
    if wtm is None or wtm is False:
        return ()
    if isinstance(wtm, str):
        named = {"none": (), "": (), "low": ("low",), "high": ("high",), "both": LEVELS, "dec1": ("low",),
                 "dec2": ("high",)}
        if wtm.lower() not in named:
            raise ValueError(f"wtm must be one of none/low/high/both, got {wtm!r}")
        return named[wtm.lower()]
    levels = tuple(wtm)
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown WTM level(s) {sorted(unknown)}; levels are {LEVELS}")
    return tuple(lv for lv in LEVELS if lv in levels)


class TwoLevelSegmenter(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int, aspp_branches: int = 4,
                 wtm: str | Iterable[str] | None = None, bn_mode: str = "frozen", wtm_kernel_grad: bool = True):
        super().__init__()
        self.encoder = encoder
        self.num_classes = num_classes
        self.bn_mode = check_bn_mode(bn_mode)
        self.wtm_kernel_grad = wtm_kernel_grad
        self.dec1 = ASPP(encoder.low_channels, num_classes, num_active=aspp_branches)
        self.dec2 = ASPP(encoder.high_channels, num_classes, num_active=aspp_branches)
        levels = parse_wtm_levels(wtm)
        self.wtm1 = WeightTransfer(encoder.low_channels) if "low" in levels else None
        self.wtm2 = WeightTransfer(encoder.high_channels) if "high" in levels else None
        self.train()

    @property
    def wtm_levels(self) -> tuple[str, ...]:
        return tuple(lv for lv, m in zip(LEVELS, (self.wtm1, self.wtm2)) if m is not None)

    def train(self, mode: bool = True) -> "TwoLevelSegmenter":
        super().train(mode)
        apply_bn_mode(self, self.bn_mode)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f1, f2 = self.encoder(x)
        out = {"low": self.dec1(f1), "high": self.dec2(f2)}
        for name, feat, dec, wtm in (("low_t", f1, self.dec1, self.wtm1), ("high_t", f2, self.dec2, self.wtm2)):
            if wtm is not None:
                out[name] = dec.forward_with_kernels(feat, transferred_kernels(dec, wtm, self.wtm_kernel_grad))
        return out
