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
