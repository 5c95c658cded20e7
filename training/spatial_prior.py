"""Spatial priors for pseudo labels, as CBST-SP (Zou et al., ECCV 2018): where in the frame each class lies.

A driving camera sees the street from nearly the same pose in every frame, so a pixel's position says much about
its class (road at the bottom centre, sky at the top). CBST-SP counts, per class, how often each position carries
that class in the *source* labels, smooths the counts with a Gaussian (the published kernel: 70 px on a 2048 px
wide frame), and multiplies the network's target probabilities by it before the pseudo labels are chosen.

Here the counts are normalised per class over positions: q(pos | c), the likelihood of a position given the class.
Then softmax(x) * q(pos | c), renormalised over classes, is p(c | image, pos) if appearance and position are
independent given the class (Bayes), so a class keeps its share of the frame and only where it lies counts; a
prior normalised over classes instead, p(c | pos), would also push every pixel towards the large classes. A
small floor keeps every class possible everywhere: the target camera is not the source camera.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from .baselines import PRIOR_SIZE, layout_counts

KERNEL_FRACTION = 70 / 2048   # CBST's smoothing kernel, as a fraction of the frame width
FLOOR = 1e-3                  # share of a uniform position likelihood mixed into every class


def position_likelihood(counts: np.ndarray, kernel_fraction: float = KERNEL_FRACTION,
                        floor: float = FLOOR) -> np.ndarray:
    """(C, H, W) float32 q(pos | c) from per-class position counts: Gaussian-smoothed, each class summing to 1
    over positions, mixed with `floor` of a uniform map (classes never counted get the uniform map)."""
    c, h, w = counts.shape
    size = max(1, int(round(kernel_fraction * w))) | 1      # odd kernel, in grid cells
    sigma = max(size / 6.0, 1e-3)                            # the kernel spans +-3 sigma
    q = np.empty((c, h, w), np.float32)
    uniform = np.float32(1.0 / (h * w))
    for k in range(c):
        smooth = cv2.GaussianBlur(counts[k].astype(np.float32), (size, size), sigma, borderType=cv2.BORDER_REPLICATE)
        total = float(smooth.sum())
        q[k] = (1 - floor) * smooth / total + floor * uniform if total > 0 else uniform
    return q


def source_spatial_prior(root: str | Path, fmt: str, protocol: str = "19", size: tuple[int, int] = PRIOR_SIZE,
                         kernel_fraction: float = KERNEL_FRACTION, limit: int | None = None) -> np.ndarray:
    """q(pos | c) of the labelled source tree `root` (format `fmt`), on a (W, H) = `size` grid. Counted once per
    process and tree: every self-training round of a run weights its pseudo labels by the same source prior."""
    return _cached_prior(str(Path(root).resolve()), fmt, protocol, tuple(size), kernel_fraction, limit).copy()


@functools.lru_cache(maxsize=4)
def _cached_prior(root: str, fmt: str, protocol: str, size: tuple[int, int], kernel_fraction: float,
                  limit: int | None) -> np.ndarray:
    return position_likelihood(layout_counts(root, fmt, protocol, size, limit=limit), kernel_fraction)
