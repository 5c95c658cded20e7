"""BatchNorm policy shared by the backbones.

DeepLab-v2 trains with batch size 1, so BatchNorm affine parameters are always frozen (as in the reference
implementations). Statistics are a policy:

- ``frozen`` (default): running statistics are fixed too; BN is a fixed affine map. Forwarding target images
  then cannot leak target statistics into the model, so source-only stays source-only.
- ``train``: batch statistics and running-average updates, the behaviour of AdaptSegNet/ADVENT (BN left in
  train mode). Useful when a small backbone is trained from scratch, where fixed identity statistics would
  leave it without normalisation.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

BN_MODES = ("frozen", "train")


def frozen_affine_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    for p in bn.parameters():
        p.requires_grad_(False)
    return bn


def check_bn_mode(mode: str) -> str:
    if mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {mode!r}")
    return mode


def apply_bn_mode(module: nn.Module, mode: str) -> None:
    """Put every BatchNorm of `module` in eval mode when statistics are frozen (call after .train())."""
    if mode == "frozen":
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def estimate_statistics(module: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Running BatchNorm statistics as the plain average over `batches`, whatever the BN mode (a model's own
    train() keeps frozen BN in eval mode, so torch's update_bn would leave them untouched); each BatchNorm's
    mode and momentum are restored after. Target statistics (AdaBN) use it, and so do random weights, whose
    fresh statistics (mean 0, variance 1) normalise nothing: through R101 the logits reach ~1e5, past fp16's
    range."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    state = [(bn.training, bn.momentum) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.train()
    with torch.no_grad():
        for x in batches:
            module(x)
    for bn, (training, momentum) in zip(bns, state):
        bn.train(training)
        bn.momentum = momentum
