"""Output-space domain discriminator (paper: DCGAN-like, 5 convs 4x4 stride 2, 64/128/256/512/1 channels,
LeakyReLU 0.2). Input: softmax of segmentation logits; output: per-patch domain logits (never upsampled).

Module names follow AdaptSegNet (conv1..conv4, classifier) so its discriminator snapshots load by name.
"""
from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    def __init__(self, num_classes: int, ndf: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(num_classes, ndf, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, 4, stride=2, padding=1)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, 4, stride=2, padding=1)
        self.classifier = nn.Conv2d(ndf * 8, 1, 4, stride=2, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, prob: torch.Tensor) -> torch.Tensor:
        x = prob
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = self.act(conv(x))
        return self.classifier(x)
