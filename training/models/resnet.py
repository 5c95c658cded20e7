"""DeepLab-v2 ResNet encoders (ResNet-101 as in the paper, plus R50/R18 layouts for CPU work).

Caffe-style layout of the reference DeepLab-v2: the stride sits on the bottleneck's first 1x1 conv, the
3x3 conv has padding = dilation, the stem's max-pool uses ``ceil_mode=True``; layer3 and layer4 keep stride
1 with dilation 2 and 4, so the output stride is 8. Block 0 of every layer has a projection shortcut.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import frozen_affine_bn


class StemMaxPool(nn.Module):
    """``MaxPool2d(3, stride=2, padding=1, ceil_mode=True)`` on non-negative (post-ReLU) input, written as an
    explicit zero pad (1 before, 2 after) and a floor-mode pool. Same output for every size, but torch.export
    needs no guard on the parity of the input size, so exported graphs keep dynamic height and width."""

    ceil_mode = True  # what it computes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (1, 2, 1, 2)), kernel_size=3, stride=2)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)  # Caffe: stride on the 1x1
        self.bn1 = frozen_affine_bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = frozen_affine_bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = frozen_affine_bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn1 = frozen_affine_bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = frozen_affine_bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


LAYOUTS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "r18": (BasicBlock, (2, 2, 2, 2)),
    "r50": (Bottleneck, (3, 4, 6, 3)),
    "r101": (Bottleneck, (3, 4, 23, 3)),
}


class DeepLabResNet(nn.Module):
    """Returns (layer3, layer4) features: Dec1 (low) reads layer3, Dec2 (high) reads layer4."""

    def __init__(self, layout: str = "r101", base_width: int = 64):
        super().__init__()
        block, counts = LAYOUTS[layout]
        w = base_width
        self.inplanes = w
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = frozen_affine_bn(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = StemMaxPool()
        self.layer1 = self._make_layer(block, w, counts[0])
        self.layer2 = self._make_layer(block, w * 2, counts[1], stride=2)
        self.layer3 = self._make_layer(block, w * 4, counts[2], dilation=2)
        self.layer4 = self._make_layer(block, w * 8, counts[3], dilation=4)
        self.low_channels = w * 4 * block.expansion
        self.high_channels = w * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, count: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        # Every layer's first block projects (the references also project where only dilation changes).
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            frozen_affine_bn(planes * block.expansion),
        )
        blocks = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes, 1, dilation) for _ in range(count - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        low = self.layer3(x)
        return low, self.layer4(low)
