"""DeepLab VGG16 encoder (the paper's "V" backbone).

torchvision VGG16 ``features`` with pool4 and pool5 removed (output stride 8), conv5_x dilated by 2, then
fc6 / fc7 as 3x3 convs with dilation 4 (1024 channels), ReLU and no dropout. ``features`` keeps the
reference layout (torchvision indices 0..22, then 24..29 shifted down by one) so AdaptSegNet/ADVENT VGG
snapshots load by name. Dec1 (low) reads conv5_3, Dec2 (high) reads fc7; both are at stride 8.
"""
from __future__ import annotations

import torch
from torch import nn

# torchvision VGG16 "D" configuration up to conv5_3; "M" is a 2x2 max-pool.
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, 512, 512, 512)  # pool4, pool5 dropped


class DeepLabVGG16(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        cin, n_conv = 3, 0
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            n_conv += 1
            dil = 2 if n_conv > 10 else 1  # conv5_x
            cout = max(1, int(v * width))
            layers += [nn.Conv2d(cin, cout, 3, padding=dil, dilation=dil), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        fc = max(1, int(1024 * width))
        self.fc6 = nn.Conv2d(cin, fc, 3, padding=4, dilation=4)
        self.fc7 = nn.Conv2d(fc, fc, 3, padding=4, dilation=4)
        self.relu = nn.ReLU(inplace=True)
        self.low_channels = cin
        self.high_channels = fc

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.features(x)
        return low, self.relu(self.fc7(self.relu(self.fc6(low))))
