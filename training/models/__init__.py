"""`build_model(arch, num_classes, **options)`: the one way to construct the paper's networks."""
from __future__ import annotations

from .aspp import ASPP, aspp_forward
from .discriminator import Discriminator
from .resnet import DeepLabResNet
from .segmenter import TwoLevelSegmenter, parse_wtm_levels
from .vgg import DeepLabVGG16
from .wtm import WeightTransfer, fold_decoder, transferred_kernels

ARCHS = ("deeplabv2-r101", "deeplabv2-r50", "deeplabv2-r18", "deeplabv2-vgg16")


def build_model(arch: str, num_classes: int = 19, *, width: float = 1.0, aspp_branches: int = 4,
                wtm=None, bn_mode: str = "frozen", wtm_kernel_grad: bool = True) -> TwoLevelSegmenter:
    """Build a two-level DeepLab-v2.

    arch: one of ARCHS. width: channel multiplier (1.0 = the paper's sizes; small values for CPU tests).
    aspp_branches: 4 (default) or 2 for AdaptSegNet-trained checkpoints. wtm: 'none'|'low'|'high'|'both'.
    bn_mode: 'frozen' (default) or 'train' (see training.models.norm). wtm_kernel_grad: whether the WTM
    adversarial loss (Eq. 9) also updates the original decoder kernels.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if arch == "deeplabv2-vgg16":
        encoder = DeepLabVGG16(width=width)
    else:
        encoder = DeepLabResNet(layout=arch.rsplit("-", 1)[1], base_width=max(1, int(round(64 * width))))
    model = TwoLevelSegmenter(encoder, num_classes, aspp_branches=aspp_branches, wtm=wtm, bn_mode=bn_mode,
                              wtm_kernel_grad=wtm_kernel_grad)
    # What it takes to rebuild this model from a checkpoint.
    model.config = dict(arch=arch, num_classes=num_classes, width=width, aspp_branches=aspp_branches,
                        wtm=list(model.wtm_levels), bn_mode=bn_mode, wtm_kernel_grad=wtm_kernel_grad)
    return model


__all__ = [
    "ARCHS", "ASPP", "Discriminator", "DeepLabResNet", "DeepLabVGG16", "TwoLevelSegmenter", "WeightTransfer",
    "aspp_forward", "build_model", "fold_decoder", "parse_wtm_levels", "transferred_kernels",
]
