"""The blind baseline every result table carries: a per-pixel layout prior that never looks at the image.

Each pixel position gets the most frequent train id at that position in the *source* labels (road at the
bottom, sky at the top, buildings at the sides). An adapted network that scores below it has learnt less
about the target than the street layout alone gives away. numpy only: it needs no network and no torch.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from jal_deploy.datasets import find_samples, read_label
from jal_deploy.labels import IGNORE, get_protocol
from jal_deploy.metrics import ConfusionMatrix

PRIOR_SIZE = (256, 128)  # (W, H) grid the label counts are gathered on; upsampled (nearest) to each label


def layout_counts(root: str | Path, fmt: str, protocol: str = "19", size: tuple[int, int] = PRIOR_SIZE,
                  split: str | None = None, limit: int | None = None) -> np.ndarray:
    """(C, H, W) int64: how often each protocol class is the label at each position of the labels under
    `root` (labels resized, nearest, to `size`); ignore pixels are not counted."""
    proto = get_protocol(protocol)
    lut = proto.from_trainid19
    w, h = size
    counts = np.zeros((proto.num_classes + 1, h * w), np.int64)  # last row: ignore
    samples = find_samples(root, fmt, split=split if fmt == "cityscapes" else None)[:limit]
    if not samples:
        raise ValueError(f"no labelled {fmt} samples under {root}")
    flat = np.arange(h * w)
    for sample in samples:
        label = cv2.resize(lut[read_label(sample, fmt)], (w, h), interpolation=cv2.INTER_NEAREST).ravel()
        label = np.where(label == IGNORE, proto.num_classes, label).astype(np.int64)
        counts += np.bincount(label * (h * w) + flat, minlength=counts.size).reshape(counts.shape)
    return counts[:-1].reshape(-1, h, w)


def layout_prior(root: str | Path, fmt: str, protocol: str = "19", size: tuple[int, int] = PRIOR_SIZE,
                 split: str | None = None, limit: int | None = None) -> np.ndarray:
    """(H, W) uint8 map of protocol class indices: the per-position mode of the labels under `root`."""
    return layout_counts(root, fmt, protocol, size, split, limit).argmax(0).astype(np.uint8)


def prior_scores(prior: np.ndarray, val_root: str | Path, protocol: str = "19", split: str = "val",
                 limit: int | None = None) -> ConfusionMatrix:
    """Confusion matrix of the prior on a labelled Cityscapes-format split (prior resized to each label)."""
    proto = get_protocol(protocol)
    cm = ConfusionMatrix(proto.num_classes)
    for sample in find_samples(val_root, "cityscapes", split=split)[:limit]:
        label = proto.from_trainid19[read_label(sample, "cityscapes")]
        pred = cv2.resize(prior, (label.shape[1], label.shape[0]), interpolation=cv2.INTER_NEAREST)
        cm.update(pred.astype(np.int64), label.astype(np.int64))
    return cm
